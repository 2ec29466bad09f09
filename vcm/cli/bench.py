"""Speed and overhead benchmarks of vcm, measured side by side in one run on this machine.

    python -m vcm.cli.bench                      # what ``make bench`` runs (about 5-8 min on 2 CPU cores)
    python -m vcm.cli.bench --quick --out /tmp/b/bench.json   # tiny settings, a few seconds

Four measurements, each a ratio against the same work done without vcm (or a table):

1. ``codec``: encode / decode time of a 1242x375 KITTI frame through vcm's path
   (:class:`~vcm.evaluation.runners.LearnedImageRunner` -> container pack / unpack, what
   ``vcm-compress`` / ``vcm-decompress`` call) against the same CompressAI model called directly
   (pad, ``compress`` / ``decompress``, crop). Same model instance, updated once; one warm-up round, then
   the median of ``--repeats`` rounds, the two paths interleaved (their order alternating) so that a
   change of machine load hits both. Goal: ratio <= 1.05.
2. ``bpp``: real bits (``8 * len(bitstream)``, container header included) against the estimate of the
   entropy model (``-sum log2 likelihoods`` of the eval forward pass) on every kitti_tiny frame, with a
   hyperprior trained briefly here (an untrained model has unrepresentative latents: with random weights
   ``y`` quantises to almost all zeros). The excess is split into vcm's container header,
   CompressAI's rounding of the predicted scales up to its scale table, and the range coder proper;
   the frames are also coded once with a finer scale table to show what that rounding costs.
   Goal: overhead <= 1 %.
3. ``train``: one training step through :class:`~vcm.modules.image_codec.ImageCodecModule` driven by a
   real ``lightning.Trainer`` against a plain PyTorch loop doing the same work (forward, RD loss,
   backward, clip, step, aux loss, backward, aux step) on the same architecture and batch. Lightning's
   steps are timed by a callback (``on_train_batch_start`` -> ``on_train_batch_end``); warm-up steps are
   excluded; the two loops run in A-B-B-A order. Goal: ratio <= 1.10.
4. ``anchors``: encode / decode frames per second of every image anchor and of the learned codecs
   (their real coding path), on the same frame.

Ratios are ``median(time_vcm) / median(time_direct)`` of the raw wall-clock times stored in the JSON;
the same ratio of process CPU times is reported beside it, because other jobs on a shared machine
disturb it less. Torch runs one intra-op thread by default (``--threads``): with two cores shared by
several jobs, more threads per process make every timing slow and erratic. A failed goal is printed
and recorded, not hidden; the exit code is 0 unless something went wrong.
Results go to ``--out`` (JSON, written atomically) and to the same path with ``.md`` (Markdown for the
README, naming the command that produced it).
"""
from __future__ import annotations

import argparse
import gc
import itertools
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch

from vcm.utils.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT / ".." / "shared" / "data"
DEFAULT_OUT = Path("outputs") / "bench" / "bench.json"
FRAME = "000001"  # a 1242x375 frame (KITTI's usual size; a few kitti_tiny frames are 1224x370 or 1238x374)
SECTIONS = ("codec", "bpp", "train", "anchors")
GOALS = {"codec": 1.05, "bpp": 0.01, "train": 1.10}
LMBDA_Q3 = 0.0067  # CompressAI's MSE lambda of quality 3 (conf/model/hyperprior.yaml)


@dataclass(frozen=True)
class Settings:
    """What one benchmark run measures; ``--quick`` shrinks every size so a test runs in seconds.

    Attributes:
        repeats: timed rounds of sections 1 and 4 (after one warm-up round).
        frame_crop: (H, W) top-left crop of the benchmark frame, or None for the whole 1242x375 frame.
        codec_nm: (N, M) of the section-1/4 learned codecs, or None for quality 3's channel numbers.
        bpp_nm: (N, M) of the hyperprior trained in section 2, or None for quality 3's.
        train_steps, train_batch, train_crop, train_lr: section 2's short training.
        bpp_frames: frames measured in section 2 (None: all).
        step_nm, step_batch, step_crop: architecture and fixed batch of section 3.
        step_warmup: steps excluded at the start of each of the first two timed runs (1 in the others).
        step_steps: timed steps per loop, split over two runs (A-B-B-A).
        anchors: include HEVC / AV1 (slow) in section 4.
        fine_table_levels: also measure section 2 with a scale table of this many entries (None: skip).
    """

    repeats: int = 5
    frame_crop: tuple[int, int] | None = None
    codec_nm: tuple[int, int] | None = None
    bpp_nm: tuple[int, int] | None = (64, 96)
    train_steps: int = 300
    train_batch: int = 8
    train_crop: int = 128
    train_lr: float = 1e-3
    bpp_frames: int | None = None
    step_nm: tuple[int, int] | None = None
    step_batch: int = 8
    step_crop: int = 256
    step_warmup: int = 2
    step_steps: int = 8
    anchors: bool = True
    fine_table_levels: int | None = 64


FULL = Settings()
QUICK = Settings(
    repeats=1,
    frame_crop=(120, 250),
    codec_nm=(16, 16),
    bpp_nm=(16, 16),
    train_steps=2,
    train_batch=2,
    train_crop=64,
    bpp_frames=3,
    step_nm=(16, 16),
    step_batch=2,
    step_crop=64,
    step_warmup=1,
    step_steps=2,
)


