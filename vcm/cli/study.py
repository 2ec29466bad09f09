"""``make demo`` / ``make paper-mini`` / ``make paper``: the whole comparison in one command.

Presets (``--preset``):

* ``demo``  (CPU): synthetic data; a short detector training; the hyperprior at two
  rate points; JPEG and HEVC anchors; RD table, plots and report.
* ``mini``  (CPU): synthetic data; detector trained on it; image codecs (factorized,
  hyperprior, roi_hyperprior), feature codecs (lmsfc, ta_msf) at three rate points each; anchors
  (jpeg, webp, hevc, av1, feature_hevc); RD table, BD-rates, plots, report.
* ``full``  (GPU, real KITTI in ``KITTI_ROOT``): the source systems' settings (ResNet-50 FPN v2
  detector, full-size codecs, all qualities); its GPU run times have not been measured.

Everything is written under ``outputs/<preset>`` (override with ``--out``); ``--detector-ckpt``
reuses a trained detector instead of training one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcm.cli.study_runner import Study

# ---------------------------------------------------------------------------------------------
# Presets. Each codec entry: (point name prefix, train overrides, list of rate-point overrides).
PRESETS: dict[str, dict] = {
    "demo": {
        "data": ["data=synthetic", "data.synthetic_num=48", "data.split_fractions=[0.75,0.125,0.125]"],
        "detector": {
            "backbone": "resnet18_fpn",
            # Half resolution on CPU: the detector's transform scales frames to 188 px high.
            "overrides": ["detector.min_size=188", "detector.max_size=621"],
            "train": ["data.crop_size=[375,621]", "data.batch_size=4", "trainer.max_steps=30", "trainer.max_epochs=1000",
                      "+detector.rpn_post_nms_top_n_train=600", "+detector.box_batch_size_per_image=128",
                      "model.warmup_steps=10", "~model.optimizer",
                      "+model.optimizer={_target_:torch.optim.AdamW,_partial_:true,lr:3.0e-4,weight_decay:1.0e-4}"],
        },
        "image_codecs": [
            ("hyperprior", ["model=hyperprior", "model.codec.N=64", "model.codec.M=96", "data.crop_size=[128,128]",
                            "data.batch_size=8", "trainer.max_steps=100", "model.optimizer.lr=1.0e-3", "trainer.check_val_every_n_epoch=100"],
             [["quality=2"], ["quality=5"]]),
        ],
        "feature_codecs": [],
        "anchors": [("jpeg", "quality", [5, 20, 50]), ("hevc", "qp", [32, 37, 42])],
        "eval": ["max_images=4"],
        "bd_anchors": ["jpeg"],
        "bd": [("jpeg", "psnr")],
    },
    "mini": {
        "data": ["data=synthetic", "data.synthetic_num=96", "data.split_fractions=[0.8,0.1,0.1]"],
        "detector": {
            "backbone": "resnet18_fpn",
            # Half resolution on CPU: the detector's transform scales frames to 188 px high.
            "overrides": ["detector.min_size=188", "detector.max_size=621"],
            "train": ["data.crop_size=[375,621]", "data.batch_size=4", "trainer.max_steps=150", "trainer.max_epochs=1000",
                      "+detector.rpn_post_nms_top_n_train=600", "+detector.box_batch_size_per_image=128",
                      "model.warmup_steps=25", "~model.optimizer",
                      "+model.optimizer={_target_:torch.optim.AdamW,_partial_:true,lr:3.0e-4,weight_decay:1.0e-4}"],
        },
        # Minutes per point on a CPU: small codecs, lr 1e-3 (CompressAI's 1e-4 is for 1M-step runs).
        "image_codecs": [
            (name, [f"model={name}", "model.codec.N=64", "model.codec.M=96", "model.optimizer.lr=1.0e-3",
                    "data.crop_size=[128,128]", "data.batch_size=8", "trainer.max_steps=150",
                    "trainer.check_val_every_n_epoch=100"] + extra,
             [["quality=1"], ["quality=3"], ["quality=5"]])
            for name, extra in (("factorized", []), ("hyperprior", []),
                                # detector features of the 128-px crops at their native (half) scale, as at test time
                                ("roi_hyperprior", ["loss.alpha=0.9", "detector.min_size=64", "detector.max_size=64"]))
        ],
        # Feature codecs: lambdas for this detector's feature scale (the source's 0.0125..0.5 are for
        # a COCO-trained ResNet-50 and leave these short runs at ~0.01 bpp with nothing decoded).
        "feature_codecs": [
            # the light decoder (the source's DRNet mixes at 256 channels whatever M: ~3.5x the cost at M=64)
            (name, [f"model={name}", "model.codec.N=64", "model.codec.M=64", "model.codec.light=true",
                    "model.codec.entropy_model=hyperprior",
                    "model.optimizer.lr=1.0e-3", "data.crop_size=[256,256]", "data.batch_size=4", "trainer.max_steps=120",
                    "trainer.check_val_every_n_epoch=100",
                    "detector.min_size=128", "detector.max_size=128"]  # crops at the detector's (half) scale
             + extra,
             [["lmbda=2"], ["lmbda=8"], ["lmbda=32"]])
            for name, extra in (("lmsfc", []),
                                # w = 0.1 absolute at these lambdas (not scaled with lambda, see ta_msf.yaml)
                                ("ta_msf", ["model.warmup_steps=30", "model.warmup_epochs=0", "model.det_weight_lmbda=null",
                                            # fewer sampled proposals/RoIs: the task loss's cost, not its meaning
                                            "+detector.rpn_pre_nms_top_n_train=600", "+detector.rpn_post_nms_top_n_train=300",
                                            "+detector.box_batch_size_per_image=128"]))
        ],
        "anchors": [("jpeg", "quality", [2, 5, 20]), ("webp", "quality", [0, 10, 40]),
                    ("hevc", "qp", [32, 42, 51]), ("av1", "qp", [45, 55, 63]),
                    ("feature_hevc", "qp", [37, 42, 47])],
        "eval": [],
        "bd_anchors": ["hevc", "hyperprior", "lmsfc"],
        "bd": [("hevc", "psnr"), ("hevc", "map_50"), ("hyperprior", "roi_psnr"), ("lmsfc", "map_50")],
    },
    "full": {
        "data": ["data=kitti", "data.num_workers=8"],
        "detector": {
            "backbone": "resnet50_fpn_v2",
            "train": ["detector.weights=DEFAULT", "data.crop_size=null", "data.batch_size=4", "data.color_jitter=0.2",
                      "trainer=gpu", "trainer.max_epochs=30", "trainer.max_steps=-1", "model.warmup_steps=500",
                      "trainer.precision=bf16-mixed"],
        },
        "image_codecs": [
            (name, [f"model={name}", "data.crop_size=[256,256]", "data.batch_size=16", "trainer=gpu", "trainer.max_steps=500000",
                    "trainer.check_val_every_n_epoch=5"] + extra,
             [[f"quality={q}"] for q in range(1, 9)])
            for name, extra in (("factorized", []), ("hyperprior", []), ("mean_scale", []),
                                ("roi_hyperprior", ["loss.alpha=0.995"]))
        ],
        "feature_codecs": [
            (name, [f"model={name}", "data.crop_size=[512,512]", "data.batch_size=8", "trainer=gpu", "trainer.max_steps=300000",
                    "trainer.check_val_every_n_epoch=5"] + extra,
             [[f"quality={q}"] for q in range(1, 7)])
            for name, extra in (("lmsfc", []), ("ta_msf", ["model.warmup_epochs=5"]))
        ],
        "anchors": [("jpeg", "quality", [10, 30, 50, 70, 90]), ("webp", "quality", [10, 30, 50, 70, 90]),
                    ("hevc", "qp", [22, 27, 32, 37, 42]), ("hevc444", "qp", [22, 27, 32, 37, 42]),
                    ("av1", "qp", [20, 30, 40, 50, 55]), ("feature_hevc", "qp", [22, 27, 32, 37, 42])],
        "eval": ["device=cpu"],
        "bd_anchors": ["hevc", "hyperprior", "lmsfc"],
        "bd": [("hevc", "psnr"), ("hevc", "map_50"), ("hyperprior", "roi_psnr"), ("lmsfc", "map_50")],
    },
}

METRICS = ["psnr", "roi_psnr", "map_50", "kitti_ap_car_moderate"]


def run_study(preset: str, out: Path, detector_ckpt: str | None = None, dry_run: bool = False,
              only: set[str] | None = None) -> int:
    p = PRESETS[preset]
    st = Study(preset, out, dry_run=dry_run)
    data = p["data"]
    backbone = p["detector"]["backbone"]
    det = [f"detector={backbone}", *p["detector"].get("overrides", [])]

    # 1. The detector every task metric depends on.
    if detector_ckpt is None:
        ok = st.train("detector", ["model=detector", *data, *det, *p["detector"]["train"]])
        best = st.best_checkpoint("detector") if ok else None
        if best is None and not dry_run:
            print("the detector could not be trained; task metrics and feature codecs are skipped", file=sys.stderr)
            return st.finish() or 1
        # a dry run prints where the detector's best checkpoint will be
        detector_ckpt = str(best or st.run_dir("detector") / "checkpoints" / "best-EPOCH-STEP.ckpt")
    det_ckpt = [*det, f"detector.checkpoint={detector_ckpt}"]
    ev = ["split=test", *data, *det_ckpt, *p["eval"]]

    def want(name: str) -> bool:
        return only is None or name in only

    # 2. Reference: the detector on uncompressed images.
    if want("none"):
        st.evaluate("none", ["codec=none", *ev])

    # 3. Classical anchors (before the long training runs, so a broken one shows early).
    for codec, knob, values in p["anchors"]:
        if not want(codec):
            continue
        for v in values:
            st.evaluate(f"{codec}_{knob}{v}", [f"codec={codec}", f"codec.{knob}={v}", *ev])

    # 4. Learned codecs. roi_hyperprior is conditioned on the detector while training and the
    # feature codecs compress its FPN, so those train against the trained detector.
    learned = [(n, o, pts, n == "roi_hyperprior") for n, o, pts in p["image_codecs"]]
    learned += [(n, o, pts, True) for n, o, pts in p["feature_codecs"]]
    for name, overrides, points, needs_detector in learned:
        if not want(name):
            continue
        for rp in points:
            point = f"{name}_{'_'.join(o.replace('=', '') for o in rp)}"
            extra = det_ckpt if needs_detector else []
            if st.done(f"eval_{point}") and not dry_run:
                print(f"[{preset}] {point}: record exists, skipped", flush=True)
                continue
            ckpt = st.train(point, [*data, *extra, *overrides, *rp, "data.max_eval_images=2"])
            if ckpt:
                st.evaluate(f"eval_{point}", ["codec=checkpoint", f"codec.ckpt={ckpt}", *ev])

    # 5. RD table, BD-rates, plots, report.
    try:
        st.report(p["bd_anchors"], METRICS, p["bd"])
    except SystemExit as e:  # vcm-rd signals "no records" by exit code
        if e.code:
            st.failures.append({"point": "report", "exit": e.code, "log": "-", "tail": []})
    return st.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="mini")
    ap.add_argument("--out", type=Path, help="output folder (default: outputs/<preset>)")
    ap.add_argument("--detector-ckpt", help="reuse this detector checkpoint instead of training one "
                    "(points whose results record already exists are kept, so a stopped study continues)")
    ap.add_argument("--only", nargs="+", help="run only these codecs (e.g. hyperprior jpeg)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    a = ap.parse_args(argv)
    from vcm.utils.config import PROJECT_ROOT

    out = a.out or PROJECT_ROOT / "outputs" / {"demo": "demo", "mini": "paper-mini", "full": "paper"}[a.preset]
    return run_study(a.preset, out, a.detector_ckpt, a.dry_run, set(a.only) if a.only else None)


if __name__ == "__main__":
    sys.exit(main())
