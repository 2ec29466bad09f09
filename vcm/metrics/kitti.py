"""KITTI 2D object detection AP, number for number with the official devkit.

The reference is ``evaluate_object.cpp`` of the KITTI object devkit (2019 version, 41 sample
points); OpenPCDet's ``kitti_object_eval_python/eval.py`` is a faithful Python port of it.
Only the 2D image-box ("bbox") part is implemented here. The rules the devkit uses, and this
module reproduces:

* Classes and IoU thresholds: Car 0.7, Pedestrian 0.5, Cyclist 0.5.
* Difficulties easy / moderate / hard: a ground-truth (GT) box counts only if its height is
  ``> 40 / 25 / 25`` px, its occlusion level ``<= 0 / 1 / 2`` and its truncation ``<= 0.15 / 0.30
  / 0.50``. A GT box of the class that fails these tests is *ignored*: a detection matched to it
  is neither a true nor a false positive.
* Neighbouring classes are ignored the same way: Van for Car, Person_sitting for Pedestrian.
* A detection lower than the minimum height (``< 40 / 25 / 25`` px) is ignored, whatever its class.
* A detection that matches nothing and lies in a DontCare region (intersection over the
  *detection's* area above the class IoU threshold, i.e. 0.7 for Car and 0.5 otherwise) is ignored.
* Matching is greedy over GT boxes in file order. To pick the score thresholds, each GT takes the
  highest-scoring unassigned detection with IoU above the threshold; the true-positive scores of
  all images are then sampled by :func:`_sample_thresholds` (at most 41 of them, spaced by recall
  in steps of 1/40). For each threshold, detections scoring at least that much are matched again,
  each GT now taking the unassigned detection of highest IoU, and precision is stored *per
  threshold index*. The precision curve is replaced by its running maximum from the right, and
  AP|R40 is the mean of indices 1..40 while AP|R11 is the mean of indices 0, 4, ..., 40.

A consequence worth knowing: with ``n <= 40`` countable GT boxes, every true positive becomes a
threshold, so perfect detections fill indices ``0..n-1`` only and score AP|R40 = ``(n - 1) / 40``
and AP|R11 = ``(floor((n - 1) / 4) + 1) / 11``. A class/difficulty without countable GT scores 0.
On the full KITTI validation set this never matters; on small subsets it does.

Values are returned as fractions in [0, 1] (the devkit prints percentages).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DIFFICULTIES", "KITTI_CLASSES", "KITTI_MIN_OVERLAP", "KittiAP", "eval_kitti_2d"]

#: Classes with an official 2D benchmark, and their IoU threshold for a true positive.
KITTI_MIN_OVERLAP: dict[str, float] = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
KITTI_CLASSES: tuple[str, ...] = tuple(KITTI_MIN_OVERLAP)
#: GT of these classes is ignored (not counted, not a false positive source) for the key class.
KITTI_NEIGHBOURS: dict[str, tuple[str, ...]] = {"Car": ("Van",), "Pedestrian": ("Person_sitting",), "Cyclist": ()}
DIFFICULTIES: tuple[str, ...] = ("easy", "moderate", "hard")
_MIN_HEIGHT = (40.0, 25.0, 25.0)
_MAX_OCCLUSION = (0, 1, 2)
_MAX_TRUNCATION = (0.15, 0.30, 0.50)
_N_SAMPLE_PTS = 41
_DONTCARE = "dontcare"


# --------------------------------------------------------------------------------------------
# Box overlaps
# --------------------------------------------------------------------------------------------
def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of boxes ``a`` [N,4] and ``b`` [K,4] (xyxy) -> [N,K]; 0 when disjoint."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    # The devkit tests iw > 0 and ih > 0 separately: a negative width times a negative height
    # must not become a positive area.
    return np.where((iw > 0) & (ih > 0), iw * ih, 0.0)


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain IoU (no +1 pixel convention, as in the devkit) of ``a`` [N,4] and ``b`` [K,4] -> [N,K]."""
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)


