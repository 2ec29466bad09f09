"""KITTI parser, dataset, splits, crops and the DataModule on real frames and on bad input."""
from __future__ import annotations

import collections
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from vcm.data.datamodule import DetectionDataModule, collate
from vcm.data.kitti import (
    ClassSpec,
    KittiDataset,
    index_kitti,
    load_image,
    parse_label_file,
    parse_label_line,
    read_calib,
)
from vcm.data.splits import split_groups
from vcm.data.transforms import RandomCrop, crop_target
from vcm.errors import ConfigError, DataError

LINE = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"


def test_counts_on_the_24_real_frames(kitti_tiny_root):
    counts = collections.Counter()
    for f in sorted((kitti_tiny_root / "training" / "label_2").glob("*.txt")):
        counts.update(o.type for o in parse_label_file(f))
    # The figures of ../shared/data/README.md.
    assert counts == {"Car": 63, "Pedestrian": 11, "Cyclist": 3, "Van": 4, "Truck": 3, "Tram": 2, "Misc": 1, "DontCare": 84}


def test_crlf_files_parse_like_lf(kitti_tiny_root, tmp_path):
    crlf = kitti_tiny_root / "training" / "label_2" / "000011.txt"
    assert b"\r\n" in crlf.read_bytes()
    lf = tmp_path / "000011.txt"
    lf.write_bytes(crlf.read_bytes().replace(b"\r\n", b"\n"))
    assert parse_label_file(crlf) == parse_label_file(lf)
    calib = read_calib(kitti_tiny_root / "training" / "calib" / "000011.txt")
    assert calib["P2"].shape == (3, 4) and calib["R0_rect"].shape == (3, 3)


def test_all_fields_and_optional_score():
    o = parse_label_line(LINE)
    assert o.type == "Car" and o.occluded == 0 and o.bbox == (587.01, 173.33, 614.12, 200.12)
    assert o.dimensions == (1.65, 1.67, 3.64) and o.location == (-0.65, 1.71, 46.70) and o.rotation_y == -1.59
    assert o.score is None
    assert parse_label_line(LINE + " 0.93").score == pytest.approx(0.93)


def test_empty_label_file(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("")
    assert parse_label_file(p) == []


@pytest.mark.parametrize("line,expect", [
    ("Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71", "13 fields, expected 15"),
    ("Car 0.00 0 -1.58 587.01 abc 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59", "field 'y1' is 'abc'"),
    ("Car 0.00 0.5 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59", "'occluded'"),
])
def test_malformed_label_lines_name_file_and_line(tmp_path, line, expect):
    p = tmp_path / "000001.txt"
    p.write_text(LINE + "\n" + line + "\n")
    with pytest.raises(DataError) as e:
        parse_label_file(p)
    assert f"{p}:2" in str(e.value) and expect in str(e.value)


def test_target_classes_neighbours_and_dontcare(kitti_tiny_root):
    frames = index_kitti(kitti_tiny_root)
    ds = KittiDataset(frames, ClassSpec())
    n_obj = n_ign = n_nb = 0
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert tuple(t["orig_size"].tolist()) == tuple(image.shape[1:])
        assert t["boxes"].shape[0] == t["labels"].shape[0] == t["truncation"].shape[0] == t["occlusion"].shape[0]
        assert set(t["labels"].tolist()) <= {1, 2, 3}
        h, w = image.shape[1:]
        for key in ("boxes", "ignore_boxes", "neighbour_boxes"):
            b = t[key]
            assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        n_obj += len(t["boxes"])
        n_ign += len(t["ignore_boxes"])
        n_nb += len(t["neighbour_boxes"])
    assert (n_obj, n_ign, n_nb) == (63 + 11 + 3, 84, 4)  # Van is the only neighbour type present
    # Mapping Van to Car turns neighbours into objects.
    ds2 = KittiDataset(frames, ClassSpec(class_map={"Van": "Car"}))
    assert sum(len(ds2[i][1]["boxes"]) for i in range(len(ds2))) == n_obj + 4


def _copy_frames(src_root: Path, dst_root: Path, ids=("000000", "000001", "000002")) -> Path:
    for sub, ext in (("image_2", ".png"), ("label_2", ".txt")):
        (dst_root / "training" / sub).mkdir(parents=True, exist_ok=True)
        for i in ids:
            shutil.copy(src_root / "training" / sub / f"{i}{ext}", dst_root / "training" / sub / f"{i}{ext}")
    return dst_root


def test_label_without_image_and_image_without_label(kitti_tiny_root, tmp_path):
    root = _copy_frames(kitti_tiny_root, tmp_path / "k")
    (root / "training" / "image_2" / "000001.png").unlink()
    with pytest.raises(DataError, match="have no image"):
        index_kitti(root)
    root2 = _copy_frames(kitti_tiny_root, tmp_path / "k2")
    (root2 / "training" / "label_2" / "000002.txt").unlink()
    with pytest.raises(DataError, match="have no label file"):
        index_kitti(root2)


def test_missing_root_says_how_to_get_kitti(tmp_path):
    with pytest.raises(DataError, match="cvlibs.net"):
        index_kitti(tmp_path / "nowhere")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"not an image at all"])
