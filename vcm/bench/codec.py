"""Benchmark 1: vcm's coding path against the same CompressAI model called directly."""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch

from vcm.bench.common import _median, _ratio


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
