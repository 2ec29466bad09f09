"""COCO mAP via pycocotools: perfect predictions, hand cases, crowd regions, torchmetrics parity."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vcm.metrics.coco import CocoMAP, class_key, save_coco_json, targets_to_coco

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def target(boxes=(), labels=(), ignore=(), neighbours=(), neighbour_labels=(), image_id=0, hw=(375, 1242)):
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
        "ignore_boxes": torch.as_tensor(ignore, dtype=torch.float32).reshape(-1, 4),
        "neighbour_boxes": torch.as_tensor(neighbours, dtype=torch.float32).reshape(-1, 4),
        "neighbour_labels": torch.as_tensor(neighbour_labels, dtype=torch.int64).reshape(-1),
        "image_id": image_id,
        "name": f"{image_id:06d}",
        "orig_size": torch.tensor(hw),
    }


def pred(boxes=(), scores=(), labels=()):
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.as_tensor(scores, dtype=torch.float32).reshape(-1),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
    }


def box(i: int) -> list[float]:
    x = 60.0 * i
    return [x, 10.0, x + 50.0, 70.0]


def test_perfect_predictions_give_one():
    targets = [target([box(0), box(1), box(2)], [1, 2, 3], image_id=i) for i in range(3)]
    preds = [pred(t["boxes"], [0.9, 0.8, 0.7], t["labels"]) for t in targets]
    m = CocoMAP(CLASSES)
    m.update(preds, targets)
    out = m.compute()
    assert out["map"] == pytest.approx(1.0) and out["map_50"] == pytest.approx(1.0)
    assert out["map_75"] == pytest.approx(1.0)
    assert out["ap_car"] == pytest.approx(1.0) and out["ap_cyclist"] == pytest.approx(1.0)


def test_hand_computed_ap_with_false_positive_between_true_positives():
    # 2 Car GT; detections TP (.9), FP (.8), TP (.7) -> precision/recall points (1, .5), (.5, .5),
    # (2/3, 1). COCO's interpolated precision is 1 for recall <= .5 (51 points: 0, .01, .., .5)
    # and 2/3 for recall in (.5, 1] (50 points) -> AP = (51 + 50 * 2/3) / 101, at every IoU.
    m = CocoMAP(CLASSES)
    m.update([pred([box(0), box(5), box(1)], [0.9, 0.8, 0.7], [1, 1, 1])], [target([box(0), box(1)], [1, 1])])
    out = m.compute()
    expected = (51 + 50 * 2 / 3) / 101
    assert out["map_50"] == pytest.approx(expected, abs=1e-12)
    assert out["ap_car"] == pytest.approx(expected, abs=1e-12)
    # classes without ground truth are NaN and do not enter the mean
    assert math.isnan(out["ap_pedestrian"]) and math.isnan(out["ap_cyclist"])
    assert out["map"] == pytest.approx(expected, abs=1e-12)


def test_detection_on_dontcare_region_is_ignored_for_every_class():
    # the FP of the hand case lies in a DontCare region: AP back to 1
    for label in (1, 2):
        m = CocoMAP(CLASSES)
        gt = target([box(0), box(1)], [label, label], ignore=[box(5)])
        m.update([pred([box(0), box(5), box(1)], [0.9, 0.8, 0.7], [label] * 3)], [gt])
        assert m.compute()["map"] == pytest.approx(1.0)


def test_crowd_region_does_not_steal_true_positives_or_count_as_gt():
    # a DontCare box covering the whole image: the TP still matches its object
    m = CocoMAP(CLASSES)
    gt = target([box(0)], [1], ignore=[[0.0, 0.0, 1242.0, 375.0]])
    m.update([pred([box(0)], [0.9], [1])], [gt])
    out = m.compute()
    assert out["map"] == pytest.approx(1.0)
    assert math.isnan(out["ap_pedestrian"])  # crowd-only class has no ground truth


def test_neighbour_box_is_ignored_for_its_class_only():
    gt = target([box(0), box(1)], [1, 1], neighbours=[box(5)], neighbour_labels=[1])
    m = CocoMAP(CLASSES)
    m.update([pred([box(0), box(5), box(1)], [0.9, 0.8, 0.7], [1, 1, 1])], [gt])
    assert m.compute()["ap_car"] == pytest.approx(1.0)
    m = CocoMAP(CLASSES, neighbours_as_crowd=False)
    m.update([pred([box(0), box(5), box(1)], [0.9, 0.8, 0.7], [1, 1, 1])], [gt])
    assert m.compute()["ap_car"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # a Pedestrian detection on the Car's neighbour is a false positive
    gt = target([box(0), box(1)], [2, 2], neighbours=[box(5)], neighbour_labels=[1])
    m = CocoMAP(CLASSES)
    m.update([pred([box(0), box(5), box(1)], [0.9, 0.8, 0.7], [2, 2, 2])], [gt])
    assert m.compute()["ap_pedestrian"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_targets_to_coco_format_and_save(tmp_path):
    t = target([[10, 20, 40, 60]], [2], ignore=[[0, 0, 5, 5]], neighbours=[[1, 1, 3, 4]], neighbour_labels=[1], image_id=7)
    d = targets_to_coco([t], CLASSES)
    assert d["images"] == [{"id": 7, "file_name": "000007", "height": 375, "width": 1242}]
    assert [c["id"] for c in d["categories"]] == [1, 2, 3]
    anns = d["annotations"]
    assert anns[0] == {"id": 1, "image_id": 7, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0], "area": 1200.0, "iscrowd": 0}
    crowd = [a for a in anns if a["iscrowd"] == 1]
    assert sorted(a["category_id"] for a in crowd if a["bbox"] == [0.0, 0.0, 5.0, 5.0]) == [1, 2, 3]
    assert [a["category_id"] for a in crowd if a["bbox"] == [1.0, 1.0, 2.0, 3.0]] == [1]
    assert min(a["id"] for a in anns) == 1 and len({a["id"] for a in anns}) == len(anns)
    path = save_coco_json(tmp_path / "sub" / "gt.json", d)
    assert json.loads(path.read_text()) == d
    with pytest.raises(ValueError, match="duplicate image_id 7"):
        targets_to_coco([t, t], CLASSES)
    with pytest.raises(ValueError, match="labels must be in 1..3"):
        targets_to_coco([target([box(0)], [4])], CLASSES)


def test_no_images_and_no_predictions():
    m = CocoMAP(CLASSES)
    out = m.compute()
    assert math.isnan(out["map"]) and set(out) == {"map", "map_50", "map_75", "ap_car", "ap_pedestrian", "ap_cyclist", "ap50_car", "ap50_pedestrian", "ap50_cyclist"}
    m.update([pred()], [target([box(0)], [1])])
    out = m.compute()
    assert out["map"] == 0.0 and out["ap_car"] == 0.0
    m.reset()
    assert len(m) == 0


def test_class_key():
    assert class_key("Traffic Light") == "traffic_light" and class_key("Person_sitting") == "person_sitting"


def test_matches_torchmetrics_pycocotools_backend():
    tm = pytest.importorskip("torchmetrics.detection")
    g = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for i in range(6):
        k = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 300
        wh = 20 + torch.rand(k, 2, generator=g) * 80
        gt_boxes = torch.cat([xy, xy + wh], 1)
        gt_labels = torch.randint(1, 4, (k,), generator=g)
        # detections: jittered GT (some mislabelled) plus random boxes, random scores
        n = int(torch.randint(0, 9, (1,), generator=g))
        src = torch.randint(0, k, (n,), generator=g)
        d = gt_boxes[src] + torch.randn(n, 4, generator=g) * 6
        rnd = torch.rand(n, generator=g) < 0.3
        d[rnd] = torch.cat([xy[:1].repeat(n, 1), xy[:1].repeat(n, 1) + 50], 1)[rnd] + torch.rand(int(rnd.sum()), 4, generator=g) * 100
        d = torch.cat([torch.minimum(d[:, :2], d[:, 2:]), torch.maximum(d[:, :2], d[:, 2:])], 1)
        # torchmetrics converts to xywh in float32; quarter-pixel coordinates make that exact
        gt_boxes, d = (gt_boxes * 4).round() / 4, (d * 4).round() / 4
        lab = torch.where(torch.rand(n, generator=g) < 0.8, gt_labels[src], torch.randint(1, 4, (n,), generator=g))
        scores = torch.rand(n, generator=g)
        targets.append(target(gt_boxes, gt_labels, image_id=i))
        preds.append(pred(d, scores, lab))
    ours = CocoMAP(CLASSES)
    ours.update(preds[:3], targets[:3])
    ours.update(preds[3:], targets[3:])
    out = ours.compute()
    # torchmetrics' default thresholds come from torch.linspace in float32 (0.55 -> 0.5500000119...),
    # which moves recall points that fall exactly on a threshold; give it pycocotools' own values.
    ref = tm.MeanAveragePrecision(
        backend="pycocotools",
        class_metrics=True,
        iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
        rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
    )
    ref.update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    r = ref.compute()
    assert 0.05 < out["map"] < 0.95  # a non-trivial case
    for k in ("map", "map_50", "map_75"):
        assert out[k] == pytest.approx(float(r[k]), abs=1e-6), k
    for cls_id, ap in zip(r["classes"].tolist(), r["map_per_class"].tolist()):
        assert out[f"ap_{CLASSES[cls_id - 1].lower()}"] == pytest.approx(ap, abs=1e-6)
    # Per-class AP50 equals torchmetrics' per-class mAP at the single IoU threshold 0.5.
    ref50 = tm.MeanAveragePrecision(backend="pycocotools", class_metrics=True, iou_thresholds=[0.5],
                                    rec_thresholds=np.linspace(0.0, 1.0, 101).tolist())
    ref50.update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    r50 = ref50.compute()
    for cls_id, ap in zip(r50["classes"].tolist(), r50["map_per_class"].tolist()):
        assert out[f"ap50_{CLASSES[cls_id - 1].lower()}"] == pytest.approx(ap, abs=1e-6)
