"""KITTI 2D AP: devkit numbers on hand-made cases, edge rules, and real KITTI labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vcm.metrics.kitti import KittiAP, _sample_thresholds, eval_kitti_2d

CLASSES = ["Car", "Pedestrian", "Cyclist"]
CAR = 1
PED = 2


def target(boxes=(), labels=(), trunc=None, occ=None, ignore=(), neighbours=(), neighbour_labels=()):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    k = boxes.shape[0]
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1),
        "truncation": torch.zeros(k) if trunc is None else torch.tensor(trunc, dtype=torch.float32),
        "occlusion": torch.zeros(k, dtype=torch.int64) if occ is None else torch.tensor(occ, dtype=torch.int64),
        "ignore_boxes": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
        "neighbour_boxes": torch.tensor(neighbours, dtype=torch.float32).reshape(-1, 4),
        "neighbour_labels": torch.tensor(neighbour_labels, dtype=torch.int64).reshape(-1),
    }


def pred(boxes=(), scores=(), labels=()):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32).reshape(-1),
        "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1),
    }


def tall_box(i: int, h: float = 60.0) -> list[float]:
    """Disjoint boxes 50 px wide and ``h`` px tall (tall enough for every difficulty by default)."""
    x = 60.0 * i
    return [x, 10.0, x + 50.0, 10.0 + h]


def perfect_car_scene(n: int) -> tuple[list, list]:
    """``n`` images with one easy Car each, detected exactly with score 1."""
    preds, targets = [], []
    for i in range(n):
        b = tall_box(i % 10)
        targets.append(target([b], [CAR]))
        preds.append(pred([b], [1.0], [CAR]))
    return preds, targets


def devkit_r40(n: int) -> float:
    """The devkit's AP|R40 for perfect detections of ``n`` countable GT boxes."""
    return 0.0 if n == 0 else min(n - 1, 40) / 40


