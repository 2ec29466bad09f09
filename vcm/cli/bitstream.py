"""``vcm-compress`` / ``vcm-decompress``: image files to vcm bitstream files and back.

    vcm-compress   --ckpt run/checkpoints/last.ckpt frame.png frame.vcm
    vcm-decompress --ckpt run/checkpoints/last.ckpt frame.vcm decoded.png

The bitstream file is the complete stream (header included): ``bpp_real = 8 * size / (H * W)``.
What the encoder is given besides the image follows the codec's conditioning kind
(:mod:`vcm.conditioning`): codecs conditioned on detector features (roi_hyperprior) rebuild the
detector they were trained with from the checkpoint on the encoder side, ROI gain coding with
``--roi detector`` runs the configured one; the decoder never needs either.
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

from vcm.codecs.roi_gain import ROI_BOX_SOURCES
from vcm.conditioning import CONFIGURED, TRAINED, codec_condition, conditioning
from vcm.data.kitti import ClassSpec, load_image, objects_to_target, parse_label_file
from vcm.detectors.identity import trained_detector
from vcm.errors import VcmError
from vcm.evaluation.runners import (
    ImageRunner,
    RoiGainRunner,
    runner_from_checkpoint,
    to_float_batch,
)
from vcm.utils.io import atomic_write_bytes
from vcm.utils.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from vcm.zoo import ZOO_PREFIX, is_zoo_spec
from vcm.zoo import entries as zoo_entries
from vcm.zoo import entry as zoo_entry


class CodecSession:
    """A codec loaded once from a checkpoint, for compressing/decompressing many files.

    Args:
        ckpt: a checkpoint path or ``zoo:<name>``.
        device: where the codec runs.
        roi: ROI gain coding settings (keyword arguments of :class:`~vcm.evaluation.runners.RoiGainRunner`
            plus ``ladder``, a list of lower-rate checkpoints, and ``detector``, the detector config
            name for ``roi_source=detector``), or None for the codec's plain coding.
    """

    def __init__(self, ckpt: str | Path, device: str = "cpu", roi: dict | None = None):
        self.runner = runner_from_checkpoint(ckpt, device=device)
        if not isinstance(self.runner, ImageRunner):
            raise VcmError(f"{ckpt} holds a feature codec; vcm-compress and vcm-decompress code images "
                           "(feature codecs run inside vcm-eval: codec=zoo codec.name=<name>)")
        self.spec = str(ckpt)
        self.detector = self._encoder_detector(device)
        if roi is not None:
            roi = dict(roi)
            ladder = [str(c) for c in roi.pop("ladder", [])]
            detector = roi.pop("detector", None)
            models = [self.runner.model, *(runner_from_checkpoint(c, device=device).model for c in ladder)]
            meta = self.runner.meta
            self.runner = RoiGainRunner(models, self.runner.name, [self.spec, *ladder], dict(self.runner.params), **roi)
            self.runner.meta = meta
            self.detector = self._encoder_detector(device, detector)

    def _encoder_detector(self, device: str, configured: str | None = None):
        """The detector the runner's encoder runs (:mod:`vcm.conditioning`): the one it was trained
        with, rebuilt from the checkpoint, or the detector config ``configured``; None: it runs none."""
        which = conditioning(self.runner).detector(self.runner)
        if which == TRAINED:
            return trained_detector(self.runner.meta.get("detector"), device, codec=f"{self.spec}: the codec")
        if which == CONFIGURED:
            return configured_detector(configured, device)
        return None

    @property
    def needs_boxes(self) -> bool:
        """Whether the encoder is given the image's labelled ROI boxes (roi_source=boxes, or ROI gain
        coding with roi_source=labels): ``compress(target=...)``."""
        return conditioning(self.runner).needs_labels(self.runner)

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
        """bitstream bytes -> uint8 [3,H,W]. A zoo codec also decodes the files its lower-rate zoo
        siblings wrote (rate control steps down to them): the file's weights hash names the model."""
        if is_zoo_spec(self.spec):
            other = zoo_sibling_for(self.spec, data, self.runner.weights_hash)
            if other is not None:
                return CodecSession(other, str(self.runner.device)).decompress(data)
        return self.runner.decode(data)


def configured_detector(name: str | None, device: str = "cpu"):
    """The detector of ``vcm/conf/detector/<name>.yaml`` (default: the shipped ``kitti_mobilenet_v2``)."""
    from vcm.cli.hydra_app import _compose
    from vcm.detectors.identity import build_detector

    cfg = _compose("eval", [f"detector={name or 'kitti_mobilenet_v2'}", "codec=none"])
    return build_detector(cfg.detector).to(device)


def zoo_ladder(spec: str) -> list[str]:
    """The zoo codecs of ``spec``'s architecture and kind with a lower lambda, highest first."""
    me = zoo_entry(spec[len(ZOO_PREFIX):])
    lower = [e for e in zoo_entries(me.kind).values()
             if e.architecture == me.architecture and e.lmbda is not None and me.lmbda is not None and e.lmbda < me.lmbda]
    return [f"{ZOO_PREFIX}{e.name}" for e in sorted(lower, key=lambda e: -e.lmbda)]


