"""``make bench-roi``: ROI coding by a gain map on the zoo hyperpriors, on real KITTI frames.

No training: the shipped ``hyperprior-kitti-q*`` code with a per-cell gain on the latent before
rounding (:mod:`vcm.codecs.roi_gain`, ``codec=zoo_roi``). Measured on the kitti_mini val + test
frames (20) by real bitstreams, one results record per point, as ``vcm-eval`` writes them:

* ``hyperprior/zoo``: the plain zoo models (``codec=zoo``);
* ``hyperprior/zoo-uniform``: the same gain everywhere (``codec=zoo_roi codec.roi=none``; g_bg = 1 is
  the plain model plus the side information), the control;
* ``hyperprior/zoo-roi-labels`` / ``zoo-roi-detector``: the (g_roi, g_bg) grid with the ground-truth
  boxes, or the boxes the shipped detector (``kitti_mobilenet_v2``, score >= 0.5) finds at the encoder;
* ``hevc444`` and ``hevc444_roi/roi-labels`` / ``roi-detector``: x265 4:4:4 at the QPs, without and with
  ROI QP offsets on the same boxes.

Each curve's BD-rate is taken over its Pareto front (``vcm-rd bd --pareto``: the chain keeps the
non-dominated points of a curve with many points per rate), with the bootstrap 95 % interval over the
frames (``--ci 0.95``), on ROI-PSNR, background PSNR, PSNR and mAP@0.5 (mAP is not a mean of
per-image values: no interval). Also: the (g_roi, g_bg) trade-off plot, rate control accuracy at the
targets (hard cap = target, ladder q5 -> q3 -> q1, detector boxes) and the time per frame split into
detector, analysis, search, coding and decoding. The detector runs once per frame at the encoder;
its boxes and time (``roi_s``) go into every point's records. A re-run keeps the points whose
records exist.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from vcm.studies import load_study
from vcm.utils.config import PROJECT_ROOT

PRESET = "bench_roi"
LEARNED = "gain_hyperprior"  # the learned ROI codec's curves: gain_hyperprior/roi-labels, roi-detector, uniform
CURVES = ("zoo", "zoo-uniform", "zoo-roi-labels", "zoo-roi-detector", "hevc444", "hevc444_roi-labels",
          "hevc444_roi-detector", "learned-uniform", "learned-roi-labels", "learned-roi-detector")


def points(o: dict, only: list[str] | None = None) -> list[dict]:
    """Every RD point of the bench: its curve kind, run name and the codec overrides (``vcm-eval`` style)."""
    out = []

    def add(kind: str, run: str, codec: list[str]) -> None:
        if not only or kind in only:
            out.append({"kind": kind, "run": run, "codec": codec})

    for name in o["plain"]:
        add("zoo", f"zoo_{name}", ["codec=zoo", f"codec.name={name}"])
    for name in o["gain_models"]:
        for gb in o["uniform_g_bg"]:
            add("zoo-uniform", f"uniform_{name}_bg{gb:g}",
                ["codec=zoo_roi", f"codec.name={name}", "codec.roi=none", "codec.g_roi=1.0", f"codec.g_bg={gb}"])
        for roi in ("labels", "detector"):
            for gr in o["g_roi"]:
                for gb in o["g_bg"]:
                    add(f"zoo-roi-{roi}", f"roi-{roi}_{name}_r{gr:g}_bg{gb:g}",
                        ["codec=zoo_roi", f"codec.name={name}", f"codec.roi={roi}", f"codec.g_roi={gr}",
                         f"codec.g_bg={gb}"])
    learned = o.get("learned")
    if learned:  # the learned ROI codec (one variable-rate model): codec=checkpoint_roi
        tag = learned_tag(str(learned))
        for gb in o["learned_uniform"]:
            add("learned-uniform", f"learned-uniform_{tag}_g{gb:g}",
                ["codec=checkpoint_roi", f"codec.ckpt={learned}", "codec.roi=none", f"codec.g_roi={gb}",
                 f"codec.g_bg={gb}"])
        for roi in ("labels", "detector"):
            for gr, gb in o["learned_gains"]:
                add(f"learned-roi-{roi}", f"learned-roi-{roi}_{tag}_r{gr:g}_bg{gb:g}",
                    ["codec=checkpoint_roi", f"codec.ckpt={learned}", f"codec.roi={roi}", f"codec.g_roi={gr}",
                     f"codec.g_bg={gb}"])
    for qp in o["qps"]:
        add("hevc444", f"hevc444_qp{qp}", ["codec=hevc444", f"codec.qp={qp}"])
        for roi in ("labels", "detector"):
            add(f"hevc444_roi-{roi}", f"hevc444_roi-{roi}_qp{qp}", ["codec=hevc444_roi", f"codec.qp={qp}",
                                                                    f"codec.roi={roi}"])
    return out


def learned_tag(spec: str) -> str:
    """A short name for the learned codec in run names: the zoo name, a checkpoint's run folder
    (``<run>/checkpoints/<file>.ckpt``), or the file's stem."""
    if spec.startswith("zoo:"):
        return spec[4:]
    path = Path(spec)
    return path.parents[1].name if path.parent.name == "checkpoints" and len(path.parents) > 1 else path.stem


