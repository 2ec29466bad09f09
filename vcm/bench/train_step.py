"""Benchmark 3: a training step through Lightning against a plain PyTorch loop."""
from __future__ import annotations

import contextlib
import gc
import itertools
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from vcm.bench.common import (
    LMBDA_Q3,
    Settings,
    _describe,
    _hyperprior,
    _median,
    _ratio,
    plain_step,
)


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


def _lightning_run(module, batch, steps: int, warmup: int, precision: str = "32-true") -> dict[str, list[float]]:
    """``steps`` training steps of ``module`` with a real Trainer; times of the steps after ``warmup``.

    ``precision`` is the Trainer's (``32-true`` or ``bf16-mixed``); channels-last is the module's own
    switch (``CodecModule.channels_last``).

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
        precision=precision,
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


PRECISIONS = ("32-true", "bf16-mixed")


def _plain_run(model, batch, steps: int, warmup: int, lmbda: float, precision: str = "32-true",
               channels_last: bool = False) -> dict[str, list[float]]:
    """The same work as ``CodecModule.training_step`` in a bare PyTorch loop (same keys as ``_lightning_run``).

    ``precision="bf16-mixed"`` runs each step under ``torch.autocast("cpu", dtype=torch.bfloat16)``
    as Lightning's plugin does; the entropy models are vcm's fp32 ones in both loops
    (:func:`~vcm.codecs.precision.use_fp32_entropy_models`, which ``CodecModule`` applies).
    ``channels_last`` puts the weights and the batch in channels-last layout, as the module's switch.
    """
    from vcm.codecs.base import net_aux_parameters, pad_image
    from vcm.codecs.precision import use_fp32_entropy_models
    from vcm.losses.image import RateDistortionLoss

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {', '.join(PRECISIONS)}")
    images, _ = batch
    layout = torch.channels_last if channels_last else torch.contiguous_format
    use_fp32_entropy_models(model).to(memory_format=layout)
    loss_fn = RateDistortionLoss(lmbda)
    net, aux = net_aux_parameters(model)
    opt = torch.optim.Adam(net, lr=1e-4)
    aux_opt = torch.optim.Adam(aux, lr=1e-3)
    model.train()
    starts, times, cpu = [], [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        starts.append(t0)
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed"
                    else contextlib.nullcontext())
        with autocast:
            x = (images.float() / 255.0).contiguous(memory_format=layout)
            h, w = x.shape[-2:]
            x_pad, _ = pad_image(x, model.min_div)
            out = dict(model(x_pad))
            out["x_hat"] = out["x_hat"][..., :h, :w]
            plain_step(model, loss_fn(out, x, num_pixels=h * w)["loss"], net, opt, aux_opt)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    periods = [b - a for a, b in itertools.pairwise(starts)]
    return {"step_s": times[warmup:], "step_cpu_s": cpu[warmup:], "period_s": periods[warmup:]}


def _abba(runs: dict[str, Callable[[int, int], dict[str, list[float]]]], steps: int | dict[str, int],
          warmup: int | dict[str, int]) -> dict[str, list[float]]:
    """Time two loops pair-wise in A-B-B-A order, each loop's timed steps split over its two runs.

    Args:
        runs: ``{"a": run_a, "b": run_b}`` (in that order); ``run(n, warm)`` does ``n`` steps and returns
            the times of the last ``n - warm`` per key (as :func:`_lightning_run` does).
        steps: timed steps per loop (or per loop name); the first run of a loop times
            ``steps - steps // 2`` of them, the second one the rest.
        warmup: untimed steps at the start of the first run of each loop (or per loop name); 1 in the
            second runs (a new Trainer or optimiser creates its state again).

    Returns:
        ``{"<name>_<key>": [seconds, ...]}`` for both loops and every key their runs return.
    """
    (a, run_a), (b, run_b) = runs.items()
    n_of = steps if isinstance(steps, dict) else {a: steps, b: steps}
    warm_of = warmup if isinstance(warmup, dict) else {a: warmup, b: warmup}
    first = {k: n - n // 2 for k, n in n_of.items()}
    order = [(a, run_a, first[a], warm_of[a]), (b, run_b, first[b], warm_of[b]),
             (b, run_b, n_of[b] - first[b], 1), (a, run_a, n_of[a] - first[a], 1)]
    raw: dict[str, list[float]] = {}
    for name, run, n, warm in order:
        if n <= 0:
            continue
        gc.collect()
        for k, v in run(n + warm, warm).items():
            raw.setdefault(f"{name}_{k}", []).extend(v)
    return raw


def _image_module(codec, channels_last: bool = False):
    """The ``ImageCodecModule`` of the training benchmarks: the optimisation :func:`_plain_run` repeats."""
    from vcm.losses.image import RateDistortionLoss
    from vcm.modules.image_codec import ImageCodecModule

    return ImageCodecModule(
        codec=codec,
        loss=RateDistortionLoss(LMBDA_Q3),
        optimizer=partial(torch.optim.Adam, lr=1e-4),
        aux_optimizer=partial(torch.optim.Adam, lr=1e-3),
        clip_grad_norm=1.0,
        channels_last=channels_last,
    )


def bench_train_step(s: Settings, seed: int = 0) -> dict[str, Any]:
    """Time a Lightning training step against a plain loop on the same architecture and batch.

    Two runs per loop in A-B-B-A order (Lightning, plain, plain, Lightning); each run starts with
    warm-up steps that are not timed (Adam creates its state on the first step). Each loop has its own
    model built from the same seed, so both start from the same weights. The batch is fixed: random
    uint8 images [B,3,crop,crop] and targets without boxes.
    """
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (s.step_batch, 3, s.step_crop, s.step_crop), generator=gen, dtype=torch.uint8)
    targets = [
        {"boxes": torch.zeros(0, 4), "ignore_boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        for _ in range(s.step_batch)
    ]
    batch = (images, targets)
    module = _image_module(_hyperprior(s.step_nm, seed))
    plain_model = _hyperprior(s.step_nm, seed)
    raw = _abba({"lightning": lambda n, warm: _lightning_run(module, batch, n, warm),
                 "plain": lambda n, warm: _plain_run(plain_model, batch, n, warm, LMBDA_Q3)},
                s.step_steps, s.step_warmup)
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
