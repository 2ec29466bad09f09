"""CompressAI's model zoo in vcm: any fixed-rate image architecture of ``compressai.zoo``, coded
through vcm's bitstream container and measured like every other codec.

``compressai.zoo`` is the registry: the architectures are the keys of ``compressai.zoo.image_models``
that have a quality table (``compressai.zoo.image.cfgs``), the published weights are
``compressai.zoo.image.model_urls[arch][metric][quality]``. Weights are found where CompressAI's own
loader (``torch.hub.load_state_dict_from_url``) puts them, ``<torch hub dir>/checkpoints/<file name
of the URL>`` (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), and
downloaded there when absent and online; or they come from a local file: a CompressAI model's own
``state_dict()`` saved with ``torch.save`` (or a CompressAI training checkpoint holding one under
``"state_dict"``).

The model is rebuilt as CompressAI rebuilds its pretrained models (keys renamed by
``compressai.zoo.load_state_dict``, then ``<class>.from_state_dict``), and keeps the entropy tables
stored with the weights, so vcm's bitstream carries exactly the strings CompressAI's ``compress``
makes. :class:`CompressAIImageCodec` only adds what vcm's codecs declare (``codec_name``,
``min_div``, the ``cond`` argument).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from compressai.models import CompressionModel, ScaleHyperprior
from torch import Tensor, nn

from vcm.codecs.base import CodecContract
from vcm.codecs.exact import LatentAnalysis, code_analysis
from vcm.codecs.image import analyse_hyperprior, decode_hyperprior
from vcm.errors import ConfigError

__all__ = [
    "SPEC_PREFIX",
    "CompressAIImageCodec",
    "architectures",
    "compressai_codec",
    "compressai_model",
    "curve_name",
    "hub_cache_path",
    "init_state_dict",
    "load_state_dict",
    "parse_spec",
    "weights_url",
]

SPEC_PREFIX = "compressai:"
METRICS = ("mse", "ms-ssim")
# CompressAI's evaluation (compressai.utils.eval_model) pads every image model to a multiple of 64.
MIN_DIV = 64


def architectures() -> list[str]:
    """The fixed-rate image architectures of ``compressai.zoo`` (those with a quality table)."""
    from compressai.zoo import image_models
    from compressai.zoo.image import cfgs

    return sorted(a for a in image_models if a in cfgs)


def _check(arch: str, quality: Any, metric: str) -> int:
    from compressai.zoo.image import cfgs

    valid = architectures()
    if arch not in valid:
        raise ConfigError(f"unknown CompressAI architecture {arch!r}; expected one of {', '.join(valid)}")
    qualities = sorted(cfgs[arch])
    if isinstance(quality, bool) or not isinstance(quality, int) or quality not in cfgs[arch]:
        raise ConfigError(f"CompressAI {arch}: quality must be an integer in {qualities[0]}..{qualities[-1]}, "
                          f"got {quality!r}")
    if metric not in METRICS:
        raise ConfigError(f"CompressAI {arch}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return quality


def weights_url(arch: str, quality: int, metric: str = "mse") -> str | None:
    """CompressAI's URL of the published weights, or None when it publishes none for them."""
    from compressai.zoo.image import model_urls

    return model_urls.get(arch, {}).get(metric, {}).get(quality)


