"""Benchmark 4: encode / decode frames per second of every image anchor and the learned codecs."""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch

from vcm.bench.common import _median


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