def test_corrupt_truncated_empty_images(tmp_path, content):
    p = tmp_path / "x.png"
    p.write_bytes(content)
    with pytest.raises(DataError, match=str(p)):
        load_image(p)


def test_truncated_real_png(kitti_tiny_root, tmp_path):
    data = (kitti_tiny_root / "training" / "image_2" / "000003.png").read_bytes()
    p = tmp_path / "t.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.png"):
        load_image(p)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grey_and_rgba_are_converted(tmp_path, mode):
    p = tmp_path / f"{mode}.png"
    Image.new(mode, (31, 17), color=120 if mode in ("L", "P") else (10, 20, 30, 128)).save(p)
    x = load_image(p)
    assert x.shape == (3, 17, 31) and x.dtype == torch.uint8


def test_boxes_outside_the_image_are_clipped_with_a_warning(kitti_tiny_root, tmp_path):
    root = _copy_frames(kitti_tiny_root, tmp_path / "k", ids=("000000",))
    lbl = root / "training" / "label_2" / "000000.txt"
    lbl.write_text("Car 0.00 0 0 -50.00 100.00 5000.00 300.00 1.5 1.6 3.9 0 1.6 10 0\n")
    ds = KittiDataset(index_kitti(root))
    with pytest.warns(UserWarning, match="clipped"):
        _, t = ds[0]
    _h, w = t["orig_size"].tolist()
    assert t["boxes"].tolist() == [[0.0, 100.0, float(w), 300.0]]


def test_split_is_deterministic_disjoint_and_complete():
    groups = [f"{i:06d}" for i in range(50)]
    a = split_groups(groups, (0.8, 0.1, 0.1), seed=3)
    b = split_groups(list(reversed(groups)), (0.8, 0.1, 0.1), seed=3)
    assert a == b
    sets = [set(a[s]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(groups)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (40, 5, 5)
    assert split_groups(groups, (0.8, 0.1, 0.1), seed=4) != a
    with pytest.raises(DataError, match="fractions"):
        split_groups(groups, (0.8, 0.3, 0.1), seed=0)


def test_tracking_layout_splits_by_sequence(tmp_path):
    base = tmp_path / "training"
    for seq in ("0000", "0001", "0002", "0003"):
        (base / "image_02" / seq).mkdir(parents=True)
        for f in range(3):
            Image.new("RGB", (64, 32)).save(base / "image_02" / seq / f"{f:06d}.png")
        (base / "label_02").mkdir(exist_ok=True)
        (base / "label_02" / f"{seq}.txt").write_text(f"0 1 {LINE}\n2 1 {LINE}\n".replace("587.01 173.33 614.12 200.12", "1 1 20 20"))
    dm = DetectionDataModule(source="kitti", root=str(tmp_path), split_fractions=(0.5, 0.25, 0.25), crop_size=None)
    dm.setup()
    rec = dm.split_record
    assert rec["unit"] == "sequence"
    seqs = {s: {fid.split("/")[0] for fid in rec[s]} for s in ("train", "val", "test")}
    assert all(len(rec[s]) == 3 * len(seqs[s]) for s in seqs)  # whole sequences only
    assert not (seqs["train"] & seqs["val"]) and not (seqs["train"] & seqs["test"])
    _, t = dm.datasets["val"][0]
    assert len(t["boxes"]) == (1 if t["name"].endswith(("000000", "000002")) else 0)


def test_crop_keeps_boxes_consistent():
    t = {
        "boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0], [200.0, 200.0, 220.0, 230.0], [90.0, 0.0, 130.0, 20.0]]),
        "labels": torch.tensor([1, 2, 3]), "truncation": torch.tensor([0.0, 0.1, 0.2]), "occlusion": torch.tensor([0, 1, 2]),
        "ignore_boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "neighbour_boxes": torch.zeros(0, 4),
        "neighbour_labels": torch.zeros(0, dtype=torch.int64), "image_id": 0, "name": "x", "orig_size": torch.tensor([300, 300]),
    }
    c = crop_target(t, top=5, left=20, height=100, width=100)
    # Box 0 is clipped at the left edge, box 1 leaves the crop (dropped), box 2 is shifted.
    assert c["boxes"].tolist() == [[0.0, 5.0, 30.0, 35.0], [70.0, 0.0, 100.0, 15.0]]
    assert c["labels"].tolist() == [1, 3] and c["occlusion"].tolist() == [0, 2]
    assert c["ignore_boxes"].shape == (0, 4)
    assert c["orig_size"].tolist() == [100, 100] and c["frame_size"].tolist() == [300, 300]


def test_random_crop_larger_than_image_is_a_clear_error():
    img = torch.zeros(3, 50, 60, dtype=torch.uint8)
    t = {"name": "f", "orig_size": torch.tensor([50, 60])}
    with pytest.raises(ConfigError, match="larger than image f"):
        RandomCrop((64, 64))(img, t)


def _frame_target(boxes: list[list[float]]) -> dict:
    n = len(boxes)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4), "labels": torch.ones(n, dtype=torch.int64),
            "truncation": torch.zeros(n), "occlusion": torch.zeros(n, dtype=torch.int64),
            "ignore_boxes": torch.zeros(0, 4), "neighbour_boxes": torch.zeros(0, 4),
            "neighbour_labels": torch.zeros(0, dtype=torch.int64), "name": "f", "orig_size": torch.tensor([375, 1242])}


