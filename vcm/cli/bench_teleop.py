"""``make bench-teleop``: kitti_mini as a teleoperation stream over a fixed link.

The frames, in frame-id order, are sent one by one over a link of a fixed per-frame budget (default
1 Mbit/s and 0.5 Mbit/s at 10 fps: 12500 and 6250 bytes per frame). Three encoders, each given the
same budget per frame as a hard cap:

* ``zoo_roi``: the shipped detector (``kitti_mobilenet_v2``, score >= 0.5) finds the ROI boxes at the
  encoder; ROI gain coding on the zoo hyperpriors with per-frame rate control
  (:func:`vcm.codecs.rate_control.encode_to_size`, target = cap = the budget, ladder q5 -> q3 -> q1),
  warm-started from the previous frame's g_bg and model (one model up is tried when a frame stays
  under the target);
* ``x265_roi``: hevc444_roi (x265 with ROI QP offsets, -10 on the detector's boxes), per frame the
  lowest QP whose file fits the budget, found by a bisection over QP started at the previous frame's
  QP (:func:`lowest_fitting_qp`);
* ``x265``: hevc444 (no ROI), the same QP search.

Per frame: bytes, PSNR, ROI-PSNR, background PSNR (vcm's ROI rule), encoder latency (detector +
rate control / QP search + coding); over the stream: mAP@0.5 of the shipped detector on the decoded
frames (ground truth: the KITTI labels). Written to ``--out``: ``frames.csv``, ``summary.json``,
``stream.png`` (bytes and ROI-PSNR over the stream) and the markdown tables printed at the end.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vcm.utils.config import PROJECT_ROOT

LINKS = (12500, 6250)  # bytes per frame: 1 Mbit/s and 0.5 Mbit/s at 10 fps
LADDER = ("hyperprior-kitti-q5", "hyperprior-kitti-q3", "hyperprior-kitti-q1")
CODECS = ("zoo_roi", "x265_roi", "x265")
EMPTY_PREDS: dict = {}
QP_RANGE = (12, 51)
DEFAULT_FRAMES = 20
#: the background gain rate control may fall to when a frame does not fit at the usual floor (0.3)
FALLBACK_G_BG_FLOOR = 0.05


def lowest_fitting_qp(size_of: Callable[[int], bytes], budget: int, lo: int = QP_RANGE[0], hi: int = QP_RANGE[1],
                      start: int | None = None) -> tuple[int, bytes, int]:
    """The lowest QP in ``[lo, hi]`` whose file fits ``budget`` bytes (sizes fall as the QP rises).

    A bracket is grown from ``start`` (e.g. the previous frame's QP) in steps of 2, 4, 8, ..., then
    bisected. When not even ``hi`` fits, ``hi`` is returned (its file is larger than the budget).

    Args:
        size_of: codes the frame at a QP and returns the file.
        budget: the most bytes a file may have.
        lo, hi: the QP range.
        start: the first QP tried (default: the middle of the range).

    Returns:
        (qp, file, number of codings tried).
    """
    if lo > hi:
        raise ValueError(f"empty QP range [{lo}, {hi}]")
    files: dict[int, bytes] = {}

    def fits(qp: int) -> bool:
        if qp not in files:
            files[qp] = size_of(qp)
        return len(files[qp]) <= budget

    qp = min(max(lo + (hi - lo) // 2 if start is None else int(start), lo), hi)
    step = 2
    if fits(qp):  # fits: look lower for one that does not
        good, bad = qp, None
        while good > lo:
            cand = max(good - step, lo)
            if fits(cand):
                good = cand
                step *= 2
            else:
                bad = cand
                break
        if bad is None:
            return good, files[good], len(files)
    else:  # does not fit: look higher for one that does
        bad, good = qp, None
        while bad < hi:
            cand = min(bad + step, hi)
            if fits(cand):
                good = cand
                break
            bad = cand
            step *= 2
        if good is None:
            return hi, files[hi], len(files)
    while good - bad > 1:  # bad < good: bad does not fit, good does
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good, files[good], len(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_teleop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "outputs" / "bench-teleop")
    ap.add_argument("--links", type=int, nargs="+", default=list(LINKS), help="per-frame budgets in bytes")
    ap.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                    help=f"the first N frames of the stream (default {DEFAULT_FRAMES}: what fits 20 min on 2 shared cores, "
                         "docs/results/bench-teleop.md); 0 = all 82")
    ap.add_argument("--ladder", nargs="+", default=list(LADDER), help="zoo models, highest rate first")
    ap.add_argument("--g-roi", type=float, default=2.0)
    ap.add_argument("--g-bg", type=float, default=0.5, help="the first frame's first background gain")
    ap.add_argument("--roi-qp-offset", type=int, default=-10, help="x265 ROI QP offset on the boxes")
    ap.add_argument("--codecs", nargs="+", choices=CODECS, default=list(CODECS))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    a = ap.parse_args(argv)
    a.frames = a.frames or None
    if any(b < 1 for b in a.links):
        ap.error(f"--links {a.links}: budgets must be positive")
    plan = (f"bench-teleop: kitti_mini frames in id order{'' if a.frames is None else f' (first {a.frames})'}, links "
            f"{a.links} bytes/frame, codecs {a.codecs}, ladder {a.ladder}, out {a.out}")
    print(plan, flush=True)
    if a.dry_run:
        return 0
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    return run(a)


def run(a) -> int:
    import torch

    from vcm.anchors.hevc import HevcAnchor
    from vcm.anchors.hevc_roi import HevcRoiAnchor
    from vcm.bench.roi_common import detect, detector_boxes, load_detector, load_frames
    from vcm.codecs.base import weights_hash
    from vcm.codecs.checkpoint import load_codec_checkpoint
    from vcm.codecs.container import decode_image
    from vcm.codecs.rate_control import RateControlError, encode_to_size
    from vcm.evaluation.pipeline import MetricAccumulator, image_quality
    from vcm.evaluation.runners import to_float_batch, to_uint8

    t_start = time.perf_counter()
    global EMPTY_PREDS
    EMPTY_PREDS = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    frames, dm, cfg = load_frames(["all_ids"])
    if a.frames is not None:
        frames = frames[: a.frames]
    detector = load_detector(cfg)
    models = []
    for name in a.ladder:
        m = load_codec_checkpoint(f"zoo:{name}")[0].eval()
        models.append(m)
    from vcm.codecs.base import ensure_tables

    for m in models:
        ensure_tables(m)
    hashes = {weights_hash(m): i for i, m in enumerate(models)}
    a.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    acc = {(c, b): MetricAccumulator(dm.class_names) for c in a.codecs for b in a.links}
    state = {b: {"g_bg": a.g_bg, "model": 0, "qp": {"x265": None, "x265_roi": None}} for b in a.links}
    for n, (image, target) in enumerate(frames):
        name = str(target.get("name"))
        h, w = image.shape[-2:]
        boxes, det_s = detector_boxes(detector, image)
        x = to_float_batch(image)
        for budget in a.links:
            st = state[budget]
            for codec in a.codecs:
                row = {"frame": name, "index": n, "link_bytes": budget, "codec": codec, "roi_boxes": int(boxes.shape[0]),
                       "detector_s": det_s}
                t0 = time.perf_counter()
                if codec == "zoo_roi":
                    k, over = st["model"], False
                    try:
                        r = encode_to_size(models[k:], x, boxes, budget, max_bytes=budget, g_roi=a.g_roi,
                                           g_bg_start=st["g_bg"])
                        passes, idx = r.passes, k + r.model_index
                        if k > 0 and not r.on_target and len(r.data) < budget * 0.95:  # room: one model up
                            r2 = encode_to_size(models[k - 1:], x, boxes, budget, max_bytes=budget, g_roi=a.g_roi,
                                                g_bg_start=st["g_bg"])
                            passes += r2.passes
                            if len(r2.data) > len(r.data):
                                r, idx = r2, k - 1 + r2.model_index
                    except RateControlError:
                        # not even the last model at the g_bg floor fits: the background goes lower (it
                        # breaks up below ~0.3, but the frame is sent), then the frame is dropped
                        try:
                            r = encode_to_size(models[-1:], x, boxes, budget, max_bytes=budget, g_roi=a.g_roi,
                                               g_bg_start=0.3, g_bg_floor=FALLBACK_G_BG_FLOOR)
                            passes, idx, row["fallback"] = r.passes, len(models) - 1, True
                        except RateControlError:
                            rows.append({**row, "bytes": 0, "dropped": True, "over_cap": False,
                                         "enc_s": time.perf_counter() - t0})
                            acc[(codec, budget)].add({"name": name}, EMPTY_PREDS, target)  # nothing detected
                            continue
                    data = r.data
                    st["g_bg"], st["model"] = r.roi.g_bg, idx
                    row.update(passes=passes, model=a.ladder[idx], g_roi=r.roi.g_roi, g_bg=r.roi.g_bg,
                               on_target=bool(r.on_target))
                    enc_s = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    from vcm.codecs.container import unpack

                    decoded = to_uint8(decode_image(models[hashes[unpack(data).weights_hash]], data))
                else:
                    def code(qp: int, codec=codec, image=image, boxes=boxes):
                        if codec == "x265_roi":
                            return HevcRoiAnchor(qp=qp, roi_qp_offset=a.roi_qp_offset, roi="detector").encode(image, boxes)
                        return HevcAnchor(qp=qp, chroma="444", bit_depth=10).encode(image)

                    qp, data, tries = lowest_fitting_qp(code, budget, start=st["qp"][codec])
                    st["qp"][codec] = qp
                    over = len(data) > budget
                    row.update(passes=tries, qp=qp)
                    enc_s = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    anchor = HevcRoiAnchor() if codec == "x265_roi" else HevcAnchor(chroma="444", bit_depth=10)
                    decoded = torch.from_numpy(anchor.decode(data)).permute(2, 0, 1).contiguous()
                dec_s = time.perf_counter() - t1
                q = image_quality(image, decoded, target)
                preds = detect(detector, decoded)
                m = {"name": name, "bpp_real": 8.0 * len(data) / (h * w), **q}
                acc[(codec, budget)].add(m, preds, target)
                # the encoder's latency: its detector (x265 without ROI runs none) + search + coding
                latency = enc_s + (det_s if codec != "x265" else 0.0)
                row.update(bytes=len(data), over_cap=over, enc_s=enc_s, latency_s=latency, dec_s=dec_s,
                           psnr=q["psnr"], roi_psnr=q.get("roi_psnr"), bg_psnr=q.get("bg_psnr"),
                           roi_fraction=q.get("roi_fraction"))
                rows.append(row)
        zr = [r for r in rows if r["index"] == n and r["codec"] == "zoo_roi"]
        print(f"[{n + 1}/{len(frames)}] {name} boxes {int(boxes.shape[0])} det {det_s:.2f}s " + " ".join(
            f"{r['link_bytes']}B:{r.get('bytes')}B/{r.get('roi_psnr', float('nan')):.2f}dB" for r in zr)
              + f"  ({time.perf_counter() - t_start:.0f}s)", flush=True)
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(a.out / "frames.csv", index=False)
    summary = summarise(df, {k: v.compute() for k, v in acc.items()}, a)
    summary["runtime_s"] = time.perf_counter() - t_start
    summary["frames"] = len(frames)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    plot_stream(df, a.out / "stream.png")
    print(tables(summary), flush=True)
    print(f"\nbench-teleop: {len(frames)} frames in {summary['runtime_s'] / 60:.1f} min; {a.out}", flush=True)
    return 0


def summarise(df, det_metrics: dict, a) -> dict:
    """Per link and codec: means over the stream, the cap, latency and mAP@0.5."""
    out = {"links": {}}
    for budget in a.links:
        per = {}
        for codec in a.codecs:
            d = df[(df["link_bytes"] == budget) & (df["codec"] == codec)]
            roi = d["roi_psnr"].dropna()
            per[codec] = {
                "mean_bytes": float(d["bytes"].mean()), "max_bytes": float(d["bytes"].max()),
                "frames_over_cap": int(d["over_cap"].sum()), "psnr": float(d["psnr"].mean()),
                "roi_psnr": float(roi.mean()) if len(roi) else math.nan, "bg_psnr": float(d["bg_psnr"].mean()),
                "map_50": float(det_metrics[(codec, budget)].get("map_50", math.nan)),
                "latency_mean_s": float(d["latency_s"].mean()), "latency_p95_s": float(d["latency_s"].quantile(0.95)),
                "detector_s": float(d["detector_s"].mean()) if codec != "x265" else 0.0,
                "passes": float(d["passes"].mean()), "dec_s": float(d["dec_s"].mean()),
            }
            per[codec]["dropped"] = int(d["dropped"].fillna(False).astype(bool).sum()) if "dropped" in d else 0
            d = d[d["bytes"] > 0]  # sent frames
            per[codec]["roi_psnr"] = float(d["roi_psnr"].dropna().mean())
            if codec == "zoo_roi":
                per[codec]["fallback"] = int(d["fallback"].fillna(False).astype(bool).sum()) if "fallback" in d else 0
                per[codec]["on_target"] = float(d["on_target"].mean())
                per[codec]["models"] = {k: int(v) for k, v in d["model"].value_counts().items()}
            else:
                per[codec]["qp_mean"] = float(d["qp"].mean())
        out["links"][str(budget)] = per
    return out


def tables(summary: dict) -> str:
    """The markdown tables of ``summary``."""
    head = ("| link (B/frame) | codec | mean bytes | max bytes | frames over cap | PSNR | ROI-PSNR | background PSNR "
            "| mAP@0.5 | latency mean / p95 (s) | passes |")
    lines = ["", head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for budget, per in summary["links"].items():
        for codec, s in per.items():
            lines.append(f"| {budget} | {codec} | {s['mean_bytes']:.0f} | {s['max_bytes']:.0f} | {s['frames_over_cap']} | "
                         f"{s['psnr']:.2f} | {s['roi_psnr']:.2f} | {s['bg_psnr']:.2f} | {s['map_50']:.3f} | "
                         f"{s['latency_mean_s']:.2f} / {s['latency_p95_s']:.2f} | {s['passes']:.1f} |")
    return "\n".join(lines)


def plot_stream(df, path: Path) -> None:
    """Bytes and ROI-PSNR per frame over the stream, one panel pair per link."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = sorted(df["link_bytes"].unique(), reverse=True)
    fig, axes = plt.subplots(2, len(links), figsize=(6 * len(links), 6), sharex=True, squeeze=False)
    for j, budget in enumerate(links):
        for codec, d in df[df["link_bytes"] == budget].groupby("codec"):
            axes[0, j].plot(d["index"], d["bytes"], label=codec, lw=1)
            axes[1, j].plot(d["index"], d["roi_psnr"], label=codec, lw=1)
        axes[0, j].axhline(budget, color="k", ls="--", lw=0.8, label="budget")
        axes[0, j].set_title(f"{budget} B/frame ({budget * 80 / 1e6:g} Mbit/s at 10 fps)")
        axes[0, j].set_ylabel("bytes")
        axes[1, j].set_ylabel("ROI-PSNR (dB)")
        axes[1, j].set_xlabel("frame (kitti_mini, id order)")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"stream plot: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