def devkit_r11(n: int) -> float:
    return 0.0 if n == 0 else (min(n - 1, 40) // 4 + 1) / 11


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_perfect_detections_below_41_gt_give_devkit_value(n):
    m = KittiAP(CLASSES)
    m.update(*perfect_car_scene(n))
    out = m.compute()
    for diff in ("easy", "moderate", "hard"):
        assert out[f"kitti_ap_car_{diff}"] == pytest.approx((n - 1) / 40, abs=1e-12)
        assert out[f"kitti_ap_r11_car_{diff}"] == pytest.approx(devkit_r11(n), abs=1e-12)


@pytest.mark.parametrize("n", [41, 60])
def test_perfect_detections_with_41_or_more_gt_give_one(n):
    m = KittiAP(CLASSES)
    m.update(*perfect_car_scene(n))
    out = m.compute()
    assert out["kitti_ap_car_easy"] == 1.0
    assert out["kitti_ap_car_moderate"] == 1.0
    assert out["kitti_ap_r11_car_hard"] == 1.0
    # no Pedestrian / Cyclist ground truth at all: the devkit scores 0
    assert out["kitti_ap_pedestrian_moderate"] == 0.0
    assert out["kitti_ap_cyclist_easy"] == 0.0
    assert out["kitti_ap_moderate"] == pytest.approx(1.0 / 3.0)


def test_keys_and_reset():
    m = KittiAP(["Car", "Truck", "Pedestrian"])
    assert m.eval_classes == ["Car", "Pedestrian"]
    m.update(*perfect_car_scene(3))
    out = m.compute()
    assert set(out) == {
        f"kitti_ap{r}_{c}_{d}" for r in ("", "_r11") for c in ("car", "pedestrian") for d in ("easy", "moderate", "hard")
    } | {"kitti_ap_moderate"}
    assert len(m) == 3
    m.reset()
    assert len(m) == 0 and m.compute()["kitti_ap_car_easy"] == 0.0


def test_hand_computed_case_with_false_positive_between_true_positives():
    # 2 Car GT (one image). Detections: TP on GT1 (score .9), FP (score .8), TP on GT2 (.7).
    # Thresholds from TP scores (num_gt = 2): .9 (recall 1/2) and .7 (recall 1) -> 2 indices.
    #   at .9: tp 1, fp 0 -> precision 1;  at .7: tp 2, fp 1 -> precision 2/3.
    # Envelope [1, 2/3, 0, ...]: AP|R40 = (2/3) / 40 (index 0 is skipped); AP|R11 = 1 / 11.
    gt = target([tall_box(0), tall_box(1)], [CAR, CAR])
    dt = pred([tall_box(0), tall_box(5), tall_box(1)], [0.9, 0.8, 0.7], [CAR, CAR, CAR])
    m = KittiAP(CLASSES)
    m.update([dt], [gt])
    out = m.compute()
    assert out["kitti_ap_car_moderate"] == pytest.approx((2 / 3) / 40, abs=1e-12)
    assert out["kitti_ap_r11_car_moderate"] == pytest.approx(1 / 11, abs=1e-12)


def test_hand_computed_case_with_many_gt():
    # 80 Car GT (one per image), all detected with distinct scores, plus one FP scored above all.
    # Walking the 80 TP scores, the devkit keeps the ones whose recall is nearest to k/40: TP
    # counts 1, 2, 4, 6, ..., 80 (41 thresholds). The FP is above every threshold, so
    # precision at index i is tp_i / (tp_i + 1), then the running maximum from the right.
    preds, targets = perfect_car_scene(80)
    scores = np.linspace(1.0, 0.2, 80)
    for p, s in zip(preds, scores):
        p["scores"] = torch.tensor([s], dtype=torch.float32)
    preds[0] = pred([tall_box(0), tall_box(9)], [1.0, 2.0], [CAR, CAR])
    targets[0] = target([tall_box(0)], [CAR])
    gt_annos = [_to_kitti_gt(t) for t in targets]
    dt_annos = [_to_kitti_dt(p) for p in preds]
    res = eval_kitti_2d(gt_annos, dt_annos, "Car")
    tp_at_index = np.array([1] + [2 * k for k in range(1, 41)])  # recall ~ k/40 -> 2k TPs of 80
    expected = tp_at_index / (tp_at_index + 1)
    expected = np.maximum.accumulate(expected[::-1])[::-1]
    np.testing.assert_allclose(res["precision"][0], expected, rtol=0, atol=1e-12)
    assert res["ap_r40"]["easy"] == pytest.approx(expected[1:].mean(), abs=1e-12)


def _to_kitti_gt(t):
    return {
        "name": ["Car"] * len(t["labels"]),
        "bbox": t["boxes"].numpy(),
        "truncated": t["truncation"].numpy(),
        "occluded": t["occlusion"].numpy(),
    }


def _to_kitti_dt(p):
    return {"name": ["Car"] * len(p["labels"]), "bbox": p["boxes"].numpy(), "score": p["scores"].numpy()}


def _two_gt_with_extra_detection(extra_box, extra_label=CAR, **target_kw):
    """2 Car GT detected (scores .9 and .7) plus one extra detection scored .8 in between.

    Without the extra detection the devkit gives AP|R40 = 1/40 (2 GT); if the extra detection is
    counted as a false positive it drops to (2/3)/40.
    """
    gt = target([tall_box(0), tall_box(1)], [CAR, CAR], **target_kw)
    dt = pred([tall_box(0), extra_box, tall_box(1)], [0.9, 0.8, 0.7], [CAR, extra_label, CAR])
    m = KittiAP(CLASSES)
    m.update([dt], [gt])
    return m.compute()["kitti_ap_car_easy"]


def test_extra_detection_is_a_false_positive_by_default():
    assert _two_gt_with_extra_detection(tall_box(5)) == pytest.approx((2 / 3) / 40)


def test_detection_in_dontcare_region_is_ignored():
    dc = tall_box(5)
    assert _two_gt_with_extra_detection(tall_box(5), ignore=[dc]) == pytest.approx(1 / 40)
    # devkit rule: overlap = intersection / detection area, must exceed the class IoU (0.7 for Car)
    # 60 % of the detection inside: enough for Pedestrian/Cyclist (0.5) but a false positive for Car
    partly_inside = [dc[0] + 20.0, dc[1], dc[2] + 20.0, dc[3]]
    assert _two_gt_with_extra_detection(partly_inside, ignore=[dc]) == pytest.approx((2 / 3) / 40)
    mostly_inside = [dc[0] + 10.0, dc[1], dc[2] + 10.0, dc[3]]  # 80 % inside
    assert _two_gt_with_extra_detection(mostly_inside, ignore=[dc]) == pytest.approx(1 / 40)


def test_detection_below_min_height_is_ignored():
    m = KittiAP(CLASSES)
    gt = target([tall_box(0), tall_box(1)], [CAR, CAR])
    dt = pred([tall_box(0), tall_box(5, h=30.0), tall_box(1)], [0.9, 0.8, 0.7], [CAR] * 3)
    m.update([dt], [gt])
    out = m.compute()
    assert out["kitti_ap_car_easy"] == pytest.approx(1 / 40)  # 30 px < 40: ignored for easy
    assert out["kitti_ap_car_moderate"] == pytest.approx((2 / 3) / 40)  # counts for moderate


def test_gt_below_min_height_is_ignored():
    # 3 Car GT, one only 30 px tall: easy counts 2 (-> 1/40), moderate/hard count 3 (-> 2/40)
    gt = target([tall_box(0), tall_box(1), tall_box(2, h=30.0)], [CAR] * 3)
    dt = pred([tall_box(0), tall_box(1), tall_box(2, h=30.0)], [0.9, 0.8, 0.7], [CAR] * 3)
    m = KittiAP(CLASSES)
    m.update([dt], [gt])
    out = m.compute()
    assert out["kitti_ap_car_easy"] == pytest.approx(1 / 40)
    assert out["kitti_ap_car_moderate"] == pytest.approx(2 / 40)
    # and an undetected small GT is no false negative for easy
    m.reset()
    m.update([pred([tall_box(0), tall_box(1)], [0.9, 0.8], [CAR] * 2)], [gt])
    out = m.compute()
    assert out["kitti_ap_car_easy"] == pytest.approx(1 / 40)
    # moderate: 2 of 3 found; thresholds at recall 1/3, 2/3 -> AP = 1/40
    assert out["kitti_ap_car_moderate"] == pytest.approx(1 / 40)


def test_van_detected_as_car_is_not_a_false_positive():
    van = tall_box(5)
    assert _two_gt_with_extra_detection(van, neighbours=[van], neighbour_labels=[CAR]) == pytest.approx(1 / 40)
    # a Person_sitting neighbour of Pedestrian does not protect a Car detection
    assert _two_gt_with_extra_detection(van, neighbours=[van], neighbour_labels=[PED]) == pytest.approx((2 / 3) / 40)


def test_occlusion_and_truncation_move_gt_between_difficulties():
    boxes = [tall_box(i) for i in range(4)]
    # occlusion 1 -> not easy; truncation 0.2 -> not easy; occlusion 2 -> hard only; trunc 0.4 -> hard only
    gt = target(boxes, [CAR] * 4, trunc=[0.0, 0.2, 0.0, 0.4], occ=[1, 0, 2, 0])
    m = KittiAP(CLASSES)
    m.update([pred(boxes, [0.9, 0.8, 0.7, 0.6], [CAR] * 4)], [gt])
    out = m.compute()
    assert out["kitti_ap_car_easy"] == 0.0  # no countable GT
    assert out["kitti_ap_car_moderate"] == pytest.approx(1 / 40)  # 2 GT
    assert out["kitti_ap_car_hard"] == pytest.approx(3 / 40)  # 4 GT
    # unknown occlusion (-1) counts as fully visible
    m.reset()
    m.update([pred(boxes[:2], [0.9, 0.8], [CAR] * 2)], [target(boxes[:2], [CAR] * 2, occ=[-1, -1])])
    assert m.compute()["kitti_ap_car_easy"] == pytest.approx(1 / 40)


def test_class_without_gt_scores_zero_even_with_detections():
    m = KittiAP(CLASSES)
    m.update([pred([tall_box(0)], [0.9], [PED])], [target([tall_box(1)], [CAR])])
    out = m.compute()
    assert out["kitti_ap_pedestrian_easy"] == 0.0
    assert out["kitti_ap_car_easy"] == 0.0  # GT exists but nothing found


def test_numpy_inputs_and_errors():
    m = KittiAP(CLASSES)
    p = {k: v.numpy() for k, v in pred([tall_box(0)], [0.9], [CAR]).items()}
    t = {k: v.numpy() for k, v in target([tall_box(0)], [CAR]).items()}
    m.update([p], [t])
    assert m.compute()["kitti_ap_r11_car_easy"] == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match="labels must be in 1..3"):
        m.update([pred([tall_box(0)], [0.9], [4])], [target()])
    with pytest.raises(ValueError, match="one per image"):
        m.update([], [target()])
    with pytest.raises(ValueError, match="Car"):
        eval_kitti_2d([], [], "Van")


