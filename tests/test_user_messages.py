"""What a user reads: did-you-mean suggestions, config typos, input files at their edges, progress bars,
loggers and help texts."""
from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SYNTH, compose, synthetic_cache

from vcm.data.kitti import HighBitDepthWarning, load_image, parse_label_file
from vcm.errors import ConfigError
from vcm.utils.names import close_matches, did_you_mean
from vcm.utils.progress import progress_bar, progress_enabled

LABEL = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"


def test_did_you_mean_names_the_closest_names_only():
    names = ["hyperprior-kitti-q1", "hyperprior-kitti-q3", "lmsfc-kitti-l0.5", "kitti_mobilenet_v2"]
    assert set(close_matches("hyperprior-kitti-q2", names)[:2]) == {"hyperprior-kitti-q1", "hyperprior-kitti-q3"}
    assert did_you_mean("JPG", ["jpeg", "webp", "hevc"]) == " (did you mean 'jpeg'?)"
    assert did_you_mean("zzzz", names) == ""


def test_crlf_results_file_with_an_appended_score_reads_its_scores(tmp_path):
    # a CRLF file whose lines got a score appended by a tool that only knows LF: "<15 fields>\r 0.9\n"
    appended = tmp_path / "appended.txt"
    appended.write_bytes(f"{LABEL}\r 0.9\n{LABEL}\r 0.25\n".encode())
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(f"{LABEL} 0.9\r\n{LABEL} 0.25\r\n".encode())
    for path in (appended, crlf):
        objects = parse_label_file(path, require_score=True)
        assert [o.score for o in objects] == [0.9, 0.25]
        assert objects[0].bbox == (587.01, 173.33, 614.12, 200.12)
    old_mac = tmp_path / "cr.txt"
    old_mac.write_bytes(f"{LABEL} 0.9\r{LABEL} 0.25\r".encode())
    assert [o.score for o in parse_label_file(old_mac, require_score=True)] == [0.9, 0.25]


