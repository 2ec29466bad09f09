"""The synthetic KITTI generator: determinism, label format and geometry, honest occlusion, CLI."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vcm.cli.synthetic import main as synthetic_main
from vcm.data import synthetic as syn
from vcm.data.synthetic.geometry import _object_extent
from vcm.errors import ConfigError

W, H = syn.KITTI_WIDTH, syn.KITTI_HEIGHT
SMALL = {"width": 320, "height": 96}  # for tests of the file logic, not of the pictures
OBJECT_TYPES = {"Car", "Van", "Pedestrian", "Cyclist"}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def read_labels(root: Path) -> dict[str, list[list[str]]]:
    return {
        p.stem: [ln.split() for ln in p.read_text(encoding="ascii").splitlines() if ln.strip()]
        for p in sorted((root / "training" / "label_2").glob("*.txt"))
    }


def box3d_extent(dims, loc, ry, cam: syn.Camera) -> tuple[float, float, float, float]:
    """2D box of the 8 projected corners of a KITTI 3D box (KITTI's devkit corner convention)."""
    h, w, l = dims
    x = np.array([l, l, -l, -l, l, l, -l, -l]) / 2
    y = np.array([0, 0, 0, 0, -h, -h, -h, -h])
    z = np.array([w, -w, -w, w, w, -w, -w, w]) / 2
    c, s = math.cos(ry), math.sin(ry)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    pts = (R @ np.stack([x, y, z])).T + np.asarray(loc)
    uv = cam.P2 @ np.column_stack([pts, np.ones(8)]).T
    u, v = uv[0] / uv[2], uv[1] / uv[2]
    return u.min(), v.min(), u.max(), v.max()


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> Path:
    """Six full-size frames, seed 7."""
    return syn.generate(tmp_path_factory.mktemp("six") / "set", num=6, seed=7)


@pytest.fixture(scope="module")
def twenty(tmp_path_factory) -> Path:
    """Twenty half-size frames, seed 3, for statistics."""
    return syn.generate(tmp_path_factory.mktemp("twenty") / "set", num=20, seed=3, width=621, height=188)


# ------------------------------------------------------------------------------------ determinism
def test_same_parameters_give_byte_identical_trees(six, tmp_path):
    again = syn.generate(tmp_path / "again", num=6, seed=7)
    a, b = tree_digest(six), tree_digest(again)
    assert len(a) == 3 * 6 + 1  # image, label, calib per frame + synthetic.json
    assert a == b
    # A frame depends on (seed, index) only, not on the size of the set.
    assert syn.encode_png(syn.render_frame(4, 7).image) == (six / "training/image_2/000004.png").read_bytes()


def test_other_seed_gives_other_images(six):
    for i in range(3):
        other = syn.encode_png(syn.render_frame(i, 8).image)
        assert other != (six / f"training/image_2/{i:06d}.png").read_bytes()


def test_png_is_plain_rgb_without_metadata(six):
    with Image.open(six / "training/image_2/000000.png") as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (W, H)
        assert not {k for k in im.info if k not in ("dpi",)}  # no text/time chunks
        arr = np.asarray(im)
    # Textured and noisy enough that a codec has something to code.
    assert arr.std() > 20
    assert np.abs(np.diff(arr.astype(np.int16), axis=1)).mean() > 2.0


# ------------------------------------------------------------------------------------ label format
def test_labels_have_kitti_15_fields_and_valid_values(six, twenty):
    for root, (w, h) in ((six, (W, H)), (twenty, (621, 188))):
        labels = read_labels(root)
        assert len(labels) == len(list((root / "training/image_2").glob("*.png")))
        for name, lines in labels.items():
            for t in lines:
                assert len(t) == 15, (name, t)
                kind = t[0]
                assert kind in OBJECT_TYPES | {"DontCare"}, (name, t)
                x1, y1, x2, y2 = map(float, t[4:8])
                assert 0 <= x1 < x2 <= w - 1 and 0 <= y1 < y2 <= h - 1, (name, t)
                for tok in t[4:8]:
                    assert len(tok.split(".")[1]) == 2, (name, t)  # KITTI's 2 decimals
                if kind == "DontCare":
                    assert t[1:4] == ["-1", "-1", "-10"] and t[8:] == ["-1", "-1", "-1", "-1000", "-1000", "-1000", "-10"]
                    continue
                trunc, occ = float(t[1]), t[2]
                assert 0.0 <= trunc <= 1.0 and len(t[1].split(".")[1]) == 2
                assert occ in {"0", "1", "2", "3"}
                hh, ww, ll, x, y, z, ry = map(float, t[8:15])
                assert hh > 0 and ww > 0 and ll > 0 and z > 0 and y == syn.CAMERA_HEIGHT
                assert -math.pi <= ry <= math.pi
                # alpha = rotation_y - atan2(x, z), wrapped, to the 2 written decimals
                alpha = (ry - math.atan2(x, z) + math.pi) % (2 * math.pi) - math.pi
                diff = (float(t[3]) - alpha + math.pi) % (2 * math.pi) - math.pi
                assert abs(diff) <= 0.006, (name, t)


def test_labels_parse_with_the_kitti_reader(six):
    from vcm.data.kitti import parse_label_file, read_calib

    cam = syn.Camera.kitti(W, H)
    for p in sorted((six / "training/label_2").glob("*.txt")):
        for o in parse_label_file(p):
            assert o.score is None
    calib = read_calib(six / "training/calib/000000.txt")
    np.testing.assert_allclose(calib["P2"], cam.P2, rtol=1e-12)
    np.testing.assert_allclose(calib["R0_rect"], np.eye(3))


def test_calib_has_kitti_keys_format_and_scaled_intrinsics(shared_data, tmp_path):
    real = (shared_data / "kitti_tiny/training/calib/000003.txt").read_text().replace("\r\n", "\n")
    cam = syn.Camera.kitti(621, 188)
    text = syn.calib_text(cam)
    assert [ln.split(":")[0] for ln in text.splitlines() if ln] == [ln.split(":")[0] for ln in real.splitlines() if ln]
    assert text.endswith("\n\n") and real.endswith("\n\n")
    # Same token format as KITTI's (d.dddddddddddde+dd), and P2 of the full size equals KITTI's intrinsics.
    assert all(len(tok) == len("7.215377000000e+02") or tok.startswith("-") for ln in text.splitlines() if ln for tok in ln.split()[1:])
    real_p2 = np.array(next(ln for ln in real.splitlines() if ln.startswith("P2:")).split()[1:], float).reshape(3, 4)
    np.testing.assert_allclose(syn.Camera.kitti().K, real_p2[:, :3], rtol=1e-9)
    p2 = np.array(next(ln for ln in text.splitlines() if ln.startswith("P2:")).split()[1:], float).reshape(3, 4)
    np.testing.assert_allclose(p2[:, :3], real_p2[:, :3] * np.array([[621 / 1242], [188 / 375], [1]]), rtol=1e-9)


# ------------------------------------------------------------------------------------ geometry
def test_box_size_follows_distance_and_3d_box(six, twenty):
    for root, (w, h) in ((six, (W, H)), (twenty, (621, 188))):
        cam = syn.Camera.kitti(w, h)
        zs, heights = [], []
        for name, lines in read_labels(root).items():
            for t in lines:
                if t[0] not in OBJECT_TYPES:
                    continue
                x1, y1, x2, y2 = map(float, t[4:8])
                dims, loc, ry = tuple(map(float, t[8:11])), tuple(map(float, t[11:14])), float(t[14])
                if t[0] == "Car":
                    zs.append(loc[2])
                    heights.append(y2 - y1)
                if float(t[1]) > 0:
                    continue
                # Untruncated: the pixel height is f * h / z up to the depth extent of the box.
                ratio = (y2 - y1) * loc[2] / (cam.fy * dims[0])
                assert 0.97 <= ratio <= 1.35, (name, t, ratio)
                if t[0] in ("Car", "Van"):
                    # The drawn vehicle stays inside its projected 3D box and fills most of it.
                    bx = box3d_extent(dims, loc, ry, cam)
                    assert x1 >= bx[0] - 1 and y1 >= bx[1] - 1 and x2 <= bx[2] + 1 and y2 <= bx[3] + 1, (name, t, bx)
                    assert (x2 - x1) * (y2 - y1) >= 0.8 * (bx[2] - bx[0]) * (bx[3] - bx[1]), (name, t, bx)
        assert len(zs) >= 10
        assert np.corrcoef(np.log(zs), np.log(heights))[0, 1] < -0.95


def test_truncation_is_fraction_of_projected_box_outside_image():
    rng = syn.frame_rng(0, 0)
    cam, lay = syn.Camera.kitti(), syn.sample_layout(rng)
    inside = syn.make_object("Car", 0.0, 20.0, -math.pi / 2, rng)
    edge = syn.make_object("Car", -8.0, 9.0, math.pi / 2, rng)  # leaves the image on the left
    frame = syn.render_scene(cam, lay, [inside, edge], rng)
    by_z = {o.loc[2]: o for o in frame.objects}
    assert by_z[20.0].truncated == 0.0
    e = by_z[9.0]
    assert e.box[0] == 0.0
    x1, y1, x2, y2 = _object_extent(edge, cam)
    assert x1 < 0
    expected = 1 - (x2 - 0) * (y2 - y1) / ((x2 - x1) * (y2 - y1))
    assert e.truncated == pytest.approx(expected, abs=0.006)
    assert 0.05 < e.truncated < 0.95


# ------------------------------------------------------------------------------------ occlusion
def test_object_behind_a_nearer_car_is_occluded_and_only_because_of_it():
    rng = syn.frame_rng(1, 0)
    cam, lay = syn.Camera.kitti(), syn.sample_layout(rng)
    dims = (1.5, 1.65, 4.0)
    near = syn.make_object("Car", 0.0, 12.0, -math.pi / 2, rng, dims=dims)
    far = syn.make_object("Car", 1.8, 24.0, -math.pi / 2, rng, dims=dims)
    alone = syn.make_object("Car", -7.0, 16.0, math.pi / 2, rng, dims=dims)
    frame = syn.render_scene(cam, lay, [far, alone, near], syn.frame_rng(1, 1))
    by_z = {o.loc[2]: o for o in frame.objects}
    assert by_z[12.0].occluded == 0 and by_z[12.0].visible_fraction == 1.0
    assert by_z[16.0].occluded == 0
    f = by_z[24.0]
    assert f.type == "Car" and f.occluded >= 1 and f.visible_fraction <= 0.9
    assert f.occluded == syn.occlusion_level(f.visible_fraction)
    # Painting order comes from depth, not from the order of the list.
    again = syn.render_scene(cam, lay, [near, far, alone], syn.frame_rng(1, 1))
    assert np.array_equal(again.image, frame.image) and again.objects == frame.objects
    # Without the nearer car the same object is fully visible.
    solo = syn.render_scene(cam, lay, [far, alone], syn.frame_rng(1, 1))
    assert {o.loc[2]: o for o in solo.objects}[24.0].occluded == 0
    # Fully hidden objects are not labelled as objects.
    hidden = syn.make_object("Pedestrian", 0.0, 15.0, 0.0, rng, dims=(1.3, 0.5, 0.6))
    labelled = syn.render_scene(cam, lay, [near, hidden], syn.frame_rng(1, 1)).objects
    assert all(o.type != "Pedestrian" for o in labelled)


def test_occlusion_of_generated_scenes_comes_from_nearer_objects():
    """In sampled scenes: an occluded object overlaps some nearer object, and removing the nearer
    objects (road users and clutter) makes it fully visible."""
    cam = syn.Camera.kitti(621, 188)
    checked = 0
    for index in range(6):
        rng = syn.frame_rng(11, index)
        lay = syn.sample_layout(rng)
        objects = syn.sample_objects(rng, cam, lay)
        frame = syn.render_scene(cam, lay, objects, syn.frame_rng(11, 100 + index))
        spec_of = {o.loc: o for o in objects}
        for lab in frame.objects:
            if lab.type == "DontCare" or lab.occluded == 0:
                continue
            me = spec_of[lab.loc]
            nearer = [o for o in objects if o.loc[2] < me.loc[2]]
            x1, y1, x2, y2 = lab.box
            boxes = [_object_extent(o, cam) for o in nearer]
            assert any(b[0] < x2 and b[2] > x1 and b[1] < y2 and b[3] > y1 for b in boxes), lab
            rest = [o for o in objects if o.loc[2] >= me.loc[2]]
            alone = syn.render_scene(cam, lay, rest, syn.frame_rng(11, 100 + index))
            again = next(o for o in alone.objects if o.loc == lab.loc)
            assert again.visible_fraction == 1.0 and again.occluded == 0
            assert again.box == lab.box and again.truncated == lab.truncated
            checked += 1
    assert checked >= 2  # the checks above ran on real cases


def test_set_statistics(twenty):
    stats = syn.label_statistics(twenty)
    per_type = stats["per_type"]
    assert stats["frames"] == 20
    assert per_type["Car"] == max(v for k, v in per_type.items() if k != "DontCare")
    assert {"Pedestrian", "Cyclist", "DontCare"} <= set(per_type)
    assert 3.0 <= stats["objects_per_frame"] <= 9.0
    assert stats["occlusion"][0] > stats["occlusion"][1] > 0 and stats["occlusion"][2] > 0


# ------------------------------------------------------------------------------------ files, CLI
def test_rerun_skips_and_other_parameters_need_overwrite(tmp_path):
    root = syn.generate(tmp_path / "s", num=3, seed=1, **SMALL)
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["complete"] is True and meta["num"] == 3 and meta["seed"] == 1 and meta["version"] == syn.GENERATOR_VERSION
    files = sorted(p for p in (root / "training").rglob("*") if p.is_file())
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    assert syn.generate(root, num=3, seed=1, **SMALL) == root
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == stamps  # nothing rewritten
    with pytest.raises(ConfigError, match=r"seed=1 \(requested 2\).*overwrite"):
        syn.generate(root, num=3, seed=2, **SMALL)
    with pytest.raises(ConfigError, match="overwrite"):
        syn.generate(root, num=3, seed=1, width=640, height=96)
    before = tree_digest(root)
    syn.generate(root, num=2, seed=2, overwrite=True, **SMALL)
    after = tree_digest(root)
    assert sorted(p.name for p in (root / "training/image_2").iterdir()) == ["000000.png", "000001.png"]  # no stale frame
    assert after["training/image_2/000000.png"] != before["training/image_2/000000.png"]
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 2


def test_interrupted_generation_is_completed_with_same_bytes(tmp_path):
    root = syn.generate(tmp_path / "s", num=3, seed=5, **SMALL)
    full = tree_digest(root)
    # What a killed run leaves: a missing frame file, a temporary file, "complete": false.
    (root / "training/label_2/000002.txt").unlink()
    (root / "training/image_2/.000002.png.abc.tmp").write_bytes(b"partial")
    meta = json.loads((root / "synthetic.json").read_text())
    (root / "synthetic.json").write_text(json.dumps({**meta, "complete": False}))
    syn.generate(root, num=3, seed=5, **SMALL)
    assert tree_digest(root) == full


def test_refuses_to_touch_a_tree_it_did_not_write(tmp_path):
    (tmp_path / "kitti/training/image_2").mkdir(parents=True)
    (tmp_path / "kitti/training/image_2/000000.png").write_bytes(b"not ours")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="synthetic.json is missing"):
            syn.generate(tmp_path / "kitti", num=1, seed=0, overwrite=overwrite, **SMALL)
    assert (tmp_path / "kitti/training/image_2/000000.png").read_bytes() == b"not ours"