def test_threshold_sampling_keeps_at_most_41():
    assert len(_sample_thresholds(np.linspace(1, 0, 500), 500)) == 41
    assert len(_sample_thresholds(np.ones(7), 7)) == 7
    assert len(_sample_thresholds([], 3)) == 0


def _read_kitti_labels(path: Path) -> dict:
    """Minimal reader of a KITTI label_2 file (15 whitespace-separated fields per object)."""
    names, bbox, trunc, occ = [], [], [], []
    for line in path.read_text().splitlines():
        f = line.split()
        if not f:
            continue
        assert len(f) == 15, f"{path}: expected 15 fields, got {len(f)}"
        names.append(f[0])
        trunc.append(float(f[1]))
        occ.append(int(float(f[2])))
        bbox.append([float(v) for v in f[4:8]])
    return {
        "name": np.array(names, dtype=object),
        "bbox": np.array(bbox, dtype=np.float64).reshape(-1, 4),
        "truncated": np.array(trunc),
        "occluded": np.array(occ),
    }


def test_eval_kitti_2d_on_real_labels_with_gt_as_detections(shared_data):
    label_dir = shared_data / "kitti_tiny" / "training" / "label_2"
    files = sorted(label_dir.glob("*.txt"))
    assert files, f"no label files in {label_dir}"
    gts = [_read_kitti_labels(p) for p in files]
    dts = [{"name": g["name"], "bbox": g["bbox"], "score": np.ones(len(g["name"]))} for g in gts]
    limits = {"easy": (40, 0, 0.15), "moderate": (25, 1, 0.30), "hard": (25, 2, 0.50)}
    for cls in ("Car", "Pedestrian", "Cyclist"):
        res = eval_kitti_2d(gts, dts, cls)
        for diff, (min_h, max_occ, max_trunc) in limits.items():
            n = sum(
                int(
                    ((g["name"] == cls) & (g["bbox"][:, 3] - g["bbox"][:, 1] > min_h)
                     & (g["occluded"] <= max_occ) & (g["truncated"] <= max_trunc)).sum()
                )
                for g in gts
            )
            assert res["num_valid_gt"][diff] == n
            assert res["ap_r40"][diff] == pytest.approx(devkit_r40(n), abs=1e-12), (cls, diff, n)
            assert res["ap_r11"][diff] == pytest.approx(devkit_r11(n), abs=1e-12), (cls, diff, n)
    # the real frames hold enough cars for a meaningful check
    assert eval_kitti_2d(gts, dts, "Car")["num_valid_gt"]["moderate"] >= 10