def _png16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour): [H, W] grey or [H, W, 3] RGB."""
    h, w = samples.shape[:2]
    colour = 2 if samples.ndim == 3 else 0
    data = samples.astype(">u2")
    raw = b"".join(b"\x00" + data[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("channels", [3, 1])
def test_16_bit_png_warns_and_keeps_the_high_byte_of_each_sample(tmp_path, channels):
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 65536, size=(4, 5, 3) if channels == 3 else (4, 5), dtype=np.int64)
    path = _png16(tmp_path / "deep.png", samples)
    with pytest.warns(HighBitDepthWarning, match=r"deep\.png: 16 bits per sample, coded as 8 \(the high byte"):
        image = load_image(path)
    expected = samples >> 8
    expected = expected if channels == 3 else np.repeat(expected[..., None], 3, axis=2)
    assert image.dtype == torch.uint8 and image.shape == (3, 4, 5)
    assert (image.permute(1, 2, 0).numpy() == expected).all()


def test_8_bit_png_loads_without_a_warning(tmp_path, recwarn):
    from PIL import Image

    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(tmp_path / "plain.png")
    load_image(tmp_path / "plain.png")
    assert not [w for w in recwarn if issubclass(w.category, HighBitDepthWarning)]


def test_misspelled_config_key_or_option_names_the_valid_ones(capsys):
    from vcm.cli.hydra_app import check_overrides, config_error_message

    msg = config_error_message("eval", ["codec=jpeg", "codec.qualty=50"])
    assert msg.startswith("codec.qualty is not a key of codec (did you mean 'quality'?); the keys of codec: ")
    assert "quality" in msg.split("the keys of codec: ")[1] and "+codec.qualty" not in msg
    msg = config_error_message("eval", ["codec=jpg"])
    assert msg.startswith("codec=jpg: no codec config called 'jpg' (did you mean 'jpeg'?); options: av1, ")
    msg = config_error_message("train", ["model=hyperpriorr"])
    assert "did you mean 'hyperprior'" in msg and "_codec" not in msg
    assert "max_steps" in config_error_message("train", ["trainer.max_stepz=3"])
    assert config_error_message("eval", ["codec=jpeg", "codec.quality=50", "hydra.run.dir=/tmp/x"]) is None
    assert config_error_message("eval", ["+codec.extra=1"]) is None  # adding a key on purpose is fine

    with pytest.raises(SystemExit) as e:
        check_overrides("vcm-eval", "eval", ["codec=jpeg", "codec.qualty=50"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("vcm-eval: error: codec.qualty is not a key of codec") and err.count("\n") == 1
    check_overrides("vcm-eval", "eval", ["-m", "codec.qualty=1,2"])  # a multirun: Hydra's own handling


def test_progress_knob_auto_true_false():
    not_a_terminal = io.StringIO()
    assert not progress_enabled("auto", not_a_terminal)
    assert progress_enabled(True, not_a_terminal) and progress_enabled("true", not_a_terminal)
    assert not progress_enabled(False) and not progress_enabled("false")
    with pytest.raises(ConfigError, match="progress='sometimes'; expected one of auto, true, false"):
        progress_enabled("sometimes")
    assert progress_bar(3, "x", "auto", not_a_terminal) is None
    bar = progress_bar(3, "jpeg on kitti_mini/test", "true", not_a_terminal)
    for _ in range(3):
        bar.update(1)
    bar.close()
    shown = not_a_terminal.getvalue()
    assert "jpeg on kitti_mini/test" in shown and "3/3" in shown and "<00:00" in shown  # time left


def test_eval_draws_a_bar_when_asked_and_plain_lines_otherwise(tmp_path, capsys, caplog):
    import logging

    from vcm.cli.eval import evaluate

    cache = synthetic_cache(tmp_path)
    base = ["codec=jpeg", "codec.quality=50", *SYNTH]
    with caplog.at_level(logging.INFO, logger="vcm.eval"):
        evaluate(compose([*base, "progress=true"], tmp_path / "bar", cache, name="eval"))
    err = capsys.readouterr().err
    assert re.search(r"jpeg on synthetic/test: 100%.* (\d+)/\1 \[\d\d:\d\d<00:00", err), err
    assert not [r for r in caplog.records if r.getMessage().startswith("[1/")]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vcm.eval"):
        evaluate(compose(base, tmp_path / "plain", cache, name="eval"))  # auto: stderr is no terminal here
    assert "100%" not in capsys.readouterr().err
    assert [r for r in caplog.records if r.getMessage().startswith("[1/")]


def test_tensorboard_logger_writes_event_files(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from vcm.cli.train import build_loggers

    loggers = build_loggers(compose(["logger=tensorboard"], tmp_path))
    assert {type(lg) for lg in loggers} == {TensorBoardLogger, CSVLogger}
    for lg in loggers:
        lg.log_metrics({"val/bpp_real": 0.5}, step=1)
        lg.finalize("success")
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_study_help_says_what_the_demo_runs(capsys):
    from vcm.cli.study import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    demo = text[text.index("* ``demo``"):text.index("* ``mini``")]
    assert "kitti_mini" in demo and "synthetic" not in demo, demo


def test_study_steps_say_how_far_and_about_how_long_is_left(tmp_path):
    from vcm.cli.study import planned_steps
    from vcm.studies.runner import Study, load_study
    from vcm.utils.progress import time_left

    # make demo: the uncompressed reference, 4 zoo points, JPEG x3, HEVC 4:4:4 x4, one fine-tune and its evaluation
    st = Study("demo", tmp_path / "demo")
    assert planned_steps(st, load_study("demo"), trains_detector=False) == {"train": 1, "eval": 13}
    assert planned_steps(st, load_study("demo"), False, only={"jpeg"}) == {"train": 0, "eval": 3}

    planned = {"train": 2, "eval": 4}
    assert time_left(planned, []) == "0/6 steps"
    steps = [{"kind": "eval", "seconds": 30.0}, {"kind": "eval", "status": "kept (record exists)"}]
    # 2 evals left at 30 s, 2 trainings left estimated from the only timed step: 2 x 30 s
    assert time_left(planned, steps) == "2/6 steps, about 2.0 min left"
    steps.append({"kind": "train", "seconds": 300.0})
    assert time_left(planned, steps) == "3/6 steps, about 6.0 min left"  # 1 x 300 s + 2 x 30 s
    assert time_left({}, steps) == ""


@pytest.mark.slow
def test_tensorboard_run_holds_metrics_and_sample_images(tmp_path, kitti_tiny_root):
    from helpers import TINY_TRAIN
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vcm.cli.train import train

    train(compose([*TINY_TRAIN, "data=kitti_tiny", "model=factorized", "quality=1", "model.codec.N=16",
                   "model.codec.M=24", "logger=tensorboard", "test_after_fit=false"], tmp_path))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert any(tag.startswith("val/") for tag in events.Tags()["scalars"]), events.Tags()
    assert any(tag.startswith("val/samples/") for tag in events.Tags()["images"]), events.Tags()


def test_a_misspelled_or_non_image_zoo_name_lists_only_image_codecs_and_the_closest(capsys, tmp_path):
    from vcm.cli.bitstream import compress_main, decompress_main

    assert compress_main(["--model", "hyperprior-kiti-q3", str(tmp_path / "x.png"), str(tmp_path / "x.vcm")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'hyperprior-kitti-q3'" in err
    assert "kitti_mobilenet_v2" not in err and "lmsfc" not in err
    assert decompress_main(["--model", "lmsfc-kitti-l0.5", str(tmp_path / "x.vcm"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "is a feature codec" in err and "hyperprior-kitti-q1, hyperprior-kitti-q3" in err


def test_codec_zoo_refuses_the_detector_naming_the_codecs():
    from vcm.evaluation.runners import zoo_runner
    from vcm.zoo import ZooError

    with pytest.raises(ZooError, match=r"no zoo image codec or feature codec called 'kitti_mobilenet_v2' \('kitti_mobilenet_v2' is a detector\)"):
        zoo_runner("kitti_mobilenet_v2")
