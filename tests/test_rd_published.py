"""Published RD curves (CompressAI results JSON, CSV) beside vcm's records, and export of vcm curves."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vcm.cli.rd import main
from vcm.errors import DataError
from vcm.rd.bd import bd_table
from vcm.rd.published import read_compressai_json, read_curves, read_curves_csv
from vcm.rd.record import make_record, write_record
from vcm.rd.table import add_curves, collect

JPEG = ([0.25, 0.5, 1.0, 2.0], [27.0, 30.5, 34.0, 37.5], [0.90, 0.94, 0.97, 0.985])
OURS = ([0.13, 0.22, 0.41, 0.70, 1.3], [27.6, 30.2, 33.1, 35.7, 38.4], [0.917, 0.942, 0.961, 0.975, 0.984])


def _write(folder: Path, codec: str, points, dataset="kodak", split="test", num_images=24) -> Path:
    for i, (r, q, m) in enumerate(zip(*points)):
        rec = make_record(codec, {"lambda": i}, dataset, split, num_images, None,
                          {"bpp_real": r, "psnr": q, "ms_ssim": m}, [], {})
        write_record(rec, folder)
    return folder


def _compressai(path: Path, name: str, points, meta: dict | None = None, psnr_key="psnr-rgb") -> Path:
    doc = {"name": name, "description": "published", "results": {"bpp": points[0], psnr_key: points[1],
                                                                   "ms-ssim": points[2]}}
    if meta is not None:
        doc["meta"] = meta
    path.write_text(json.dumps(doc))
    return path


def _csv(path: Path, name: str, points, dataset: str | None = "kodak") -> Path:
    head = "curve,bpp,psnr,ms_ssim" + (",dataset" if dataset else "")
    rows = [f"{name},{r},{q},{m}" + (f",{dataset}" if dataset else "") for r, q, m in zip(*points)]
    path.write_text("\n".join([head, *rows]) + "\n")
    return path


@pytest.fixture
def anchor_records(tmp_path) -> Path:
    return _write(tmp_path / "records", "jpeg", JPEG)


@pytest.mark.parametrize("metric", ["psnr", "ms_ssim"])
def test_published_curves_give_the_same_bd_as_the_same_points_as_records(anchor_records, tmp_path, metric):
    both = _write(_write(tmp_path / "both", "jpeg", JPEG), "ours", OURS)
    expected = bd_table(collect([both]), "jpeg", metric).set_index("curve").loc["ours"]

    for curve_file in (_compressai(tmp_path / "ours.json", "ours", OURS, {"dataset": "kodak"}),
                       _compressai(tmp_path / "ours_old_keys.json", "ours", OURS, {"dataset": "kodak"}, psnr_key="psnr"),
                       _csv(tmp_path / "ours.csv", "ours", OURS)):
        df = add_curves(collect([anchor_records]), read_curves([curve_file]))
        got = bd_table(df, "jpeg", metric).set_index("curve").loc["ours"]
        assert got["bd_rate_pct"] == expected["bd_rate_pct"], curve_file
        assert got["bd_quality"] == expected["bd_quality"], curve_file
        assert got["points"] == 5
        # ... and as the anchor, against vcm's records
        df_rev = bd_table(df, "ours", metric).set_index("curve").loc["jpeg"]
        ref = bd_table(collect([both]), "ours", metric).set_index("curve").loc["jpeg"]
        assert df_rev["bd_rate_pct"] == ref["bd_rate_pct"]


def test_cli_bd_plot_report_with_published_curves(anchor_records, tmp_path, capsys):
    ours = _compressai(tmp_path / "ours.json", "ours", OURS, {"dataset": "kodak"})
    assert main(["bd", "--anchor", "jpeg", "--metric", "psnr", str(anchor_records), "--curves", str(ours)]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^ours\s+5\s+(-\d+\.\d\d)\s+(\+\d+\.\d{3})", out, flags=re.MULTILINE)
    assert row, out
    expected = bd_table(add_curves(collect([anchor_records]), read_curves([ours])), "jpeg", "psnr")
    assert float(row.group(1)) == pytest.approx(expected["bd_rate_pct"].iloc[0], abs=0.005)
    assert "BD-PSNR [dB]" in out

    # the methods differ, each one says so
    for method in ("cubic", "akima"):
        assert main(["bd", "--anchor", "jpeg", "--metric", "psnr", str(anchor_records), "--curves", str(ours),
                     "--method", method]) == 0
        out = capsys.readouterr().out
        assert ("VCEG-M33" if method == "cubic" else "Akima") in out and re.search(r"^ours\s+5\s+-\d", out, re.MULTILINE)

    # published curves alone, CSV anchor and JSON test
    jpeg_csv = _csv(tmp_path / "jpeg.csv", "jpeg", JPEG)
    assert main(["bd", "--anchor", "jpeg", "--metric", "ms_ssim", "--curves", str(jpeg_csv), str(ours)]) == 0
    assert re.search(r"^ours\s+5\s+-\d", capsys.readouterr().out, re.MULTILINE)

    report = tmp_path / "report"
    assert main(["report", str(anchor_records), "--curves", str(ours), "--out", str(report), "--anchor", "jpeg",
                 "--metrics", "psnr", "--method", "akima"]) == 0
    md = (report / "report.md").read_text()
    # records without per-image values give no interval: said once, no CI column
    assert re.search(r"^\| ours \| 5 \| -\d+\.\d\d \| \+\d", md, flags=re.MULTILINE), md
    assert "No interval vs jpeg: " in md
    assert "Akima spline" in md and "kodak/test, 24 images" in md and "(<../ours.json>)" in md


def test_export_writes_compressai_json_that_reads_back(anchor_records, tmp_path, capsys):
    both = _write(_write(tmp_path / "both", "jpeg", JPEG), "ours", OURS)
    out = tmp_path / "curves"
    assert main(["export", str(both), "--out", str(out)]) == 0
    assert "ours.json (5 point(s))" in capsys.readouterr().out
    doc = json.loads((out / "ours.json").read_text())
    assert doc["name"] == "ours" and doc["results"]["bpp"] == OURS[0] and doc["results"]["psnr-rgb"] == OURS[1]
    assert doc["results"]["ms-ssim-rgb"] == OURS[2]
    meta = doc["meta"]
    assert {k: meta[k] for k in ("source", "dataset", "split", "num_images", "rate")} == {
        "source": "vcm", "dataset": "kodak", "split": "test", "num_images": 24, "rate": "bpp_real"}
    assert len(meta["git_commits"]) == 1  # the records' provenance travels with the curve

    curve = read_compressai_json(out / "ours.json")
    assert (curve.dataset, curve.split, curve.num_images) == ("kodak", "test", 24)
    df = add_curves(collect([anchor_records]), [curve])
    expected = bd_table(collect([both]), "jpeg", "psnr")
    assert bd_table(df, "jpeg", "psnr")["bd_rate_pct"].iloc[0] == expected["bd_rate_pct"].iloc[0]


def test_dataset_guard_holds_for_published_curves(anchor_records, tmp_path, capsys):
    base = ["bd", "--anchor", "jpeg", "--metric", "psnr", str(anchor_records), "--curves"]
    no_dataset = _compressai(tmp_path / "nods.json", "ours", OURS)
    assert main([*base, str(no_dataset)]) == 2
    assert "does not say which dataset it was measured on; give it with --curve-dataset" in capsys.readouterr().err
    assert main([*base, str(no_dataset), "--curve-dataset", "kodak"]) == 0
    capsys.readouterr()

    # Another dataset is a mix, refused as for records; choosing the test set leaves the curve out.
    kitti = _compressai(tmp_path / "kitti.json", "ours", OURS, {"dataset": "kitti"})
    assert main([*base, str(kitti)]) == 2
    assert "mix test sets" in capsys.readouterr().err
    assert main([*base, str(kitti), "--dataset", "kodak"]) == 0
    assert "left out by --dataset/--split/--num-images: ['ours']" in capsys.readouterr().err
    # A file's own dataset is never relabelled.
    assert main([*base, str(kitti), "--curve-dataset", "kodak"]) == 2
    assert "is for dataset 'kitti', not 'kodak'" in capsys.readouterr().err

    # A stated split / size must match; an unstated one matches any.
    other_split = _compressai(tmp_path / "val.json", "ours", OURS, {"dataset": "kodak", "split": "val"})
    assert main([*base, str(other_split)]) == 2
    assert "mix test sets" in capsys.readouterr().err
    same = _compressai(tmp_path / "same.json", "ours", OURS, {"dataset": "kodak", "split": "test", "num_images": 24})
    assert main([*base, str(same), "--split", "test", "--num-images", "24"]) == 0
    capsys.readouterr()

    # A published curve cannot take the name of a vcm curve.
    clash = _compressai(tmp_path / "clash.json", "jpeg", OURS, {"dataset": "kodak"})
    assert main([*base, str(clash)]) == 2
    assert "published curve 'jpeg'" in capsys.readouterr().err


def test_bad_curve_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not a JSON file"):
        read_compressai_json(bad)
    bad.write_text(json.dumps({"name": "x", "results": {"psnr-rgb": [30.0]}}))
    with pytest.raises(DataError, match=r"bad\.json: 'results' has no 'bpp' list"):
        read_compressai_json(bad, "kodak")
    bad.write_text(json.dumps({"name": "x", "results": {"bpp": [0.1, 0.2], "psnr-rgb": [30.0]}}))
    with pytest.raises(DataError, match=r"results\.psnr-rgb has 1 values for 2 'bpp' values"):
        read_compressai_json(bad, "kodak")
    bad.write_text(json.dumps({"name": "x", "results": {"bpp": [0.1, "0.2"]}}))
    with pytest.raises(DataError, match=r"results\.bpp\[1\] is '0\.2', expected a number"):
        read_compressai_json(bad, "kodak")

    csv = tmp_path / "bad.csv"
    csv.write_text("curve,bpp,psnr\nx,0.1,30\nx,0.2,thirty\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: column 'psnr' is 'thirty', expected a number"):
        read_curves_csv(csv, "kodak")
    csv.write_text("curve,rate,psnr\nx,0.1,30\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: header .* lacks \['bpp'\]"):
        read_curves_csv(csv, "kodak")
    csv.write_text("curve,bpp,psnr,dataset\nx,0.1,30,kodak\nx,0.2,31,kitti\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: curve 'x' has dataset/split/num_images"):
        read_curves_csv(csv)
    with pytest.raises(DataError, match=r"unknown curve file type '\.txt'"):
        (tmp_path / "c.txt").write_text("")
        read_curves([tmp_path / "c.txt"])
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        read_curves([tmp_path / "missing.json"])