def main(argv: list[str] | None = None) -> int:
    o = load_study(PRESET, "options")
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_roi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "outputs" / "bench-roi")
    ap.add_argument("--splits", nargs="+", default=o["splits"], choices=("val", "test"))
    ap.add_argument("--frames", type=int, default=None, help="only the first N frames (a smoke run)")
    ap.add_argument("--only", nargs="+", choices=CURVES, help="measure only these curves")
    ap.add_argument("--gain-models", nargs="+", default=o["gain_models"])
    ap.add_argument("--plain", nargs="+", default=o["plain"])
    ap.add_argument("--uniform-g-bg", type=float, nargs="+", default=o["uniform_g_bg"])
    ap.add_argument("--g-roi", type=float, nargs="+", default=o["g_roi"])
    ap.add_argument("--g-bg", type=float, nargs="+", default=o["g_bg"])
    ap.add_argument("--qps", type=int, nargs="+", default=o["qps"])
    ap.add_argument("--learned", default=o.get("learned"),
                    help="the learned ROI codec (a checkpoint or zoo:<name>) measured beside the training-free gain")
    ap.add_argument("--targets", type=float, nargs="*", default=o["targets_bpp"], help="rate-control targets (bpp)")
    ap.add_argument("--ladder", nargs="+", default=o["ladder"])
    ap.add_argument("--detection", nargs="*", default=o["detection"], help="curve kinds scored by the detector")
    ap.add_argument("--no-points", action="store_true", help="measure no RD point (rate control and report only)")
    ap.add_argument("--no-report", action="store_true", help="skip the BD tables and the report")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=o.get("jobs", 1),
                    help="measure the points in this many processes of one thread each (2 on 2 cores), then rate "
                         "control and the report in this one")
    ap.add_argument("--part", default=None, metavar="K/N", help=argparse.SUPPRESS)  # a worker of --jobs: every N-th point
    ap.add_argument("--dry-run", action="store_true", help="list the points and exit")
    a = ap.parse_args(argv)
    o.update(gain_models=a.gain_models, plain=a.plain, uniform_g_bg=a.uniform_g_bg, g_roi=a.g_roi, g_bg=a.g_bg,
             qps=a.qps, learned=a.learned)
    from vcm import zoo

    for n in {*a.gain_models, *a.plain, *a.ladder}:
        if n not in zoo.entries():
            ap.error(f"{n}: not a zoo model; expected one of {sorted(zoo.entries())}")
    pts = points(o, a.only)
    if a.part:
        k, n = (int(v) for v in a.part.split("/"))
        pts = pts[k::n]
    print(f"bench-roi: {len(pts)} points on kitti_mini {'+'.join(a.splits)}"
          f"{'' if a.frames is None else f' (first {a.frames} frames)'}; rate control at {a.targets} bpp; out {a.out}",
          flush=True)
    if a.dry_run:
        for p in pts:
            print(f"  {p['run']}: vcm-eval {' '.join(p['codec'])}")
        return 0
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    if not a.no_points and a.jobs > 1 and not a.part:
        run_jobs(a, argv if argv is not None else sys.argv[1:])
    elif not a.no_points:
        measure_points(a, pts)
    if a.part:  # a worker measures its points only
        return 0
    t1 = time.perf_counter()
    saved = a.out / "rate_control.csv"
    if a.targets:
        rc = rate_control(a)
    else:  # the rate-control stage of an earlier run, if any
        import pandas as pd

        rc = rc_summary(pd.read_csv(saved), a.out) if saved.is_file() else None
    t2 = time.perf_counter()
    if not a.no_report:
        report(a, rc)
    timings = {"points_s": t1 - t0, "rate_control_s": t2 - t1, "report_s": time.perf_counter() - t2,
               "total_s": time.perf_counter() - t0}
    a.out.mkdir(parents=True, exist_ok=True)
    with (a.out / "timings.jsonl").open("a") as f:  # one line per invocation (stages may run separately)
        f.write(json.dumps({"argv": argv if argv is not None else sys.argv[1:], **timings}) + "\n")
    print(f"\nbench-roi: {timings['total_s'] / 60:.1f} min (points {timings['points_s'] / 60:.1f}, rate control "
          f"{timings['rate_control_s'] / 60:.1f}, report {timings['report_s'] / 60:.1f}); {a.out}", flush=True)
    return 0