def hub_cache_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` (CompressAI's loader) keeps the file of ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _read_weights_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"CompressAI weights file not found: {path}; expected a CompressAI model's "
                          "state_dict() saved with torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ConfigError(f"cannot read CompressAI weights {path}: {e}".splitlines()[0]) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a checkpoint of CompressAI's training example
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{path} holds no state dict of tensors; expected a CompressAI model's state_dict() "
                          "saved with torch.save")
    return state


def load_state_dict(
    arch: str, quality: int, metric: str = "mse", weights: str | Path | None = None, local: str = "codec.weights=<file>"
) -> dict[str, Tensor]:
    """The weights of CompressAI's ``arch`` at ``quality``, with CompressAI's key renaming applied.

    Args:
        arch: a ``compressai.zoo`` image architecture, e.g. ``bmshj2018-hyperprior``.
        quality: its quality index (1..8, 1..6 for ``cheng2020-*``).
        metric: ``mse`` or ``ms-ssim``, the distortion the published weights were trained for.
        weights: a local file instead of the published weights.
        local: how the user passes a local file instead, for the error messages.

    Raises:
        ConfigError: unknown architecture / quality / metric; a missing or unreadable file; published
            weights neither in the torch hub cache nor downloadable (names the file to put where).
    """
    from compressai.zoo import load_state_dict as rename_keys

    quality = _check(arch, quality, metric)
    if weights:
        return rename_keys(_read_weights_file(Path(str(weights)).expanduser()))
    url = weights_url(arch, quality, metric)
    if url is None:
        raise ConfigError(f"CompressAI publishes no {metric} weights for {arch} quality {quality}; pass "
                          f"{local} (a CompressAI model's state_dict() saved with torch.save)")
    cached = hub_cache_path(url)
    if cached.is_file():
        return rename_keys(_read_weights_file(cached))
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except Exception as e:  # noqa: BLE001 - offline, refused, interrupted: the remedy is the same
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"CompressAI weights for {arch} quality {quality} ({metric}) are not in the torch hub cache "
                          f"and cannot be downloaded ({reason}): put {url} at {cached}, or pass {local}") from None
    return rename_keys(state)


def compressai_model(arch: str, quality: int, metric: str = "mse", weights: str | Path | None = None) -> CompressionModel:
    """CompressAI's own model of ``arch`` with its weights, built as ``compressai.zoo`` builds pretrained
    models (``from_state_dict``, entropy tables as stored), in eval mode."""
    from compressai.zoo import image_models

    state = load_state_dict(arch, quality, metric, weights)
    cls = type(image_models[arch](quality=quality, metric=metric))
    source = weights or f"the published {arch} weights"
    try:
        model = cls.from_state_dict(state)
    except (RuntimeError, KeyError, ValueError, IndexError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{source} does not fit CompressAI's {arch} ({cls.__name__}): {reason}") from None
    return model.eval()


def curve_name(arch: str, metric: str = "mse") -> str:
    """The codec name of ``arch`` in results: the architecture, plus the metric when it is not mse."""
    return arch if metric == "mse" else f"{arch}-{metric}"


class CompressAIImageCodec(CodecContract, CompressionModel):
    """Any CompressAI image model with vcm's codec declarations; coding is the model's own.

    Args:
        model: a CompressAI ``CompressionModel`` (``compress(x) -> {"strings", "shape"}``,
            ``decompress(strings, shape) -> {"x_hat"}``).
        codec_name: the name written in bitstreams and results.
        min_div: the multiple inputs are padded to.
    """

    def __init__(self, model: nn.Module, codec_name: str, min_div: int = MIN_DIV):
        super().__init__()
        self.model = model
        self.codec_name = codec_name
        self.min_div = int(min_div)

    def forward(self, x: Tensor, cond: Any = None) -> dict:
        """``{"x_hat": [B, 3, H, W], "likelihoods": {...}}`` for images [B, 3, H, W] in [0, 1]; ``cond`` is ignored."""
        return self.model(x)

    def compress(self, x: Tensor, cond: Any = None, gain: Tensor | None = None) -> dict:
        """The model's ``compress(x)`` (``cond`` is ignored); with a gain map (scale and mean-scale
        hyperpriors only), vcm's exact coding of the same latents (:mod:`vcm.codecs.roi_gain`)."""
        if gain is None:
            return self.model.compress(x)
        return code_analysis(self.model.gaussian_conditional, self.analyse(x), gain)

    def analyse(self, x: Tensor, cond: Any = None) -> LatentAnalysis:
        """vcm's exact analysis of a CompressAI scale or mean-scale hyperprior (gain maps, rate control)."""
        return analyse_hyperprior(self._hyperprior(), x)

    def decompress(self, strings, shape, check: int | None = None, gain: Tensor | None = None) -> dict:
        """The model's ``decompress(strings, shape)``; a file with a gain map or a symbols check was
        written by vcm's exact coding and is decoded by it."""
        if gain is None and check is None:
            return self.model.decompress(strings, shape)
        model = self._hyperprior()
        return {"x_hat": model.g_s(decode_hyperprior(model, strings, shape, check, gain, self.codec_name)).clamp_(0, 1)}

    def _hyperprior(self) -> ScaleHyperprior:
        if not isinstance(self.model, ScaleHyperprior):
            msg = f"{self.codec_name}: gain maps need a scale or mean-scale hyperprior (bmshj2018-hyperprior, mbt2018-mean)"
            raise ValueError(msg)  # noqa: TRY004 - a setting of the codec, not a caller's type
        return self.model

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The ``shape`` the model's ``compress`` writes: its coded latent at its downsampling factor."""
        factor = int(getattr(self.model, "downsampling_factor", self.min_div))
        return (height // factor, width // factor)

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        """The model's own ``update`` (CompressAI's default scale table)."""
        return self.model.update(scale_table=scale_table, force=force, update_quantiles=update_quantiles)


def compressai_codec(arch: str, quality: int, metric: str = "mse", weights: str | Path | None = None) -> CompressAIImageCodec:
    """:func:`compressai_model` wrapped as a vcm image codec named by :func:`curve_name`."""
    return CompressAIImageCodec(compressai_model(arch, quality, metric, weights), curve_name(arch, metric)).eval()


def init_state_dict(spec: str) -> dict[str, Tensor]:
    """The weights of ``init_from=compressai:<arch>/<quality>[/<metric>]`` (found as for ``codec=compressai``)
    or ``init_from=compressai:<file>`` (a CompressAI model's ``state_dict()`` saved with torch.save).

    Raises:
        ConfigError: as :func:`load_state_dict` and :func:`parse_spec`.
    """
    from compressai.zoo import load_state_dict as rename_keys

    body = spec.removeprefix(SPEC_PREFIX)
    if Path(body).expanduser().is_file():
        return rename_keys(_read_weights_file(Path(body).expanduser()))
    parts = body.split("/")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ConfigError(f"{spec!r}: no such file, and not of the form compressai:<architecture>/<quality>[/<metric>] "
                          "(e.g. compressai:bmshj2018-hyperprior/3) or compressai:<weights file>")
    arch, quality, metric = parse_spec(spec)
    return load_state_dict(arch, quality, metric, local="init_from=compressai:<file>")


def parse_spec(spec: str) -> tuple[str, int, str]:
    """``compressai:<arch>/<quality>[/<metric>]`` -> (arch, quality, metric); metric defaults to mse.

    Raises:
        ConfigError: not of that form, or an unknown architecture / quality / metric.
    """
    body = spec.removeprefix(SPEC_PREFIX)
    parts = body.split("/")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ConfigError(f"{spec!r}: expected compressai:<architecture>/<quality>[/<metric>], "
                          "e.g. compressai:bmshj2018-hyperprior/3 or compressai:bmshj2018-hyperprior/3/ms-ssim")
    arch, quality, metric = parts[0], int(parts[1]), parts[2] if len(parts) == 3 else "mse"
    _check(arch, quality, metric)
    return arch, quality, metric
