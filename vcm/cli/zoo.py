"""``make detector`` / ``make zoo``: train, ship and measure vcm's zoo models from scratch.

    python -m vcm.cli.zoo detector   # the real-KITTI detector kitti_mobilenet_v2
    python -m vcm.cli.zoo codecs     # the scale hyperprior at four rate points (hyperprior-kitti-q*)

Each model is trained with ``vcm-train`` on the kitti_mini train frames (chosen on val), written
into ``vcm/zoo/`` with its registry entry (``vcm-zoo add``, :mod:`vcm.zoo.publish`), evaluated with ``vcm-eval`` on
the kitti_mini test frames through the shipped file itself, and the test metrics are attached to
the entry. ``codecs`` trains one base run (quality 4) and fine-tunes the other rate points from it,
then evaluates the JPEG / WebP / HEVC 4:4:4 anchors on the same frames and prints BD-rates.
Every command is printed before it runs; outputs go under ``outputs/zoo`` (``--out``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vcm.studies import EVAL, Study

BASE_QUALITY = 4
FINETUNE_QUALITIES = (1, 3, 5)
DETECTOR_NAME = "kitti_mobilenet_v2"
ANCHOR_SWEEPS = ("jpeg", "webp", "hevc444")


def codec_name(quality: int) -> str:
    return f"hyperprior-kitti-q{quality}"


def _chosen_checkpoint(study: Study, point: str) -> Path | None:
    """The point's best checkpoint by its validation loss (a placeholder path in a dry run)."""
    best = study.best_checkpoint(point)
    return study.run_dir(point) / "checkpoints" / "best.ckpt" if best is None and study.dry_run else best


def _publish(study: Study, point: str, ckpt: Path | None, name: str, minutes: float, notes: str | None = None) -> bool:
    if ckpt is None:
        return False
    argv = [sys.executable, "-m", "vcm.cli.zoo_store", "add", str(ckpt), "--name", name, "--minutes", f"{minutes:.1f}"]
    return study.run(f"publish-{point}", argv + (["--notes", notes] if notes else []))


def _attach(study: Study, point: str, name: str) -> bool:
    return study.run(f"metrics-{point}", [sys.executable, "-m", "vcm.cli.zoo_store", "metrics", name,
                                          str(study.results / f"{point}.json")])


def build_detector(study: Study, epochs: int) -> None:
    t = time.time()
    study.train("detector", ["experiment=detector_kitti", f"trainer.max_epochs={epochs}"])
    minutes = (time.time() - t) / 60
    if (_publish(study, "detector", _chosen_checkpoint(study, "detector"), DETECTOR_NAME, minutes)
            and study.evaluate("detector-test", ["codec=none", "data=kitti_mini", "split=test", f"detector={DETECTOR_NAME}"])):
        _attach(study, "detector-test", DETECTOR_NAME)


def build_codecs(study: Study, steps: int, finetune_steps: int, with_detector: bool) -> None:
    base = f"q{BASE_QUALITY}"
    t = time.time()
    study.train(base, ["experiment=zoo_hyperprior", f"quality={BASE_QUALITY}", f"trainer.max_steps={steps}"])
    minutes = {base: (time.time() - t) / 60}
    base_ckpt = _chosen_checkpoint(study, base)
    for q in FINETUNE_QUALITIES:
        t = time.time()
        study.train(f"q{q}", ["experiment=zoo_hyperprior", f"quality={q}", f"trainer.max_steps={finetune_steps}",
                              "model.optimizer.lr=3.0e-4", f"init_from={base_ckpt}"])
        minutes[f"q{q}"] = (time.time() - t) / 60
    det = [f"detector={DETECTOR_NAME}"] if with_detector else []
    for q in (BASE_QUALITY, *FINETUNE_QUALITIES):
        point, name = f"q{q}", codec_name(q)
        notes = None if q == BASE_QUALITY else f"fine-tuned from the quality-{BASE_QUALITY} base run"
        if (_publish(study, point, _chosen_checkpoint(study, point), name, minutes.get(point, 0.0), notes)
                and study.evaluate(f"{point}-test", ["codec=zoo", f"codec.name={name}", "data=kitti_mini", "split=test", *det])):
            _attach(study, f"{point}-test", name)
    for sweep in ANCHOR_SWEEPS:
        study.run(f"anchor-{sweep}", [*EVAL, "-m", f"experiment=sweep_{sweep}",
                                      "data=kitti_mini", "split=test", *det, f"paths.results_dir={study.results}",
                                      f"hydra.sweep.dir={study.out / 'runs' / ('anchor-' + sweep)}"])
    study.report(["jpeg", "webp", "hevc444"], ["psnr", "ms_ssim"], [("jpeg", "psnr"), ("webp", "psnr"), ("hevc444", "psnr"),
                                                                    ("jpeg", "ms_ssim")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vcm.cli.zoo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["detector", "codecs"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--epochs", type=int, default=10, help="detector training epochs (early stopping on val Car AP)")
    ap.add_argument("--steps", type=int, default=5000, help="steps of the base hyperprior run")
    ap.add_argument("--finetune-steps", type=int, default=1000, help="steps of each fine-tuned rate point")
    ap.add_argument("--no-detector", action="store_true", help="evaluate the codecs without the zoo detector")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    from vcm.utils.config import PROJECT_ROOT

    study = Study(f"zoo-{a.what}", a.out or PROJECT_ROOT / "outputs" / "zoo", dry_run=a.dry_run)
    if a.what == "detector":
        build_detector(study, a.epochs)
    else:
        build_codecs(study, a.steps, a.finetune_steps, with_detector=not a.no_detector)
    return study.finish()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
