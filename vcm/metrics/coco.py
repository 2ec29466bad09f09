"""COCO-style detection metrics (mAP@[.5:.95], AP50, AP75, per-class AP) through pycocotools.

Ground truth comes from vcm target dicts. Regions that must be neither rewarded nor punished are
given to pycocotools as *crowd* annotations (``iscrowd=1``), the only ignore mechanism its
``COCOeval`` has. What that means, and why the conversion is done the way it is:

* ``COCOeval`` sets ``ignore = iscrowd`` for every ground-truth annotation, so a crowd box never
  counts as a positive (it is not in the recall denominator).
* For a crowd box the overlap is *intersection over the detection's area*, not IoU, and a crowd
  box can absorb any number of detections. A detection with no regular match at IoU threshold
  ``t`` that has at least a fraction ``t`` of its area inside a crowd box is ignored (neither TP
  nor FP) at that threshold. Regular boxes are tried first, so a crowd box never steals a true
  positive.
* Evaluation is per category and only sees annotations of that category, so an ignore region
  meant for every class (KITTI DontCare, ``ignore_boxes``) is written once *per category*.
* ``neighbour_boxes`` (e.g. Van for Car, Person_sitting for Pedestrian) are written as crowd
  boxes of the class they neighbour only, so a Car detection on a Van is ignored rather than a
  false positive (the KITTI rule), while other classes are unaffected.
* ``COCOeval`` records matches by annotation id and treats id 0 as "unmatched", so ground-truth
  and detection ids start at 1.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vcm.utils.io import atomic_write_json

__all__ = ["CocoMAP", "class_key", "save_coco_json", "targets_to_coco"]


def class_key(name: str) -> str:
    """Metric-key form of a class name: lower case, runs of non-alphanumerics -> ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def _np(x: Any, dtype: Any, tail: tuple[int, ...] = ()) -> np.ndarray:
    if x is None:
        return np.zeros((0, *tail), dtype=dtype)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1, *tail) if tail else np.asarray(x, dtype=dtype).reshape(-1)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"{what}: labels must be in 1..{num_classes}, got values in [{labels.min()}, {labels.max()}]"
        )


