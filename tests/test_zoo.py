"""vcm's model zoo: registry entries load and match their hashes; models load by name wherever a
checkpoint is taken (codec=zoo, vcm-compress --model, init_from=zoo:, detector checkpoints);
a modified weights file is refused."""
from __future__ import annotations

import json
from collections import OrderedDict

import hydra
import pytest
import torch
from helpers import TINY_TRAIN, compose, run_cli

from vcm import zoo
from vcm.codecs.base import ENTROPY_BOUND_SUFFIXES
from vcm.zoo import publish

SHIPPED = zoo.entries()
SHIPPED_CODECS = sorted(n for n, e in SHIPPED.items() if e.kind == "image_codec")
SHIPPED_DETECTORS = sorted(n for n, e in SHIPPED.items() if e.kind == "detector")
SHIPPED_FEATURE_CODECS = sorted(n for n, e in SHIPPED.items() if e.kind == "feature_codec")


@pytest.fixture
def scratch_zoo(tmp_path, monkeypatch):
    """An empty zoo in tmp_path (registry and weights folder), used instead of vcm/zoo."""
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    monkeypatch.setattr(zoo, "REGISTRY", tmp_path / "registry.json")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "weights")
    return tmp_path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, kitti_tiny_root):
    from vcm.cli.train import train

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = compose(TINY_TRAIN + ["data=kitti_tiny", "model=hyperprior", "quality=2", "model.codec.N=8",
                                                "model.codec.M=8", "trainer.max_steps=2"], tmp, name="train")
    train(cfg)
    return tmp / "run" / "checkpoints" / "last.ckpt"


def test_registry_is_valid_and_every_shipped_file_matches_its_hash():
    assert SHIPPED, "the zoo ships models (vcm/zoo/registry.json)"
    for name, e in SHIPPED.items():
        assert zoo.weights_path(name).is_file()
        assert zoo.sha256_file(e.path) == e.sha256
        assert e.training.get("config") and e.training.get("git_commit"), name
        assert e.metrics.get("split") == "test" and e.metrics.get("dataset") == "kitti_mini", name


@pytest.mark.slow
def test_publish_then_load_by_name_and_refuse_a_modified_file(scratch_zoo, tiny_checkpoint, kitti_tiny_root, tmp_path):
    from vcm.evaluation.runners import (
        load_codec_checkpoint,
        runner_from_checkpoint,
        zoo_runner,
    )

    e = publish.add(tiny_checkpoint, "tiny-q2", minutes=0.1)
    assert e.kind == "image_codec" and e.architecture == "hyperprior" and e.quality == 2 and e.lmbda == 0.0035
    saved = torch.load(e.path, map_location="cpu", weights_only=False)
    # Weights in float16; the range coder's tables stored (computed once, from the float16 weights);
    # scale tables and the entropy models' bounds in fp32 (1e-9 would be 0 in float16).
    fp32 = ("scale_table", *ENTROPY_BOUND_SUFFIXES)
    assert all(v.dtype == torch.float16 for k, v in saved["state_dict"].items() if v.is_floating_point() and not k.endswith(fp32))
    bounds = {k: v for k, v in saved["state_dict"].items() if k.endswith("likelihood_lower_bound.bound")}
    assert bounds and all(v.dtype == torch.float32 and float(v) == pytest.approx(1e-9) for v in bounds.values())
    tables = {k: v for k, v in saved["state_dict"].items() if k.endswith(("_quantized_cdf", "_offset", "_cdf_length"))}
    assert len(tables) == 6 and all(v.dtype == torch.int32 and v.numel() > 0 for v in tables.values())
    # The zoo model is the checkpoint's codec with its weights rounded to float16 (bounds exact); its
    # tables are used as stored, never recomputed at load.
    ref, _ = load_codec_checkpoint(tiny_checkpoint)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(ref), "update", lambda *a, **k: pytest.fail("loading a zoo file recomputed its tables"))
        model, meta = load_codec_checkpoint("zoo:tiny-q2")
    for k, v in tables.items():
        assert torch.equal(model.state_dict()[k[len("codec."):]], v), k
    assert meta["zoo_name"] == "tiny-q2"
    for (k, a), (_, b) in zip(ref.state_dict().items(), model.state_dict().items()):
        if a.is_floating_point() and not k.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
            assert torch.equal(a if k.endswith(fp32) else a.half().float(), b), k
    # codec=zoo and codec=checkpoint with zoo:<name> are the same runner; real coding round trip.
    from vcm.data.kitti import load_image

    image = load_image(kitti_tiny_root / "training" / "image_2" / "000001.png")
    r1, r2 = zoo_runner("tiny-q2"), runner_from_checkpoint("zoo:tiny-q2")
    data = r1.encode(image)
    assert data == r2.encode(image)
    assert r1.decode(data).shape == image.shape
    # Any change of the file is refused with the name, the file and the fix.
    weights = zoo.weights_path("tiny-q2")
    blob = bytearray(weights.read_bytes())
    blob[-100] ^= 0xFF
    weights.write_bytes(bytes(blob))
    # (the scratch zoo is no git checkout: the fix offered is the fetch, not git)
    with pytest.raises(zoo.ZooError, match=r"tiny-q2.*sha256.*registry says.*vcm-zoo fetch tiny-q2 --from"):
        zoo_runner("tiny-q2")
    weights.unlink()
    with pytest.raises(zoo.ZooError, match="missing"):
        load_codec_checkpoint("zoo:tiny-q2")
    with pytest.raises(zoo.ZooError, match=r"no zoo model called 'nope'; valid: tiny-q2"):
        zoo.weights_path("nope")


