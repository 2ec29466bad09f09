"""CompressAI's zoo in vcm (``codec=compressai``, ``init_from=compressai:``), offline: weights in
CompressAI's exact format (a CompressAI model's own ``state_dict()`` saved with torch.save) give the
bitstream strings and decoded pixels of CompressAI's own ``compress`` / ``decompress``."""
from __future__ import annotations

import types
import urllib.error

import pytest
import torch
from compressai.zoo import image_models
from helpers import compose

from vcm.codecs.base import pad_image
from vcm.codecs.compressai_zoo import (
    architectures,
    hub_cache_path,
    parse_spec,
    weights_url,
)
from vcm.codecs.container import unpack
from vcm.data.kitti import load_image
from vcm.errors import ConfigError
from vcm.evaluation.runners import compressai_runner, to_uint8


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache; any download attempt fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def _compressai_model(arch: str, quality: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    net = image_models[arch](quality=quality).eval()
    net.update(force=True)
    return net


def _frame(kitti_tiny_root, h: int, w: int) -> torch.Tensor:
    return load_image(kitti_tiny_root / "training" / "image_2" / "000003.png")[:, 100:100 + h, 300:300 + w]


@torch.no_grad()
def _compressai_coding(net, image: torch.Tensor) -> tuple[list, torch.Tensor]:
    """CompressAI's own coding of ``image`` padded as vcm pads it; returns (strings, decoded uint8)."""
    h, w = image.shape[-2:]
    x, _ = pad_image(image[None].float() / 255.0, 64)
    out = net.compress(x)
    x_hat = net.decompress(out["strings"], out["shape"])["x_hat"][..., :h, :w]
    return out["strings"], to_uint8(x_hat)


def _check_equal(runner, net, image):
    data = runner.encode(image)
    strings, decoded = _compressai_coding(net, image)
    assert unpack(data).strings == [list(s) for s in strings]
    assert torch.equal(runner.decode(data), decoded)
    return data


def test_eval_config_matches_compressai_coding(kitti_tiny_root, tmp_path):
    """``vcm-eval codec=compressai codec.weights=<file>``: the runner it builds codes like CompressAI."""
    from vcm.cli.eval import build_runner

    net = _compressai_model("bmshj2018-hyperprior")
    weights = tmp_path / "bmshj2018-hyperprior-1.pth"
    torch.save(net.state_dict(), weights)
    cfg = compose(["codec=compressai", "codec.arch=bmshj2018-hyperprior", "codec.quality=1",
                                  f"codec.weights={weights}"], tmp_path, name="eval")
    runner = build_runner(cfg.codec)
    assert runner.name == "bmshj2018-hyperprior" and runner.params == {"quality": 1, "metric": "mse"}
    image = _frame(kitti_tiny_root, 150, 270)  # not multiples of 64: padded as vcm pads
    data = _check_equal(runner, net, image)
    assert unpack(data).codec == "bmshj2018-hyperprior"


@pytest.mark.parametrize("arch", architectures())
def test_every_architecture_matches_compressai_coding(arch, kitti_tiny_root, tmp_path):
    net = _compressai_model(arch)
    weights = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), weights)
    runner = compressai_runner(arch, 1, weights=str(weights))
    _check_equal(runner, net, _frame(kitti_tiny_root, 70, 90))


def test_weights_from_torch_hub_cache_and_ms_ssim_name(torch_home, kitti_tiny_root):
    net = _compressai_model("bmshj2018-hyperprior", seed=1)
    url = weights_url("bmshj2018-hyperprior", 2, "ms-ssim")
    cached = hub_cache_path(url)
    assert cached == torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    runner = compressai_runner("bmshj2018-hyperprior", 2, metric="ms-ssim")
    assert runner.name == "bmshj2018-hyperprior-ms-ssim" and runner.params["quality"] == 2
    _check_equal(runner, net, _frame(kitti_tiny_root, 64, 64))