def targets_to_coco(
    targets: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    neighbours_as_crowd: bool = True,
) -> dict[str, Any]:
    """Build a COCO-format ground-truth dict from vcm targets.

    Args:
        targets: vcm target dicts, one per image: ``boxes`` [K,4] xyxy, ``labels`` [K] in 1..C and
            optionally ``ignore_boxes`` [I,4], ``neighbour_boxes`` [J,4], ``neighbour_labels`` [J],
            ``image_id`` (default: position in ``targets``), ``name`` (the ``file_name``) and
            ``orig_size`` (H, W) (gives ``height``/``width``; omitted when absent).
        class_names: class ``i + 1`` is ``class_names[i]``; categories use the label as id.
        neighbours_as_crowd: write neighbour boxes as crowd boxes of the class they neighbour.

    Returns:
        ``{"images", "categories", "annotations"}``. Objects have ``iscrowd=0``; every ignore box
        becomes one ``iscrowd=1`` annotation per category (see the module docstring).

    Raises:
        ValueError: on duplicate image ids, mismatched lengths or labels outside 1..C.
    """
    categories = [{"id": i + 1, "name": str(n)} for i, n in enumerate(class_names)]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen: set[int] = set()

    def add(image_id: int, box: np.ndarray, cat: int, crowd: int) -> None:
        x, y, w, h = (float(v) for v in box)
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(cat),
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": crowd,
            }
        )

    for idx, t in enumerate(targets):
        image_id = int(t["image_id"]) if "image_id" in t and t["image_id"] is not None else idx
        if image_id in seen:
            raise ValueError(f"duplicate image_id {image_id} in targets (target #{idx}); image ids must be unique")
        seen.add(image_id)
        image: dict[str, Any] = {"id": image_id, "file_name": str(t.get("name", image_id))}
        if t.get("orig_size") is not None:
            h, w = (int(v) for v in _np(t["orig_size"], np.int64))
            image.update(height=h, width=w)
        images.append(image)

        boxes = _np(t.get("boxes"), np.float64, (4,))
        labels = _np(t.get("labels"), np.int64)
        if boxes.shape[0] != labels.shape[0]:
            raise ValueError(f"target #{idx}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        _check_labels(labels, len(class_names), f"target #{idx}")
        for b, lab in zip(_xywh(boxes), labels):
            add(image_id, b, lab, 0)
        for b in _xywh(_np(t.get("ignore_boxes"), np.float64, (4,))):
            for c in categories:
                add(image_id, b, c["id"], 1)
        if neighbours_as_crowd:
            nb = _np(t.get("neighbour_boxes"), np.float64, (4,))
            nl = _np(t.get("neighbour_labels"), np.int64)
            if nb.shape[0] != nl.shape[0]:
                raise ValueError(f"target #{idx}: {nb.shape[0]} neighbour_boxes but {nl.shape[0]} neighbour_labels")
            _check_labels(nl, len(class_names), f"target #{idx} neighbour")
            for b, lab in zip(_xywh(nb), nl):
                add(image_id, b, lab, 1)
    return {"images": images, "categories": categories, "annotations": annotations}


def save_coco_json(path: str | os.PathLike, coco_dict: Mapping[str, Any]) -> Path:
    """Write a COCO dict (e.g. from :func:`targets_to_coco`) as JSON, atomically."""
    return atomic_write_json(path, dict(coco_dict))


def _coco_from_dict(d: Mapping[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dict(d)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoMAP:
    """Accumulating COCO detection metric (pycocotools' ``COCOeval``, bbox, maxDets=100).

    Args:
        class_names: class ``i + 1`` is ``class_names[i]``.
        neighbours_as_crowd: treat ``neighbour_boxes`` as crowd regions of their class.

    ``compute()`` returns ``map`` (AP@[.5:.95]), ``map_50``, ``map_75`` and ``ap_<class>``
    (AP@[.5:.95] of one class, key from :func:`class_key`), all in [0, 1]. A class without
    ground truth (pycocotools' -1) gives NaN, and so does ``map`` when no class has any.
    """

    def __init__(self, class_names: Sequence[str], neighbours_as_crowd: bool = True) -> None:
        if not class_names:
            raise ValueError("CocoMAP needs at least one class name")
        self.class_names = [str(c) for c in class_names]
        keys = [class_key(c) for c in self.class_names]
        if len(set(keys)) != len(keys):
            raise ValueError(f"class names {self.class_names} do not give distinct metric keys {keys}")
        self.neighbours_as_crowd = neighbours_as_crowd
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated image."""
        self._preds: list[dict[str, np.ndarray]] = []
        self._targets: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._targets)

    def update(self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add a batch of images.

        Args:
            preds: per image ``{"boxes": [N,4] xyxy, "scores": [N], "labels": [N] in 1..C}``.
            targets: per image vcm target dicts (see :func:`targets_to_coco`).
        """
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets; need one per image")
        for i, (p, t) in enumerate(zip(preds, targets)):
            missing = [k for k in ("boxes", "scores", "labels") if k not in p]
            if missing:
                raise ValueError(f"prediction #{i} lacks {missing} (expected boxes, scores, labels)")
            boxes = _np(p["boxes"], np.float64, (4,))
            scores = _np(p["scores"], np.float64)
            labels = _np(p["labels"], np.int64)
            if not (boxes.shape[0] == scores.shape[0] == labels.shape[0]):
                raise ValueError(f"prediction #{i}: boxes {boxes.shape}, scores {scores.shape}, labels {labels.shape} disagree")
            _check_labels(labels, len(self.class_names), f"prediction #{i}")
            self._preds.append({"boxes": boxes, "scores": scores, "labels": labels})
            kept = {
                k: (_np(t[k], np.float64, (4,)) if "boxes" in k else _np(t[k], np.int64))
                for k in ("boxes", "labels", "ignore_boxes", "neighbour_boxes", "neighbour_labels", "orig_size")
                if t.get(k) is not None
            }
            if "name" in t:
                kept["name"] = str(t["name"])
            # images are numbered here so that ids from different datasets or epochs cannot clash
            kept["image_id"] = len(self._targets) + 1
            self._targets.append(kept)

    def compute(self) -> dict[str, float]:
        """Run ``COCOeval`` on everything accumulated (see the class docstring for the keys)."""
        from pycocotools.cocoeval import COCOeval

        gt = targets_to_coco(self._targets, self.class_names, self.neighbours_as_crowd)
        dets = []
        for t, p in zip(self._targets, self._preds):
            for b, s, lab in zip(_xywh(p["boxes"]), p["scores"], p["labels"]):
                x, y, w, h = (float(v) for v in b)
                dets.append(
                    {
                        "id": len(dets) + 1,
                        "image_id": t["image_id"],
                        "category_id": int(lab),
                        "bbox": [x, y, w, h],
                        "score": float(s),
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        nan = math.nan
        out: dict[str, float] = {"map": nan, "map_50": nan, "map_75": nan}
        out.update({f"ap_{class_key(c)}": nan for c in self.class_names})
        out.update({f"ap50_{class_key(c)}": nan for c in self.class_names})
        if not gt["images"]:
            return out
        coco_gt = _coco_from_dict(gt)
        coco_dt = _coco_from_dict({"images": gt["images"], "categories": gt["categories"], "annotations": dets})
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()

        def clean(v: float) -> float:
            return nan if v < 0 else float(v)

        out["map"], out["map_50"], out["map_75"] = (clean(v) for v in ev.stats[:3])
        # precision: [T iou thresholds, R recall points, K classes, A area ranges, M max dets]
        precision = ev.eval["precision"]
        cat_index = {c: k for k, c in enumerate(ev.params.catIds)}
        for i, c in enumerate(self.class_names):
            pk = precision[:, :, cat_index[i + 1], 0, -1]
            p50 = pk[0][pk[0] > -1]  # IoU threshold 0.5 is the first of pycocotools' ten
            pk = pk[pk > -1]
            out[f"ap_{class_key(c)}"] = float(pk.mean()) if pk.size else nan
            out[f"ap50_{class_key(c)}"] = float(p50.mean()) if p50.size else nan
        return out