def test_registry_errors_name_the_file(scratch_zoo):
    (scratch_zoo / "registry.json").write_text("{not json")
    with pytest.raises(zoo.ZooError, match="registry.json is not valid JSON"):
        zoo.entries()
    (scratch_zoo / "registry.json").write_text(json.dumps({"models": [{"name": "a", "kind": "toaster", "file": "x",
                                                                       "sha256": "0", "architecture": "x"}]}))
    with pytest.raises(zoo.ZooError, match="kind 'toaster'"):
        zoo.entries()


@pytest.mark.slow
def test_metrics_must_come_from_the_zoo_model(scratch_zoo, tiny_checkpoint, tmp_path):
    publish.add(tiny_checkpoint, "tiny-q2")
    record = {"dataset": "kitti_mini", "split": "test", "num_images": 10, "git_commit": None,
              "metrics": {"psnr": 30.0}, "config": {"codec": {"name": "other"}}}
    (tmp_path / "r.json").write_text(json.dumps(record))
    with pytest.raises(Exception, match="not measured with zoo model 'tiny-q2'"):
        publish.set_metrics("tiny-q2", tmp_path / "r.json")
    record["config"]["codec"]["name"] = "tiny-q2"
    (tmp_path / "r.json").write_text(json.dumps(record))
    assert publish.set_metrics("tiny-q2", tmp_path / "r.json").metrics["psnr"] == 30.0


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_CODECS)
def test_every_shipped_codec_codes_a_real_frame_by_name(name, kitti_tiny_root):
    from vcm.data.kitti import load_image
    from vcm.evaluation.runners import zoo_runner

    image = load_image(kitti_tiny_root / "training" / "image_2" / "000002.png")
    runner = zoo_runner(name)
    data = runner.encode(image)
    decoded = runner.decode(data)
    assert decoded.shape == image.shape and decoded.dtype == torch.uint8
    # A trained codec: far fewer bits than raw pixels, and a reconstruction close to the frame.
    bpp = 8 * len(data) / (image.shape[1] * image.shape[2])
    mse = ((decoded.float() - image.float()) ** 2).mean()
    assert 0.02 < bpp < 2.0 and 10 * torch.log10(255.0**2 / mse) > 20.0
    assert zoo_runner(name).encode(image) == data  # a fresh load codes the same bytes


def test_vcm_compress_and_decompress_by_model_name(kitti_tiny_root, tmp_path):
    from PIL import Image

    name = SHIPPED_CODECS[0]
    frame = kitti_tiny_root / "training" / "image_2" / "000002.png"
    out, png = tmp_path / "f.vcm", tmp_path / "f.png"
    r = run_cli("vcm-compress", ["--model", name, str(frame), str(out)])
    assert r.returncode == 0, r.stderr
    w, h = Image.open(frame).size
    assert f"bpp_real={8 * out.stat().st_size / (w * h):.4f}" in r.stdout
    r = run_cli("vcm-decompress", ["--model", name, str(out), str(png)])
    assert r.returncode == 0, r.stderr
    assert Image.open(png).size == (w, h)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_CODECS)
def test_init_from_every_shipped_codec_starts_from_its_weights(name, tmp_path):
    from vcm.cli.train import build_model, init_codec_from
    from vcm.evaluation.runners import load_codec_checkpoint

    e = zoo.entry(name)
    for model_name in ("hyperprior", "roi_hyperprior"):
        cfg = compose(["data=kitti_tiny", f"model={model_name}", f"quality={e.quality}", "detector=none",
                                       "model.codec.roi_source=boxes" if model_name == "roi_hyperprior" else "variant=null"], tmp_path, name="train")
        model = build_model(cfg, hydra.utils.instantiate(cfg.data))
        report = init_codec_from(model, f"zoo:{name}")
        source, _ = load_codec_checkpoint(f"zoo:{name}")
        x = torch.rand(1, 3, 64, 128)
        with torch.no_grad():
            if model_name == "hyperprior":
                assert not report["skipped"]
                assert torch.equal(model.codec.g_a(x), source.g_a(x))
            else:
                assert len(report["loaded"]) > 0
        assert model.vcm_meta["init_from"] == f"zoo:{name}"