def _overlap_over_first(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the area of each box of ``a`` (devkit ``criterion=0``) -> [N,K]."""
    inter = _intersection(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(inter > 0, _area(a)[:, None], 1.0), 0.0)


# --------------------------------------------------------------------------------------------
# Per-image preparation (devkit cleanData)
# --------------------------------------------------------------------------------------------
class _Frame:
    """One image reduced to what one class/difficulty evaluation needs.

    GT boxes of unrelated classes and detections of other classes that are tall enough play no
    role in the devkit (flag -1, skipped everywhere), so they are dropped up front; the order of
    the rest is kept because the greedy matching depends on it.
    """

    __slots__ = ("dt_ignored", "dt_scores", "gt_ignored", "in_dontcare", "iou", "num_valid")

    def __init__(
        self, gt: Mapping[str, np.ndarray], dt: Mapping[str, np.ndarray], cls: str, neighbours: set[str], diff: int
    ) -> None:
        cls = cls.lower()
        gt_names = gt["name"]
        gt_boxes = gt["bbox"]
        height = gt_boxes[:, 3] - gt_boxes[:, 1]
        is_cls = gt_names == cls
        is_neighbour = np.isin(gt_names, list(neighbours)) & ~is_cls
        hard_to_see = (
            (gt["occluded"] > _MAX_OCCLUSION[diff])
            | (gt["truncated"] > _MAX_TRUNCATION[diff])
            | (height <= _MIN_HEIGHT[diff])
        )
        valid = is_cls & ~hard_to_see
        keep_gt = is_cls | is_neighbour
        # 0 = counts, 1 = ignored (neighbour class or too hard for this difficulty)
        self.gt_ignored = (~valid[keep_gt]).astype(np.int8)
        self.num_valid = int(valid.sum())

        dt_boxes = dt["bbox"]
        dt_height = np.abs(dt_boxes[:, 3] - dt_boxes[:, 1])
        too_small = dt_height < _MIN_HEIGHT[diff]
        keep_dt = too_small | (dt["name"] == cls)
        # 0 = evaluated, 1 = ignored (too small: may absorb a GT but is never a false positive)
        self.dt_ignored = too_small[keep_dt].astype(np.int8)
        self.dt_scores = dt["score"][keep_dt]
        kept_dt_boxes = dt_boxes[keep_dt]
        self.iou = _iou(kept_dt_boxes, gt_boxes[keep_gt])  # [D, G]
        dontcare = gt_boxes[gt_names == _DONTCARE]
        self.in_dontcare = _overlap_over_first(kept_dt_boxes, dontcare)  # [D, DC]


def _collect_tp_scores(frame: _Frame, min_overlap: float) -> list[float]:
    """Scores of the true positives when each GT takes its best-scoring match (devkit, compute_fp=False)."""
    n_dt = frame.dt_scores.shape[0]
    assigned = np.zeros(n_dt, dtype=bool)
    scores = frame.dt_scores
    out: list[float] = []
    for g in range(frame.gt_ignored.shape[0]):
        cand = ~assigned & (frame.iou[:, g] > min_overlap)
        if not cand.any():
            continue
        # first index of the highest score, like the devkit's strict '>' scan
        j = int(np.argmax(np.where(cand, scores, -np.inf)))
        assigned[j] = True
        if frame.gt_ignored[g] == 0 and frame.dt_ignored[j] == 0:
            out.append(float(scores[j]))
    return out


def _sample_thresholds(scores: Sequence[float], num_gt: int) -> np.ndarray:
    """The devkit's ``getThresholds``: TP scores at recall positions spaced by 1/40.

    Walking the TP scores from the highest, a score is kept when its recall is at least as close
    to the current recall target as the next score's recall; each kept score advances the target
    by 1/40. The last score is always kept. The float accumulation of the target is the devkit's
    own (it decides ties), so it is reproduced exactly.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    current_recall = 0.0
    out: list[float] = []
    n = len(s)
    for i in range(n):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < n - 1 else l_recall
        if (r_recall - current_recall) < (current_recall - l_recall) and i < n - 1:
            continue
        out.append(float(s[i]))
        current_recall += 1.0 / (_N_SAMPLE_PTS - 1.0)
    return np.asarray(out, dtype=np.float64)


def _statistics(frame: _Frame, min_overlap: float, thresholds: np.ndarray) -> np.ndarray:
    """TP, FP, FN counts of one image at every threshold at once (devkit, compute_fp=True).

    Returns:
        int64 [T, 3] of (tp, fp, fn).
    """
    n_t = thresholds.shape[0]
    n_dt = frame.dt_scores.shape[0]
    stats = np.zeros((n_t, 3), dtype=np.int64)
    if n_dt == 0:
        stats[:, 2] = int((frame.gt_ignored == 0).sum())
        return stats
    above = frame.dt_scores[None, :] >= thresholds[:, None]  # [T, D]
    assigned = np.zeros((n_t, n_dt), dtype=bool)
    evaluated = frame.dt_ignored == 0
    rows = np.arange(n_t)
    for g in range(frame.gt_ignored.shape[0]):
        overlap = frame.iou[:, g]
        cand = above & ~assigned & (overlap > min_overlap)[None, :]  # [T, D]
        # An evaluated detection wins over an ignored (too small) one, and among evaluated ones
        # the first of highest IoU; otherwise the first ignored candidate is taken.
        cand_eval = cand & evaluated[None, :]
        has_eval = cand_eval.any(axis=1)
        best_eval = np.argmax(np.where(cand_eval, overlap[None, :], -np.inf), axis=1)
        first_any = np.argmax(cand, axis=1)
        found = cand.any(axis=1)
        chosen = np.where(has_eval, best_eval, first_any)
        if frame.gt_ignored[g] == 0:
            stats[:, 2] += ~found
            tp = found & has_eval
            stats[:, 0] += tp
        assigned[rows[found], chosen[found]] = True
    unmatched = above & ~assigned & evaluated[None, :]
    if frame.in_dontcare.shape[1]:
        # unmatched detections inside a DontCare area are not false positives
        unmatched &= ~(frame.in_dontcare > min_overlap).any(axis=1)[None, :]
    stats[:, 1] = unmatched.sum(axis=1)
    return stats


def _precision_curve(frames: list[_Frame], min_overlap: float) -> tuple[np.ndarray, int]:
    num_valid = sum(f.num_valid for f in frames)
    tp_scores: list[float] = []
    for f in frames:
        tp_scores += _collect_tp_scores(f, min_overlap)
    thresholds = _sample_thresholds(tp_scores, num_valid)
    precision = np.zeros(_N_SAMPLE_PTS, dtype=np.float64)
    if thresholds.size == 0:
        return precision, num_valid
    if thresholds.size > _N_SAMPLE_PTS:  # cannot happen with the devkit's sampling; guard anyway
        raise RuntimeError(f"KITTI threshold sampling gave {thresholds.size} > {_N_SAMPLE_PTS} thresholds")
    pr = np.zeros((thresholds.size, 3), dtype=np.int64)
    for f in frames:
        if f.gt_ignored.size or f.dt_scores.size:
            pr += _statistics(f, min_overlap, thresholds)
    tp, fp = pr[:, 0].astype(np.float64), pr[:, 1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision[: thresholds.size] = tp / (tp + fp)
    # Running maximum from the right over the whole 41-point array. np.maximum propagates NaN
    # (0/0 at a threshold with neither TP nor FP) exactly like the devkit's max over a suffix.
    precision = np.maximum.accumulate(precision[::-1])[::-1].copy()
    return precision, num_valid


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------
def _as_anno(anno: Mapping[str, Any], kind: str, index: int, fields: Iterable[str]) -> dict[str, np.ndarray]:
    missing = [k for k in fields if k not in anno]
    if missing:
        raise ValueError(f"{kind} annotation #{index} lacks {missing}; expected keys {list(fields)}")
    names = np.asarray([str(n).lower() for n in np.asarray(anno["name"]).reshape(-1)], dtype=object)
    bbox = np.asarray(anno["bbox"], dtype=np.float64).reshape(-1, 4) if len(names) else np.zeros((0, 4))
    if bbox.shape[0] != len(names):
        raise ValueError(f"{kind} annotation #{index}: {len(names)} names but bbox has shape {np.shape(anno['bbox'])}")
    out = {"name": names, "bbox": bbox}
    for k in fields:
        if k in ("name", "bbox"):
            continue
        v = np.asarray(anno[k], dtype=np.float64).reshape(-1)
        if v.shape[0] != len(names):
            raise ValueError(f"{kind} annotation #{index}: '{k}' has {v.shape[0]} values for {len(names)} boxes")
        out[k] = v
    return out


def _ap_from_precision(precision: np.ndarray) -> tuple[float, float]:
    r40 = float(np.sum(precision[1:]) / 40.0)
    r11 = float(np.sum(precision[0::4]) / 11.0)
    return r40, r11


def _evaluate(
    gt_annos: Sequence[dict[str, np.ndarray]],
    dt_annos: Sequence[dict[str, np.ndarray]],
    class_name: str,
    neighbours: set[str],
    min_overlap: float,
) -> dict[str, Any]:
    ap_r40, ap_r11, num_valid = {}, {}, {}
    precisions = np.zeros((len(DIFFICULTIES), _N_SAMPLE_PTS))
    for d, diff in enumerate(DIFFICULTIES):
        frames = [_Frame(g, t, class_name, neighbours, d) for g, t in zip(gt_annos, dt_annos)]
        precision, n = _precision_curve(frames, min_overlap)
        precisions[d] = precision
        ap_r40[diff], ap_r11[diff] = _ap_from_precision(precision)
        num_valid[diff] = n
    return {"ap_r40": ap_r40, "ap_r11": ap_r11, "num_valid_gt": num_valid, "precision": precisions}


def eval_kitti_2d(
    gt_annos: Sequence[Mapping[str, Any]],
    dt_annos: Sequence[Mapping[str, Any]],
    class_name: str,
) -> dict[str, Any]:
    """KITTI 2D bbox AP of one class at the three difficulties, as the official devkit computes it.

    Args:
        gt_annos: one dict per image with ``name`` (sequence of [N] KITTI type strings, including
            ``DontCare``, ``Van``, ``Person_sitting``...), ``bbox`` [N,4] xyxy pixels,
            ``truncated`` [N] float and ``occluded`` [N] int, as read from a ``label_2`` file.
        dt_annos: one dict per image (same order) with ``name`` [M], ``bbox`` [M,4] xyxy and
            ``score`` [M].
        class_name: ``"Car"``, ``"Pedestrian"`` or ``"Cyclist"`` (case-insensitive).

    Returns:
        ``{"ap_r40": {difficulty: float}, "ap_r11": {difficulty: float},
        "num_valid_gt": {difficulty: int}, "precision": ndarray [3, 41]}`` with APs in [0, 1] and
        difficulties ``"easy"``, ``"moderate"``, ``"hard"``. ``precision`` is the devkit's
        max-envelope precision per threshold index.

    Raises:
        ValueError: on an unknown class, a length mismatch or a malformed annotation.
    """
    canonical = {c.lower(): c for c in KITTI_CLASSES}.get(str(class_name).lower())
    if canonical is None:
        raise ValueError(f"KITTI 2D AP is defined for {list(KITTI_CLASSES)}, got class '{class_name}'")
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f"got {len(gt_annos)} ground-truth and {len(dt_annos)} detection annotations; need one per image")
    gts = [_as_anno(a, "ground-truth", i, ("name", "bbox", "truncated", "occluded")) for i, a in enumerate(gt_annos)]
    dts = [_as_anno(a, "detection", i, ("name", "bbox", "score")) for i, a in enumerate(dt_annos)]
    neighbours = {n.lower() for n in KITTI_NEIGHBOURS[canonical]}
    return _evaluate(gts, dts, canonical, neighbours, KITTI_MIN_OVERLAP[canonical])


# --------------------------------------------------------------------------------------------
# Accumulating metric on vcm targets
# --------------------------------------------------------------------------------------------
def _np(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if x is None:
        return np.zeros((0, *shape_tail), dtype=dtype)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if shape_tail:
        a = a.reshape(-1, *shape_tail)
    else:
        a = a.reshape(-1)
    return a


class KittiAP:
    """Accumulates detections and vcm targets, then computes KITTI 2D AP (AP|R40 and AP|R11).

    Detections and targets are converted to KITTI annotations: label ``i`` is named
    ``class_names[i - 1]``, ``ignore_boxes`` become DontCare regions, and ``neighbour_boxes``
    become GT boxes of the neighbouring class of their label (Van for Car, Person_sitting for
    Pedestrian), which the devkit ignores. An unknown occlusion (-1) or truncation (< 0) is taken
    as fully visible / not truncated.

    Args:
        class_names: the configured classes, label ``i + 1`` = ``class_names[i]``. AP is computed for
            those of Car, Pedestrian and Cyclist that are present; other classes are not evaluated
            (their detections still take part as the devkit's "other class" detections).

    Example:
        >>> metric = KittiAP(["Car", "Pedestrian", "Cyclist"])
        >>> metric.update(detections, targets)   # lists of dicts, one per image
        >>> metric.compute()["kitti_ap_car_moderate"]
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        if not class_names:
            raise ValueError("KittiAP needs at least one class name")
        self.class_names = [str(c) for c in class_names]
        lower = [c.lower() for c in self.class_names]
        if len(set(lower)) != len(lower):
            raise ValueError(f"duplicate class names in {self.class_names}")
        self.eval_classes = [c for c in KITTI_CLASSES if c.lower() in lower]
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated image."""
        self._gt: list[dict[str, np.ndarray]] = []
        self._dt: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._gt)

    def _names(self, labels: np.ndarray, what: str) -> np.ndarray:
        if labels.size and (labels.min() < 1 or labels.max() > len(self.class_names)):
            raise ValueError(
                f"{what} labels must be in 1..{len(self.class_names)} for classes {self.class_names}, "
                f"got values in [{labels.min()}, {labels.max()}]"
            )
        return np.asarray([self.class_names[i - 1].lower() for i in labels], dtype=object)

    def _neighbour_names(self, labels: np.ndarray) -> np.ndarray:
        kitti = {c.lower(): KITTI_NEIGHBOURS[c] for c in KITTI_CLASSES}
        out = []
        for n in self._names(labels, "neighbour"):
            # A neighbour of a class without a KITTI neighbour gets a name no class uses, so it
            # plays no role, as in the devkit.
            out.append(kitti[n][0].lower() if kitti.get(n) else f"neighbour_of_{n}")
        return np.asarray(out, dtype=object)

    def update(self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add a batch of images.

        Args:
            preds: per image ``{"boxes": [N,4] xyxy, "scores": [N], "labels": [N] in 1..C}``
                (torch tensors or numpy arrays).
            targets: per image vcm target dicts (``boxes``, ``labels``, ``truncation``,
                ``occlusion``, ``ignore_boxes``, ``neighbour_boxes``, ``neighbour_labels``).
        """
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets; need one per image")
        for i, (p, t) in enumerate(zip(preds, targets)):
            for k in ("boxes", "scores", "labels"):
                if k not in p:
                    raise ValueError(f"prediction #{i} lacks '{k}' (expected boxes, scores, labels)")
            for k in ("boxes", "labels"):
                if k not in t:
                    raise ValueError(f"target #{i} lacks '{k}'")
            boxes = _np(t["boxes"], np.float64, (4,))
            labels = _np(t["labels"], np.int64)
            k = boxes.shape[0]
            if labels.shape[0] != k:
                raise ValueError(f"target #{i}: {k} boxes but {labels.shape[0]} labels")
            trunc = _np(t.get("truncation"), np.float64) if t.get("truncation") is not None else np.zeros(k)
            occ = _np(t.get("occlusion"), np.float64) if t.get("occlusion") is not None else np.zeros(k)
            if trunc.shape[0] != k or occ.shape[0] != k:
                raise ValueError(f"target #{i}: truncation/occlusion must have one value per box ({k})")
            trunc = np.maximum(trunc, 0.0)
            occ = np.maximum(occ, 0.0)
            ign = _np(t.get("ignore_boxes"), np.float64, (4,))
            nb = _np(t.get("neighbour_boxes"), np.float64, (4,))
            nl = _np(t.get("neighbour_labels"), np.int64)
            if nl.shape[0] != nb.shape[0]:
                raise ValueError(f"target #{i}: {nb.shape[0]} neighbour_boxes but {nl.shape[0]} neighbour_labels")
            names = np.concatenate(
                [
                    self._names(labels, f"target #{i}"),
                    self._neighbour_names(nl),
                    np.asarray([_DONTCARE] * ign.shape[0], dtype=object),
                ]
            )
            n_extra = nb.shape[0] + ign.shape[0]
            self._gt.append(
                {
                    "name": names,
                    "bbox": np.concatenate([boxes, nb, ign], axis=0),
                    "truncated": np.concatenate([trunc, np.zeros(n_extra)]),
                    "occluded": np.concatenate([occ, np.zeros(n_extra)]),
                }
            )
            d_boxes = _np(p["boxes"], np.float64, (4,))
            d_scores = _np(p["scores"], np.float64)
            d_labels = _np(p["labels"], np.int64)
            if not (d_boxes.shape[0] == d_scores.shape[0] == d_labels.shape[0]):
                raise ValueError(
                    f"prediction #{i}: boxes {d_boxes.shape}, scores {d_scores.shape}, labels {d_labels.shape} disagree"
                )
            self._dt.append({"name": self._names(d_labels, f"prediction #{i}"), "bbox": d_boxes, "score": d_scores})

    def compute(self) -> dict[str, float]:
        """AP of every evaluated class and difficulty.

        Returns:
            ``kitti_ap_<class>_<difficulty>`` (AP|R40), ``kitti_ap_r11_<class>_<difficulty>`` and
            ``kitti_ap_moderate`` (mean moderate AP|R40 over the evaluated classes; NaN when none
            of Car/Pedestrian/Cyclist is configured). Values in [0, 1].
        """
        out: dict[str, float] = {}
        moderate = []
        for cls in self.eval_classes:
            res = _evaluate(self._gt, self._dt, cls, {n.lower() for n in KITTI_NEIGHBOURS[cls]}, KITTI_MIN_OVERLAP[cls])
            for diff in DIFFICULTIES:
                out[f"kitti_ap_{cls.lower()}_{diff}"] = res["ap_r40"][diff]
            for diff in DIFFICULTIES:
                out[f"kitti_ap_r11_{cls.lower()}_{diff}"] = res["ap_r11"][diff]
            moderate.append(res["ap_r40"]["moderate"])
        out["kitti_ap_moderate"] = float(np.mean(moderate)) if moderate else math.nan
        return out
