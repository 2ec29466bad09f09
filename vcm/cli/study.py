"""``make demo`` / ``make paper-mini`` / ``make paper``: the whole comparison in one command.

A preset (``--preset``) is a config file, ``vcm/conf/study/<preset>.yaml`` (its comments say what
each key does; a new file there is a new preset):

* ``demo``  (CPU, minutes): real KITTI frames, the 10 kitti_mini test frames; the shipped detector
  and the zoo's hyperprior at four rate points; JPEG and HEVC 4:4:4 anchors; a brief fine-tune of
  the zoo hyperprior; RD table, BD-rates with bootstrap intervals, plots and report.
* ``mini``  (CPU): real KITTI frames (kitti_mini), the shipped detector; the zoo's hyperprior,
  L-MSFC and TA-MSF; hyperprior and roi_hyperprior fine-tuned from the zoo at three rate points;
  anchors (jpeg, webp, hevc, av1, feature_hevc); RD table, BD-rates, plots, report.
* ``full``  (GPU, real KITTI in ``KITTI_ROOT``): the source systems' settings (ResNet-50 FPN v2
  detector, full-size codecs, all qualities); its GPU run times have not been measured.

Everything is written under ``outputs/<preset's out>`` (override with ``--out``);
``--detector-ckpt`` reuses a trained detector instead of training one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcm.studies import Study, load_study, point_name, study_names
from vcm.utils.config import PROJECT_ROOT

# the presets of this script (vcm/conf/study/bench_*.yaml are those of the benchmark scripts)
PRESETS = tuple(n for n in study_names() if not n.startswith("bench_"))
METRICS = ["psnr", "roi_psnr", "map_50", "kitti_ap_car_moderate"]


def learned_codecs(p: dict, groups: tuple[str, ...] = ("image_codecs", "feature_codecs"),
                   ) -> list[tuple[str, list[str], list[list[str]], bool]]:
    """A preset's learned codecs in order: (name, train overrides, rate points, trains against the detector)."""
    out = []
    for group in groups:
        g = p.get(group) or {}
        for name, c in (g.get("codecs") or {}).items():
            c = c or {}
            out.append((name, [f"model={name}", *g.get("train", []), *c.get("train", [])], g["points"],
                        bool(c.get("detector", False))))
    return out


def detector_overrides(p: dict) -> list[str]:
    """The preset's detector (backbone and settings, without its checkpoint)."""
    return [f"detector={p['detector']['backbone']}", *p["detector"].get("overrides", [])]


def train_detector(st: Study, p: dict, dry_run: bool) -> str | None:
    """Train the preset's detector; its best checkpoint (a dry run: where it will be), None on failure."""
    ok = st.train("detector", ["model=detector", *p["data"], *detector_overrides(p), *p["detector"]["train"]])
    best = st.best_checkpoint("detector") if ok else None
    if best is None and not dry_run:
        return None
    return str(best or st.run_dir("detector") / "checkpoints" / "best-EPOCH-STEP.ckpt")


def planned_steps(st: Study, p: dict, trains_detector: bool, only: set[str] | None = None) -> dict[str, int]:
    """The vcm-train / vcm-eval commands :func:`run_study` will run, by kind (for the time-left estimate)."""
    def want(name: str) -> bool:
        return only is None or name in only

    evals = int(want("none")) + sum(len(values) for codec, knobs in (p.get("anchors") or {}).items() if want(codec)
                                    for values in knobs.values())
    trains = int(trains_detector)
    for name, _, points, _ in learned_codecs(p):
        todo = [rp for rp in points if want(name) and not st.done(f"eval_{point_name(name, rp)}")]
        trains, evals = trains + len(todo), evals + len(todo)
    return {"train": trains, "eval": evals}


def run_study(preset: str, out: Path, detector_ckpt: str | None = None, dry_run: bool = False,
              only: set[str] | None = None) -> int:
    p = load_study(preset)
    st = Study(preset, out, dry_run=dry_run)
    st.planned = planned_steps(st, p, (detector_ckpt or p["detector"].get("checkpoint")) is None, only)
    data = p["data"]

    # 1. The detector every task metric depends on.
    detector_ckpt = detector_ckpt or p["detector"].get("checkpoint")
    if detector_ckpt is None:
        detector_ckpt = train_detector(st, p, dry_run)
        if detector_ckpt is None:
            print("the detector could not be trained; task metrics and feature codecs are skipped", file=sys.stderr)
            return st.finish() or 1
    det_ckpt = [*detector_overrides(p), f"detector.checkpoint={detector_ckpt}"]
    ev = ["split=test", *data, *det_ckpt, *p.get("eval", [])]

    def want(name: str) -> bool:
        return only is None or name in only

    # 2. Reference: the detector on uncompressed images.
    if want("none"):
        st.evaluate("none", ["codec=none", *ev])

    # 3. Classical anchors (before the long training runs, so a broken one shows early).
    for codec, knobs in (p.get("anchors") or {}).items():
        if not want(codec):
            continue
        for knob, values in knobs.items():
            for v in values:
                st.evaluate(f"{codec}_{knob}{v}", [f"codec={codec}", f"codec.{knob}={v}", *ev])

    # 4. Learned codecs. roi_hyperprior is conditioned on the detector while training and the
    # feature codecs compress its FPN, so those train against the trained detector.
    for name, overrides, points, needs_detector in learned_codecs(p):
        if not want(name):
            continue
        for rp in points:
            point = point_name(name, rp)
            extra = det_ckpt if needs_detector else []
            if st.done(f"eval_{point}") and not dry_run:
                print(f"[{preset}] {point}: record exists, skipped", flush=True)
                continue
            ckpt = st.train(point, [*data, *extra, *overrides, *rp, "data.max_eval_images=2"])
            if ckpt:
                st.evaluate(f"eval_{point}", ["codec=checkpoint", f"codec.ckpt={ckpt}", *ev])

    # 5. RD table, BD-rates, plots, report.
    try:
        st.report(p["bd_anchors"], METRICS, [tuple(b) for b in p["bd"]], p.get("bd_options"))
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
    out = a.out or PROJECT_ROOT / "outputs" / load_study(a.preset)["out"]
    return run_study(a.preset, out, a.detector_ckpt, a.dry_run, set(a.only) if a.only else None)


if __name__ == "__main__":
    sys.exit(main())
