"""Benchmark 2: real bits against the entropy model's estimate, and where the excess comes from."""
from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from vcm.bench.common import LMBDA_Q3, Settings, plain_step


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
        aux_loss = plain_step(model, out["loss"], net, opt, aux_opt)
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
