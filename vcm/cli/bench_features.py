"""``make bench-features``: does task-awareness work, and does feature coding beat image coding, on
real KITTI frames?

One L-MSFC base run on the shipped real-KITTI detector's FPN features of kitti_mini train crops
(``vcm/conf/experiment/lmsfc_kitti.yaml``), then, at every lambda, the same extra steps from that base
for L-MSFC (RD loss) and TA-MSF (RD + w * the detector's four losses on the decoded features).
Every point is evaluated by split inference on the kitti_mini test frames (real feature bitstreams,
the detector's heads on the decoded features), next to the MPEG-style feature anchor
(``feature_hevc``) and image coding at equal bits (the zoo hyperprior and HEVC, the same detector on
the decoded frames) and the detector on uncompressed frames. Printed: the training summary of every
point (rate, feature MSE per level, the task-loss share), the RD table, and BD-rates on mAP@0.5
against L-MSFC, the feature anchor, the zoo codec and HEVC; ``report/`` holds the plots. A re-run
keeps the points already trained and evaluated. ``--task-loss-ablation`` adds L-MSFC's own
architecture fine-tuned with TA-MSF's loss (TA-MSF's extra attention block left out).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from vcm.studies import Study, load_study, overrides
from vcm.utils.config import PROJECT_ROOT

#: the benchmark's settings, vcm/conf/study/bench_features.yaml
PRESET = "bench_features"


def main(argv: list[str] | None = None) -> int:
    opts = load_study(PRESET, "options")
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_features", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--base-steps", type=int, default=opts["base_steps"], help="steps of the L-MSFC base run")
    ap.add_argument("--steps", type=int, default=opts["steps"],
                    help="extra steps per rate point from the base (the same for L-MSFC and TA-MSF)")
    ap.add_argument("--base-lmbda", type=float, default=opts["base_lmbda"])
    ap.add_argument("--lmbdas", type=float, nargs="+", default=list(opts["lmbdas"]))
    ap.add_argument("--det-weight", type=float, default=opts["det_weight"],
                    help="TA-MSF's task weight at --det-weight-lmbda (w = det_weight * lmbda / det_weight_lmbda)")
    ap.add_argument("--det-weight-lmbda", type=float, default=opts["det_weight_lmbda"])
    ap.add_argument("--detector-ckpt", help="another detector checkpoint (same backbone) for features and metrics")
    ap.add_argument("--no-anchors", action="store_true", help="leave out feature_hevc and image coding")
    ap.add_argument("--task-loss-ablation", action="store_true",
                    help="also fine-tune L-MSFC's own architecture with TA-MSF's task loss (curve lmsfc/lmsfc_light_task)")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.base_steps < 1:
        ap.error(f"--steps {a.steps} / --base-steps {a.base_steps}: expected >= 1")
    if min(a.lmbdas) <= 0 or a.base_lmbda <= 0 or a.det_weight < 0 or a.det_weight_lmbda <= 0:
        ap.error("lambdas and --det-weight-lmbda must be > 0, --det-weight >= 0")
    cfg = load_study(PRESET, base_steps=a.base_steps, steps=a.steps, base_lmbda=a.base_lmbda, det_weight=a.det_weight,
                     det_weight_lmbda=a.det_weight_lmbda,
                     detector_checkpoint=[f"detector.checkpoint={a.detector_ckpt}"] if a.detector_ckpt else [])
    st = Study("bench-features", a.out or PROJECT_ROOT / "outputs" / cfg["out"], dry_run=a.dry_run)
    data, det = overrides(cfg["data"]), overrides(cfg["detector"])
    ev = [*data, *det, f"split={cfg['eval_split']}"]

    st.evaluate("none", ["codec=none", *ev])
    base = st.train("base_lmsfc", [*overrides(cfg["base"]), *det])
    if base is None and not a.dry_run:
        return st.finish() or 1
    points = []
    for lmbda in a.lmbdas:
        curves = {**cfg["curves"], **(cfg["ablation_curves"] if a.task_loss_ablation else {})}
        for name, ov in curves.items():
            point = f"{name}_lmbda{lmbda:g}"
            ckpt = st.train(point, [*overrides(cfg["finetune"]), *det, *overrides(ov), f"lmbda={lmbda:g}", f"init_from={base}"])
            points.append(point)
            if ckpt:
                st.evaluate(f"eval_{point}", ["codec=checkpoint", f"codec.ckpt={ckpt}", *ev])
    if not a.no_anchors:
        for codec, knobs in cfg["anchors"].items():
            for knob, values in knobs.items():
                for v in values:
                    st.evaluate(f"{codec}_{knob}{v}", [f"codec={codec}", f"codec.{knob}={v}", *ev])
    if not a.dry_run:
        print_training_summary(st, ["base_lmsfc", *points])
        metric = cfg["bd_metric"]
        st.report(cfg["bd_anchors"], cfg["report_metrics"], [(anchor, metric) for anchor in cfg["bd_anchors"]],
                  bd_options=cfg["bd_options"])
        print_points(st.results, f"kitti_mini {cfg['eval_split']} frames")
    return st.finish()


def last_logged(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every column of a Lightning CSV log (``metrics.csv``)."""
    last: dict[str, float] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if v not in ("", None):
                    last[k] = float(v)
    return last


def print_training_summary(st: Study, points: list[str]) -> None:
    """Per trained point, from its CSV log: the training rate, feature MSE per FPN level, the task loss
    and its share of the loss (``w * det / loss``), and the validation rate."""
    levels = ("p2", "p3", "p4", "p5", "p6")
    print("\nTraining (last logged epoch of each point; share = w * det_loss / loss):", flush=True)
    print(f"{'point':<22} {'bpp':>7} " + " ".join(f"{'mse_' + lv:>7}" for lv in levels)
          + f" {'det_loss':>8} {'w':>6} {'share':>6} {'val bpp':>8}")
    for point in points:
        logs = sorted((st.run_dir(point) / "csv").rglob("metrics.csv"))
        if not logs:
            continue
        m = last_logged(logs[-1])
        w, det, loss = m.get("train/det_weight_epoch", 0.0), m.get("train/det_loss_epoch"), m.get("train/loss_epoch")
        share = f"{w * det / loss:6.1%}" if det is not None and loss else f"{'-':>6}"
        print(f"{point:<22} {m.get('train/bpp_loss_epoch', float('nan')):7.4f} "
              + " ".join(f"{m.get(f'train/mse_{lv}_epoch', float('nan')):7.3f}" for lv in levels)
              + f" {det if det is not None else float('nan'):8.3f} {w:6.1f} {share} {m.get('val/bpp_real', float('nan')):8.4f}",
              flush=True)


def print_points(results: Path, frames: str) -> None:
    """The RD table: every evaluated point's real bits and detection metrics."""
    from vcm.rd.table import collect

    df = collect(results)
    if df.empty:
        return
    df = df.sort_values(["curve", "bpp_real"])
    print(f"\nPoints ({frames}; bpp from the real bitstream of the features or the image; detection by the "
          f"shipped detector):", flush=True)
    print(f"{'curve':<18} {'bpp_real':>9} {'mAP@0.5':>7} {'Car AP|R40 mod':>14}")
    for _, r in df.iterrows():
        print(f"{r['curve']:<18} {r['bpp_real']:9.4f} {r['map_50']:7.3f} "
              f"{100 * r['kitti_ap_car_moderate']:13.2f}%", flush=True)


if __name__ == "__main__":
    sys.exit(main())
