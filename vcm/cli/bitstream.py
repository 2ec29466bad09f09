"""``vcm-compress`` / ``vcm-decompress``: image files to vcm bitstream files and back.

    vcm-compress   --ckpt run/checkpoints/last.ckpt frame.png frame.vcm
    vcm-decompress --ckpt run/checkpoints/last.ckpt frame.vcm decoded.png

The bitstream file is the complete stream (header included): ``bpp_real = 8 * size / (H * W)``.
Codecs conditioned on detector features (roi_hyperprior) rebuild the detector they were trained
with from the checkpoint on the encoder side; the decoder never needs it.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vcm.codecs.base import Needs
from vcm.data.kitti import ClassSpec, load_image, objects_to_target, parse_label_file
from vcm.detectors.identity import trained_detector
from vcm.errors import VcmError
from vcm.evaluation.pipeline import codec_condition
from vcm.evaluation.runners import ImageRunner, runner_from_checkpoint, to_float_batch
from vcm.utils.io import atomic_write_bytes
from vcm.utils.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV


class CodecSession:
    """A codec loaded once from a checkpoint, for compressing/decompressing many files."""

    def __init__(self, ckpt: str | Path, device: str = "cpu"):
        self.runner = runner_from_checkpoint(ckpt, device=device)
        if not isinstance(self.runner, ImageRunner):
            raise VcmError(f"{ckpt} holds a feature codec; vcm-compress and vcm-decompress code images "
                           "(feature codecs run inside vcm-eval: codec=zoo codec.name=<name>)")
        self.detector = None
        if self.runner.needs is Needs.DETECTOR:
            self.detector = trained_detector(self.runner.meta.get("detector"), device, codec=f"{ckpt}: the codec")

    @property
    def needs_boxes(self) -> bool:
        """Whether the encoder is conditioned on ROI boxes (roi_source=boxes): ``compress(target=...)``."""
        return self.runner.needs is Needs.BOXES

    def target_from_labels(self, path: str | Path, height: int, width: int) -> dict:
        """The target (``boxes`` of the codec's classes, clipped to the image) of a KITTI label file."""
        names = (self.runner.meta or {}).get("class_names")
        if not names:
            raise VcmError("the checkpoint records no class names; cannot tell which labelled boxes are ROIs")
        return objects_to_target(parse_label_file(path), ClassSpec(classes=list(names)), height, width, 0, Path(path).stem)

    def compress(self, image: torch.Tensor, target: dict | None = None) -> bytes:
        """uint8 [3,H,W] -> bitstream bytes (``target``: the image's ROI boxes, for roi_source=boxes)."""
        try:
            cond = codec_condition(self.runner, to_float_batch(image), [target] if target is not None else None,
                                   self.detector, name=self.runner.name)
        except ValueError as e:
            raise VcmError(str(e)) from e
        return self.runner.encode(image, cond=cond)

    def decompress(self, data: bytes) -> torch.Tensor:
        """bitstream bytes -> uint8 [3,H,W]."""
        return self.runner.decode(data)


def _png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(buf, format="PNG")
    return buf.getvalue()


def _add_codec_arguments(p: argparse.ArgumentParser, role: str) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help=f"checkpoint {role} (written by vcm-train)")
    which.add_argument("--model", help="name of a shipped zoo codec (vcm/zoo/registry.json), e.g. hyperprior-kitti-q4")


def _codec_spec(a: argparse.Namespace) -> str:
    return a.ckpt if a.ckpt is not None else f"zoo:{a.model}"


def compress_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vcm-compress", description="Compress an image with a trained vcm codec.")
    _add_codec_arguments(p, "of the codec")
    p.add_argument("--device", default="cpu")
    p.add_argument("input", help="image file (PNG/JPEG; grey and RGBA are converted to RGB)")
    p.add_argument("output", help="bitstream file to write")
    p.add_argument("--labels", help="KITTI label file of the image: its boxes of the codec's classes are the ROIs "
                                    "(needed by, and only used by, codecs trained with model.codec.roi_source=boxes)")
    a = p.parse_args(argv)
    try:
        image = load_image(a.input)
        session = CodecSession(_codec_spec(a), a.device)
        target = None
        if a.labels is not None:
            if not session.needs_boxes:
                raise VcmError(f"--labels {a.labels}: this codec's encoder takes no ROI boxes (only roi_source=boxes codecs do)")
            target = session.target_from_labels(a.labels, *image.shape[1:])
        t0 = time.perf_counter()
        data = session.compress(image, target)
        dt = time.perf_counter() - t0
        atomic_write_bytes(a.output, data)
    except VcmError as e:
        print(f"vcm-compress: error: {e}", file=sys.stderr)
        return 2
    h, w = image.shape[1:]
    print(f"{a.output}: {len(data)} bytes, {w}x{h} (W x H), bpp_real={8 * len(data) / (h * w):.4f}, encode {dt:.3f}s")
    return 0


def decompress_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vcm-decompress", description="Decode a vcm bitstream to a PNG image.")
    _add_codec_arguments(p, "of the codec that wrote the bitstream")
    p.add_argument("--device", default="cpu")
    p.add_argument("input", help="bitstream file")
    p.add_argument("output", help="PNG file to write")
    p.add_argument("--max-pixels", type=int, default=None,
                   help=f"largest picture (H x W) to decode from a file; default {MAX_PIXELS_ENV} or "
                        f"{DEFAULT_MAX_PIXELS // 1_000_000} MP")
    a = p.parse_args(argv)
    if a.max_pixels is not None:
        if a.max_pixels < 1:
            p.error(f"--max-pixels {a.max_pixels}: expected a positive number of pixels")
        os.environ[MAX_PIXELS_ENV] = str(a.max_pixels)
    try:
        data = Path(a.input).read_bytes()
        session = CodecSession(_codec_spec(a), a.device)
        t0 = time.perf_counter()
        image = session.decompress(data)
        dt = time.perf_counter() - t0
        atomic_write_bytes(a.output, _png_bytes(image))
    except OSError as e:
        print(f"vcm-decompress: error: {e}", file=sys.stderr)
        return 2
    except VcmError as e:
        print(f"vcm-decompress: error: {a.input}: {e}", file=sys.stderr)
        return 2
    print(f"{a.output}: {image.shape[2]}x{image.shape[1]} (W x H), decode {dt:.3f}s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(compress_main())