def test_missing_weights_offline_says_which_file_to_put_where(torch_home):
    url = weights_url("bmshj2018-hyperprior", 3, "mse")
    with pytest.raises(ConfigError) as e:
        compressai_runner("bmshj2018-hyperprior", 3)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"put {url} at {torch_home / 'hub' / 'checkpoints' / url.rsplit('/', 1)[1]}" in msg
    assert "codec.weights=<file>" in msg and "offline (test)" in msg


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"arch": "nope", "quality": 1}, r"unknown CompressAI architecture 'nope'; expected one of .*bmshj2018-hyperprior"),
    ({"arch": "cheng2020-anchor", "quality": 7}, r"quality must be an integer in 1..6, got 7"),
    ({"arch": "mbt2018", "quality": 1, "metric": "psnr"}, r"metric must be one of mse, ms-ssim"),
    ({"arch": "bmshj2018-hyperprior", "quality": 1, "weights": "/nonexistent/w.pth"},
     r"CompressAI weights file not found: /nonexistent/w.pth"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        compressai_runner(**kwargs)


def test_weights_of_another_architecture_are_refused(tmp_path):
    weights = tmp_path / "factorized.pth"
    torch.save(_compressai_model("bmshj2018-factorized").state_dict(), weights)
    with pytest.raises(ConfigError, match=r"factorized.pth does not fit CompressAI's mbt2018-mean"):
        compressai_runner("mbt2018-mean", 1, weights=str(weights))


def test_parse_spec():
    assert parse_spec("compressai:bmshj2018-hyperprior/3") == ("bmshj2018-hyperprior", 3, "mse")
    assert parse_spec("compressai:mbt2018-mean/5/ms-ssim") == ("mbt2018-mean", 5, "ms-ssim")
    with pytest.raises(ConfigError, match=r"expected compressai:<architecture>/<quality>"):
        parse_spec("compressai:bmshj2018-hyperprior")


@torch.no_grad()
def test_init_from_compressai_loads_weights_into_vcm_hyperprior(torch_home, tmp_path):
    from vcm.cli.train import build_model, init_codec_from

    net = _compressai_model("bmshj2018-hyperprior", seed=2)
    cached = hub_cache_path(weights_url("bmshj2018-hyperprior", 1, "mse"))
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    model = build_model(compose(["model=hyperprior", "quality=1"], tmp_path, name="train"), None)
    report = init_codec_from(model, "compressai:bmshj2018-hyperprior/1")
    assert not report["skipped"] and not report["unused"] and model.vcm_meta["init_from"] == "compressai:bmshj2018-hyperprior/1"
    codec = model.codec.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    y = net.g_a(x)
    z = net.h_a(torch.abs(y))
    assert torch.equal(codec.g_a(x), y) and torch.equal(codec.h_a(torch.abs(y)), z)
    assert torch.equal(codec.g_s(y), net.g_s(y)) and torch.equal(codec.h_s(z), net.h_s(z))
    assert torch.equal(codec.entropy_bottleneck.quantiles, net.entropy_bottleneck.quantiles)

    # the same weights from a local file; the ROI hyperprior takes them on its image path
    from vcm.codecs.roi_hyperprior import RoiHyperprior

    weights = tmp_path / "hp.pth"
    torch.save(net.state_dict(), weights)
    roi = types.SimpleNamespace(codec=RoiHyperprior(N=128, M=192, roi_source="boxes"), vcm_meta={}, kind="image_codec")
    report = init_codec_from(roi, f"compressai:{weights}")
    assert {"g_a.0.0.weight", "h_s.4.weight"} <= set(report["loaded"]) and "g_a.3.weight" in report["partial"]
    assert torch.equal(roi.codec.g_a[0](x), net.g_a[:2](x)) and torch.equal(roi.codec.g_s(y), net.g_s(y))


def test_init_from_compressai_offline_and_bad_spec(torch_home, tmp_path):
    from vcm.cli.train import build_model, init_codec_from

    model = build_model(compose(["model=hyperprior", "quality=1"], tmp_path, name="train"), None)
    with pytest.raises(ConfigError, match=r"init_from=compressai:bmshj2018-hyperprior/4: .* put https://.*"
                                          r"bmshj2018-hyperprior-4-de1b779c.pth.tar at .*or pass init_from=compressai:<file>"):
        init_codec_from(model, "compressai:bmshj2018-hyperprior/4")
    with pytest.raises(ConfigError, match=r"no such file, and not of the form compressai:<architecture>/<quality>"):
        init_codec_from(model, "compressai:hyperprior")


def test_vcm_eval_record_is_compressai_coding(kitti_tiny_root, tmp_path):
    """``vcm-eval data=images codec=compressai codec.weights=<file>``: the record measures CompressAI's coding."""
    from PIL import Image

    from vcm.cli.eval import evaluate
    from vcm.metrics.image import psnr

    net = _compressai_model("bmshj2018-hyperprior", seed=3)
    weights = tmp_path / "hp.pth"
    torch.save(net.state_dict(), weights)
    image = _frame(kitti_tiny_root, 120, 200)
    (tmp_path / "frames").mkdir()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "frames" / "crop.png")
    cfg = compose(["data=images", f"data.root={tmp_path / 'frames'}", "codec=compressai",
                                  "codec.quality=1", f"codec.weights={weights}"], tmp_path, name="eval")
    _, record = evaluate(cfg)
    assert record["codec"] == "bmshj2018-hyperprior" and record["params"] == {"quality": 1, "metric": "mse"}
    (p,) = record["per_image"]
    data = compressai_runner("bmshj2018-hyperprior", 1, weights=str(weights)).encode(image)
    _, decoded = _compressai_coding(net, image)
    assert p["bits"] == 8 * len(data) and p["bpp_real"] == pytest.approx(8 * len(data) / (120 * 200))
    assert p["psnr"] == pytest.approx(float(psnr(image, decoded)))
