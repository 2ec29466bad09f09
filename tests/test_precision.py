"""Mixed-precision training: fp32 entropy models under autocast, bf16-mixed runs of every codec
and of the detector, and bitstreams that do not depend on the training precision."""
from __future__ import annotations

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from helpers import TINY_DETECTOR, TINY_TRAIN, compose, run_cli
from lightning.pytorch.callbacks import Callback

from vcm.codecs.precision import (
    Fp32EntropyBottleneck,
    Fp32GaussianConditional,
    run_in_fp32,
    use_fp32_entropy_models,
)
from vcm.errors import ConfigError

BF16 = ["trainer.precision=bf16-mixed", "model.channels_last=true"]


def _latent(seed: int = 0, channels: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, 6, 5, generator=g) * 20.0


def test_entropy_bottleneck_is_fp32_under_autocast_and_plain_one_is_not():
    torch.manual_seed(0)
    plain = EntropyBottleneck(8).eval()
    fp32 = EntropyBottleneck(8).eval()
    fp32.load_state_dict(plain.state_dict())
    use_fp32_entropy_models(fp32)
    assert isinstance(fp32, Fp32EntropyBottleneck) and isinstance(fp32, EntropyBottleneck)
    y = _latent()
    with torch.no_grad():
        _, reference = plain(y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_hat, lik = fp32(y.bfloat16())
            _, lik_plain = plain(y.bfloat16())
            aux = fp32.loss()
    assert lik.dtype == torch.float32 and aux.dtype == torch.float32 and y_hat.dtype == torch.float32
    # The input is a bf16 latent (what a bf16 g_a gives); its likelihoods are the fp32 ones of that latent.
    _, expected = plain(y.bfloat16().float())
    assert torch.equal(lik, expected)
    # CompressAI's own model computes the cumulative logits in bf16 under autocast: not the same numbers.
    assert not torch.equal(lik_plain.float(), expected)
    assert torch.isfinite(reference).all()


def test_gaussian_conditional_is_fp32_under_autocast():
    gc = use_fp32_entropy_models(GaussianConditional(None).eval())
    assert isinstance(gc, Fp32GaussianConditional)
    y = _latent(1)
    scales = (_latent(2).abs() + 0.5).bfloat16()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y_hat, lik = gc(y.bfloat16(), scales)
    ref_hat, ref = GaussianConditional(None).eval()(y.bfloat16().float(), scales.float())
    assert lik.dtype == torch.float32 and torch.equal(lik, ref) and torch.equal(y_hat, ref_hat)


def test_state_dict_keys_unchanged_by_fp32_entropy_models():
    from vcm.codecs.image import hyperprior

    codec = hyperprior(N=8, M=8)
    keys = list(codec.state_dict())
    use_fp32_entropy_models(codec)
    assert list(codec.state_dict()) == keys


def test_run_in_fp32_keeps_the_named_transforms_in_fp32_under_autocast():
    from vcm.codecs.image import hyperprior

    torch.manual_seed(0)
    codec = hyperprior(N=8, M=8).eval()
    reference = hyperprior(N=8, M=8).eval()
    reference.load_state_dict(codec.state_dict())
    keys = list(codec.state_dict())
    run_in_fp32(codec, ["h_a", "h_s"])
    assert list(codec.state_dict()) == keys and isinstance(codec.h_s, type(reference.h_s))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = reference.g_a(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_bf16 = codec.g_a(x)  # not named: bf16 under autocast
            z = codec.h_a(y_bf16)
            scales = codec.h_s(z)
        assert y_bf16.dtype == torch.bfloat16 and z.dtype == torch.float32 and scales.dtype == torch.float32
        assert torch.equal(z, reference.h_a(y_bf16.float()))  # the fp32 numbers of the bf16 latent
        assert torch.equal(codec.h_a(y), reference.h_a(y))  # outside autocast: unchanged
    with pytest.raises(ConfigError, match="'h_x' is not a submodule"):
        run_in_fp32(codec, ["h_x"])


class GradientProbe(Callback):
    """Records, at the first backward of the network loss, which trainable parameters got no gradient."""

    def __init__(self):
        self.missing: list[str] | None = None
        self.losses: list[float] = []

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.missing is not None:
            return
        from vcm.codecs.base import net_aux_parameters

        net, _ = net_aux_parameters(pl_module.codec)
        ids = {id(p) for p in net}
        self.missing = [n for n, p in pl_module.codec.named_parameters()
                        if id(p) in ids and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is not None:
            self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def _train_bf16(overrides, tmp_path):
    from vcm.cli.train import train

    cfg = compose(TINY_TRAIN + BF16 + overrides, tmp_path, name="train")
    probe = GradientProbe()
    metrics, objects = train(cfg, extra_callbacks=[probe])
    return metrics, objects, probe


IMAGE = ["data=kitti_tiny", "model.codec.N=16", "model.codec.M=16"]
CODEC_CONFIGS = {
    "factorized": ["model=factorized"] + IMAGE,
    "hyperprior": ["model=hyperprior"] + IMAGE,
    "mean_scale": ["model=mean_scale"] + IMAGE,
    "roi_hyperprior": ["model=roi_hyperprior", "data.object_crop_prob=1.0"] + IMAGE + TINY_DETECTOR,
    "roi_hyperprior_boxes": ["model=roi_hyperprior", "model.codec.roi_source=boxes", "detector=none",
                             "data.object_crop_prob=1.0"] + IMAGE,
    "lmsfc": ["data=kitti_tiny", "model=lmsfc", "quality=1", "model.codec.N=32", "model.codec.M=32",
              "model.warmup_epochs=0"] + TINY_DETECTOR,
    "ta_msf": ["data=kitti_tiny", "model=ta_msf", "quality=1", "model.codec.N=32", "model.codec.M=32",
               "model.warmup_epochs=0"] + TINY_DETECTOR,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CODEC_CONFIGS))
def test_bf16_mixed_training_of_every_codec(tmp_path, kitti_tiny_root, name):
    metrics, objects, probe = _train_bf16(CODEC_CONFIGS[name] + ["trainer.max_steps=2"], tmp_path)
    assert probe.losses and all(torch.isfinite(torch.tensor(v)) for v in probe.losses), probe.losses
    assert probe.missing == [], f"{name}: parameters without a finite non-zero gradient: {probe.missing[:8]}"
    assert objects["trainer"].precision == "bf16-mixed"
    assert torch.isfinite(torch.tensor(metrics["val/bpp_real"]))


@pytest.fixture(scope="module")
def bf16_hyperprior(tmp_path_factory, kitti_tiny_root):
    tmp = tmp_path_factory.mktemp("bf16")
    _train_bf16(["model=hyperprior", "data=kitti_tiny", "model.codec.N=16", "model.codec.M=16", "trainer.max_steps=3"], tmp)
    return tmp / "run" / "checkpoints" / "last.ckpt"


def test_bf16_checkpoint_codes_bit_exactly_across_processes_and_as_fp32(bf16_hyperprior, kitti_tiny_root, tmp_path):
    from vcm.cli.bitstream import CodecSession
    from vcm.data.kitti import load_image

    frame = kitti_tiny_root / "training" / "image_2" / "000003.png"
    outs = []
    for i in range(2):
        out = tmp_path / f"a{i}.vcm"
        r = run_cli("vcm-compress", ["--ckpt", str(bf16_hyperprior), str(frame), str(out)])
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    # The same weights, loaded in this process in fp32 (no autocast anywhere): the same bytes.
    session = CodecSession(str(bf16_hyperprior))
    assert all(p.dtype == torch.float32 for p in session.runner.model.parameters())
    assert session.compress(load_image(frame)) == outs[0]


def test_detector_step_keeps_lightning_bf16_autocast_on_cpu():
    """``trainer.precision=bf16-mixed`` wraps the step in autocast; the module's own (CUDA-only) amp
    switch must not turn it off on the CPU."""
    from lightning import LightningModule

    from vcm.modules.detector import DetectorModule

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, images, targets):
            seen.append(torch.is_autocast_enabled("cpu"))
            return {"loss_probe": torch.ones((), requires_grad=True)}

    module = DetectorModule.__new__(DetectorModule)  # no Faster R-CNN to build: the probe stands in
    LightningModule.__init__(module)
    module.detector, module.amp, module.nonfinite = Probe(), True, "raise"
    batch = ([torch.zeros(3, 8, 8, dtype=torch.uint8)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module.training_step(batch, 0)
    module.training_step(batch, 0)
    assert seen == [True, False]


def test_detector_validation_is_fp32_under_bf16_autocast(kitti_tiny_root):
    """The detector module's validation measures in fp32 even inside Lightning's bf16 autocast
    (bf16 detections cannot even be read by the metrics)."""
    from vcm.data.kitti import load_image
    from vcm.modules.detector import DetectorModule

    module = DetectorModule({"backbone": "mobilenet_v2_fpn", "min_size": 128, "max_size": 416}, ["Car", "Pedestrian", "Cyclist"])
    module.eval()  # as Lightning sets it for validation
    module.on_validation_epoch_start()
    image = load_image(kitti_tiny_root / "training" / "image_2" / "000001.png")
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 40.0]]), "labels": torch.tensor([1]), "name": "000001"}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module.validation_step(([image], [target]), 0)
    preds = module._acc.preds[0]
    assert preds["boxes"].dtype == torch.float32 and preds["scores"].dtype == torch.float32
