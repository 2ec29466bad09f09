"""``make bench-roi``: does ROI-awareness work?

Trains ``hyperprior`` (plain RD loss), ``roi_hyperprior`` (ROI-RD loss, alpha 0.9) and its
zero-features ablation (with ``--boxes-curve`` also roi_hyperprior given the ground-truth ROI map
instead of detector features: ``roi_source=boxes``) on kitti_tiny crops with the same budget at three lambdas, evaluates real
bitstreams on the validation frames, and prints the BD-rate of each against the
hyperprior on ROI-PSNR, background PSNR and PSNR (negative = fewer bits for the same quality), and of
the ROI codec against its zero-features ablation (what the detector's features add). A re-run keeps
the points already trained and evaluated.

The ROI codec is conditioned on a frozen detector: a trained one with ``--detector-ckpt``, else a
seeded random-weight ResNet-18 FPN (its features still carry image structure; the ROI weighting of
the loss does not depend on the detector at all).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcm.cli.study_runner import Study, load_study, overrides
from vcm.utils.config import PROJECT_ROOT

#: the benchmark's settings (data, budget, curves, default options), conf/study/bench_roi.yaml
PRESET = "bench_roi"


def main(argv: list[str] | None = None) -> int:
    opts = load_study(PRESET, "options")
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_roi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=opts["steps"], help="training steps per point (same for every codec)")
    ap.add_argument("--alpha", type=float, default=opts["alpha"])
    ap.add_argument("--detector-ckpt")
    ap.add_argument("--object-crop-prob", type=float, default=opts["object_crop_prob"],
                    help="share of training crops placed around an object (data.object_crop_prob), for every codec")
    ap.add_argument("--qualities", type=int, nargs="+", default=list(opts["qualities"]))
    ap.add_argument("--boxes-curve", action="store_true",
                    help="also train roi_hyperprior with roi_source=boxes (its encoder is given the ground-truth ROI map "
                         "instead of detector features): what perfect localisation gives the same codec and budget")
    ap.add_argument("--only", nargs="+", choices=["hyperprior", "roi_hyperprior", "roi_zero_features", "roi_boxes"],
                    help="train and evaluate only these curves")
    ap.add_argument("--pretrain-steps", type=int, default=0,
                    help="first train one hyperprior (plain RD loss, quality --pretrain-quality) for this many steps "
                         "and fine-tune every point of every curve from it (init_from); 0 = every point from scratch")
    ap.add_argument("--pretrain-quality", type=int, default=opts["pretrain_quality"])
    ap.add_argument("--init-from", help="fine-tune every point from this hyperprior checkpoint (N=64, M=96) instead")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.pretrain_steps < 0:
        ap.error(f"--steps {a.steps} / --pretrain-steps {a.pretrain_steps}: expected >= 1 / >= 0")
    if a.init_from and a.pretrain_steps:
        ap.error("--init-from and --pretrain-steps both choose the starting point; give one")

    def preset(steps: int) -> dict:
        # the last sixth of the steps at lr / 10 (the budget's ${drop})
        return load_study(PRESET, steps=steps, drop=steps - steps // 6, alpha=a.alpha, object_crop_prob=a.object_crop_prob,
                          detector_checkpoint=[f"detector.checkpoint={a.detector_ckpt}"] if a.detector_ckpt else [])

    cfg = preset(a.steps)
    st = Study("bench-roi", a.out or PROJECT_ROOT / "outputs" / cfg["out"], dry_run=a.dry_run)
    frames = overrides(cfg["frames"])
    data = overrides(cfg["data"])
    det = overrides(cfg["detector"])
    small = overrides(cfg["budget"])
    # A shared starting point: one hyperprior trained longer, from which every point is fine-tuned
    # (a conditioned codec takes its weights where they fit; see vcm.codecs.base.warm_start).
    init = a.init_from
    if a.pretrain_steps:
        base = st.train("base_hyperprior", [*data, *overrides(cfg["pretrain"]), *overrides(preset(a.pretrain_steps)["budget"]),
                                            f"quality={a.pretrain_quality}"])
        if base is None and not a.dry_run:
            return st.finish() or 1
        init = str(base)
    if init:
        small.append(f"init_from={init}")
    variants = {name: overrides(ov) for name, ov in cfg["curves"].items()}
    if a.boxes_curve or (a.only and "roi_boxes" in a.only):
        variants.update((name, overrides(ov)) for name, ov in cfg["boxes_curve"].items())
    for name, ov in variants.items():
        if a.only and name not in a.only:
            continue
        for q in a.qualities:
            point = f"{name}_q{q}"
            ckpt = st.train(point, [*data, *ov, *small, f"quality={q}"])
            if ckpt:
                st.evaluate(f"eval_{point}", ["codec=checkpoint", f"codec.ckpt={ckpt}", *frames, "split=val", *det])
    if not a.dry_run:
        from vcm.cli.rd import main as rd

        found = print_points(st.results)
        curves = set(found["curve"]) if not found.empty else set()
        # BD tables against each anchor curve that this output folder holds (--only may leave one out)
        for anchor, bd in cfg["bd_anchors"].items():
            label, suffix = bd["label"], bd["suffix"]
            if not any(c == anchor or c.startswith(f"{anchor}/") for c in curves):
                print(f"\n(no {anchor} points here: no BD-rates against {label})", flush=True)
                continue
            for m in cfg["bd_metrics"]:
                print(f"\nBD-rate vs {label} on {m} (kitti_tiny validation frames, real bitstreams):", flush=True)
                rd(["bd", "--anchor", anchor, "--metric", m, str(st.results), "--out", str(st.out / f"bd_{m}{suffix}.csv")])
    return st.finish()


def print_points(results: Path):
    """Print every evaluated point with its ROI-to-background PSNR gap (how the codec shares its
    quality); returns the table of the records (:func:`vcm.rd.table.collect`)."""
    from vcm.rd.table import PARAM_PREFIX, collect

    df = collect(results)
    if df.empty:
        return df
    q = f"{PARAM_PREFIX}quality"
    df = df.sort_values(["curve", q] if q in df else ["curve"])
    print("\nPoints (kitti_tiny validation frames, real bitstreams; gap = ROI-PSNR - background PSNR):", flush=True)
    print(f"{'curve':<36} {'q':>2} {'bpp_real':>8} {'psnr':>6} {'roi_psnr':>8} {'bg_psnr':>7} {'gap':>6}")
    for _, r in df.iterrows():
        quality = int(r[q]) if q in df and r[q] == r[q] else "-"
        print(f"{r['curve']:<36} {quality!s:>2} {r['bpp_real']:8.3f} {r['psnr']:6.2f} {r['roi_psnr']:8.2f} "
              f"{r['bg_psnr']:7.2f} {r['roi_psnr'] - r['bg_psnr']:+6.2f}", flush=True)
    return df


if __name__ == "__main__":
    sys.exit(main())