def test_warm_start_from_the_zoo_keeps_the_entropy_bounds(tmp_path):
    # The first zoo files hold the likelihood bound 1e-9 in float16, i.e. 0: a codec warm-started
    # from them keeps its own bound, so an impossible symbol costs 30 bits, not log(0) = inf.
    from vcm.cli.train import build_model, init_codec_from

    cfg = compose(["data=kitti_tiny", "model=hyperprior", "quality=4", "detector=none"], tmp_path, name="train")
    model = build_model(cfg, hydra.utils.instantiate(cfg.data))
    init_codec_from(model, "zoo:hyperprior-kitti-q4")
    gc = model.codec.gaussian_conditional
    assert float(gc.likelihood_lower_bound.bound) == pytest.approx(1e-9)
    y = torch.full((1, 192, 2, 2), 1e4)  # far outside any learned scale
    _, lik = gc(y, torch.full_like(y, 0.11), training=False)
    assert torch.isfinite(torch.log(lik)).all() and float(lik.min()) == pytest.approx(1e-9)


@pytest.mark.slow
def test_unknown_model_name_is_one_line_error(tmp_path, kitti_tiny_root):
    frame = kitti_tiny_root / "training" / "image_2" / "000002.png"
    r = run_cli("vcm-compress", ["--model", "no-such-model", str(frame), str(tmp_path / "x.vcm")])
    assert r.returncode == 2 and "no zoo image codec called 'no-such-model'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.vcm").exists()


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if i == 0 else pytest.mark.slow)
                                  for i, n in enumerate(SHIPPED_FEATURE_CODECS)])
def test_every_shipped_feature_codec_codes_the_detectors_features_by_name(name, kitti_tiny_root):
    from hydra.utils import instantiate

    from vcm.data.kitti import load_image
    from vcm.detectors.features import p6_from_p5
    from vcm.evaluation.runners import zoo_runner

    cfg = compose(["detector=kitti_mobilenet_v2", "data=kitti_mini"], kitti_tiny_root, name="eval")
    det = instantiate(cfg.detector)
    image = load_image(kitti_tiny_root / "training" / "image_2" / "000002.png")
    runner = zoo_runner(name)
    assert runner.params["variant"] == "zoo" and runner.params["lmbda"] == zoo.entry(name).lmbda
    with torch.no_grad():
        feats = det.features([image])
        levels = OrderedDict((k, feats.levels[k]) for k in runner.model.levels)  # p2..p5; p6 follows from p5
        data = runner.encode(levels, image.shape[-2:])
        decoded = runner.decode(data)
        assert zoo_runner(name).encode(levels, image.shape[-2:]) == data  # a fresh load codes the same bytes
        # A trained codec: a fraction of a bit per pixel, features close to the detector's own on every level,
        # and the detector's heads still find objects on them (split inference).
        bpp = 8 * len(data) / (image.shape[1] * image.shape[2])
        assert 0.01 < bpp < 0.5
        for level, x in levels.items():
            assert decoded[level].shape == x.shape, level
            assert float(((decoded[level] - x) ** 2).mean()) < 0.5 * float(x.var()), level
        decoded["p6"] = p6_from_p5(decoded["p5"])
        assert len(det.detect(feats.with_levels(decoded))[0]["boxes"]) > 0


@pytest.mark.parametrize("name", SHIPPED_DETECTORS)
def test_shipped_detector_loads_by_config_name(name, kitti_tiny_root):
    from hydra.utils import instantiate

    from vcm.data.kitti import load_image

    cfg = compose([f"detector={name}", "data=kitti_mini"], kitti_tiny_root, name="eval")
    det = instantiate(cfg.detector)
    image = load_image(kitti_tiny_root / "training" / "image_2" / "000001.png")
    with torch.no_grad():
        feats = det.features([image])
        padded = [-(-n // 32) * 32 for n in image.shape[-2:]]  # the detector pads its batch to a multiple of 32
        assert [v.shape[1] for v in feats.levels.values()] == [256] * 5
        for level, stride in zip(("p2", "p3", "p4", "p5", "p6"), (4, 8, 16, 32, 64)):
            assert list(feats.levels[level].shape[-2:]) == [-(-n // stride) for n in padded], level
        dets = det.detect(feats)[0]
    assert (dets["labels"] >= 1).all() and len(dets["boxes"]) > 0
