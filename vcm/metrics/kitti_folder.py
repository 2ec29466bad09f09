"""The KITTI devkit's 2D evaluation of a folder of results files against a folder of labels.

A results folder holds one ``<frame>.txt`` per frame in ``label_2`` format with the detection
score as the 16th field (what the object benchmark's server and ``evaluate_object`` read; an empty
file = no detections). The ground truth is a ``label_2`` folder with the same frame names. AP|R40
and AP|R11 at the three difficulties come from :func:`vcm.metrics.kitti.eval_kitti_2d`, which is
tested against the devkit's rules.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vcm.data.kitti import KittiObject, format_result_line, parse_label_file
from vcm.errors import DataError
from vcm.metrics.kitti import (
    DIFFICULTIES,
    KITTI_CLASSES,
    KITTI_MIN_OVERLAP,
    eval_kitti_2d,
)
from vcm.utils.io import atomic_write_text

__all__ = ["evaluate_kitti_folder", "format_kitti_table", "frame_files", "write_results_file"]


def write_results_file(
    path: str | os.PathLike, boxes: Any, scores: Any, labels: Any, class_names: Sequence[str]
) -> Path:
    """Write one frame's detections as a KITTI results file, atomically (no detections = empty file).

    Args:
        path: the ``<frame>.txt`` to write.
        boxes: [N,4] xyxy in pixels of the original image (tensor or array).
        scores: [N] confidences.
        labels: [N] in 1..C; label ``i`` is written as ``class_names[i - 1]``.
        class_names: the C class names (KITTI types, e.g. ``Car``).

    Raises:
        ValueError: a label outside 1..C or lengths that disagree.
    """
    def array(x, dtype) -> np.ndarray:
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else x
        return np.asarray(x, dtype=dtype)

    boxes = array(boxes, np.float64).reshape(-1, 4)
    scores = array(scores, np.float64).reshape(-1)
    labels = array(labels, np.int64).reshape(-1)
    if not boxes.shape[0] == scores.shape[0] == labels.shape[0]:
        raise ValueError(f"{path}: {boxes.shape[0]} boxes, {scores.shape[0]} scores, {labels.shape[0]} labels disagree")
    if labels.size and (labels.min() < 1 or labels.max() > len(class_names)):
        raise ValueError(f"{path}: labels must be in 1..{len(class_names)} for classes {list(class_names)}, "
                         f"got values in [{labels.min()}, {labels.max()}]")
    lines = [format_result_line(class_names[k - 1], b, s) for b, s, k in zip(boxes, scores, labels)]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def frame_files(folder: str | os.PathLike, what: str) -> dict[str, Path]:
    """``{frame: path}`` of the ``*.txt`` files of a folder.

    Raises:
        DataError: if the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist; expected a folder of <frame>.txt files")
    return {p.stem: p for p in sorted(folder.glob("*.txt")) if p.is_file()}


def _annotation(objects: Sequence[KittiObject], with_score: bool) -> dict[str, np.ndarray]:
    anno = {
        "name": np.asarray([o.type for o in objects], dtype=object),
        "bbox": np.asarray([o.bbox for o in objects], dtype=np.float64).reshape(-1, 4),
    }
    if with_score:
        anno["score"] = np.asarray([o.score for o in objects], dtype=np.float64)
    else:
        anno["truncated"] = np.asarray([o.truncated for o in objects], dtype=np.float64)
        anno["occluded"] = np.asarray([o.occluded for o in objects], dtype=np.float64)
    return anno


def _listing(frames: list[str]) -> str:
    return f"{frames[:5]}" + (f" and {len(frames) - 5} more" if len(frames) > 5 else "")