@pytest.mark.parametrize("kwargs", [{"num": 0}, {"num": -3}, {"num": 2.5}, {"num": True}, {"seed": -1},
                                    {"width": 10}, {"height": "375"}])
def test_generate_rejects_bad_parameters(tmp_path, kwargs):
    args = dict(num=1, seed=0, **SMALL)
    args.update(kwargs)
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        syn.generate(tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
def test_cli_rejects_bad_num(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        synthetic_main(["--out", str(tmp_path / "x"), "--num", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --num" in err and "positive integer" in err and repr(value) in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_generates_skips_and_reports_conflicts(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "vcm.cli.synthetic", "--out", str(out), "--num", "2", "--seed", "4",
           "--width", "320", "--height", "96"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "training/label_2").iterdir()) == ["000000.txt", "000001.txt"]
    assert tree_digest(out) == tree_digest(syn.generate(tmp_path / "api", num=2, seed=4, width=320, height=96))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0 and "complete" in r.stdout + r.stderr
    r = subprocess.run(cmd[:-6] + ["--seed", "5", "--width", "320", "--height", "96"], capture_output=True, text=True,
                       env=env, timeout=120, check=False)
    assert r.returncode == 2 and "--overwrite" in r.stderr and "seed=4 (requested 5)" in r.stderr