def test_object_crops_contain_an_object_centre():
    t = _frame_target([[1100.0, 300.0, 1200.0, 360.0], [5.0, 2.0, 25.0, 30.0]])
    img = torch.zeros(3, 375, 1242, dtype=torch.uint8)
    torch.manual_seed(0)
    centres = [(1150.0, 330.0), (15.0, 16.0)]
    for _ in range(50):
        _, c = RandomCrop((128, 128), object_prob=1.0)(img, t)
        top, left = c["crop_offset"].tolist()
        assert any(left <= cx < left + 128 and top <= cy < top + 128 for cx, cy in centres), (top, left)
        assert len(c["boxes"]) >= 1
    # plain random crops of this wide frame mostly miss both objects
    hits = sum(len(RandomCrop((128, 128))(img, t)[1]["boxes"]) > 0 for _ in range(200))
    assert hits < 100
    # frames without objects still get a crop; a bad probability is refused
    assert RandomCrop((64, 64), object_prob=1.0)(img, _frame_target([]))[0].shape == (3, 64, 64)
    with pytest.raises(ConfigError, match="object_crop_prob=1.5"):
        RandomCrop((64, 64), object_prob=1.5)


def test_datamodule_on_kitti_tiny(kitti_tiny_root, tmp_path):
    dm = DetectionDataModule(source="kitti", root=str(kitti_tiny_root), name="kitti_tiny", split_fractions=(0.75, 0.125, 0.125),
                             crop_size=(128, 192), batch_size=4)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [18, 3, 3]
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 128, 192) and len(targets) == 4
    for t in targets:
        b = t["boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() and (b[:, 2] <= 192).all() and (b[:, 3] <= 128).all()
    images, targets = next(iter(dm.val_dataloader()))
    assert isinstance(images, torch.Tensor) and images.shape[0] == 1 and images.shape[2] >= 370  # full frames
    path = dm.save_split(tmp_path / "split.json")
    import json

    rec = json.loads(path.read_text())
    assert rec["seed"] == 0 and len(rec["train"]) == 18
    coco = dm.export_coco("test", tmp_path / "gt.json")
    gt = json.loads(coco.read_text())
    assert len(gt["images"]) == 3 and {c["name"] for c in gt["categories"]} == {"Car", "Pedestrian", "Cyclist"}


def test_datamodule_crop_larger_than_images(kitti_tiny_root):
    dm = DetectionDataModule(source="kitti", root=str(kitti_tiny_root), crop_size=(512, 512))
    with pytest.raises(ConfigError, match="larger than"):
        dm.setup()


def test_collate_keeps_lists_for_mixed_sizes():
    a = (torch.zeros(3, 4, 5, dtype=torch.uint8), {"name": "a"})
    b = (torch.zeros(3, 6, 5, dtype=torch.uint8), {"name": "b"})
    images, targets = collate([a, b])
    assert isinstance(images, list) and [t["name"] for t in targets] == ["a", "b"]


def test_coco_datamodule(shared_data):
    dm = DetectionDataModule(source="coco", coco_images=str(shared_data / "coco_tiny" / "train_2017_small"),
                             coco_annotations=str(shared_data / "coco_tiny" / "instances_train2017_small.json"),
                             classes=["person", "car", "bicycle"], neighbours={}, crop_size=(128, 128), batch_size=2)
    dm.setup()
    assert sum(len(dm.datasets[s]) for s in ("train", "val", "test")) == 16
    images, _targets = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 128, 128)
    import json

    coco = json.loads((shared_data / "coco_tiny" / "instances_train2017_small.json").read_text())
    cat = {c["id"]: c["name"] for c in coco["categories"]}
    want = collections.Counter(cat[a["category_id"]] for a in coco["annotations"]
                               if not a.get("iscrowd") and cat[a["category_id"]] in ("person", "car", "bicycle")
                               and a["bbox"][2] > 0 and a["bbox"][3] > 0)
    got = collections.Counter()
    for s in ("val", "test"):
        for i in range(len(dm.datasets[s])):
            got.update(["person", "car", "bicycle"][int(lbl) - 1] for lbl in dm.datasets[s][i][1]["labels"])
    dm.datasets["train"].transform = None
    for i in range(len(dm.datasets["train"])):
        got.update(["person", "car", "bicycle"][int(lbl) - 1] for lbl in dm.datasets["train"][i][1]["labels"])
    assert got == want and want["person"] > 0