# ---------------------------------------------------------------------------------------------- helpers
def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _ratio(num: list[float], den: list[float]) -> float:
    """``median(num) / median(den)``: the ratio every section reports."""
    return _median(num) / _median(den)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment() -> dict[str, Any]:
    import compressai
    import lightning

    from vcm.rd.record import current_git_commit

    return {
        "torch": torch.__version__,
        "compressai": compressai.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": current_git_commit(),
        "device": "cpu",
    }


def _kitti_images(data_root: Path) -> list[tuple[str, torch.Tensor]]:
    """All kitti_tiny frames as (frame id, uint8 [3,H,W]), sorted by id."""
    from vcm.data.kitti import index_kitti, load_image

    root = Path(data_root) / "kitti_tiny"
    if not (root / "training" / "image_2").is_dir():
        raise FileNotFoundError(
            f"kitti_tiny not found under {Path(data_root).resolve()}; expected {root}/training/image_2 "
            "(pass --data <folder holding kitti_tiny>)"
        )
    return [(f.frame_id, load_image(f.image)) for f in index_kitti(root)]


def _train_frame_ids(frame_ids: list[str]) -> list[str]:
    """The training split of kitti_tiny as conf/data/kitti_tiny.yaml makes it (seed 0, 0.75/0.125/0.125)."""
    from vcm.data.splits import split_groups

    return split_groups(frame_ids, (0.75, 0.125, 0.125), seed=0)["train"]


def _hyperprior(nm: tuple[int, int] | None, seed: int = 0):
    from vcm.codecs.image import hyperprior

    torch.manual_seed(seed)
    return hyperprior(3) if nm is None else hyperprior(N=nm[0], M=nm[1])


def _factorized(nm: tuple[int, int] | None, seed: int = 0):
    from vcm.codecs.image import factorized

    torch.manual_seed(seed)
    return factorized(3) if nm is None else factorized(N=nm[0], M=nm[1])


def _describe(model, weights: str) -> dict[str, Any]:
    return {
        "codec": model.codec_name,
        "quality": model.quality,
        "N": int(model.N),
        "M": int(model.M),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": weights,
    }


# ---------------------------------------------------------------------------------------------- 1. codec path
def bench_codec(model, image: torch.Tensor, repeats: int) -> dict[str, Any]:
    """Time vcm's coding path against CompressAI's, interleaved, on one image.

    Args:
        model: an updated image codec (``update(force=True)`` done), in eval mode.
        image: uint8 [3,H,W].
        repeats: timed rounds after one warm-up round.

    Returns:
        Raw times per round (seconds), their medians, the enc/dec ratios and consistency checks.
    """
    from vcm.codecs.base import crop_image, pad_image
    from vcm.codecs.container import unpack
    from vcm.evaluation.runners import LearnedImageRunner, to_uint8

    runner = LearnedImageRunner(model, name=model.codec_name, params={"quality": model.quality}, update=False)

    @torch.no_grad()
    def direct_encode():
        x = image[None].float() / 255.0
        x_pad, pad = pad_image(x, model.min_div)
        return model.compress(x_pad), pad

    @torch.no_grad()
    def direct_decode(enc):
        out, pad = enc
        return crop_image(model.decompress(out["strings"], out["shape"])["x_hat"], pad)

    paths: dict[str, tuple[Callable, Callable]] = {
        "vcm": (lambda: runner.encode(image), runner.decode),
        "direct": (direct_encode, direct_decode),
    }
    # wall-clock times (what a user waits) and process CPU times (less sensitive to other jobs)
    times: dict[str, list[float]] = {f"{p}_{s}_{c}": [] for c in ("s", "cpu_s") for p in paths for s in ("enc", "dec")}
    last: dict[str, Any] = {}
    for rnd in range(repeats + 1):
        order = ("vcm", "direct") if rnd % 2 == 0 else ("direct", "vcm")
        for name in order:
            enc, dec = paths[name]
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            coded = enc()
            c1, t1 = time.process_time(), time.perf_counter()
            decoded = dec(coded)
            c2, t2 = time.process_time(), time.perf_counter()
            last[name] = (coded, decoded)
            if rnd > 0:  # round 0 warms caches, the allocator and the thread pool up
                times[f"{name}_enc_s"].append(t1 - t0)
                times[f"{name}_dec_s"].append(t2 - t1)
                times[f"{name}_enc_cpu_s"].append(c1 - c0)
                times[f"{name}_dec_cpu_s"].append(c2 - c1)
    data, vcm_image = last["vcm"]
    (direct_out, _), direct_x = last["direct"]
    payload = unpack(data)
    same_strings = [list(g) for g in payload.strings] == [list(g) for g in direct_out["strings"]]
    string_bytes = sum(len(s) for g in payload.strings for s in g)
    out: dict[str, Any] = {"raw": times, "median": {k: _median(v) for k, v in times.items()}}
    for part in ("enc", "dec"):
        out[f"{part}_ratio"] = _ratio(times[f"vcm_{part}_s"], times[f"direct_{part}_s"])
        out[f"{part}_cpu_ratio"] = _ratio(times[f"vcm_{part}_cpu_s"], times[f"direct_{part}_cpu_s"])
        out[f"paired_{part}_ratio_median"] = _median(
            [a / b for a, b in zip(times[f"vcm_{part}_s"], times[f"direct_{part}_s"], strict=True)]
        )
    out.update(
        bitstream_bytes=len(data),
        string_bytes=string_bytes,
        same_strings=bool(same_strings),
        same_decoded_image=bool(torch.equal(vcm_image, to_uint8(direct_x))),
    )
    return out


