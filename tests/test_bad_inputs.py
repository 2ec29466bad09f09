"""The bad-input matrix: every kind of bad input vcm meets, with the error it must give.

Each case asserts a clear error (its message names the file or value and what was expected) and
that nothing was lost: no partial output file, the results folder exactly as it was. Frames without
objects are not bad input: they must work.

Data: corrupt, truncated, empty and missing images; malformed, binary and missing labels; missing
folders. Bitstreams: truncated, empty, random, corrupt, other format version, other weights, other
codec -- from ``unpack`` / ``decode_image`` and from the ``vcm-decompress`` CLI (exit code 2).
Configs: unknown group options, negative lambda, alpha outside [0, 1], a crop larger than the frames,
unknown detector backbone, and more.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    TINY,
    TINY_CODEC,
    TINY_TRAIN,
    compose,
    run_cli,
    snapshot,
    synthetic_cache,
)
from hydra.errors import InstantiationException, MissingConfigException

from vcm.errors import BitstreamError, ConfigError, DataError

FRAME = "000003"  # a frame of the synthetic set that the evaluation of split=all reaches


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return synthetic_cache(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture
def tree(tmp_path, cache) -> Path:
    """A private copy of the 8-frame synthetic KITTI tree (safe to damage)."""
    root = tmp_path / "kitti"
    shutil.copytree(cache / "synthetic" / "n8_s0_128x320", root)
    return root


@pytest.fixture
def results(tmp_path) -> Path:
    """A results folder that already holds a record, which no failing run may touch."""
    res = tmp_path / "results"
    res.mkdir()
    (res / "earlier_run.json").write_text('{"codec": "jpeg", "metrics": {"bpp_real": 1.0}}\n')
    return res


# ============================================================================================ data
def _img(root: Path, frame: str = FRAME) -> Path:
    return root / "training" / "image_2" / f"{frame}.png"


def _lbl(root: Path, frame: str = FRAME) -> Path:
    return root / "training" / "label_2" / f"{frame}.txt"


def _replace_line(path: Path, i: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[i] = new
    path.write_text("\n".join(lines) + "\n")


def _remove_frames(root: Path) -> None:
    for sub in ("image_2", "label_2"):
        for p in (root / "training" / sub).iterdir():
            p.unlink()


# (case, damage(root), exception, regex the message must match, file the message must name)
DATA_CASES = [
    ("corrupt_image", lambda r: _img(r).write_bytes(np.random.default_rng(0).bytes(5000)),
     DataError, r"cannot read image .*expected a complete PNG/JPEG file", _img),
    ("truncated_image", lambda r: _img(r).write_bytes(_img(r).read_bytes()[:3000]),
     DataError, r"cannot read image .*expected a complete PNG/JPEG file", _img),
    ("empty_image", lambda r: _img(r).write_bytes(b""),
     DataError, r"image file is empty: .*expected a PNG/JPEG image", _img),
    ("image_without_label", lambda r: _lbl(r).unlink(),
     DataError, r"1 image\(s\) in .* have no label file in .*\['000003'\]", lambda r: r / "training" / "image_2"),
    ("label_without_image", lambda r: _img(r).unlink(),
     DataError, r"1 label file\(s\) in .* have no image in .*\['000003'\]", lambda r: r / "training" / "label_2"),
    ("label_too_few_fields", lambda r: _replace_line(_lbl(r), 0, "Car 0.00 0 1.5 10 20"),
     DataError, r":1: .*expected 15", _lbl),
    ("label_not_a_number", lambda r: _replace_line(_lbl(r), 0, "Car 0.00 0 -1.5 abc 20 40 60 1.5 1.6 3.9 1 1.6 20 -1.5"),
     DataError, r":1: field 'x1' is 'abc', expected a number", _lbl),
    ("label_nan", lambda r: _replace_line(_lbl(r), 0, "Car 0.00 0 -1.5 nan 20 40 60 1.5 1.6 3.9 1 1.6 20 -1.5"),
     DataError, r":1: field 'x1' is 'nan', expected a finite number", _lbl),
    ("label_binary", lambda r: _lbl(r).write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"),
     DataError, r"not a text label file .*expected KITTI label_2 lines", _lbl),
    ("no_label_folder", lambda r: shutil.rmtree(r / "training" / "label_2"),
     DataError, r"does not exist; expected KITTI label_2 files", lambda r: r / "training" / "label_2"),
    ("no_images", lambda r: _remove_frames(r),
     DataError, r"holds no images", lambda r: r / "training" / "image_2"),
    ("missing_root", lambda r: shutil.rmtree(r),
     DataError, r"KITTI root .* does not exist.*training/image_2", lambda r: r),
]


@pytest.mark.parametrize("case,damage,exc,pattern,named", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_fails_clearly_and_loses_nothing(case, damage, exc, pattern, named, tree, results, tmp_path):
    from vcm.cli.eval import evaluate

    damage(tree)
    before = snapshot(results)
    cfg = compose(["data=kitti", f"data.root={tree}", "codec=jpeg", "split=all"], tmp_path, name="eval")
    with pytest.raises(exc, match=pattern) as e:
        evaluate(cfg)
    assert str(named(tree)) in str(e.value)
    assert snapshot(results) == before  # no partial record; the earlier one untouched


@pytest.mark.slow
def test_bad_training_image_fails_through_the_loader_workers(tree, tmp_path):
    """The same clear error from a training batch loaded in a worker process."""
    from vcm.cli.train import train

    for frame in ("000000", "000002", "000003", "000004", "000005", "000006"):  # every training frame
        _img(tree, frame).write_bytes(b"not an image")
    cfg = compose(TINY_TRAIN + TINY_CODEC + ["data=kitti", f"data.root={tree}", "data.num_workers=1", "data.crop_size=null",
                     "data.split_fractions=[0.75,0.125,0.125]", "model=factorized"], tmp_path)
    with pytest.raises(DataError, match=r"(?s)in DataLoader worker process 0.*cannot read image .*training/image_2/0000\d\d\.png"):
        train(cfg)
    assert not (tmp_path / "results").exists()


def _empty_labels(root: Path) -> None:
    for p in (root / "training" / "label_2").glob("*.txt"):
        p.write_text("")
    # One frame with only an ignore region: still no object.
    _lbl(root, "000001").write_text("DontCare -1 -1 -10 10.00 20.00 60.00 50.00 -1 -1 -1 -1000 -1000 -1000 -10\n")


def test_frames_without_objects_evaluate(tree, results, tmp_path):
    from vcm.cli.eval import evaluate

    _empty_labels(tree)
    cfg = compose(["data=kitti", f"data.root={tree}", "codec=jpeg", "split=all"], tmp_path, name="eval")
    path, rec = evaluate(cfg)
    assert rec["num_images"] == 8 and path.parent == results
    assert all(p["roi_psnr"] is None and p["roi_fraction"] == 0.0 for p in rec["per_image"])
    assert rec["metrics"]["roi_psnr"] is None and rec["metrics"]["psnr"] > 20
    assert np.isfinite(rec["metrics"]["bg_psnr"])


@pytest.mark.slow
def test_frames_without_objects_train_with_the_roi_loss(tree, tmp_path):
    from vcm.cli.train import train

    _empty_labels(tree)
    cfg = compose(TINY_TRAIN + TINY_CODEC + ["data=kitti", f"data.root={tree}", "data.num_workers=0", "model=hyperprior",
                              "loss=roi_rd", "trainer.max_steps=3"], tmp_path)
    metrics, _ = train(cfg)
    assert np.isfinite(metrics["val/loss"]) and np.isfinite(metrics["test/bpp_real"])
    assert "record_path" in metrics


# ============================================================================================ bitstreams
@pytest.fixture(scope="module")
def codecs(tmp_path_factory, cache) -> dict:
    """Checkpoints: a factorized codec, the same with one weight changed, and a hyperprior; a bitstream."""
    from vcm.cli.bitstream import CodecSession
    from vcm.cli.train import train
    from vcm.data.kitti import load_image

    tmp = tmp_path_factory.mktemp("codecs")
    out = {}
    for name in ("factorized", "hyperprior"):
        train(compose(TINY + [f"model={name}", "trainer.max_steps=3", "test_after_fit=false"], tmp / name, cache))
        out[name] = tmp / name / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(out["factorized"], map_location="cpu", weights_only=False)
    key = next(k for k in state["state_dict"] if k.endswith("g_s.0.weight"))
    state["state_dict"][key] = state["state_dict"][key] + 1e-3
    out["other_weights"] = tmp / "other_weights.ckpt"
    torch.save(state, out["other_weights"])
    frame = load_image(cache / "synthetic" / "n8_s0_128x320" / "training" / "image_2" / "000001.png")
    out["stream"] = CodecSession(out["factorized"]).compress(frame)
    return out


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]


BITSTREAM_CASES = [
    ("empty", lambda d: b"", r"truncated vcm bitstream: its 0 bytes end inside the magic"),
    ("inside_magic", lambda d: d[:3], r"truncated vcm bitstream: its 3 bytes end inside the magic"),
    ("truncated_header", lambda d: d[:12], r"truncated vcm bitstream: it ends while reading"),
    ("truncated_half", lambda d: d[: len(d) // 2], r"truncated vcm bitstream: it ends while reading string 0 of group 0"),
    ("truncated_crc", lambda d: d[:-2], r"truncated vcm bitstream: it ends while reading the CRC32"),
    ("random_bytes", lambda d: np.random.default_rng(1).bytes(len(d)), r"not a vcm bitstream: it starts with .* expected the magic"),
    ("png_file", lambda d: b"\x89PNG\r\n\x1a\n" + d, r"not a vcm bitstream: it starts with b'\\x89PNG'"),
    ("flipped_payload_byte", lambda d: _flip(d, len(d) - 6), r"corrupt vcm bitstream: CRC32 mismatch"),
    ("appended_bytes", lambda d: d + b"\0\0", r"corrupt vcm bitstream"),
    ("other_format_version", lambda d: d[:4] + b"\x07" + d[5:], r"unsupported vcm bitstream format version 7"),
]


@pytest.mark.parametrize("case,damage,pattern", BITSTREAM_CASES, ids=[c[0] for c in BITSTREAM_CASES])
def test_bad_bitstream_gives_bitstream_error_and_cli_exit_2(case, damage, pattern, codecs, tmp_path, capsys):
    from vcm.cli.bitstream import CodecSession, decompress_main
    from vcm.codecs.container import decode_image, unpack

    data = damage(codecs["stream"])
    with pytest.raises(BitstreamError, match=pattern):
        unpack(data)
    model = CodecSession(codecs["factorized"]).runner.model
    with pytest.raises(BitstreamError, match=pattern):
        decode_image(model, data)
    src, dst = tmp_path / "bad.vcm", tmp_path / "out.png"
    src.write_bytes(data)
    dst.write_bytes(b"an earlier decode")  # must survive the failed decode
    capsys.readouterr()
    assert decompress_main(["--ckpt", str(codecs["factorized"]), str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vcm-decompress: error: {src}: ") and re.search(pattern, err)
    assert dst.read_bytes() == b"an earlier decode" and sorted(p.name for p in tmp_path.iterdir()) == ["bad.vcm", "out.png"]


@pytest.mark.parametrize("decoder,pattern", [
    ("other_weights", (r"made by codec 'factorized' with weights [0-9a-f]{16}, this model is 'factorized'/[0-9a-f]{16} "
                       r"\(other weights or entropy tables: decoding would give garbage\)")),
    ("hyperprior", r"made by codec 'factorized' .* this model is 'hyperprior'/.*\(other weights"),
])
def test_bitstream_of_another_model_is_refused(decoder, pattern, codecs, tmp_path, capsys):
    from vcm.cli.bitstream import CodecSession, decompress_main
    from vcm.codecs.container import decode_image, unpack

    with pytest.raises(BitstreamError, match=pattern):
        CodecSession(codecs[decoder]).decompress(codecs["stream"])
    with pytest.raises(BitstreamError, match=pattern):
        decode_image(CodecSession(codecs[decoder]).runner.model, codecs["stream"])
    with pytest.raises(BitstreamError, match=r"this model is 'hyperprior'/\? \(another codec\)"):
        unpack(codecs["stream"], expected_codec="hyperprior")
    src, dst = tmp_path / "f.vcm", tmp_path / "out.png"
    src.write_bytes(codecs["stream"])
    capsys.readouterr()
    assert decompress_main(["--ckpt", str(codecs[decoder]), str(src), str(dst)]) == 2
    assert re.search(pattern, capsys.readouterr().err) and not dst.exists()


@pytest.mark.slow
def test_vcm_decompress_command_exits_2_with_a_message(codecs, tmp_path):
    """The installed command, in its own process: exit status 2, the reason on stderr, no output."""
    src = tmp_path / "noise.vcm"
    src.write_bytes(np.random.default_rng(2).bytes(300))
    r = run_cli("vcm-decompress", ["--ckpt", codecs["factorized"], src, tmp_path / "out.png"], timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"vcm-decompress: error: {src}: not a vcm bitstream" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("case", ["missing_stream", "missing_ckpt", "truncated_ckpt", "not_a_codec_ckpt"])
def test_bitstream_cli_bad_files(case, codecs, tmp_path, capsys):
    from vcm.cli.bitstream import decompress_main

    src, ckpt = tmp_path / "f.vcm", Path(codecs["factorized"])
    src.write_bytes(codecs["stream"])
    expected = {"missing_stream": r"No such file or directory: .*missing\.vcm",
                "missing_ckpt": r"checkpoint not found: .*nope\.ckpt; expected a \.ckpt written by vcm-train",
                "truncated_ckpt": r"cannot read checkpoint .*cut\.ckpt",
                "not_a_codec_ckpt": r"plain\.ckpt is not a vcm codec checkpoint"}[case]
    if case == "missing_stream":
        src = tmp_path / "missing.vcm"
    elif case == "missing_ckpt":
        ckpt = tmp_path / "nope.ckpt"
    elif case == "truncated_ckpt":
        ckpt = tmp_path / "cut.ckpt"
        ckpt.write_bytes(Path(codecs["factorized"]).read_bytes()[:5000])
    else:
        ckpt = tmp_path / "plain.ckpt"
        torch.save({"state_dict": {}}, ckpt)
    capsys.readouterr()
    assert decompress_main(["--ckpt", str(ckpt), str(src), str(tmp_path / "out.png")]) == 2
    assert re.search(expected, capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("content,pattern", [(b"", r"image file is empty"), (b"\x89PNG\r\n\x1a\n\0\0", r"cannot read image")])
def test_vcm_compress_refuses_bad_images(content, pattern, codecs, tmp_path, capsys):
    from vcm.cli.bitstream import compress_main

    src = tmp_path / "frame.png"
    src.write_bytes(content)
    capsys.readouterr()
    assert compress_main(["--ckpt", str(codecs["factorized"]), str(src), str(tmp_path / "f.vcm")]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and str(src) in err and not (tmp_path / "f.vcm").exists()


# ============================================================================================ configs
@pytest.mark.parametrize("name,override,group,option", [
    ("train", "model=foo", "model", "hyperprior"),
    ("train", "loss=foo", "loss", "roi_rd"),
    ("train", "detector=foo", "detector", "resnet18_fpn"),
    ("train", "trainer=foo", "trainer", "ddp_cpu"),
    ("eval", "codec=foo", "codec", "jpeg"),
    ("eval", "data=foo", "data", "kitti_tiny"),
])
def test_unknown_config_option_lists_the_options(name, override, group, option, tmp_path):
    with pytest.raises(MissingConfigException, match=rf"Could not find '{group}/foo'") as e:
        compose([override], tmp_path, name=name)
    assert f"Available options in '{group}'" in str(e.value) and f"\t{option}\n" in str(e.value)


# (case, overrides, exception, regex)
TRAIN_CONFIG_CASES = [
    ("negative_lambda", ["lmbda=-1"], ConfigError, r"lmbda=-1: expected a non-negative rate-distortion trade-off"),
    ("alpha_above_1", ["loss=roi_rd", "loss.alpha=1.5"], ConfigError, r"loss.alpha=1.5: expected a value in \[0, 1\]"),
    ("alpha_below_0", ["loss=roi_rd", "loss.alpha=-0.1"], ConfigError, r"loss.alpha=-0.1: expected a value in \[0, 1\]"),
    ("crop_larger_than_frames", ["data.crop_size=[256,512]"], ConfigError,
     r"data.crop_size=\[256, 512\] is larger than the training image .*image_2/\d{6}\.png \(128x320\)"),
    ("quality_out_of_range", ["quality=9"], ConfigError, r"quality=9: the model's lambda table .* expected a quality of q1, q2"),
    ("quality_out_of_range_with_lambda", ["quality=9", "lmbda=0.01"], InstantiationException,
     r"quality must be an integer in 1..8, got 9"),
    ("unknown_codec_target", ["model.codec._target_=vcm.codecs.image.nonexistent"], InstantiationException,
     r"Error locating target 'vcm.codecs.image.nonexistent'"),
    ("bad_nonfinite_mode", ["model.nonfinite=maybe"], InstantiationException, r"model.nonfinite='maybe'; expected 'raise' or 'skip'"),
    ("split_fractions", ["data.split_fractions=[0.5,0.5,0.5]"], DataError, r"expected three non-negative numbers .* summing to 1"),
    ("zero_batch_size", ["data.batch_size=0"], InstantiationException, r"data.batch_size=0.*expected positive integers"),
    ("unknown_data_source", ["data.source=nuscenes"], InstantiationException, r"data.source='nuscenes'; expected one of kitti"),
    ("missing_resume_checkpoint", ["ckpt_path=/nonexistent/last.ckpt"], ConfigError, r"ckpt_path=/nonexistent/last.ckpt: file not found"),
    ("missing_init_checkpoint", ["init_from=/nonexistent/hp.ckpt"], ConfigError, r"init_from=/nonexistent/hp.ckpt: file not found"),
    ("bad_scheduler_interval", ["model.scheduler_interval=batch"], InstantiationException,
     r"model.scheduler_interval='batch'; expected 'epoch' or 'step'"),
    ("object_crop_prob_above_1", ["data.object_crop_prob=2"], InstantiationException, r"data.object_crop_prob=2.*expected a probability"),
    ("feature_codec_without_detector", ["model=lmsfc", "detector=none", "model.codec.N=8", "model.codec.M=8"], ConfigError,
     r"model=lmsfc needs a detector: add detector=resnet18_fpn"),
]


@pytest.mark.parametrize("case,overrides,exc,pattern", TRAIN_CONFIG_CASES, ids=[c[0] for c in TRAIN_CONFIG_CASES])
def test_bad_training_config_fails_before_writing_anything(case, overrides, exc, pattern, cache, results, tmp_path):
    from vcm.cli.train import train

    before = snapshot(results)
    cfg = compose(TINY + ["model=factorized"] + overrides, tmp_path, cache)
    with pytest.raises(exc, match=pattern):
        train(cfg)
    assert not (tmp_path / "run").exists() and snapshot(results) == before


@pytest.mark.parametrize("case,overrides,exc,pattern", [
    ("unknown_detector_backbone", ["codec=none", "detector=resnet18_fpn", "detector.backbone=resnet7"], InstantiationException,
     r"unknown detector backbone 'resnet7'; valid: resnet50_fpn_v2, resnet18_fpn, mobilenet_v2_fpn, mobilenet_v3_fpn"),
    ("split_train", ["codec=jpeg", "split=train"], ConfigError, r"split=train would evaluate random training crops"),
    ("unknown_split", ["codec=jpeg", "split=holdout"], ConfigError, r"split='holdout'; expected one of train, val, test, all"),
    ("jpeg_quality", ["codec=jpeg", "codec.quality=500"], InstantiationException, r"quality must be in 1..100, got 500"),
    ("missing_codec_checkpoint", ["codec=checkpoint", "codec.ckpt=/nonexistent/last.ckpt"], InstantiationException,
     r"checkpoint not found: /nonexistent/last.ckpt"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_evaluation_config_fails_without_a_record(case, overrides, exc, pattern, cache, results, tmp_path):
    from vcm.cli.eval import evaluate

    before = snapshot(results)
    cfg = compose(["data=synthetic", "data.synthetic_num=8", "data.synthetic_size=[128,320]", "max_images=1"] + overrides,
                  tmp_path, cache, name="eval")
    with pytest.raises(exc, match=pattern):
        evaluate(cfg)
    assert snapshot(results) == before


def test_unknown_detector_backbone_from_the_detector_builder(tmp_path):
    from vcm.callbacks.frozen_detector import build_detector

    cfg = compose(["model=roi_hyperprior", "detector.backbone=resnet7"], tmp_path)
    with pytest.raises(InstantiationException, match=r"unknown detector backbone 'resnet7'; valid: .*resnet18_fpn"):
        build_detector(cfg.detector)


def test_resume_refuses_a_truncated_checkpoint_before_writing_anything(codecs, cache, results, tmp_path):
    from vcm.cli.train import train

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    data = Path(codecs["factorized"]).read_bytes()
    (run / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) - 64])
    before_run, before_results = snapshot(run), snapshot(results)
    with pytest.raises(ConfigError, match=r"ckpt_path=last: .*last\.ckpt is truncated or corrupt"):
        train(compose(TINY + ["model=factorized", "ckpt_path=last"], tmp_path, cache))
    assert snapshot(run) == before_run and snapshot(results) == before_results
    assert os.path.getsize(run / "checkpoints" / "last.ckpt") == len(data) - 64