def run_jobs(a, argv: list[str]) -> None:
    """Measure the points in ``a.jobs`` worker processes (one torch thread each, every ``jobs``-th point),
    sharing the results folder; a worker's failure stops the bench."""
    import subprocess

    keep = [x for x in argv if x not in ("--no-report",)]
    cmds = [[sys.executable, "-m", "vcm.cli.bench_roi", *keep, "--threads", "1", "--jobs", "1", "--part", f"{k}/{a.jobs}",
             "--targets", "--no-report"] for k in range(a.jobs)]
    procs = [subprocess.Popen(c) for c in cmds]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"bench-roi: a points worker failed (exit codes {codes})")


_LOADED: dict = {}


def _frames(a):
    """The frames, the datamodule, the detector and the encoder's (boxes, seconds) per frame, loaded once."""
    from vcm.bench.roi_common import detector_boxes, load_detector, load_frames

    key = (tuple(a.splits), a.frames)
    if key not in _LOADED:
        frames, dm, cfg = load_frames(a.splits)
        frames = frames[: a.frames] if a.frames is not None else frames
        detector = load_detector(cfg)
        dets = [detector_boxes(detector, im) for im, _ in frames]  # the encoder's boxes, once per frame
        _LOADED[key] = (frames, dm, detector, dets)
    return _LOADED[key]


