"""Speed and overhead benchmarks of vcm, measured side by side in one run on this machine.

    python -m vcm.cli.bench                      # what ``make bench`` runs (about 10-15 min on 2 CPU cores)
    python -m vcm.cli.bench --quick --out /tmp/b/bench.json   # tiny settings, well under a minute
    python -m vcm.cli.bench --only precision     # one section
    python -m vcm.cli.bench parity               # ``make bench-parity``: bf16-mixed vs fp32 training, 2 x 2,000 steps

Five measurements, each a ratio against the same work done without vcm (or a table, or another setting):

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
5. ``precision`` (:mod:`vcm.bench.precision`): the fast training settings, ``trainer.precision=bf16-mixed``
   with ``model.channels_last=true``, against fp32, on kitti_mini training data through a real Trainer: the
   training step of the hyperprior (quality 3, batch 8 x 256 x 256; goal: ratio <= 0.50), of the detector
   (mobilenet_v2_fpn, 2 full frames) and of L-MSFC (quality 1, on the frozen detector's features of 2
   256-px crops), the last two reported; the fast step through Lightning against a plain PyTorch loop
   with the same settings (goal <= 1.05); the training loader's batches/s (cached frames, the configured
   workers) against fast training steps/s (goal >= 3: the loader is never the bottleneck).

``parity`` (:mod:`vcm.cli.bench_parity`) is a separate command: the same hyperprior trained twice, bf16-mixed +
channels-last and fp32, then coded with real bitstreams on the kitti_mini validation frames (goals: PSNR
within 0.1 dB, bpp within 2 %). ``python -m vcm.cli.bench parity --help`` lists its options.

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
import logging
import os
import shlex
import sys
import time
import warnings
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from vcm.bench.anchors import bench_anchors
from vcm.bench.bpp import bench_bpp, train_short
from vcm.bench.codec import bench_codec
from vcm.bench.common import (
    AT_LEAST,
    DEFAULT_DATA,
    DEFAULT_OUT,
    FRAME,
    FULL,
    GOALS,
    QUICK,
    SECTIONS,
    _describe,
    _environment,
    _factorized,
    _hyperprior,
    _kitti_images,
    _train_frame_ids,
)
from vcm.bench.precision import bench_precision
from vcm.bench.report import print_summary, render_markdown, summary_rows
from vcm.bench.train_step import bench_train_step
from vcm.utils.io import atomic_write_json, atomic_write_text


# ---------------------------------------------------------------------------------------------- main
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vcm.cli.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help=f"timed rounds of the coding benchmarks (default {FULL.repeats})")
    p.add_argument("--train-steps", type=int, default=None,
                   help=f"training steps before the real-vs-estimated bpp measurement (default {FULL.train_steps})")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds): for tests, not for numbers")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON to write; the Markdown goes to the same path with .md (default {DEFAULT_OUT})")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder holding kitti_tiny (and kitti_mini, for the precision section) (default ../shared/data)")
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
    if {"codec", "bpp", "anchors"} & set(a.only):
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
        _say(f"1/5 codec path: vcm vs CompressAI direct ({s.repeats} rounds after a warm-up)")
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
        _say(f"2/5 real vs estimated bpp: training {s.train_steps} steps")
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
        _say("3/5 training step: Lightning vs plain loop")
        t0 = time.perf_counter()
        tr = bench_train_step(s)
        tr.update(goal=GOALS["train"], seconds=time.perf_counter() - t0)
        result["train"] = tr
    if "anchors" in a.only:
        _say("4/5 anchor throughput")
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
    if "precision" in a.only:
        _say("5/5 fast training settings: bf16-mixed + channels-last vs fp32, Lightning vs plain, loader vs step")
        t0 = time.perf_counter()
        pr = bench_precision(s, a.data, say=_say)
        pr.update(goals={k: {"value": GOALS[k], "at_least": k in AT_LEAST} for k in ("precision", "precision_lightning", "loader")},
                  seconds=time.perf_counter() - t0)
        result["precision"] = pr
    result["summary"] = summary_rows(result)
    result["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["seconds"] = time.perf_counter() - t_start
    return result


def _say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vcm.cli.bench``; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["parity"]:
        from vcm.cli.bench_parity import main as parity_main

        return parity_main(args[1:])
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
    print_summary(result)
    print(f"\nwrote {out} and {md} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
