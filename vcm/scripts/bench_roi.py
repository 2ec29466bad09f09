"""``make bench-roi``: does ROI-awareness work?

Trains ``hyperprior`` (plain RD loss), ``roi_hyperprior`` (ROI-RD loss, alpha 0.9) and its
zero-features ablation on kitti_tiny crops with the same budget at three lambdas, evaluates real
bitstreams on the validation frames, and prints the BD-rate of each against the
hyperprior on ROI-PSNR and on background PSNR (negative = fewer bits for the same quality).

The ROI codec is conditioned on a frozen detector: a trained one with ``--detector-ckpt``, else a
seeded random-weight ResNet-18 FPN (its features still carry image structure; the ROI weighting of
the loss does not depend on the detector at all).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcm.scripts.pipeline import Study

QUALITIES = (2, 4, 6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcm.scripts.bench_roi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=150, help="training steps per point (same for every codec)")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--detector-ckpt")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    from vcm.utils.config import PROJECT_ROOT

    st = Study("bench-roi", a.out or PROJECT_ROOT / "outputs" / "bench-roi", dry_run=a.dry_run)
    # 12 training frames, 9 validation frames (the evaluation set), 3 test frames.
    frames = ["data=kitti_tiny", "data.split_fractions=[0.5,0.375,0.125]"]
    data = [*frames, "data.crop_size=[128,128]", "data.batch_size=8", "data.max_eval_images=1"]
    det = ["detector=resnet18_fpn"] + ([f"detector.checkpoint={a.detector_ckpt}"] if a.detector_ckpt else [])
    # Minutes per point on a CPU: small codecs, lr 1e-3 (CompressAI's 1e-4 is for 1M-step runs).
    small = ["model.codec.N=64", "model.codec.M=96", "model.optimizer.lr=1.0e-3", f"trainer.max_steps={a.steps}",
             "trainer.check_val_every_n_epoch=1000"]
    variants = {
        "hyperprior": ["model=hyperprior", "loss=rd"],
        "roi_hyperprior": ["model=roi_hyperprior", f"loss.alpha={a.alpha}", *det,
                           "detector.min_size=128", "detector.max_size=128"],
        "roi_zero_features": ["model=roi_hyperprior", f"loss.alpha={a.alpha}", "model.codec.zero_features=true",
                              "variant=roi_zero_features", *det, "detector.min_size=128", "detector.max_size=128"],
    }
    for name, ov in variants.items():
        for q in QUALITIES:
            point = f"{name}_q{q}"
            ckpt = st.train(point, [*data, *ov, *small, f"quality={q}"])
            if ckpt:
                st.evaluate(f"eval_{point}", ["codec=checkpoint", f"codec.ckpt={ckpt}", *frames, "split=val", *det])
    if not a.dry_run:
        from vcm.rd.cli import main as rd

        for m in ("roi_psnr", "bg_psnr", "psnr"):
            print(f"\nBD-rate vs hyperprior on {m} (kitti_tiny validation frames, real bitstreams):", flush=True)
            rd(["bd", "--anchor", "hyperprior", "--metric", m, str(st.results), "--out", str(st.out / f"bd_{m}.csv")])
    return st.finish()


if __name__ == "__main__":
    sys.exit(main())
