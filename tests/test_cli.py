"""What a user sees from the command line: entry points, one-line errors, summaries, warnings."""
from __future__ import annotations

import importlib

import pytest
from helpers import console_scripts


def test_every_console_script_imports():
    scripts = console_scripts()
    assert {"vcm-train", "vcm-eval", "vcm-rd", "vcm-compress", "vcm-decompress"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert module.startswith("vcm.cli."), f"{name}: entry points live in vcm/cli/"
        assert callable(getattr(importlib.import_module(module), func)), name


def test_every_anchor_config_has_its_own_curve(tmp_path):
    """hevc444 records never join the 4:2:0 hevc curve: each vcm/conf/codec anchor has its own codec name."""
    import hydra
    from helpers import compose

    names = {}
    for option in ("jpeg", "webp", "hevc", "hevc444", "av1", "vtm", "feature_hevc", "feature_vtm"):
        cfg = compose([f"codec={option}"], tmp_path / option, name="eval")
        names[option] = hydra.utils.instantiate(cfg.codec).name
    assert len(set(names.values())) == len(names), names
    assert names["hevc444"] == "hevc444" and names["hevc"] == "hevc"


def _runs(log_dir):
    return sorted(p for p in log_dir.glob("*/runs/*")) if log_dir.exists() else []


@pytest.mark.slow
@pytest.mark.guard
def test_user_mistakes_end_in_one_line_without_traceback_or_run_folder(tmp_path):
    from helpers import run_cli

    bad_ckpt = tmp_path / "bad.ckpt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    logs = tmp_path / "logs"
    cases = [
        ("vcm-eval", ["codec=checkpoint"], "codec.ckpt is required"),
        ("vcm-eval", ["codec=checkpoint", f"codec.ckpt={bad_ckpt}"], str(bad_ckpt)),
        ("vcm-eval", ["data=kitti", f"data.root={tmp_path / 'nowhere'}"], "does not exist"),
        ("vcm-train", ["data=kitti", f"data.root={tmp_path / 'nowhere'}", "trainer=cpu"], "does not exist"),
    ]
    for tool, args, expected in cases:
        r = run_cli(tool, [*args, f"paths.log_dir={logs}"], timeout=300)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and "HYDRA_FULL_ERROR" not in r.stderr, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith(f"{tool}: error: ")]
        assert len(errors) == 1 and expected in errors[0], r.stderr
        assert _runs(logs) == [], f"{tool} {args} left {_runs(logs)}"


@pytest.mark.slow
def test_full_traceback_with_hydra_full_error(tmp_path, monkeypatch):
    import helpers

    env = helpers.subprocess_env()
    monkeypatch.setattr(helpers, "subprocess_env", lambda: {**env, "HYDRA_FULL_ERROR": "1"})
    r = helpers.run_cli("vcm-eval", ["codec=checkpoint", f"paths.log_dir={tmp_path / 'logs'}"], timeout=300)
    assert r.returncode != 0 and "Traceback" in r.stderr and "codec.ckpt" in r.stderr


@pytest.mark.slow
def test_model_choices_list_no_internal_config(tmp_path):
    from helpers import run_cli

    r = run_cli("vcm-train", ["model=hyperpriorr", f"paths.log_dir={tmp_path / 'logs'}"], timeout=300)
    assert r.returncode != 0
    listing = r.stdout + r.stderr
    assert "hyperprior" in listing and "roi_hyperprior" in listing
    assert "_codec" not in listing and "model_base" not in listing and "lambdas" not in listing


@pytest.mark.slow
def test_no_deprecation_warning_on_a_command(tmp_path):
    from helpers import run_cli

    r = run_cli("vcm-eval", ["codec=jpeg", "codec.quality=50", "data=synthetic", "data.synthetic_num=4",
                             "data.synthetic_size=[64,128]", "max_images=1", f"paths.log_dir={tmp_path / 'logs'}",
                             f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'cache'}"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("jpeg, mean of 1 image: bpp_real ")


def test_rd_csv_keeps_integer_params_and_notes_name_the_flag(tmp_path, capsys):
    import csv

    from vcm.cli.rd import main as rd
    from vcm.rd.record import make_record, write_record

    res = tmp_path / "results"
    # jpeg: a quality parameter; hyperprior: quality and lmbda, with a rate that falls at q5 (not monotonic)
    for q, bpp, psnr in ((10, 0.2, 25.0), (50, 0.5, 30.0), (90, 1.5, 36.0)):
        write_record(make_record("jpeg", {"quality": q}, "d", "test", 1, None, {"bpp_real": bpp, "psnr": psnr},
                                 [{"name": "0"}], {}), res)
    for q, bpp, psnr in ((1, 0.1234567, 24.0), (3, 0.4, 27.0), (5, 0.3, 29.0)):
        write_record(make_record("hyperprior", {"quality": q, "lmbda": 0.001 * q}, "d", "test", 1, None,
                                 {"bpp_real": bpp, "psnr": psnr}, [{"name": "0"}], {}), res)
    write_record(make_record("none", {}, "d", "test", 1, None, {"bpp_real": 24.0}, [{"name": "0"}], {}), res)
    assert rd(["collect", str(res), "--out", str(tmp_path / "rd.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "rd.csv").open()))
    assert sorted(r["param.quality"] for r in rows if r["codec"] == "jpeg") == ["10", "50", "90"]
    assert {r["param.quality"] for r in rows if r["codec"] == "none"} == {""}
    capsys.readouterr()
    rd(["bd", "--anchor", "jpeg", "--metric", "psnr", str(res)])
    out = capsys.readouterr().out
    assert "not monotonic" in out and "--pareto" in out and "0.1235" in out and "0.1234567" not in out, out


def test_report_tables_use_the_units_their_headings_name(tmp_path):
    from vcm.cli.rd import main as rd
    from vcm.rd.record import make_record, write_record

    res = tmp_path / "results"
    for q, bpp, m50 in ((10, 0.2, 0.25), (50, 0.5, 0.5), (90, 1.5, 0.75)):
        write_record(make_record("jpeg", {"quality": q}, "d", "test", 1, None, {"bpp_real": bpp, "map_50": m50},
                                 [{"name": "0"}], {}), res)
    assert rd(["report", str(res), "--out", str(tmp_path / "report"), "--anchor", "jpeg", "--metrics", "map_50"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| curve | params |"))
    assert "mAP@0.50 [%]" in header, header
    assert "| 75 |" in md and "| 0.75 |" not in md, md