def measure_points(a, pts: list[dict]) -> None:
    """Code every frame at every point and write one record per point (``vcm-eval``'s fields)."""
    from vcm.bench.roi_common import compose_eval, detect, write_point
    from vcm.cli.eval import build_runner
    from vcm.evaluation.pipeline import image_quality
    from vcm.utils.config import to_plain

    results = a.out / "results"
    todo = [p for p in pts if not (results / f"{p['run']}.json").is_file()]
    print(f"{len(pts) - len(todo)} points already measured, {len(todo)} to go", flush=True)
    if not todo:
        return
    frames, dm, detector, dets = _frames(a)
    split = "+".join(a.splits)
    for k, p in enumerate(todo):
        t = time.perf_counter()
        cfg = compose_eval(["data=kitti_mini", "detector=kitti_mobilenet_v2", *p["codec"]])
        runner = build_runner(cfg.codec)
        scored = p["kind"] in a.detection
        per_image, preds = [], []
        for (image, target), (det_boxes, det_s) in zip(frames, dets):
            source = getattr(runner, "roi_source", None)
            cond = roi_cond(source, target, det_boxes)
            h, w = image.shape[-2:]
            m = {"name": target.get("name"), "height": h, "width": w}
            if source is not None:
                m["roi_s"] = det_s if source == "detector" else 0.0
            t_enc = time.perf_counter()
            data = runner.encode(image, cond=cond)
            t_dec = time.perf_counter()
            m.update(getattr(runner, "encode_info", None) or {})
            decoded = runner.decode(data)
            t_end = time.perf_counter()
            m.update(bits=8 * len(data), bpp_real=8.0 * len(data) / (h * w), enc_s=t_dec - t_enc, dec_s=t_end - t_dec)
            m.update(image_quality(image, decoded, target))
            per_image.append(m)
            if scored:
                preds.append(detect(detector, decoded))
        path = write_point(results, runner.name, runner.params, per_image, preds if scored else None,
                           [t for _, t in frames], dm.class_names, detector, dm.name, split,
                           {k: to_plain(cfg[k]) for k in ("codec", "data", "detector")} | {"split": split}, p["run"])
        mean = {k2: sum(x[k2] for x in per_image) / len(per_image) for k2 in ("bpp_real", "psnr")}
        print(f"[{k + 1}/{len(todo)}] {p['run']}: bpp {mean['bpp_real']:.4f} psnr {mean['psnr']:.2f} "
              f"({time.perf_counter() - t:.0f}s) {path.name}", flush=True)


def roi_cond(source: str | None, target: dict, det_boxes):
    """The boxes an ROI codec's encoder is given (``Needs.ROI_BOXES``), as
    :func:`vcm.conditioning.roi_boxes` gives them; None for a codec that takes none."""
    import torch

    if source is None:
        return None
    if source == "labels":
        return torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    return det_boxes if source == "detector" else torch.zeros(0, 4)


