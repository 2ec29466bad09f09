"""Results records: building, validation, atomic writing, reading back."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from vcm.errors import VcmError
from vcm.rd.record import (
    REQUIRED_KEYS,
    RecordError,
    current_git_commit,
    make_record,
    read_record,
    write_record,
)


def _record(**overrides):
    kwargs = {
        "codec": "roi_hyperprior",
        "params": {"lambda": 0.0067, "variant": "q3"},
        "dataset": "kitti",
        "split": "val",
        "num_images": 3,
        "detector": {"name": "fasterrcnn_r50_fpn", "weights_hash": "0123456789abcdef"},
        "metrics": {"bpp_real": 0.25, "psnr": 31.5, "map_50": 0.42},
        "per_image": [{"name": "000001", "bpp_real": 0.2}, {"name": "000002", "bpp_real": 0.3}],
        "config": {"model": {"lmbda": 0.0067}, "seed": 1},
        "git_commit": "a" * 40,
    }
    kwargs.update(overrides)
    return make_record(**kwargs)


def test_make_record_fields_and_roundtrip(tmp_path):
    rec = _record(
        metrics={"bpp_real": np.float32(0.25), "psnr": torch.tensor(31.5), "enc_s": 1, "ms_ssim": float("nan")},
        per_image=[{"name": "000001", "boxes": np.zeros((1, 4))}],
        config={"out": tmp_path, "lr": np.float64(1e-4)},
    )
    assert list(rec) == list(REQUIRED_KEYS)
    assert rec["metrics"] == {"bpp_real": 0.25, "psnr": 31.5, "enc_s": 1.0, "ms_ssim": None}
    assert rec["per_image"] == [{"name": "000001", "boxes": [[0.0, 0.0, 0.0, 0.0]]}]
    assert rec["config"] == {"out": str(tmp_path), "lr": 1e-4}
    created = rec["created"]
    assert created.endswith("+00:00") and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", created)

    path = write_record(rec, tmp_path / "results")
    assert path.parent == tmp_path / "results" and path.suffix == ".json"
    assert path.name.startswith("roi_hyperprior_lambda=0.0067_variant=q3_")
    # Strict JSON (no NaN literal) that reads back identical.
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert read_record(path) == rec


def test_git_commit_is_filled_from_the_checkout_or_null(tmp_path):
    rec = _record(git_commit=None)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parents[1],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = None
    assert rec["git_commit"] == head
    # Outside a checkout: null, not an error.
    (tmp_path / "vcm").mkdir()
    assert current_git_commit(tmp_path / "vcm") is None


@pytest.mark.parametrize(
    "override, key",
    [
        ({"codec": ""}, "'codec'"),
        ({"codec": 3}, "'codec'"),
        ({"params": [1, 2]}, "'params'"),
        ({"num_images": 0}, "'num_images'"),
        ({"num_images": True}, "'num_images'"),
        ({"num_images": 2.5}, "'num_images'"),
        ({"detector": {"name": "x"}}, "'detector.weights_hash'"),
        ({"detector": {"name": "x", "weights_hash": 5}}, "'detector.weights_hash'"),
        ({"detector": "frcnn"}, "'detector'"),
        ({"metrics": {"psnr": "31"}}, "'metrics.psnr'"),
        ({"metrics": {"psnr": np.zeros(3)}}, "'metrics.psnr'"),
        ({"per_image": [1, 2]}, "'per_image[0]'"),
        ({"per_image": [{"x": object()}]}, "'per_image[0].x'"),
        ({"config": "a: 1"}, "'config'"),
        ({"git_commit": 12}, "'git_commit'"),
    ],
)
def test_make_record_rejects_wrong_types_naming_the_key(override, key):
    with pytest.raises(RecordError, match=re.escape(key)) as e:
        _record(**override)
    assert isinstance(e.value, VcmError) and isinstance(e.value, ValueError)


def test_detector_may_be_null_or_have_unknown_values():
    assert _record(detector=None)["detector"] is None
    rec = _record(detector={"name": "fasterrcnn", "weights_hash": None})
    assert rec["detector"] == {"name": "fasterrcnn", "weights_hash": None}


def test_write_record_refuses_invalid_records_and_writes_nothing(tmp_path):
    rec = _record()
    bad = dict(rec)
    del bad["metrics"]
    with pytest.raises(RecordError, match=r"missing key\(s\) \['metrics'\]"):
        write_record(bad, tmp_path)
    bad = dict(rec, num_images=-1)
    with pytest.raises(RecordError, match="num_images"):
        write_record(bad, tmp_path)
    for name in ("../escape", "a/b", "", "..", "with space"):
        with pytest.raises(ValueError, match="run_name"):
            write_record(rec, tmp_path, run_name=name)
    assert list(tmp_path.iterdir()) == []


def test_write_record_is_atomic_and_replaces_whole(tmp_path, monkeypatch):
    rec = _record()
    path = write_record(rec, tmp_path, run_name="point")
    assert path == tmp_path / "point.json"
    old_text = path.read_text()
    small = _record(per_image=[], metrics={"bpp_real": 0.1})
    assert len(json.dumps(small)) < len(old_text)
    write_record(small, tmp_path, run_name="point")
    assert read_record(path) == small  # no tail of the longer file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["point.json"]  # no temp files

    # A crash while writing leaves the previous file intact and no temporary file.
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_record(rec, tmp_path, run_name="point")
    assert read_record(path) == small
    assert sorted(p.name for p in tmp_path.iterdir()) == ["point.json"]


def test_default_run_names_are_unique_and_safe(tmp_path):
    rec = _record(codec="feature/vtm", params={"qp": 32, "cfg": {"preset": "random access"}})
    paths = {write_record(rec, tmp_path) for _ in range(5)}
    assert len(paths) == 5
    for p in paths:
        assert p.parent == tmp_path
        assert re.fullmatch(r"[A-Za-z0-9._=-]+\.json", p.name), p.name


def test_read_record_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_record(tmp_path / "nothing.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"codec": "jpeg", ')
    with pytest.raises(RecordError, match=r"corrupt\.json: invalid JSON"):
        read_record(corrupt)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"codec": "jpeg", "params": {}}))
    with pytest.raises(RecordError, match=r"partial\.json: .*missing key\(s\) \['dataset'"):
        read_record(partial)
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    with pytest.raises(RecordError, match=r"list\.json: .*expected a JSON object"):
        read_record(not_object)


def test_read_record_accepts_nan_literals_as_null(tmp_path):
    rec = _record()
    text = json.dumps(rec).replace('"psnr": 31.5', '"psnr": NaN')
    p = tmp_path / "nan.json"
    p.write_text(text)
    assert read_record(p)["metrics"]["psnr"] is None
    assert not math.isnan(read_record(p)["metrics"]["bpp_real"])