# ---------------------------------------------------------------------------------------------- 2. bpp
def train_short(model, images: list[torch.Tensor], s: Settings, seed: int = 0) -> dict[str, Any]:
    """A short RD training of ``model`` on random crops (plain PyTorch, CompressAI's net/aux optimisers).

    Args:
        model: the codec (trained in place).
        images: uint8 [3,H,W] training frames.
        s: steps, batch size, crop size and learning rate.
        seed: crop sampling and initialisation seed.

    Returns:
        Loss at the start and end, steps, seconds.
    """
    from vcm.codecs.base import net_aux_parameters
    from vcm.losses.image import RateDistortionLoss

    gen = torch.Generator().manual_seed(seed)
    loss_fn = RateDistortionLoss(LMBDA_Q3)
    net, aux = net_aux_parameters(model)
    opt = torch.optim.Adam(net, lr=s.train_lr)
    aux_opt = torch.optim.Adam(aux, lr=1e-3)
    model.train()
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in range(s.train_steps):
        crops = []
        for _ in range(s.train_batch):
            img = images[int(torch.randint(len(images), (1,), generator=gen))]
            h, w = img.shape[-2:]
            top = int(torch.randint(h - s.train_crop + 1, (1,), generator=gen))
            left = int(torch.randint(w - s.train_crop + 1, (1,), generator=gen))
            crop = img[:, top : top + s.train_crop, left : left + s.train_crop]
            if bool(torch.rand((), generator=gen) < 0.5):
                crop = crop.flip(-1)
            crops.append(crop)
        x = torch.stack(crops).float() / 255.0
        out = loss_fn(model(x), x)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net, 1.0)
        opt.step()
        aux_loss = model.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux_loss.backward()
        aux_opt.step()
        if not math.isfinite(float(out["loss"].detach())):
            raise RuntimeError(f"non-finite loss at step {step} of the bpp benchmark's training")
        history.append({k: float(out[k].detach()) for k in ("loss", "bpp_loss", "mse_loss")} | {"aux_loss": float(aux_loss.detach())})
    model.eval()
    tail = history[-min(20, len(history)) :]
    return {
        "steps": s.train_steps,
        "batch": s.train_batch,
        "crop": s.train_crop,
        "lr": s.train_lr,
        "aux_lr": 1e-3,
        "lmbda": LMBDA_Q3,
        "seconds": time.perf_counter() - t0,
        "first": history[0] if history else None,
        "last20_mean": {k: statistics.fmean(h[k] for h in tail) for k in tail[0]} if tail else None,
    }


def _table_scale_bits(model, x_pad: torch.Tensor) -> tuple[dict, float | None]:
    """One eval forward pass; its likelihoods and the bits of the Gaussian latents at the coder's scales.

    CompressAI's range coder cannot use the predicted scales themselves: ``build_indexes`` rounds each
    scale *up* to an entry of the entropy model's ``scale_table`` (64 log-spaced values from 0.11 to 256
    by default, about 13 % apart). Evaluating the likelihood at those table scales separates that
    rounding from the range coder itself.

    Returns:
        (the forward pass's ``likelihoods``, bits of every GaussianConditional's input at the table
        scales, or None when the model has no GaussianConditional)
    """
    from compressai.entropy_models import GaussianConditional

    from vcm.codecs.base import count_bits

    captured: list[tuple[Any, tuple, dict]] = []

    def hook(module, args, kwargs):
        captured.append((module, args, kwargs))

    gcs = [m for m in model.modules() if isinstance(m, GaussianConditional)]
    handles = [g.register_forward_pre_hook(hook, with_kwargs=True) for g in gcs]
    try:
        likelihoods = model(x_pad)["likelihoods"]
    finally:
        for h in handles:
            h.remove()
    if not captured:
        return likelihoods, None
    bits = 0.0
    for module, args, kwargs in captured:
        inputs = args[0] if args else kwargs["inputs"]
        scales = args[1] if len(args) > 1 else kwargs["scales"]
        means = args[2] if len(args) > 2 else kwargs.get("means")
        table_scales = module.scale_table[module.build_indexes(scales).long()]
        bits += float(count_bits(module(inputs, table_scales, means, training=False)[1]))
    return likelihoods, bits


DEFAULT_TABLE_NOTE = ", CompressAI's default"


