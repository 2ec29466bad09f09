"""vcm-kitti-eval on results folders, and vcm-eval's detections scored again by it."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose

from vcm.cli.kitti_eval import main
from vcm.data.kitti import format_result_line, parse_label_file
from vcm.errors import ConfigError, DataError
from vcm.metrics.kitti import DIFFICULTIES, KITTI_CLASSES, eval_kitti_2d
from vcm.metrics.kitti_folder import evaluate_kitti_folder

DETECTED_AS = {"Car": "Car", "Van": "Car", "Truck": "Car", "Pedestrian": "Pedestrian",
               "Person_sitting": "Pedestrian", "Cyclist": "Cyclist"}


def _noisy_detections(objects, frame: str, width: float = 1242.0, height: float = 375.0):
    """Detections made from a frame's labels: jittered boxes, some missed, some false, random scores.

    Returns ``(names, boxes [N,4], scores [N])``, boxes inside the image as a detector gives them.
    """
    rng = np.random.default_rng(int(frame))
    names, boxes, scores = [], [], []
    for o in objects:
        if o.type not in DETECTED_AS or rng.random() < 0.15:
            continue
        names.append(DETECTED_AS[o.type])
        boxes.append(np.asarray(o.bbox) + rng.normal(0.0, 3.0, 4))
        scores.append(rng.uniform(0.2, 1.0))
    for _ in range(2):
        x, y = rng.uniform(0, width - 120), rng.uniform(0, height - 90)
        names.append(str(rng.choice(KITTI_CLASSES)))
        boxes.append([x, y, x + rng.uniform(20, 120), y + rng.uniform(20, 90)])
        scores.append(rng.uniform(0.05, 0.9))
    boxes = np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 0.0, [width, height, width, height])
    return names, boxes, np.asarray(scores)


def _anno(objects, with_score=False):
    out = {"name": [o.type for o in objects], "bbox": np.asarray([o.bbox for o in objects]).reshape(-1, 4)}
    if with_score:
        out["score"] = np.asarray([o.score for o in objects])
    else:
        out["truncated"] = np.asarray([o.truncated for o in objects])
        out["occluded"] = np.asarray([o.occluded for o in objects])
    return out


@pytest.fixture
def label_dir(kitti_tiny_root) -> Path:
    return kitti_tiny_root / "training" / "label_2"


@pytest.fixture
def results_dir(label_dir, tmp_path) -> Path:
    """Noisy detections of every kitti_tiny frame as KITTI results files."""
    out = tmp_path / "results"
    out.mkdir()
    for f in sorted(label_dir.glob("*.txt")):
        names, boxes, scores = _noisy_detections(parse_label_file(f), f.stem)
        lines = [format_result_line(n, b, s) for n, b, s in zip(names, boxes, scores)]
        (out / f.name).write_text("".join(line + "\n" for line in lines))
    return out


def test_folder_evaluation_equals_vcm_metrics(label_dir, results_dir, capsys):
    frames = sorted(p.stem for p in label_dir.glob("*.txt"))
    gt = [_anno(parse_label_file(label_dir / f"{f}.txt")) for f in frames]
    dt = [_anno(parse_label_file(results_dir / f"{f}.txt"), with_score=True) for f in frames]
    result = evaluate_kitti_folder(label_dir, results_dir)
    assert result["num_frames"] == 24 and result["frames"] == frames
    for cls in KITTI_CLASSES:
        expected = eval_kitti_2d(gt, dt, cls)
        for key in ("ap_r40", "ap_r11", "num_valid_gt"):
            assert result["classes"][cls][key] == expected[key], (cls, key)
    car = result["classes"]["Car"]
    assert 0.0 < car["ap_r40"]["moderate"] < 1.0  # a meaningful case: neither empty nor perfect
    assert car["num_detections"] == sum(name == "Car" for d in dt for name in d["name"])

    # The command prints percent, two decimals per difficulty, and the same numbers as JSON.
    assert main([str(label_dir), str(results_dir)]) == 0
    out = capsys.readouterr().out
    r40 = "".join(f"{100 * car['ap_r40'][d]:>10.2f}" for d in DIFFICULTIES)
    assert f"Car         0.70  AP|R40 {r40}" in out
    assert main([str(label_dir), str(results_dir), "--json", "--classes", "car", "cyclist"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["unit"] == "percent" and list(doc["classes"]) == ["Car", "Cyclist"]
    for d in DIFFICULTIES:
        assert doc["classes"]["Car"]["ap_r40"][d] == pytest.approx(100 * car["ap_r40"][d], abs=1e-12)
        assert doc["classes"]["Car"]["ap_r11"][d] == pytest.approx(100 * car["ap_r11"][d], abs=1e-12)


def test_labels_as_results_give_the_devkit_values(label_dir, tmp_path):
    # Perfect detections of n countable boxes score (n - 1) / 40 in the devkit (see vcm.metrics.kitti).
    res = tmp_path / "res"
    res.mkdir()
    for f in label_dir.glob("*.txt"):
        lines = [line.rstrip() + " 1.0" for line in f.read_text().splitlines() if line.strip()]
        (res / f.name).write_text("\n".join(lines) + ("\n" if lines else ""))
    result = evaluate_kitti_folder(label_dir, res)
    for cls in KITTI_CLASSES:
        for d in DIFFICULTIES:
            n = result["classes"][cls]["num_valid_gt"][d]
            assert result["classes"][cls]["ap_r40"][d] == pytest.approx(0.0 if n == 0 else (n - 1) / 40, abs=1e-12)
    assert result["classes"]["Car"]["num_valid_gt"]["moderate"] >= 10


def test_bad_folders_and_lines_are_clear_errors(label_dir, results_dir, tmp_path, capsys):
    labels = tmp_path / "labels"
    shutil.copytree(label_dir, labels)

    # A results file without a label, and a label without a results file.
    (results_dir / "999999.txt").write_text("")
    with pytest.raises(DataError, match=r"1 results file\(s\) in .* have no label file in .*\['999999'\]"):
        evaluate_kitti_folder(labels, results_dir)
    (results_dir / "999999.txt").unlink()
    (results_dir / "000003.txt").unlink()
    with pytest.raises(DataError, match=r"1 frame\(s\) of .* have no results file in .*\['000003'\].*--only-result-frames"):
        evaluate_kitti_folder(labels, results_dir)
    assert evaluate_kitti_folder(labels, results_dir, only_result_frames=True)["num_frames"] == 23

    # An empty results file is valid: no detections, so the frame's boxes are all missed.
    (results_dir / "000003.txt").write_text("")
    assert evaluate_kitti_folder(labels, results_dir)["num_frames"] == 24

    # A missing score, a malformed number, a wrong field count: file and line named.
    good = (results_dir / "000001.txt").read_text().splitlines()
    (results_dir / "000001.txt").write_text("\n".join([good[0], " ".join(good[1].split()[:15])]) + "\n")
    with pytest.raises(DataError, match=r"000001\.txt:2: 15 fields and no score"):
        evaluate_kitti_folder(labels, results_dir)
    (results_dir / "000001.txt").write_text(good[0].replace(" -10 ", " abc ", 1) + "\n")
    with pytest.raises(DataError, match=r"000001\.txt:1: field 'alpha' is 'abc', expected a number"):
        evaluate_kitti_folder(labels, results_dir)
    (labels / "000002.txt").write_text("Car 0.0 0\n")
    (results_dir / "000001.txt").write_text("\n".join(good) + "\n")
    with pytest.raises(DataError, match=r"labels/000002\.txt:1: 3 fields, expected 15"):
        evaluate_kitti_folder(labels, results_dir)

    # The command turns every one into one line on stderr and exit code 2 (a user error, as every command).
    assert main([str(labels), str(results_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vcm-kitti-eval: error: ") and "000002.txt:1" in err and err.count("\n") == 1
    assert main([str(tmp_path / "missing"), str(results_dir)]) == 2
    assert "label folder" in capsys.readouterr().err
    assert main([str(label_dir), str(results_dir), "--classes", "Van"]) == 2
    assert "got class 'Van'" in capsys.readouterr().err


class _OracleDetector(torch.nn.Module):
    """Stands in for the frozen detector: returns :func:`_noisy_detections` of the frame it is
    shown, found by the image's bytes, in the detector's output format (labels 1..3)."""

    backbone_name = "oracle"

    def __init__(self, root: Path) -> None:
        super().__init__()
        from vcm.data.kitti import load_image

        self._anchor = torch.nn.Parameter(torch.zeros(1))
        self._frames = {}
        for img in sorted((root / "training" / "image_2").glob("*.png")):
            image = load_image(img)
            self._frames[hashlib.sha1(image.numpy().tobytes()).hexdigest()] = (img.stem, image.shape)
        self._labels = root / "training" / "label_2"

    def weights_hash(self) -> str:
        return "0" * 16

    def features(self, images):
        return list(images)

    def detections_of(self, frame: str):
        _, h, w = next(shape for name, shape in self._frames.values() if name == frame)
        return _noisy_detections(parse_label_file(self._labels / f"{frame}.txt"), frame, w, h)

    def detect(self, images):
        out = []
        for x in images:
            key = hashlib.sha1((x * 255.0).round().to(torch.uint8).numpy().tobytes()).hexdigest()
            names, boxes, scores = self.detections_of(self._frames[key][0])
            out.append({
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.tensor([KITTI_CLASSES.index(n) + 1 for n in names], dtype=torch.int64),
            })
        return out


@pytest.mark.parametrize("split", ["all", "test"])
def test_vcm_eval_detections_score_the_same_with_vcm_kitti_eval(split, kitti_tiny_root, tmp_path, monkeypatch, capsys):
    import vcm.cli.eval
    from vcm.cli.eval import evaluate

    oracle = _OracleDetector(kitti_tiny_root)
    monkeypatch.setattr(vcm.cli.eval, "build_detector", lambda cfg, runner, device: oracle)
    cfg = compose(["codec=none", "data=kitti_tiny", f"split={split}", "save_detections=true"], tmp_path, name="eval")
    _, record = evaluate(cfg)
    metrics = record["metrics"]
    det_dir = tmp_path / "run" / "detections"
    assert f"detections (KITTI results files): {det_dir}" in capsys.readouterr().out
    files = sorted(det_dir.glob("*.txt"))
    assert len(files) == record["num_images"] == (24 if split == "all" else 3)

    # Class name first, the box in original-image pixels, the score last: exactly what was detected.
    frame = files[0].stem
    names, boxes, scores = oracle.detections_of(frame)
    written = parse_label_file(files[0], require_score=True)
    assert [o.type for o in written] == names
    np.testing.assert_array_equal([o.bbox for o in written], boxes.astype(np.float32))
    np.testing.assert_array_equal([o.score for o in written], scores.astype(np.float32))
    assert all(len(line.split()) == 16 for line in files[0].read_text().splitlines())

    # vcm-kitti-eval on those files gives the very APs vcm-eval recorded.
    label_dir = kitti_tiny_root / "training" / "label_2"
    result = evaluate_kitti_folder(label_dir, det_dir, only_result_frames=split != "all")
    for cls in KITTI_CLASSES:
        for d in DIFFICULTIES:
            assert result["classes"][cls]["ap_r40"][d] == metrics[f"kitti_ap_{cls.lower()}_{d}"], (cls, d)
            assert result["classes"][cls]["ap_r11"][d] == metrics[f"kitti_ap_r11_{cls.lower()}_{d}"], (cls, d)
    assert result["mean_ap_r40_moderate"] == metrics["kitti_ap_moderate"]
    if split == "all":
        assert 0.0 < metrics["kitti_ap_car_moderate"] < 1.0

    # A second run into the same folder is refused rather than mixed with the first.
    with pytest.raises(ConfigError, match="already holds detection files"):
        evaluate(cfg)


def test_save_detections_needs_a_detector(tmp_path):
    from vcm.cli.eval import evaluate

    cfg = compose(["codec=none", "data=kitti_tiny", "save_detections=true", "max_images=1"], tmp_path, name="eval")
    with pytest.raises(ConfigError, match="save_detections=true needs a detector"):
        evaluate(cfg)
