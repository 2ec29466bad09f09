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

from vcm.cli.study_runner import Study

QUALITIES = (1, 4, 7)  # lambdas 0.0018, 0.013, 0.0932: a 52x range, so the rate rises with lambda even in short runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_roi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=240, help="training steps per point (same for every codec)")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--detector-ckpt")
    ap.add_argument("--object-crop-prob", type=float, default=0.0,
                    help="share of training crops placed around an object (data.object_crop_prob), for every codec")
    ap.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    ap.add_argument("--boxes-curve", action="store_true",
                    help="also train roi_hyperprior with roi_source=boxes (its encoder is given the ground-truth ROI map "
                         "instead of detector features): what perfect localisation gives the same codec and budget")
    ap.add_argument("--only", nargs="+", choices=["hyperprior", "roi_hyperprior", "roi_zero_features", "roi_boxes"],
                    help="train and evaluate only these curves")
    ap.add_argument("--pretrain-steps", type=int, default=0,
                    help="first train one hyperprior (plain RD loss, quality --pretrain-quality) for this many steps "
                         "and fine-tune every point of every curve from it (init_from); 0 = every point from scratch")
    ap.add_argument("--pretrain-quality", type=int, default=4)
    ap.add_argument("--init-from", help="fine-tune every point from this hyperprior checkpoint (N=64, M=96) instead")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.pretrain_steps < 0:
        ap.error(f"--steps {a.steps} / --pretrain-steps {a.pretrain_steps}: expected >= 1 / >= 0")
    if a.init_from and a.pretrain_steps:
        ap.error("--init-from and --pretrain-steps both choose the starting point; give one")
    from vcm.utils.config import PROJECT_ROOT

    st = Study("bench-roi", a.out or PROJECT_ROOT / "outputs" / "bench-roi", dry_run=a.dry_run)
    # 12 training frames, 9 validation frames (the evaluation set), 3 test frames.
    frames = ["data=kitti_tiny", "data.split_fractions=[0.5,0.375,0.125]"]
    data = [*frames, "data.crop_size=[128,128]", "data.batch_size=8", "data.max_eval_images=1",
            f"data.object_crop_prob={a.object_crop_prob}"]
    det = ["detector=resnet18_fpn"] + ([f"detector.checkpoint={a.detector_ckpt}"] if a.detector_ckpt else [])
    # Minutes per point on a CPU: small codecs, lr 1e-3 (CompressAI's 1e-4 is for 1M-step runs).
    # The last sixth of the steps at lr 1e-4: the weights settle before they are evaluated.
    def budget(steps: int) -> list[str]:
        drop = steps - steps // 6
        return ["model.codec.N=64", "model.codec.M=96", "model.optimizer.lr=1.0e-3", f"trainer.max_steps={steps}",
                "trainer.check_val_every_n_epoch=1000", "~model.scheduler",
                f"+model.scheduler={{_target_:torch.optim.lr_scheduler.MultiStepLR,_partial_:true,milestones:[{drop}],gamma:0.1}}",
                "model.scheduler_interval=step"]

    small = budget(a.steps)
    # A shared starting point: one hyperprior trained longer, from which every point is fine-tuned
    # (a conditioned codec takes its weights where they fit; see vcm.codecs.base.warm_start).
    init = a.init_from
    if a.pretrain_steps:
        base = st.train("base_hyperprior", [*data, "model=hyperprior", "loss=rd", *budget(a.pretrain_steps),
                                            f"quality={a.pretrain_quality}"])
        if base is None and not a.dry_run:
            return st.finish() or 1
        init = str(base)
    if init:
        small.append(f"init_from={init}")
    variants = {
        "hyperprior": ["model=hyperprior", "loss=rd"],
        "roi_hyperprior": ["model=roi_hyperprior", f"loss.alpha={a.alpha}", *det,
                           "detector.min_size=128", "detector.max_size=128"],
        # the ablation's encoder needs no detector: trained without one, evaluated with it (detection metrics)
        "roi_zero_features": ["model=roi_hyperprior", f"loss.alpha={a.alpha}", "model.codec.zero_features=true",
                              "variant=roi_zero_features", "detector=none"],
    }
    if a.boxes_curve or (a.only and "roi_boxes" in a.only):
        # the encoder is given the ground-truth ROI map (the loss's ROI) instead of detector features
        variants["roi_boxes"] = ["model=roi_hyperprior", f"loss.alpha={a.alpha}", "model.codec.roi_source=boxes",
                                 "variant=roi_boxes", "detector=none"]
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
        for anchor, label, suffix in (("hyperprior", "hyperprior", ""),
                                      ("roi_hyperprior/roi_zero_features", "the zero-features ablation", "_vs_zero_features")):
            if not any(c == anchor or c.startswith(f"{anchor}/") for c in curves):
                print(f"\n(no {anchor} points here: no BD-rates against {label})", flush=True)
                continue
            for m in ("roi_psnr", "bg_psnr", "psnr"):
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