@torch.no_grad()
def bench_bpp(model, frames: list[tuple[str, torch.Tensor]], fine_table_levels: int | None = None) -> dict[str, Any]:
    """Real against estimated bits of every frame, with the excess split into its causes.

    The excess of the real bits over the estimate has three parts: vcm's container header; the rounding
    of the predicted scales up to CompressAI's scale table (for models with a GaussianConditional);
    the range coder proper (CDF precision, end of stream, values beyond the tables).

    Args:
        model: an updated codec in eval mode.
        frames: (frame id, uint8 [3,H,W]).
        fine_table_levels: also code every frame after ``update()`` with a scale table of this many
            levels (same range as CompressAI's default), to measure what a finer table saves; the
            model is updated back to the default table afterwards.

    Returns:
        Per-image rows and the mean / pooled overheads.
    """
    from vcm.codecs.base import count_bits, pad_image
    from vcm.codecs.container import unpack
    from vcm.evaluation.runners import LearnedImageRunner

    runner = LearnedImageRunner(model, name=model.codec_name, params={"quality": model.quality}, update=False)
    rows = []
    for name, image in frames:
        _, h, w = image.shape
        data = runner.encode(image)
        strings = unpack(data).strings
        x_pad, _ = pad_image(image[None].float() / 255.0, model.min_div)
        likelihoods, table_bits = _table_scale_bits(model, x_pad)
        est_by_key = {k: float(count_bits(v)) for k, v in likelihoods.items()}
        est_bits = sum(est_by_key.values())
        string_bytes = [sum(len(s) for s in g) for g in strings]
        real_bits = 8 * len(data)
        row = {
            "name": name,
            "height": h,
            "width": w,
            "bytes": len(data),
            "header_bytes": len(data) - sum(string_bytes),
            "bpp_real": real_bits / (h * w),
            "bpp_estimated": est_bits / (h * w),
            "overhead": real_bits / est_bits - 1.0,
        }
        # the strings come in the order of the likelihoods (y, then z for the hyperpriors)
        if len(strings) == len(est_by_key):
            for (key, bits), nbytes in zip(est_by_key.items(), string_bytes, strict=True):
                row[f"{key}_bits_estimated"] = bits
                row[f"{key}_bits_real"] = 8 * nbytes
            if table_bits is not None and "y" in est_by_key:
                row["y_bits_estimated_table_scales"] = table_bits
        rows.append(row)
    est = sum(r["bpp_estimated"] * r["height"] * r["width"] for r in rows)
    real = sum(8 * r["bytes"] for r in rows)
    header = sum(8 * r["header_bytes"] for r in rows)
    out: dict[str, Any] = {
        "num_images": len(rows),
        "mean_overhead": statistics.fmean(r["overhead"] for r in rows),
        "pooled_overhead": real / est - 1.0,
        "mean_bpp_real": statistics.fmean(r["bpp_real"] for r in rows),
        "mean_bpp_estimated": statistics.fmean(r["bpp_estimated"] for r in rows),
        "mean_header_bytes": statistics.fmean(r["header_bytes"] for r in rows),
        # parts of pooled_overhead, each relative to the estimated bits; they add up to it
        "header_overhead_pooled": header / est,
        "coder_overhead_pooled": (real - header) / est - 1.0,
        "header_share_of_excess": header / (real - est) if real > est else None,
        "per_image": rows,
    }
    keys = [k[: -len("_bits_estimated")] for k in rows[0] if k.endswith("_bits_estimated")] if rows else []
    for k in keys:
        if all(f"{k}_bits_estimated" in r for r in rows):
            e = sum(r[f"{k}_bits_estimated"] for r in rows)
            out[f"{k}_coder_overhead_pooled"] = sum(r[f"{k}_bits_real"] for r in rows) / e - 1.0 if e > 0 else None
    if rows and all("y_bits_estimated_table_scales" in r for r in rows):
        from compressai.entropy_models import GaussianConditional

        out["scale_table_levels"] = max(len(m.scale_table) for m in model.modules() if isinstance(m, GaussianConditional))
        y_est = sum(r["y_bits_estimated"] for r in rows)
        y_tab = sum(r["y_bits_estimated_table_scales"] for r in rows)
        out["scale_table_overhead_pooled"] = (y_tab - y_est) / est
        out["range_coder_overhead_pooled"] = out["coder_overhead_pooled"] - out["scale_table_overhead_pooled"]
    if fine_table_levels and out.get("scale_table_overhead_pooled") is not None:
        out["fine_table"] = _fine_table_bits(model, frames, fine_table_levels, est)
    return out


def _fine_table_bits(model, frames, levels: int, est_bits: float) -> dict[str, Any]:
    """Real bits of every frame with a ``levels``-entry scale table (what-if; the model is restored)."""
    from compressai.models.base import get_scale_table

    from vcm.evaluation.runners import LearnedImageRunner

    try:
        # same range as CompressAI's default table (0.11 .. 256), finer steps
        model.update(scale_table=get_scale_table(levels=levels), force=True)
        runner = LearnedImageRunner(model, name=model.codec_name, update=False)
        real = sum(8 * len(runner.encode(image)) for _, image in frames)
    finally:
        model.update(force=True)
    return {"levels": levels, "pooled_overhead": real / est_bits - 1.0}


# ---------------------------------------------------------------------------------------------- 3. training step
class _FixedBatches(torch.utils.data.Dataset):
    """The same batch ``n`` times (batch_size=None in the DataLoader: items are batches)."""

    def __init__(self, batch, n: int):
        self.batch = batch
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.batch


def _identity(x):
    return x


