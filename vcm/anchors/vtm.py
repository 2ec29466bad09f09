"""VVC intra anchor through the VTM reference software (``EncoderAppStatic`` / ``DecoderAppStatic``).

VTM is not a Python package: its binaries are found from the constructor arguments ``encoder``,
``decoder`` and ``cfg`` (in a Hydra config: ``codec.encoder`` ...), each falling back to the
environment variables ``VTM_ENCODER``, ``VTM_DECODER`` and ``VTM_CFG``. A missing binary or
configuration raises :class:`vcm.errors.CodecUnavailableError` naming the setting to fix.

vcm writes the raw YUV input itself (planar, 10-bit little-endian words, padded to a multiple of 8,
converted from RGB with BT.709 limited range), runs the encoder on one picture, reads the
bitstream back, and decodes it with the decoder to a raw YUV file that vcm reads and converts back.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vcm.anchors.base import check_choice, check_int
from vcm.anchors.yuv import YuvImageAnchor, plane_shapes, read_yuv, write_yuv
from vcm.errors import BitstreamError, CodecUnavailableError

ENV_ENCODER = "VTM_ENCODER"
ENV_DECODER = "VTM_DECODER"
ENV_CFG = "VTM_CFG"
_TAIL_CHARS = 2000


def _tail(text: bytes | str | None) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-_TAIL_CHARS:]


class VtmTools:
    """Locates and runs the VTM encoder and decoder on single pictures.

    Args:
        encoder: path (or name on PATH) of ``EncoderAppStatic``; default ``$VTM_ENCODER``.
        decoder: path (or name on PATH) of ``DecoderAppStatic``; default ``$VTM_DECODER``.
        cfg: encoder configuration, e.g. VTM's ``cfg/encoder_intra_vtm.cfg``; default ``$VTM_CFG``.
        timeout: seconds allowed per encoder or decoder run.
        extra_args: more encoder arguments, appended last (so they override the defaults).
    """

    def __init__(
        self,
        encoder: str | os.PathLike | None = None,
        decoder: str | os.PathLike | None = None,
        cfg: str | os.PathLike | None = None,
        timeout: float = 3600.0,
        extra_args: Sequence[str] = (),
    ):
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(extra_args, str):
            raise TypeError(f"extra_args must be a list of arguments, got the string {extra_args!r}")
        self.encoder = None if encoder is None else str(encoder)
        self.decoder = None if decoder is None else str(decoder)
        self.cfg = None if cfg is None else str(cfg)
        self.timeout = float(timeout)
        self.extra_args = [str(a) for a in extra_args]

    @staticmethod
    def _executable(value: str | None, env: str, setting: str, what: str) -> str:
        source = f"{setting}={value!r}" if value else f"${env}"
        value = value or os.environ.get(env)
        if not value:
            raise CodecUnavailableError(
                f"VTM {what} is not configured: set {setting}=/path/to/{what} in the codec config "
                f"or export {env}=/path/to/{what} (VTM is not bundled with vcm)"
            )
        found = shutil.which(value)
        if found is None:
            raise CodecUnavailableError(
                f"VTM {what} {value!r} (from {source}) is not an executable file; fix {setting} or {env}"
            )
        return found

    def encoder_path(self) -> str:
        """The encoder executable; raises CodecUnavailableError naming ``codec.encoder`` / ``VTM_ENCODER``."""
        return self._executable(self.encoder, ENV_ENCODER, "codec.encoder", "EncoderAppStatic")

    def decoder_path(self) -> str:
        """The decoder executable; raises CodecUnavailableError naming ``codec.decoder`` / ``VTM_DECODER``."""
        return self._executable(self.decoder, ENV_DECODER, "codec.decoder", "DecoderAppStatic")

    def cfg_path(self) -> str:
        """The encoder configuration file; raises CodecUnavailableError naming ``codec.cfg`` / ``VTM_CFG``."""
        source = f"codec.cfg={self.cfg!r}" if self.cfg else f"${ENV_CFG}"
        value = self.cfg or os.environ.get(ENV_CFG)
        if not value:
            raise CodecUnavailableError(
                "VTM encoder configuration is not set: set codec.cfg=/path/to/VTM/cfg/encoder_intra_vtm.cfg "
                f"or export {ENV_CFG}=/path/to/encoder_intra_vtm.cfg"
            )
        if not Path(value).is_file():
            raise CodecUnavailableError(f"VTM configuration {value!r} (from {source}) does not exist; fix codec.cfg or {ENV_CFG}")
        return str(Path(value).resolve())

    def available(self) -> bool:
        """True when encoder, decoder and configuration are all found."""
        try:
            self.encoder_path(), self.decoder_path(), self.cfg_path()
        except CodecUnavailableError:
            return False
        return True

    def encoder_command(
        self, yuv: str | os.PathLike, bitstream: str | os.PathLike, width: int, height: int, qp: int, chroma: str, bit_depth: int
    ) -> list[str]:
        """The encoder command line for one picture.

        Args:
            yuv: raw planar input file (``bit_depth`` bits, little-endian words above 8 bits).
            bitstream: output bitstream file.
            width, height: picture size (multiples of 8).
            qp: quantisation parameter.
            chroma: "400", "420" or "444" (input and coded chroma format).
            bit_depth: input, internal and output bit depth.

        Returns:
            argv, starting with the encoder executable.
        """
        return [
            self.encoder_path(),
            "-c", self.cfg_path(),
            "-i", str(yuv),
            "-b", str(bitstream),
            "-q", str(qp),
            f"--SourceWidth={width}",
            f"--SourceHeight={height}",
            f"--InputBitDepth={bit_depth}",
            f"--InternalBitDepth={bit_depth}",
            f"--OutputBitDepth={bit_depth}",
            f"--InputChromaFormat={chroma}",
            f"--ChromaFormatIDC={chroma}",
            "-f", "1",
            "-fr", "1",
            # The MD5/CRC picture hash only checks decoding; it would add uncoded-picture bytes to the rate.
            "--SEIDecodedPictureHash=0",
            *self.extra_args,
        ]  # fmt: skip

    def decoder_command(self, bitstream: str | os.PathLike, recon: str | os.PathLike, bit_depth: int) -> list[str]:
        """The decoder command line: ``DecoderAppStatic -b BITSTREAM -o RECON -d BIT_DEPTH``."""
        return [self.decoder_path(), "-b", str(bitstream), "-o", str(recon), "-d", str(bit_depth)]

    def _run(self, cmd: list[str], what: str, cwd: str, error: type[Exception]) -> None:
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(
                f"VTM {what} did not finish within {self.timeout:.0f} s: {' '.join(cmd)}\n{_tail(e.stderr) or _tail(e.stdout)}"
            ) from e
        except OSError as e:
            raise CodecUnavailableError(f"VTM {what} {cmd[0]!r} could not be started: {e}") from e
        if proc.returncode != 0:
            raise error(
                f"VTM {what} failed with exit code {proc.returncode}: {' '.join(cmd)}\n"
                f"stderr (tail):\n{_tail(proc.stderr)}\nstdout (tail):\n{_tail(proc.stdout)}"
            )

    def encode(self, planes: Sequence[np.ndarray], chroma: str, bit_depth: int, qp: int) -> bytes:
        """Code one picture and return the VVC bitstream (Annex-B NAL units) the encoder wrote.

        Args:
            planes: uint16 planes, luma first ([H,W] only for 4:0:0), H and W multiples of 8.
            chroma: "400", "420" or "444".
            bit_depth: bits per sample.
            qp: quantisation parameter.
        """
        height, width = planes[0].shape
        if [p.shape for p in planes] != plane_shapes(height, width, chroma):
            raise ValueError(f"planes {[p.shape for p in planes]} do not form a {width}x{height} {chroma} picture")
        with tempfile.TemporaryDirectory(prefix="vcm_vtm_") as tmp:
            yuv, bitstream = Path(tmp) / "in.yuv", Path(tmp) / "out.bin"
            write_yuv(yuv, planes, bit_depth)
            cmd = self.encoder_command(yuv, bitstream, width, height, qp, chroma, bit_depth)
            self._run(cmd, "encoder", tmp, RuntimeError)
            if not bitstream.is_file() or bitstream.stat().st_size == 0:
                raise RuntimeError(f"VTM encoder exited normally but wrote no bitstream to {bitstream}: {' '.join(cmd)}")
            return bitstream.read_bytes()

    def decode(self, payload: bytes, height: int, width: int, chroma: str, bit_depth: int) -> list[np.ndarray]:
        """Decode a bitstream from :meth:`encode` to uint16 planes of the coded size (luma first)."""
        with tempfile.TemporaryDirectory(prefix="vcm_vtm_") as tmp:
            bitstream, recon = Path(tmp) / "in.bin", Path(tmp) / "rec.yuv"
            bitstream.write_bytes(payload)
            self._run(self.decoder_command(bitstream, recon, bit_depth), "decoder", tmp, BitstreamError)
            if not recon.is_file():
                raise BitstreamError("VTM decoder exited normally but wrote no picture")
            return read_yuv(recon, height, width, chroma, bit_depth)


class VtmAnchor(YuvImageAnchor):
    """Intra VVC (H.266) with the VTM reference encoder at a fixed QP.

    Bytes counted: the anchor header (15 bytes: magic, version, codec id, H, W, chroma_format_idc,
    bit depth, colour code, payload length) plus the complete bitstream file the VTM encoder writes
    (Annex-B NAL units: parameter sets and the slice). VTM writes no container, so nothing is excluded;
    the decoded-picture-hash SEI is switched off since it carries no picture data.

    Args:
        qp: quantisation parameter, 0..63.
        encoder, decoder, cfg: VTM encoder, decoder and intra configuration (see module docstring).
        chroma: "420" (default) or "444".
        bit_depth: 10 (default) or 8.
        timeout: seconds allowed per encoder/decoder run (VTM is slow: minutes per HD picture).
        extra_args: additional encoder arguments, e.g. ``["--Level=6.2"]``.
    """

    name = "vtm"
    codec_id = 5

    def __init__(
        self,
        qp: int = 32,
        encoder: str | None = None,
        decoder: str | None = None,
        cfg: str | None = None,
        chroma: str = "420",
        bit_depth: int = 10,
        timeout: float = 3600.0,
        extra_args: Sequence[str] = (),
    ):
        self.qp = check_int("qp", qp, 0, 63)
        self.chroma = check_choice("chroma", str(chroma), ("420", "444"))
        self.bit_depth = check_choice("bit_depth", bit_depth, (8, 10))
        self.tools = VtmTools(encoder, decoder, cfg, timeout, list(extra_args))
        self.params = {
            "qp": self.qp, "chroma": self.chroma, "bit_depth": self.bit_depth,
            "encoder": encoder, "decoder": decoder, "cfg": cfg, "timeout": timeout, "extra_args": list(extra_args),
        }  # fmt: skip

    def encoder_command(self, yuv: str | os.PathLike, bitstream: str | os.PathLike, width: int, height: int) -> list[str]:
        """The encoder command line this anchor runs for a padded ``width`` x ``height`` picture."""
        return self.tools.encoder_command(yuv, bitstream, width, height, self.qp, self.chroma, self.bit_depth)

    def decoder_command(self, bitstream: str | os.PathLike, recon: str | os.PathLike) -> list[str]:
        """The decoder command line this anchor runs."""
        return self.tools.decoder_command(bitstream, recon, self.bit_depth)

    def available(self) -> bool:
        """True when the VTM encoder, decoder and configuration are all found."""
        return self.tools.available()

    def _code_planes(self, planes: list[np.ndarray], chroma: str, bit_depth: int) -> bytes:
        return self.tools.encode(planes, chroma, bit_depth, self.qp)

    def _decode_planes(self, payload: bytes, chroma: str, bit_depth: int, height: int, width: int) -> list[np.ndarray]:
        return self.tools.decode(payload, height, width, chroma, bit_depth)