def evaluate_kitti_folder(
    label_dir: str | os.PathLike,
    results_dir: str | os.PathLike,
    classes: Sequence[str] = KITTI_CLASSES,
    only_result_frames: bool = False,
) -> dict[str, Any]:
    """KITTI 2D AP of a results folder, as the official devkit computes it.

    Args:
        label_dir: ground truth, ``<frame>.txt`` in KITTI ``label_2`` format.
        results_dir: detections, ``<frame>.txt`` in ``label_2`` format plus a score (16 fields).
        classes: classes to evaluate, among Car, Pedestrian, Cyclist (case-insensitive).
        only_result_frames: evaluate only the label frames that have a results file (e.g. the
            split an evaluation run covered). By default, as in the devkit, every label frame
            needs a results file.

    Returns:
        ``{"num_frames": int, "frames": [frame, ...], "classes": {class: {"min_overlap": float,
        "ap_r40": {difficulty: float}, "ap_r11": {difficulty: float}, "num_valid_gt":
        {difficulty: int}, "num_detections": int}}, "mean_ap_r40_moderate": float}`` with APs as
        fractions in [0, 1] (the devkit prints percent) and difficulties easy, moderate, hard.
        ``mean_ap_r40_moderate`` is the mean over the evaluated classes (vcm's
        ``kitti_ap_moderate``).

    Raises:
        DataError: a folder is missing or empty, a frame has a results file but no label (or, by
            default, a label but no results file), or a line is malformed or lacks its score
            (naming the file and line).
        ValueError: a class is not one of Car, Pedestrian, Cyclist.
    """
    canonical = {c.lower(): c for c in KITTI_CLASSES}
    wanted = []
    for c in classes:
        if str(c).lower() not in canonical:
            raise ValueError(f"KITTI 2D AP is defined for {list(KITTI_CLASSES)}, got class {c!r}")
        if canonical[str(c).lower()] not in wanted:
            wanted.append(canonical[str(c).lower()])
    if not wanted:
        raise ValueError(f"no class to evaluate; choose among {list(KITTI_CLASSES)}")
    labels = frame_files(label_dir, "label")
    results = frame_files(results_dir, "results")
    if not labels:
        raise DataError(f"label folder {label_dir} holds no <frame>.txt files")
    no_label = sorted(set(results) - set(labels))
    if no_label:
        raise DataError(f"{len(no_label)} results file(s) in {results_dir} have no label file in {label_dir}: {_listing(no_label)}")
    no_results = sorted(set(labels) - set(results))
    if no_results and not only_result_frames:
        raise DataError(
            f"{len(no_results)} frame(s) of {label_dir} have no results file in {results_dir}: {_listing(no_results)}; "
            "every frame needs one (an empty file = no detections), or evaluate only the frames that have one "
            "(--only-result-frames)"
        )
    frames = sorted(results) if only_result_frames else sorted(labels)
    if not frames:
        raise DataError(f"results folder {results_dir} holds no <frame>.txt files")
    gt = [_annotation(parse_label_file(labels[f]), with_score=False) for f in frames]
    dt = [_annotation(parse_label_file(results[f], require_score=True), with_score=True) for f in frames]
    out: dict[str, Any] = {"num_frames": len(frames), "frames": frames, "classes": {}}
    for cls in wanted:
        res = eval_kitti_2d(gt, dt, cls)
        out["classes"][cls] = {
            "min_overlap": KITTI_MIN_OVERLAP[cls],
            "ap_r40": res["ap_r40"],
            "ap_r11": res["ap_r11"],
            "num_valid_gt": res["num_valid_gt"],
            "num_detections": sum(1 for d in dt for name in d["name"] if str(name).lower() == cls.lower()),
        }
    out["mean_ap_r40_moderate"] = float(np.mean([c["ap_r40"]["moderate"] for c in out["classes"].values()]))
    return out


def format_kitti_table(result: dict[str, Any]) -> str:
    """The APs of :func:`evaluate_kitti_folder` in percent, one line per class and metric, as the
    devkit prints them (two decimals), with the counted ground truth and the detections."""
    header = f"{'class':<11} {'IoU':>4}  {'metric':<7}" + "".join(f"{d:>10}" for d in DIFFICULTIES)
    lines = [header, "-" * len(header)]
    for cls, r in result["classes"].items():
        for key, name in (("ap_r40", "AP|R40"), ("ap_r11", "AP|R11")):
            values = "".join(f"{100.0 * r[key][d]:>10.2f}" for d in DIFFICULTIES)
            lines.append(f"{cls:<11} {r['min_overlap']:>4.2f}  {name:<7}{values}")
    lines.append("")
    for cls, r in result["classes"].items():
        gt = "/".join(str(r["num_valid_gt"][d]) for d in DIFFICULTIES)
        lines.append(f"{cls}: {gt} ground-truth boxes counted (easy/moderate/hard), {r['num_detections']} detection(s)")
    lines.append(f"mean moderate AP|R40 over {len(result['classes'])} class(es): {100.0 * result['mean_ap_r40_moderate']:.2f}")
    return "\n".join(lines)