def rate_control(a) -> dict:
    """Per frame and target: the size rate control reaches (hard cap = target), its passes, and the
    time of each stage (detector, analysis of each model it analysed, search, the final coding, decoding)."""
    import torch

    from vcm.codecs.base import ensure_tables, pad_image
    from vcm.codecs.checkpoint import load_codec_checkpoint
    from vcm.codecs.container import decode_image
    from vcm.codecs.exact import code_analysis
    from vcm.codecs.rate_control import RateControlError, encode_to_size
    from vcm.codecs.roi_gain import Y_STRIDE
    from vcm.evaluation.runners import to_float_batch

    frames, _, _, dets = _frames(a)
    models = [load_codec_checkpoint(f"zoo:{n}")[0].eval() for n in a.ladder]
    for m in models:
        ensure_tables(m)
    rows = []
    for (image, target), (boxes, det_s) in zip(frames, dets):
        x = to_float_batch(image)
        h, w = x.shape[-2:]
        analysis_s = []
        with torch.no_grad():
            for m in models:  # the analysis alone, timed once per model and frame
                xp, _ = pad_image(x, int(m.min_div))
                t = time.perf_counter()
                an = m.analyse(xp, None)
                analysis_s.append(time.perf_counter() - t)
        for bpp in a.targets:
            target_bytes = int(bpp * h * w / 8)
            t = time.perf_counter()
            try:
                r = encode_to_size(models, x, boxes, target_bytes, max_bytes=target_bytes, g_roi=o_rc(a)["g_roi"],
                                   g_bg_start=o_rc(a)["g_bg"], codec_names=["hyperprior"] * len(models))
            except RateControlError:  # nothing written: no setting of the ladder fits the cap
                rows.append({"name": target.get("name"), "target_bpp": bpp, "target_bytes": target_bytes, "bytes": None,
                             "refused": True, "within_5pct": False})
                continue
            total = time.perf_counter() - t
            m = models[r.model_index]
            with torch.no_grad():
                xp, _ = pad_image(x, int(m.min_div))
                an = m.analyse(xp, None)
                t = time.perf_counter()
                code_analysis(m.gaussian_conditional, an, r.roi.map((xp.shape[-2] // Y_STRIDE, xp.shape[-1] // Y_STRIDE)))
                coding_s = time.perf_counter() - t
                t = time.perf_counter()
                decode_image(m, r.data)
                dec_s = time.perf_counter() - t
            analysed = sum(analysis_s[: r.model_index + 1])
            size = len(r.data)
            rows.append({"name": target.get("name"), "target_bpp": bpp, "target_bytes": target_bytes, "bytes": size,
                         "fits": size <= target_bytes, "within_5pct": abs(size - target_bytes) <= 0.05 * target_bytes,
                         "passes": r.passes, "estimates": r.estimates, "model": a.ladder[r.model_index], "g_roi": r.roi.g_roi, "g_bg": r.roi.g_bg,
                         "roi_boxes": int(boxes.shape[0]), "detector_s": det_s, "analysis_s": analysed,
                         "search_s": max(total - analysed - coding_s, 0.0), "coding_s": coding_s, "rc_total_s": total,
                         "dec_s": dec_s})
        print(f"rate control {target.get('name')}: " + ", ".join(
            f"{rw['target_bpp']}: {rw['bytes']}/{rw['target_bytes']}B {rw.get('passes')}p" for rw in rows[-len(a.targets):]),
              flush=True)
    import pandas as pd

    df = pd.DataFrame(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / "rate_control.csv", index=False)
    return rc_summary(df, a.out)


def rc_summary(df, out: Path | None = None) -> dict:
    """Per target: frames within 5 % of it, mean passes (frames coded), frames over the cap (a file larger
    than the target) and frames refused (no setting fits: nothing written); mean stage times."""
    summary = {}
    for bpp, d in df.groupby("target_bpp"):
        coded = d[d["bytes"].notna()]
        summary[str(bpp)] = {"frames": len(d), "within_5pct": float(d["within_5pct"].astype(bool).mean()),
                             "mean_passes": float(coded["passes"].mean()) if len(coded) else math.nan,
                             **({"mean_estimates": float(coded["estimates"].mean()) if len(coded) else math.nan}
                                if "estimates" in coded else {}),
                             "cap_exceeded": int((coded["bytes"] > coded["target_bytes"]).sum()),
                             "refused": len(d) - len(coded),
                             "models": {k: int(v) for k, v in coded["model"].value_counts().items()}}
    coded = df[df["bytes"].notna()]
    summary["time_s"] = {k: float(coded[k].mean()) for k in ("detector_s", "analysis_s", "search_s", "coding_s",
                                                            "rc_total_s", "dec_s")}
    if out is not None:
        (out / "rate_control.json").write_text(json.dumps(summary, indent=1))
    return summary


def o_rc(a) -> dict:
    o = load_study(PRESET, "options")
    return {"g_roi": o["rc_g_roi"], "g_bg": o["rc_g_bg_start"]}


def report(a, rc: dict | None) -> None:
    """Points, BD tables (vcm-rd bd --pareto --ci 0.95), goals, trade-off plot, rate control, times."""
    import pandas as pd

    from vcm.cli.rd import main as rd
    from vcm.rd.table import collect

    bd_cfg = load_study(PRESET)
    df = collect(a.out / "results")
    if df.empty:
        print("no records", flush=True)
        return
    curves = set(df["curve"])
    print_points(df)
    bd_dir = a.out / "bd"
    bd_dir.mkdir(parents=True, exist_ok=True)
    tables = {}
    for entry in bd_cfg["bd"]:
        anchor = entry["anchor"]
        if anchor not in curves:
            continue
        for metric in bd_cfg["bd_metrics"]:
            if metric not in df or df[df["curve"] == anchor][metric].isna().all():
                continue
            out = bd_dir / f"{anchor.replace('/', '_')}__{metric}.csv"
            print(f"\n$ vcm-rd bd --anchor {anchor} --metric {metric} --pareto --min-points 2 --ci 0.95 "
                  f"{a.out / 'results'} --out {out}", flush=True)
            rd(["bd", "--anchor", anchor, "--metric", metric, "--pareto", "--min-points", "2", "--ci", "0.95",
                str(a.out / "results"), "--out", str(out)])
            if out.is_file():
                t = pd.read_csv(out)
                tables[(anchor, metric)] = t[t["curve"].isin(entry["tests"])]
    summary = bd_summary(tables)
    (a.out / "bd_summary.json").write_text(json.dumps(summary, indent=1))
    print("\n" + bd_markdown(summary), flush=True)
    print("\n" + goals(summary, rc), flush=True)
    plot_tradeoff(df, a.out / "tradeoff.png")
    if rc:
        print("\n" + rc_markdown(rc), flush=True)
    print("\n" + time_markdown(df, rc), flush=True)


def bd_summary(tables: dict) -> list[dict]:
    rows = []
    for (anchor, metric), t in tables.items():
        for _, r in t.iterrows():
            rows.append({"anchor": anchor, "test": r["curve"], "metric": metric,
                         "bd_rate": _f(r.get("bd_rate_pct")), "low": _f(r.get("bd_rate_low")),
                         "high": _f(r.get("bd_rate_high")), "bd_quality": _f(r.get("bd_quality")),
                         "q_low": _f(r.get("bd_quality_low")), "q_high": _f(r.get("bd_quality_high")),
                         "note": "" if not isinstance(r.get("note"), str) else r.get("note")})
    return rows


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ci(low: float, high: float, unit: str = " %", digits: int = 1) -> str:
    return "no interval" if math.isnan(low) else f"[{low:+.{digits}f}, {high:+.{digits}f}]{unit}"


def bd_markdown(summary: list[dict]) -> str:
    lines = ["| anchor | test curve | metric | BD-rate | 95 % interval | BD-quality | 95 % interval | note |",
             "|---|---|---|---:|---|---:|---|---|"]
    for r in summary:
        rate = "n/a" if math.isnan(r["bd_rate"]) else f"{r['bd_rate']:+.1f} %"
        q = "n/a" if math.isnan(r["bd_quality"]) else f"{r['bd_quality']:+.3f}"
        lines.append(f"| {r['anchor']} | {r['test']} | {r['metric']} | {rate} | {_ci(r['low'], r['high'])} | {q} | "
                     f"{_ci(r['q_low'], r['q_high'], '', 3)} | {r['note'][:80]} |")
    return "\n".join(lines)


def goals(summary: list[dict], rc: dict | None) -> str:
    """The issue's goals, met or missed (on the point estimate; the interval shown beside it)."""
    def find(anchor, test, metric):
        return next((r for r in summary if r["anchor"] == anchor and r["test"] == test and r["metric"] == metric), None)

    lines = ["| goal | measured | 95 % interval | met |", "|---|---:|---|---|"]

    def rate_goal(label, anchor, test, limit):
        r = find(anchor, test, "roi_psnr")
        if r is None or math.isnan(r["bd_rate"]):
            lines.append(f"| {label} | n/a | | not measured |")
            return
        met = "met" if r["bd_rate"] <= limit else "missed"
        if not math.isnan(r["high"]) and met == "met" and r["high"] > limit:
            met = "met (interval crosses the goal)"
        lines.append(f"| {label} | {r['bd_rate']:+.1f} % | {_ci(r['low'], r['high'])} | {met} |")

    for anchor, what in (("hyperprior/zoo-uniform", "plain + uniform-gain front"), ("hyperprior/zoo", "plain zoo")):
        rate_goal(f"ROI-PSNR BD-rate, GT boxes vs {what} <= -45 %", anchor, "hyperprior/zoo-roi-labels", -45)
        rate_goal(f"ROI-PSNR BD-rate, detector boxes vs {what} <= -25 %", anchor, "hyperprior/zoo-roi-detector", -25)
    for test in ("hyperprior/zoo-roi-labels", "hyperprior/zoo-roi-detector"):
        r = find("hyperprior/zoo", test, "map_50")
        if r is None or math.isnan(r["bd_quality"]):
            lines.append(f"| mAP@0.5 at equal bpp, {test} vs plain >= 0 | n/a | | not computable |")
        else:
            lines.append(f"| mAP@0.5 at equal bpp, {test} vs plain >= 0 | {r['bd_quality']:+.3f} "
                         f"(BD-rate {r['bd_rate']:+.1f} %) | no interval (not a per-image mean) | "
                         f"{'met' if r['bd_quality'] >= 0 else 'missed'} |")
    for roi in ("labels", "detector"):
        r = find(f"hyperprior/zoo-roi-{roi}", f"{LEARNED}/roi-{roi}", "roi_psnr")
        bg = find(f"hyperprior/zoo-roi-{roi}", f"{LEARNED}/roi-{roi}", "bg_psnr")
        if r is None or math.isnan(r["bd_rate"]):
            lines.append(f"| learned vs training-free ROI gain ({roi}): ROI-PSNR BD-rate <= -10 %, background <= +5 % "
                         f"| n/a | | not measured |")
            continue
        bg_rate = math.nan if bg is None else bg["bd_rate"]
        met = r["bd_rate"] <= -10 and not math.isnan(bg_rate) and bg_rate <= 5
        lines.append(f"| learned vs training-free ROI gain ({roi}): ROI-PSNR BD-rate <= -10 %, background <= +5 % | "
                     f"{r['bd_rate']:+.1f} %; background {bg_rate:+.1f} % | {_ci(r['low'], r['high'])}; background "
                     f"{_ci(bg['low'], bg['high']) if bg else 'n/a'} | {'met' if met else 'missed'} |")
    for roi in ("labels", "detector"):
        r = find(f"hevc444_roi/roi-{roi}", f"hyperprior/zoo-roi-{roi}", "roi_psnr")
        if r is not None:
            lines.append(f"| ROI-PSNR BD-rate vs hevc444_roi ({roi}) (report; stretch <= 0 %) | {r['bd_rate']:+.1f} % | "
                         f"{_ci(r['low'], r['high'])} | {'met' if r['bd_rate'] <= 0 else 'missed'} (stretch) |")
    if rc:
        for bpp in ("0.25", "0.15"):
            s = rc.get(bpp)
            if s:
                lines.append(f"| rate control {bpp} bpp: >= 95 % of frames within 5 % | {100 * s['within_5pct']:.0f} % "
                             f"of {s['frames']} | | {'met' if s['within_5pct'] >= 0.95 else 'missed'} |")
        passes = [s["mean_passes"] for k, s in rc.items() if k != "time_s"]
        caps = sum(s["cap_exceeded"] for k, s in rc.items() if k != "time_s")
        lines.append(f"| rate control mean passes <= 5 | {max(passes):.1f} (worst target) | | "
                     f"{'met' if max(passes) <= 5 else 'missed'} |")
        refused = sum(s.get("refused", 0) for k, s in rc.items() if k != "time_s")
        lines.append(f"| hard cap never exceeded | {caps} frames over ({refused} refused: nothing written) | | "
                     f"{'met' if caps == 0 else 'missed'} |")
    return "\n".join(lines)


def print_points(df) -> None:
    from vcm.rd.table import PARAM_PREFIX

    cols = {c: f"{PARAM_PREFIX}{c}" for c in ("name", "quality", "g_roi", "g_bg", "qp")}
    print("\n| curve | model / qp | g_roi | g_bg | bpp | PSNR | ROI-PSNR | background PSNR | mAP@0.5 |", flush=True)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for _, r in df.sort_values(["curve", "bpp_real"]).iterrows():
        def get(c, r=r):
            v = r.get(cols[c])
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else v
        what = f"qp {get('qp')}" if get("qp") != "-" else f"q{get('quality')}"
        print(f"| {r['curve']} | {what} | {get('g_roi')} | {get('g_bg')} | {r['bpp_real']:.4f} | {r['psnr']:.2f} | "
              f"{r['roi_psnr']:.2f} | {r['bg_psnr']:.2f} | {r.get('map_50', math.nan):.3f} |", flush=True)


def plot_tradeoff(df, path: Path) -> None:
    """ROI-PSNR against background PSNR of every gain point (GT boxes), per model, labelled (g_roi, g_bg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vcm.rd.table import PARAM_PREFIX

    q, gr, gb = (f"{PARAM_PREFIX}{k}" for k in ("quality", "g_roi", "g_bg"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, curve in zip(axes, ("hyperprior/zoo-roi-labels", "hyperprior/zoo-roi-detector")):
        d = df[df["curve"] == curve]
        for quality, dq in d.groupby(q):
            ax.plot(dq["bg_psnr"], dq["roi_psnr"], "o", label=f"q{int(quality)}")
            for _, r in dq.iterrows():
                ax.annotate(f"({r[gr]:g},{r[gb]:g}) {r['bpp_real']:.2f}", (r["bg_psnr"], r["roi_psnr"]), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
        learned = df[df["curve"] == f"{LEARNED}/{curve.split('zoo-')[-1]}"]
        if not learned.empty:
            ax.plot(learned["bg_psnr"], learned["roi_psnr"], "s", color="tab:red", label="learned ROI codec")
            for _, r in learned.iterrows():
                ax.annotate(f"({r[gr]:g},{r[gb]:g}) {r['bpp_real']:.2f}", (r["bg_psnr"], r["roi_psnr"]), fontsize=6,
                            color="tab:red", textcoords="offset points", xytext=(3, -8))
        plain = df[df["curve"] == "hyperprior/zoo"]
        ax.plot(plain["bg_psnr"], plain["roi_psnr"], "k^--", label="plain zoo")
        ax.set_xlabel("background PSNR (dB)")
        ax.set_ylabel("ROI-PSNR (dB)")
        ax.set_title(f"{curve.split('/')[-1]}: (g_roi, g_bg) bpp")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"\n(g_roi, g_bg) trade-off plot: {path}", flush=True)


def rc_markdown(rc: dict) -> str:
    lines = [("| target | frames | within 5 % | mean coding passes | mean size estimates | cap exceeded "
              "| refused (no setting fits) | models used |"),
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for k, s in rc.items():
        if k == "time_s":
            continue
        lines.append(f"| {k} bpp | {s['frames']} | {100 * s['within_5pct']:.0f} % | {s['mean_passes']:.1f} | "
                     f"{s.get('mean_estimates', math.nan):.1f} | {s['cap_exceeded']} | {s.get('refused', 0)} | "
                     f"{', '.join(f'{m}: {n}' for m, n in s['models'].items())} |")
    return "\n".join(lines)


def time_markdown(df, rc: dict | None) -> str:
    lines = ["| stage | seconds per frame (mean) | from |", "|---|---:|---|"]
    d = df[df["curve"].str.startswith("hyperprior/zoo-roi")]
    if "roi_s" in df and not d.empty:
        det = df[df["curve"] == "hyperprior/zoo-roi-detector"]
        if not det.empty:
            lines.append(f"| detector at the encoder | {det['roi_s'].mean():.2f} | records' roi_s |")
        lines.append(f"| fixed-gain encode (analysis + coding) | {d['enc_s'].mean():.2f} | records' enc_s |")
        lines.append(f"| decode | {d['dec_s'].mean():.2f} | records' dec_s |")
    if rc:
        t = rc["time_s"]
        for k, label in (("detector_s", "detector (rate control run)"), ("analysis_s", "analysis, every model analysed"),
                         ("search_s", "search (size estimates, coding passes but the last)"), ("coding_s", "coding (one pass)"),
                         ("rc_total_s", "rate control total"), ("dec_s", "decoding")):
            lines.append(f"| {label} | {t[k]:.2f} | rate_control.csv |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
