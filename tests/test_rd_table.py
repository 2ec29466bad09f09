"""Collecting records into a table: columns, curves, bad files skipped with a warning."""
from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from vcm.rd.record import make_record, write_record
from vcm.rd.table import collect, curve_points, load_table, select, write_csv


def _write(folder, codec, params, bpp, psnr, dataset="kitti", **metrics):
    rec = make_record(
        codec=codec, params=params, dataset=dataset, split="val", num_images=4,
        detector={"name": "frcnn", "weights_hash": "feedbeef"},
        metrics={"bpp_real": bpp, "psnr": psnr, **metrics}, per_image=[], config={}, git_commit="c" * 40,
    )
    return write_record(rec, folder)


def test_collect_skips_bad_files_with_a_warning_naming_each(tmp_path):
    good = [
        _write(tmp_path, "jpeg", {"quality": 50}, 0.5, 32.0),
        _write(tmp_path / "sub", "jpeg", {"quality": 20}, 0.2, 29.0),
        _write(tmp_path / "sub" / "deeper", "roi_hyperprior", {"lambda": 0.01, "variant": "small"}, 0.3, 31.0,
               map_50=0.4),
    ]
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    missing = tmp_path / "sub" / "missing_keys.json"
    missing.write_text(json.dumps({"codec": "jpeg", "params": {}, "metrics": {}}))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "state.json").write_text("{}")  # hidden folders are not searched

    with pytest.warns(UserWarning) as caught:
        df = collect([tmp_path])
    messages = "\n".join(str(w.message) for w in caught)
    assert str(corrupt) in messages and str(missing) in messages
    assert "invalid JSON" in messages and "missing key(s)" in messages
    assert "state.json" not in messages
    assert len(caught) == 2

    assert len(df) == 3
    assert sorted(df["record_path"]) == sorted(str(p) for p in good)
    assert list(df.columns[:5]) == ["curve", "codec", "dataset", "split", "num_images"]
    assert list(df.columns[-6:]) == ["git_commit", "detector_name", "detector_hash", "created", "params_json",
                                     "record_path"]
    for col in ("param.quality", "param.lambda", "param.variant", "bpp_real", "psnr", "map_50"):
        assert col in df.columns
    assert sorted(set(df["curve"])) == ["jpeg", "roi_hyperprior/small"]
    jpeg = df[df["curve"] == "jpeg"]
    assert jpeg["bpp_real"].tolist() == [0.2, 0.5]  # sorted by rate within a curve
    assert jpeg["map_50"].isna().all()
    assert set(df["detector_hash"]) == {"feedbeef"} and set(df["git_commit"]) == {"c" * 40}


def test_collect_accepts_files_and_rejects_missing_paths(tmp_path):
    p = _write(tmp_path, "jpeg", {"quality": 50}, 0.5, 32.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = collect([p, tmp_path])  # the same file twice counts once
    assert len(df) == 1
    with pytest.raises(FileNotFoundError, match="nope"):
        collect([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    empty = collect([tmp_path / "empty"])
    assert empty.empty and "curve" in empty.columns


def test_csv_roundtrip_and_select(tmp_path):
    _write(tmp_path / "r", "jpeg", {"quality": 50}, 0.5, 32.0)
    _write(tmp_path / "r", "jpeg", {"quality": 20}, 0.2, 29.0, dataset="coco")
    df = collect([tmp_path / "r"])
    out = write_csv(df, tmp_path / "t" / "table.csv")
    assert [p.name for p in out.parent.iterdir()] == ["table.csv"]
    back = load_table(out)
    pd.testing.assert_frame_equal(back[["curve", "bpp_real", "psnr"]], df[["curve", "bpp_real", "psnr"]])
    assert select(back, dataset="coco")["bpp_real"].tolist() == [0.2]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad\.csv: not a results table"):
        load_table(bad)


def test_rerun_of_an_operating_point_replaces_the_older_record(tmp_path):
    _write(tmp_path, "jpeg", {"quality": 50}, 0.5, 30.0)
    df = collect([tmp_path])
    df2 = df.copy()
    df2["psnr"] = 32.0
    df2["created"] = "2999-01-01T00:00:00+00:00"
    both = pd.concat([df2, df], ignore_index=True)
    pts = curve_points(both, "jpeg", "bpp_real", "psnr")
    assert pts.quality.tolist() == [32.0]