def _lightning_run(module, batch, steps: int, warmup: int) -> dict[str, list[float]]:
    """``steps`` training steps of ``module`` with a real Trainer; times of the steps after ``warmup``.

    Returns:
        ``step_s`` (wall time from ``on_train_batch_start`` to ``on_train_batch_end``), ``step_cpu_s``
        (process CPU time over the same span) and ``period_s`` (wall time from one batch start to the
        next, which adds the loop's own work between batches).
    """
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self):
            self.starts: list[tuple[float, float]] = []
            self.steps: list[float] = []
            self.cpu: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.starts.append((time.perf_counter(), time.process_time()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            t, c = time.perf_counter(), time.process_time()
            self.steps.append(t - self.starts[-1][0])
            self.cpu.append(c - self.starts[-1][1])

    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = torch.utils.data.DataLoader(_FixedBatches(batch, steps), batch_size=None, collate_fn=_identity)
    trainer.fit(module, train_dataloaders=loader)
    if len(timer.steps) != steps:
        raise RuntimeError(f"the Trainer ran {len(timer.steps)} steps, expected {steps}")
    periods = [b[0] - a[0] for a, b in itertools.pairwise(timer.starts)]
    return {"step_s": timer.steps[warmup:], "step_cpu_s": timer.cpu[warmup:], "period_s": periods[warmup:]}


def _plain_run(model, batch, steps: int, warmup: int, lmbda: float) -> dict[str, list[float]]:
    """The same work as ``CodecModule.training_step`` in a bare PyTorch loop (same keys as ``_lightning_run``)."""
    from vcm.codecs.base import net_aux_parameters, pad_image
    from vcm.losses.image import RateDistortionLoss

    images, _ = batch
    loss_fn = RateDistortionLoss(lmbda)
    net, aux = net_aux_parameters(model)
    opt = torch.optim.Adam(net, lr=1e-4)
    aux_opt = torch.optim.Adam(aux, lr=1e-3)
    model.train()
    starts, times, cpu = [], [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        starts.append(t0)
        x = images.float() / 255.0
        h, w = x.shape[-2:]
        x_pad, _ = pad_image(x, model.min_div)
        out = dict(model(x_pad))
        out["x_hat"] = out["x_hat"][..., :h, :w]
        loss = loss_fn(out, x, num_pixels=h * w)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net, 1.0)
        opt.step()
        aux_loss = model.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux_loss.backward()
        aux_opt.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    periods = [b - a for a, b in itertools.pairwise(starts)]
    return {"step_s": times[warmup:], "step_cpu_s": cpu[warmup:], "period_s": periods[warmup:]}


def bench_train_step(s: Settings, seed: int = 0) -> dict[str, Any]:
    """Time a Lightning training step against a plain loop on the same architecture and batch.

    Two runs per loop in A-B-B-A order (Lightning, plain, plain, Lightning); each run starts with
    warm-up steps that are not timed (Adam creates its state on the first step). Each loop has its own
    model built from the same seed, so both start from the same weights. The batch is fixed: random
    uint8 images [B,3,crop,crop] and targets without boxes.
    """
    from vcm.losses.image import RateDistortionLoss
    from vcm.modules.image_codec import ImageCodecModule

    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (s.step_batch, 3, s.step_crop, s.step_crop), generator=gen, dtype=torch.uint8)
    targets = [
        {"boxes": torch.zeros(0, 4), "ignore_boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        for _ in range(s.step_batch)
    ]
    batch = (images, targets)
    module = ImageCodecModule(
        codec=_hyperprior(s.step_nm, seed),
        loss=RateDistortionLoss(LMBDA_Q3),
        optimizer=partial(torch.optim.Adam, lr=1e-4),
        aux_optimizer=partial(torch.optim.Adam, lr=1e-3),
        clip_grad_norm=1.0,
    )
    plain_model = _hyperprior(s.step_nm, seed)
    first = s.step_steps - s.step_steps // 2
    runs = [("lightning", first, s.step_warmup), ("plain", first, s.step_warmup),
            ("plain", s.step_steps - first, 1), ("lightning", s.step_steps - first, 1)]
    raw: dict[str, list[float]] = {f"{p}_{k}": [] for p in ("lightning", "plain") for k in ("step_s", "step_cpu_s", "period_s")}
    for name, n, warm in runs:
        if n <= 0:
            continue
        gc.collect()
        if name == "lightning":
            got = _lightning_run(module, batch, n + warm, warm)
        else:
            got = _plain_run(plain_model, batch, n + warm, warm, LMBDA_Q3)
        for k, v in got.items():
            raw[f"{name}_{k}"] += v
    return {
        "model": _describe(module.codec, f"random init (seed {seed}), trained during the benchmark"),
        "batch": [s.step_batch, 3, s.step_crop, s.step_crop],
        "warmup_steps": s.step_warmup,
        "raw": raw,
        "median": {k: _median(v) for k, v in raw.items() if v},
        "ratio": _ratio(raw["lightning_step_s"], raw["plain_step_s"]),
        "cpu_ratio": _ratio(raw["lightning_step_cpu_s"], raw["plain_step_cpu_s"]),
        "period_ratio": (_ratio(raw["lightning_period_s"], raw["plain_period_s"])
                         if raw["plain_period_s"] and raw["lightning_period_s"] else None),
    }


# ---------------------------------------------------------------------------------------------- 4. anchors
def _time_runner(runner, image: torch.Tensor, repeats: int) -> dict[str, Any]:
    enc_t, dec_t = [], []
    data = b""
    for rnd in range(repeats + 1):
        gc.collect()
        t0 = time.perf_counter()
        data = runner.encode(image)
        t1 = time.perf_counter()
        decoded = runner.decode(data)
        t2 = time.perf_counter()
        if tuple(decoded.shape) != tuple(image.shape):
            raise RuntimeError(f"{runner.name} decoded {tuple(decoded.shape)} for a {tuple(image.shape)} image")
        if rnd > 0:
            enc_t.append(t1 - t0)
            dec_t.append(t2 - t1)
    h, w = image.shape[-2:]
    return {"raw_enc_s": enc_t, "raw_dec_s": dec_t, "bytes": len(data), "bpp": 8 * len(data) / (h * w)}


def bench_anchors(image: torch.Tensor, repeats: int, learned: list[dict], slow_anchors: bool = True) -> dict[str, Any]:
    """Encode / decode throughput of every image anchor and of the given learned codecs.

    Args:
        image: uint8 [3,H,W].
        repeats: timed rounds per codec after one warm-up round.
        learned: rows already measured for the learned codecs (``name``, ``params``, ``raw_enc_s``,
            ``raw_dec_s``, ``bytes``, ``bpp``, ``note``), or dicts with a ``runner`` to measure here.
        slow_anchors: include HEVC and AV1.

    Returns:
        ``rows`` (one per codec) and ``skipped`` (codec, reason).
    """
    from vcm.anchors import Av1Anchor, HevcAnchor, JpegAnchor, VtmAnchor, WebpAnchor
    from vcm.errors import CodecUnavailableError
    from vcm.evaluation.runners import AnchorImageRunner

    anchors: list[tuple[str, Callable[[], Any]]] = [
        ("jpeg", lambda: JpegAnchor(quality=75)),
        ("webp", lambda: WebpAnchor(quality=75)),
    ]
    if slow_anchors:
        anchors += [
            ("hevc (4:2:0)", lambda: HevcAnchor(qp=32, chroma="420")),
            ("hevc (4:4:4)", lambda: HevcAnchor(qp=32, chroma="444")),
            ("av1", lambda: Av1Anchor(qp=32)),
        ]
    rows, skipped = [], []
    for label, make in anchors:
        try:
            anchor = make()
            row = _time_runner(AnchorImageRunner(anchor), image, repeats)
        except (CodecUnavailableError, ImportError) as e:
            skipped.append({"codec": label, "reason": str(e)})
            continue
        rows.append({"codec": label, "params": dict(anchor.params), **row, "note": ""})
    vtm = VtmAnchor(qp=32)
    if vtm.available():
        rows.append({"codec": "vtm", "params": dict(vtm.params), **_time_runner(AnchorImageRunner(vtm), image, repeats), "note": ""})
    else:
        skipped.append({"codec": "vtm", "reason": "VTM binaries not configured (VTM_ENCODER / VTM_DECODER / VTM_CFG)"})
    for item in learned:
        if "runner" in item:
            runner = item["runner"]
            row = {"codec": item["codec"], "params": dict(item.get("params", {})), **_time_runner(runner, image, repeats),
                   "note": item.get("note", "")}
        else:
            row = dict(item)
        rows.append(row)
    for row in rows:
        row["enc_s"] = _median(row["raw_enc_s"])
        row["dec_s"] = _median(row["raw_dec_s"])
        row["enc_fps"] = 1.0 / row["enc_s"]
        row["dec_fps"] = 1.0 / row["dec_s"]
    return {"rows": rows, "skipped": skipped}


# ---------------------------------------------------------------------------------------------- report
def _verdict(value: float, goal: float) -> str:
    return "PASS" if value <= goal else "FAIL"


def summary_rows(result: dict) -> list[dict[str, Any]]:
    """One row per goal: what was measured, the value (and its CPU-time twin), the goal and PASS/FAIL."""
    rows = []
    if "codec" in result:
        c = result["codec"]
        for part in ("enc", "dec"):
            rows.append({"check": f"{part}ode time, vcm / CompressAI direct", "value": c[f"{part}_ratio"],
                         "cpu_value": c[f"{part}_cpu_ratio"], "goal": GOALS["codec"], "kind": "ratio"})
    if "bpp" in result:
        b = result["bpp"]
        rows.append({"check": "real / estimated bits - 1, mean per image", "value": b["mean_overhead"],
                     "goal": GOALS["bpp"], "kind": "percent"})
        rows.append({"check": "real / estimated bits - 1, pooled", "value": b["pooled_overhead"],
                     "goal": GOALS["bpp"], "kind": "percent"})
        rows.append({"check": "of which vcm's container header, pooled", "value": b["header_overhead_pooled"],
                     "goal": GOALS["bpp"], "kind": "percent"})
    if "train" in result:
        rows.append({"check": "training step, Lightning / plain PyTorch", "value": result["train"]["ratio"],
                     "cpu_value": result["train"]["cpu_ratio"], "goal": GOALS["train"], "kind": "ratio"})
    for r in rows:
        r["result"] = _verdict(r["value"], r["goal"])
    return rows


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f} %" if kind == "percent" else f"{value:.3f}"


def _goal(value: float, kind: str) -> str:
    return f"<= {100 * value:.0f} %" if kind == "percent" else f"<= {value:.2f}"


def render_markdown(result: dict) -> str:
    """The README-ready Markdown of a benchmark result."""
    env = result["environment"]
    lines = [
        "### Benchmarks",
        "",
        (
            f"Measured with `{result['command']}` ({result['created'][:10]}; {env['cpu_model']}, "
            f"{env['cpu_count']} cores shared with other jobs, torch {env['torch']} with {env['torch_threads']} "
            f"thread(s), CompressAI {env['compressai']}, Lightning {env['lightning']}). Ratios are medians of "
            "wall-clock times; the CPU-time column is the same ratio of process CPU times, which other jobs on "
            "the machine disturb less."
        ),
        "",
        "| check | measured | CPU-time ratio | goal | result |",
        "|---|---:|---:|---:|:---:|",
    ]
    for r in result["summary"]:
        lines.append(f"| {r['check']} | {_fmt(r['value'], r['kind'])} | {_fmt(r.get('cpu_value'), r['kind'])} | "
                     f"{_goal(r['goal'], r['kind'])} | {r['result']} |")
    lines.append("")
    if "codec" in result:
        c = result["codec"]
        m = c["model"]
        md = c["median"]
        lines += [
            (
                f"- Coding time: frame {c['frame']['name']} ({c['frame']['width']}x{c['frame']['height']}), "
                f"{m['codec']} N={m['N']} M={m['M']} ({m['weights']}); median of {c['repeats']} interleaved rounds "
                f"after a warm-up: vcm {md['vcm_enc_s']:.3f} s / {md['vcm_dec_s']:.3f} s, "
                f"CompressAI direct {md['direct_enc_s']:.3f} s / {md['direct_dec_s']:.3f} s (encode / decode); "
                f"identical strings: {c['same_strings']}, identical decoded image: {c['same_decoded_image']}."
            ),
        ]
    if "bpp" in result:
        b = result["bpp"]
        m = b["model"]
        t = b["training"]
        parts = [f"container header {b['mean_header_bytes']:.1f} bytes per image ({100 * b['header_overhead_pooled']:+.3f} %)"]
        if b.get("scale_table_overhead_pooled") is not None:
            parts.append(f"CompressAI's rounding of the predicted scales up to its {b['scale_table_levels']}-entry scale table "
                         f"{100 * b['scale_table_overhead_pooled']:+.3f} %")
            parts.append(f"range coder {100 * b['range_coder_overhead_pooled']:+.3f} %")
        else:
            parts.append(f"entropy coder {100 * b['coder_overhead_pooled']:+.3f} %")
        fine = b.get("fine_table")
        lines += [
            (
                f"- Real vs estimated bits: {m['codec']} N={m['N']} M={m['M']} trained here for {t['steps']} steps "
                f"({t['batch']} random {t['crop']}x{t['crop']} crops of the kitti_tiny training frames, Adam lr "
                f"{t['lr']:g}, lambda {t['lmbda']}; {m['weights'].split('; ', 1)[-1]}), on all {b['num_images']} "
                f"frames: mean bpp real {b['mean_bpp_real']:.4f}, estimated {b['mean_bpp_estimated']:.4f}. "
                f"The pooled excess {100 * b['pooled_overhead']:+.3f} % is: " + "; ".join(parts) + "."
                + (f" With a {fine['levels']}-entry scale table (same range{DEFAULT_TABLE_NOTE if fine['levels'] == 64 else ''}) the pooled excess is "
                   f"{100 * fine['pooled_overhead']:+.3f} %." if fine else "")
            ),
        ]
    if "train" in result:
        tr = result["train"]
        m = tr["model"]
        lines += [
            (
                f"- Training step: {m['codec']} N={m['N']} M={m['M']}, fixed batch {'x'.join(map(str, tr['batch']))}, "
                f"median of {len(tr['raw']['lightning_step_s'])} steps per loop (runs in A-B-B-A order, warm-up steps "
                f"excluded): Lightning {tr['median']['lightning_step_s']:.3f} s, plain {tr['median']['plain_step_s']:.3f} s"
                + (f"; batch-to-batch period ratio {tr['period_ratio']:.3f}." if tr.get("period_ratio") else ".")
            ),
        ]
    if "anchors" in result:
        a = result["anchors"]
        fr = a["frame"]
        lines += [
            "",
            (
                f"Throughput on {fr['name']} ({fr['width']}x{fr['height']}), median of {a['repeats']} runs after a "
                f"warm-up, one process, {env['torch_threads']} torch thread(s) (x265, SVT-AV1 and dav1d use their own "
                "threads):"
            ),
            "",
            "| codec | params | encode (frames/s) | decode (frames/s) | bpp | note |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in a["rows"]:
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if v is not None and k not in ("timeout", "extra_args"))
            lines.append(f"| {r['codec']} | {params} | {r['enc_fps']:.2f} | {r['dec_fps']:.2f} | {r['bpp']:.3f} | {r['note']} |")
        for sk in a["skipped"]:
            lines.append(f"| {sk['codec']} | | - | - | - | skipped: {sk['reason']} |")
    lines.append("")
    return "\n".join(lines)


def _print_summary(result: dict) -> None:
    print("\n=== vcm benchmark ===")
    print(f"  {'check':<45} {'measured':>10} {'(CPU time)':>11}   goal")
    for r in result["summary"]:
        cpu = f"({_fmt(r['cpu_value'], r['kind'])})" if r.get("cpu_value") is not None else ""
        print(f"  {r['check']:<45} {_fmt(r['value'], r['kind']):>10} {cpu:>11}   {_goal(r['goal'], r['kind']):<8} {r['result']}")
    if "anchors" in result:
        print("\n  codec            encode fps   decode fps      bpp")
        for r in result["anchors"]["rows"]:
            print(f"  {r['codec']:<16} {r['enc_fps']:>10.2f}   {r['dec_fps']:>10.2f}   {r['bpp']:>6.3f}")
        for sk in result["anchors"]["skipped"]:
            print(f"  {sk['codec']:<16} skipped: {sk['reason']}")


# ---------------------------------------------------------------------------------------------- main
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vcm.cli.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help=f"timed rounds of the coding benchmarks (default {FULL.repeats})")
    p.add_argument("--train-steps", type=int, default=None,
                   help=f"training steps before the real-vs-estimated bpp measurement (default {FULL.train_steps})")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds): for tests, not for numbers")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON to write; the Markdown goes to the same path with .md (default {DEFAULT_OUT})")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding kitti_tiny (default ../shared/data)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections to run, of {','.join(SECTIONS)}")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a machine shared with other jobs, several threads "
                        "per process make timings slow and erratic; 0 keeps torch's default)")
    a = p.parse_args(argv)
    if a.threads < 0:
        p.error(f"--threads must be >= 0, got {a.threads}")
    for name in ("repeats", "train_steps"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    bad = [x for x in only if x not in SECTIONS]
    if bad or not only:
        p.error(f"--only {a.only!r}: unknown section(s) {bad}; valid: {', '.join(SECTIONS)}")
    a.only = only
    return a


def run(a: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the selected sections and return the result dict (also what is written as JSON)."""
    s = QUICK if a.quick else FULL
    if a.repeats is not None:
        s = replace(s, repeats=a.repeats)
    if a.train_steps is not None:
        s = replace(s, train_steps=a.train_steps)
    result: dict[str, Any] = {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": bool(a.quick),
        "settings": asdict(s),
        "environment": _environment(),
    }
    t_start = time.perf_counter()
    frames = _kitti_images(a.data)
    by_name = dict(frames)
    if FRAME not in by_name:
        raise FileNotFoundError(f"kitti_tiny frame {FRAME} not found under {a.data}")
    image = by_name[FRAME]
    if tuple(image.shape[-2:]) != (375, 1242):
        raise ValueError(f"kitti_tiny frame {FRAME} is {tuple(image.shape[-2:])}, expected (375, 1242)")
    if s.frame_crop is not None:
        image = image[:, : s.frame_crop[0], : s.frame_crop[1]].contiguous()
    frame = {"name": FRAME, "height": int(image.shape[1]), "width": int(image.shape[2]),
             "cropped": s.frame_crop is not None}

    learned_rows: list[dict] = []
    if "codec" in a.only or "anchors" in a.only:
        hp = _hyperprior(s.codec_nm).eval()
        hp.update(force=True)  # once: both paths share these tables
    if "codec" in a.only:
        _say(f"1/4 codec path: vcm vs CompressAI direct ({s.repeats} rounds after a warm-up)")
        t0 = time.perf_counter()
        c = bench_codec(hp, image, s.repeats)
        c.update(model=_describe(hp, "random init (seed 0), untrained: y quantises to almost all zeros, so entropy "
                                     "coding is a small part of the time"),
                 frame=frame, repeats=s.repeats, goal=GOALS["codec"], seconds=time.perf_counter() - t0)
        result["codec"] = c
        learned_rows.append({"codec": "hyperprior", "params": {"quality": hp.quality, "N": hp.N, "M": hp.M},
                             "raw_enc_s": c["raw"]["vcm_enc_s"], "raw_dec_s": c["raw"]["vcm_dec_s"],
                             "bytes": c["bitstream_bytes"], "bpp": 8 * c["bitstream_bytes"] / (frame["height"] * frame["width"]),
                             "note": "random weights; vcm path, times of check 1"})
    if "bpp" in a.only:
        _say(f"2/4 real vs estimated bpp: training {s.train_steps} steps")
        t0 = time.perf_counter()
        model = _hyperprior(s.bpp_nm)
        train_ids = set(_train_frame_ids([n for n, _ in frames]))
        training = train_short(model, [img for n, img in frames if n in train_ids], s)
        model.update(force=True)
        measured = frames if s.bpp_frames is None else frames[: s.bpp_frames]
        b = bench_bpp(model, measured, fine_table_levels=s.fine_table_levels)
        size = ("quality 3's N, M" if s.bpp_nm is None else
                f"N={s.bpp_nm[0]}, M={s.bpp_nm[1]} instead of quality 3's 128, 192, so the training fits the budget")
        b.update(model=_describe(model, f"trained {s.train_steps} steps here; {size}"), training=training,
                 goal=GOALS["bpp"], seconds=time.perf_counter() - t0)
        result["bpp"] = b
    if "train" in a.only:
        _say("3/4 training step: Lightning vs plain loop")
        t0 = time.perf_counter()
        tr = bench_train_step(s)
        tr.update(goal=GOALS["train"], seconds=time.perf_counter() - t0)
        result["train"] = tr
    if "anchors" in a.only:
        _say("4/4 anchor throughput")
        from vcm.evaluation.runners import LearnedImageRunner

        t0 = time.perf_counter()
        if "codec" not in a.only:
            learned_rows.append({"codec": "hyperprior", "params": {"quality": hp.quality, "N": hp.N, "M": hp.M},
                                 "runner": LearnedImageRunner(hp, update=False), "note": "random weights; vcm path"})
        fact = _factorized(s.codec_nm).eval()
        learned_rows.append({"codec": "factorized", "params": {"quality": fact.quality, "N": fact.N, "M": fact.M},
                             "runner": LearnedImageRunner(fact), "note": "random weights; vcm path"})
        an = bench_anchors(image, s.repeats, learned_rows, slow_anchors=s.anchors)
        an.update(frame=frame, repeats=s.repeats, seconds=time.perf_counter() - t0)
        result["anchors"] = an
    result["summary"] = summary_rows(result)
    result["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["seconds"] = time.perf_counter() - t_start
    return result


def _say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vcm.cli.bench``; returns the exit code."""
    a = _parse(argv)
    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    import lightning  # noqa: F401 - it sets its loggers' levels on import; quieten them afterwards

    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in quiet]
    command = shlex.join(["python", "-m", "vcm.cli.bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        for lg in quiet:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            for pattern in (".*does not have many workers.*", ".*torch.jit.script.*", ".*no `val_dataloader`.*",
                            ".*LeafSpec.*"):
                warnings.filterwarnings("ignore", message=pattern)
            result = run(a, command)
    except (FileNotFoundError, ValueError) as e:
        print(f"vcm bench: error: {e}", file=sys.stderr)
        return 2
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
        torch.set_num_threads(threads)
    out = Path(a.out)
    md = out.with_suffix(".md")
    atomic_write_json(out, result)
    atomic_write_text(md, render_markdown(result))
    _print_summary(result)
    print(f"\nwrote {out} and {md} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
