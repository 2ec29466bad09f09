"""RD plots, reports, W&B logging and the vcm-rd command, from a folder of real record files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vcm.cli.rd import main
from vcm.rd.plot import plot_rd
from vcm.rd.record import make_record, write_record
from vcm.rd.report import write_report
from vcm.rd.table import collect

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<b>evil</b>&co|x"
RATES = [0.1, 0.2, 0.4, 0.8]
PSNR = [28.0, 31.0, 33.5, 36.0]
MAP50 = [0.30, 0.42, 0.50, 0.55]


def _write_records(folder: Path) -> Path:
    det = {"name": "fasterrcnn", "weights_hash": "0123456789abcdef"}

    def put(codec, params, bpp, psnr, map50=None, dataset="kitti"):
        metrics = {"bpp_real": bpp, "psnr": psnr, "roi_psnr": psnr + 1.0}  # inf -> null
        if map50 is not None:
            metrics["map_50"] = map50
        rec = make_record(codec, params, dataset, "val", 4, det, metrics, [{"name": "000001"}], {"seed": 0},
                          git_commit="d" * 40)
        write_record(rec, folder)

    for i, (r, q, m) in enumerate(zip(RATES, PSNR, MAP50)):
        put("jpeg", {"quality": 10 * (i + 1)}, r, q, m)
        put("roi_hyperprior", {"lambda": 0.001 * 2**i, "variant": "base"}, r * 0.5, q, m + 0.02)
        put(EVIL, {"lambda": i}, r * 2.0, q)  # PSNR only: no mAP
    put("webp", {"quality": 50}, 0.3, 32.0, 0.45)  # one point only: BD not computable
    put("none", {}, 24.0, float("inf"), 0.6)  # uncompressed reference: PSNR infinite (stored as null)
    return folder


@pytest.fixture
def results(tmp_path) -> Path:
    return _write_records(tmp_path / "results")


def test_plot_writes_one_png_per_present_metric(results, tmp_path):
    df = collect([results])
    out = tmp_path / "plots"
    paths = plot_rd(df, out, metrics=("psnr", "map_50", "kitti_ap_car_moderate"), dashed={"jpeg", "webp", "none"})
    assert [p.name for p in paths] == ["rd_psnr.png", "rd_map_50.png"]  # no KITTI AP in the records
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert sorted(p.name for p in out.iterdir()) == ["rd_map_50.png", "rd_psnr.png"]  # no temp files
    with pytest.raises(ValueError, match="rate column 'bpp_estimated'"):
        plot_rd(df, out, rate="bpp_estimated")


def test_report_has_bd_tables_plots_and_provenance(results, tmp_path):
    df = collect([results])
    out = tmp_path / "report"
    md_path, html_path = write_report(df, out, anchor="jpeg", metrics=("psnr", "map_50", "ms_ssim"))
    md = md_path.read_text()
    html = html_path.read_text()

    # BD table (markdown): roi_hyperprior needs half the rate of jpeg at every PSNR.
    assert re.search(r"^\| roi_hyperprior/base \| 4 \| -50\.00 \| ", md, flags=re.MULTILINE), md
    # a 1-point curve is listed once as not computable, not as a row of every table
    assert "- webp: test curve has 1 point(s), at least 3 needed (every table)" in md
    assert not re.search(r"^\| webp \| 1 \|", md, flags=re.MULTILINE)
    assert "| BD-rate [%] |" in md and "BD-mAP@0.50 [%-points]" in md
    assert "(<rd_psnr.png>)" in md and "(<rd_map_50.png>)" in md
    assert (out / "rd_psnr.png").read_bytes().startswith(PNG_MAGIC)
    assert "ms_ssim" not in md  # absent metrics are skipped
    assert not re.search(r"^\| none \| 1 \|", md, flags=re.MULTILINE)  # uncompressed level: not a BD row
    # Provenance: every record, linked relative to the report folder.
    for rec in results.glob("*.json"):
        assert f"../results/{rec.name}" in md
    assert md.count("dddddddddddd") == len(df)
    assert "0123456789abcdef" in md
    # Markdown cells escape the pipe and HTML tags of user-controlled names, without HTML entities.
    assert r"\<b>evil\</b>&co\|x" in md
    assert "&gt;" not in md and "&lt;" not in md and ">= 3 points per curve" in md

    # HTML: escaped, self-contained page with the same content.
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "&lt;b&gt;evil&lt;/b&gt;&amp;co|x" in html and "<b>evil" not in html
    assert '<img src="rd_psnr.png"' in html and "<td>-50.00</td>" in html
    assert 'href="../results/' in html

    with pytest.raises(ValueError, match="no curve or codec named 'vtm'"):
        write_report(df, out, anchor="vtm")


def test_cli_collect_bd_plot_report(results, tmp_path, capsys):
    table = tmp_path / "table.csv"
    assert main(["collect", str(results), "--out", str(table)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {table}" in out and "14 record(s), 5 curve(s)" in out and "roi_hyperprior/base: 4 point(s)" in out
    assert table.read_text().startswith("curve,codec,dataset,split,num_images,")

    for source in ([str(results)], ["--table", str(table)]):
        assert main(["bd", "--anchor", "jpeg", "--metric", "psnr", *source]) == 0
        out = capsys.readouterr().out
        # BD-rate, then BD-PSNR, then the note (half the rate: the rate ranges overlap by 2/3 only)
        assert re.search(r"^roi_hyperprior/base\s+4\s+-50\.00\s+\+\d+\.\d{3}\s+low overlap for BD-quality: "
                         r"the rate ranges share 67 %", out, flags=re.MULTILINE), out
        assert re.search(r"^webp\s+1\s+n/a\s+n/a\s+not computable: test curve has 1 point", out, flags=re.MULTILINE), out

    assert main(["bd", "--anchor", "jpeg", "--metric", "map_50", str(results), "--out", str(tmp_path / "bd.csv")]) == 0
    assert "not computable: test curve has 0 point(s)" in capsys.readouterr().out  # EVIL has no mAP
    assert (tmp_path / "bd.csv").is_file()

    assert main(["plot", str(results), "--out", str(tmp_path / "p"), "--metrics", "psnr", "roi_psnr"]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["rd_psnr.png", "rd_roi_psnr.png"]

    assert main(["report", str(results), "--out", str(tmp_path / "r"), "--anchor", "jpeg", "--metrics", "psnr"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert {"report.md", "report.html", "rd_psnr.png"} <= {p.name for p in (tmp_path / "r").iterdir()}


def test_cli_errors_are_clear_and_nonzero(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["collect", str(empty)]) == 2
    assert f"no results records found in {empty}" in capsys.readouterr().err
    assert main(["bd", "--anchor", "jpeg", "--metric", "psnr", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # default folder results/ does not exist here
    assert main(["plot", "--out", str(tmp_path / "p")]) == 2
    assert "results does not exist" in capsys.readouterr().err

    _write_records(tmp_path / "results")
    assert main(["bd", "--anchor", "vtm", "--metric", "psnr"]) == 2  # default folder: results/
    assert "no curve or codec named 'vtm'" in capsys.readouterr().err
    assert main(["bd", "--anchor", "jpeg", "--metric", "kitti_ap_car_moderate"]) == 2
    assert "metric column 'kitti_ap_car_moderate'" in capsys.readouterr().err
    assert main(["plot", "--out", str(tmp_path / "p"), "--metrics", "ms_ssim"]) == 2
    assert "none of the metrics" in capsys.readouterr().err

    # Two test sets in one folder must be told apart, then work.
    rec = make_record("jpeg", {"quality": 10}, "coco", "val", 4, None, {"bpp_real": 0.1, "psnr": 30.0}, [], {})
    write_record(rec, tmp_path / "results")
    assert main(["bd", "--anchor", "jpeg", "--metric", "psnr"]) == 2
    assert "mix test sets" in capsys.readouterr().err
    assert main(["bd", "--anchor", "jpeg", "--metric", "psnr", "--dataset", "kitti"]) == 0

    with pytest.raises(SystemExit) as e:
        main(["bd", "--metric", "psnr"])  # --anchor is required
    assert e.value.code == 2


def test_wandb_offline_run_logs_table_and_curves(results, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "wb").mkdir()

    assert main(["wandb", str(results), "--metrics", "psnr", "map_50", "--name", "rd-test"]) == 0
    out = capsys.readouterr().out
    assert "mode offline" in out
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_dir = runs[0]
    assert str(run_dir) in out
    wandb_file = next(run_dir.glob("run-*.wandb"))
    data = wandb_file.read_bytes()
    assert len(data) > 0 and b"rd/points" in data and b"rd/psnr" in data and b"rd/map_50" in data

    # The logged table holds every record, and each line series the curve points (mAP in percent).
    media = run_dir / "files" / "media" / "table" / "rd"
    points = json.loads(next(media.glob("points_*.table.json")).read_text())
    assert len(points["data"]) == 14 and points["columns"][:2] == ["curve", "codec"]
    psnr = json.loads(next(media.glob("psnr_table_*.table.json")).read_text())
    roi = sorted((x, y) for x, key, y in psnr["data"] if key == "roi_hyperprior/base")
    np.testing.assert_allclose(roi, [(r * 0.5, q) for r, q in zip(RATES, PSNR)], rtol=1e-12)
    map50 = json.loads(next(media.glob("map_50_table_*.table.json")).read_text())
    jpeg = sorted((x, y) for x, key, y in map50["data"] if key == "jpeg")
    np.testing.assert_allclose(jpeg, [(r, 100 * m) for r, m in zip(RATES, MAP50)], rtol=1e-12)


def test_wandb_logs_into_an_existing_run_without_finishing_it(results, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from vcm.rd.wandb_log import log_rd_curves

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = wandb.init(mode="offline", dir=str(tmp_path), project="vcm-test")
    try:
        folder = log_rd_curves(collect([results]), run=run, metrics=["psnr"], key_prefix="eval_rd")
        assert folder is not None and folder.name.startswith("offline-run-")
        run.log({"after": 1.0})  # still open: the caller owns the run
        assert wandb.run is run
    finally:
        run.finish()
        wandb.teardown()
    data = next(folder.glob("run-*.wandb")).read_bytes()
    assert b"eval_rd/points" in data and b"eval_rd/psnr" in data and b"after" in data


def test_every_classical_codec_config_is_drawn_dashed(tmp_path):
    """A plot tells anchors from learned codecs by DEFAULT_ANCHORS: every anchor config's codec is in it."""
    import hydra
    from helpers import compose, config_options

    from vcm.anchors.base import FeatureAnchor, ImageAnchor
    from vcm.rd.plot import DEFAULT_ANCHORS

    learned = {"checkpoint", "checkpoint_roi", "zoo", "zoo_roi", "compressai"}  # need weights; their curves are the learned ones
    anchors = {}
    for option in sorted(set(config_options("codec")) - learned - {"none"}):
        codec = hydra.utils.instantiate(compose([f"codec={option}"], tmp_path / option, name="eval").codec)
        assert isinstance(codec, (ImageAnchor, FeatureAnchor)), option
        anchors[option] = codec.name
    assert {"jpeg", "hevc444", "feature_hevc"} <= set(anchors)
    assert set(anchors.values()) <= DEFAULT_ANCHORS, set(anchors.values()) - DEFAULT_ANCHORS