def zoo_sibling_for(spec: str, data: bytes, own: str) -> str | None:
    """The zoo codec of ``spec``'s architecture whose weights wrote ``data``, when they are not ``own``
    (``spec``'s weights hash)."""
    from vcm.codecs.base import weights_hash
    from vcm.codecs.checkpoint import load_codec_checkpoint
    from vcm.codecs.container import unpack

    try:
        wanted = unpack(data).weights_hash
    except VcmError:
        return None  # the decoder says what is wrong with the file
    me = zoo_entry(spec[len(ZOO_PREFIX):])
    if wanted == own:
        return None
    for e in zoo_entries(me.kind).values():
        if e.architecture == me.architecture and e.name != me.name \
                and weights_hash(load_codec_checkpoint(f"{ZOO_PREFIX}{e.name}")[0]) == wanted:
            return f"{ZOO_PREFIX}{e.name}"
    return None


def _png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(buf, format="PNG")
    return buf.getvalue()


def _add_codec_arguments(p: argparse.ArgumentParser, role: str) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help=f"checkpoint {role} (written by vcm-train)")
    which.add_argument("--model", help="name of a shipped zoo codec (vcm/zoo/registry.json), e.g. hyperprior-kitti-q4")


def _codec_spec(a: argparse.Namespace) -> str:
    if a.ckpt is not None:
        return a.ckpt
    zoo_entry(a.model, kinds=("image_codec",))  # these commands code images: only image codecs are valid
    return f"zoo:{a.model}"


def compress_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vcm-compress", description="Compress an image with a trained vcm codec.")
    _add_codec_arguments(p, "of the codec")
    p.add_argument("--device", default="cpu")
    p.add_argument("input", help="image file (PNG/JPEG; grey and RGBA are converted to RGB)")
    p.add_argument("output", help="bitstream file to write")
    p.add_argument("--labels", help="KITTI label file of the image: its boxes of the codec's classes are the ROIs "
                                    "(for --roi labels, and for codecs trained with model.codec.roi_source=boxes)")
    g = p.add_argument_group("ROI coding by a gain map on the quantiser (hyperprior-family codecs, no training)")
    g.add_argument("--roi", choices=ROI_BOX_SOURCES, help="where the ROI boxes come from: the --labels file, the "
                   "detector run here, or none (a uniform gain); the boxes travel in the file")
    g.add_argument("--g-roi", type=float, default=2.0, help="gain on ROI cells (> 1: finer), default 2")
    g.add_argument("--g-bg", type=float, default=0.5, help="gain elsewhere (< 1: coarser), default 0.5; with a "
                   "target the first one tried")
    g.add_argument("--dilation", type=int, default=1, help="ROI cells (16x16 pixels) grown by this many, default 1")
    g.add_argument("--detector", default=None, help="detector config for --roi detector (default kitti_mobilenet_v2)")
    g.add_argument("--score-threshold", type=float, default=0.5, help="detections kept as ROIs, default 0.5")
    g.add_argument("--target-bpp", type=float, help="rate control: the frame's size in bits per pixel")
    g.add_argument("--target-bytes", type=int, help="rate control: the frame's size in bytes")
    g.add_argument("--max-bytes", type=int, help="a hard cap: never exceeded (no file when it cannot be met)")
    g.add_argument("--no-ladder", action="store_true", help="rate control stays on this model (default for a zoo "
                   "codec: it may step down to the lower-rate zoo codecs of its architecture)")
    a = p.parse_args(argv)
    rate = a.target_bpp is not None or a.target_bytes is not None or a.max_bytes is not None
    if rate and a.roi is None:
        p.error("--target-bpp / --target-bytes / --max-bytes need --roi (labels, detector or none)")
    if a.target_bpp is not None and a.target_bytes is not None:
        p.error("give --target-bpp or --target-bytes, not both")
    try:
        spec = _codec_spec(a)
        image = load_image(a.input)
        roi = None
        if a.roi is not None:
            roi = {"roi_source": a.roi, "g_roi": a.g_roi, "g_bg": a.g_bg, "dilation": a.dilation,
                   "score_threshold": a.score_threshold, "target_bpp": a.target_bpp, "target_bytes": a.target_bytes,
                   "max_bytes": a.max_bytes, "detector": a.detector,
                   "ladder": zoo_ladder(spec) if rate and is_zoo_spec(spec) and not a.no_ladder else []}
        try:
            session = CodecSession(spec, a.device, roi=roi)
        except ValueError as e:
            raise VcmError(str(e)) from e
        target = None
        if a.labels is not None:
            if not session.needs_boxes:
                raise VcmError(f"--labels {a.labels}: this codec's encoder takes no ROI boxes (use --roi labels for "
                               "ROI gain coding)")
            target = session.target_from_labels(a.labels, *image.shape[1:])
        t0 = time.perf_counter()
        data = session.compress(image, target)
        dt = time.perf_counter() - t0
        atomic_write_bytes(a.output, data)
    except VcmError as e:
        print(f"vcm-compress: error: {e}", file=sys.stderr)
        return 2
    h, w = image.shape[1:]
    info = getattr(session.runner, "encode_info", None) or {}
    extra = "".join(f", {k}={v}" for k, v in info.items())
    print(f"{a.output}: {len(data)} bytes, {w}x{h} (W x H), bpp_real={8 * len(data) / (h * w):.4f}, encode {dt:.3f}s{extra}")
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
        spec = _codec_spec(a)
        data = Path(a.input).read_bytes()
        session = CodecSession(spec, a.device)
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
