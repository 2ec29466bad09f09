"""``make bench-features``: does task-awareness work?

With a detector trained on synthetic data (``--detector-ckpt``, e.g. the one ``make paper-mini``
trains, or one trained here), trains L-MSFC and TA-MSF with the same budget at three lambdas,
evaluates split inference (real feature bitstreams, detector heads on the decoded features) on
the test split, and prints the BD-rate of TA-MSF vs L-MSFC on mAP@0.5 (and vs the image
hyperprior when ``--with-hyperprior``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcm.cli.study import detector_overrides, learned_codecs, train_detector
from vcm.cli.study_runner import Study, load_study, point_name
from vcm.utils.config import PROJECT_ROOT

#: the benchmark's settings, conf/study/bench_features.yaml
PRESET = "bench_features"


def main(argv: list[str] | None = None) -> int:
    cfg = load_study(PRESET)
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.bench_features", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=cfg["options"]["steps"],
                    help="training steps per point (same for every codec)")
    ap.add_argument("--detector-ckpt")
    ap.add_argument("--with-hyperprior", action="store_true")
    ap.add_argument("--pretrain-steps", type=int, default=0,
                    help="first train one L-MSFC (RD loss, the middle lambda) for this many steps and fine-tune every "
                         "point of both codecs from it (init_from); 0 = every point from scratch")
    ap.add_argument("--det-weight", type=float, default=cfg["options"]["det_weight"],
                    help="TA-MSF's task-loss weight w, absolute as in the mini study (default 0.1)")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.pretrain_steps < 0:
        ap.error(f"--steps {a.steps} / --pretrain-steps {a.pretrain_steps}: expected >= 1 / >= 0")
    st = Study("bench-features", a.out or PROJECT_ROOT / "outputs" / cfg["out"], dry_run=a.dry_run)
    mini = load_study(cfg["from_study"])
    data = mini["data"]
    det = detector_overrides(mini)
    ckpt = a.detector_ckpt or mini["detector"].get("checkpoint")
    if ckpt is None:
        ckpt = train_detector(st, mini, a.dry_run)
        if ckpt is None:
            return st.finish() or 1
    det_ckpt = [*det, f"detector.checkpoint={ckpt}"]
    ev = ["split=test", *data, *det_ckpt]
    # The paper-mini settings (lambdas for this detector's feature scale, cheaper task loss), with
    # --steps per point for every codec.
    def with_steps(ov: list[str], steps: int) -> list[str]:
        return [o for o in ov if not o.startswith("trainer.max_steps=")] + [f"trainer.max_steps={steps}"]

    models = {name: with_steps(ov, a.steps) for name, ov, _, _ in learned_codecs(mini, ("feature_codecs",))}
    if a.det_weight is not None:
        models["ta_msf"] = [*models["ta_msf"], f"model.det_weight={a.det_weight}"]
    points = mini["feature_codecs"]["points"]
    if a.pretrain_steps:
        # one shared starting point: L-MSFC trained longer at the middle lambda; TA-MSF takes every
        # weight but those of its two extra attention blocks in g_a (see vcm.codecs.base.warm_start)
        base = st.train("base_lmsfc", [*data, *det_ckpt, *with_steps(models["lmsfc"], a.pretrain_steps),
                                       *points[len(points) // 2], "data.max_eval_images=1"])
        if base is None and not a.dry_run:
            return st.finish() or 1
        models = {name: [*ov, f"init_from={base}"] for name, ov in models.items()}
    for name, ov in models.items():
        for rp in points:
            point = point_name(name, rp)
            c = st.train(point, [*data, *det_ckpt, *ov, *rp, "data.max_eval_images=1"])
            if c:
                st.evaluate(f"eval_{point}", ["codec=checkpoint", f"codec.ckpt={c}", *ev])
    if a.with_hyperprior:
        for q in cfg["hyperprior"]["qualities"]:
            point = f"hyperprior_q{q}"
            c = st.train(point, [*data, *cfg["hyperprior"]["train"], f"trainer.max_steps={a.steps}", f"quality={q}"])
            if c:
                st.evaluate(f"eval_{point}", ["codec=checkpoint", f"codec.ckpt={c}", *ev])
    if not a.dry_run:
        from vcm.cli.rd import main as rd

        for anchor in ["lmsfc"] + (["hyperprior"] if a.with_hyperprior else []):
            print(f"\nBD-rate vs {anchor} on map_50 (split inference, real bitstreams):", flush=True)
            rd(["bd", "--anchor", anchor, "--metric", "map_50", str(st.results), "--out", str(st.out / f"bd_map50_vs_{anchor}.csv")])
    return st.finish()


if __name__ == "__main__":
    sys.exit(main())
