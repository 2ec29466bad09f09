"""Mixed-precision training of CompressAI codecs: the entropy models always compute in fp32.

Under ``trainer.precision=bf16-mixed`` the analysis and synthesis transforms run in bfloat16, but
the numbers that define the rate must not: bfloat16 keeps 8 significant bits, so a latent of
magnitude 40 would be quantised with noise on a grid of 0.25 instead of U(-0.5, 0.5), and the
factorized prior's cumulative logits (a chain of small matrix products) would drift. The classes
below are CompressAI's entropy models with autocast switched off inside: inputs are cast to fp32,
likelihoods, their logarithm in the loss, the quantiles and their aux loss are fp32. ``update()``
tables and ``compress`` / ``decompress`` are evaluated outside autocast by the training module.

:func:`use_fp32_entropy_models` gives any codec (vcm's, CompressAI's zoo models, future ones)
these entropy models without changing its architecture or state dict.
"""
from __future__ import annotations

from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor, nn

__all__ = ["Fp32EntropyBottleneck", "Fp32GaussianConditional", "run_in_fp32", "use_fp32_entropy_models"]


def _fp32(value: Any) -> Any:
    return value.float() if torch.is_tensor(value) and value.is_floating_point() else value


def _no_autocast(reference: Tensor):
    return torch.autocast(device_type=reference.device.type, enabled=False)


class Fp32EntropyBottleneck(EntropyBottleneck):
    """CompressAI's ``EntropyBottleneck`` evaluated in fp32 whatever the autocast state."""

    def forward(self, x: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor]:
        with _no_autocast(x):
            return super().forward(x.float(), training=training)

    def _logits_cumulative(self, inputs: Tensor, stop_gradient: bool) -> Tensor:
        # Called by the likelihood and by loss() (the aux loss on the quantiles).
        with _no_autocast(inputs):
            return super()._logits_cumulative(inputs.float(), stop_gradient)


class Fp32GaussianConditional(GaussianConditional):
    """CompressAI's ``GaussianConditional`` evaluated in fp32 whatever the autocast state."""

    def forward(self, inputs: Tensor, scales: Tensor, means: Tensor | None = None,
                training: bool | None = None) -> tuple[Tensor, Tensor]:
        with _no_autocast(inputs):
            return super().forward(inputs.float(), _fp32(scales), _fp32(means), training=training)


_FP32_CLASSES = {EntropyBottleneck: Fp32EntropyBottleneck, GaussianConditional: Fp32GaussianConditional}


def use_fp32_entropy_models(model: nn.Module) -> nn.Module:
    """Make every CompressAI entropy model of ``model`` compute in fp32 under autocast (in place).

    Only the class of each ``EntropyBottleneck`` / ``GaussianConditional`` instance changes (to the
    fp32 subclass above); parameters, buffers, state-dict keys and ``isinstance`` checks are as
    before, so checkpoints and bitstreams are unaffected.

    Returns:
        ``model``.
    """
    for module in model.modules():
        fp32_class = _FP32_CLASSES.get(type(module))
        if fp32_class is not None:
            module.__class__ = fp32_class
    return model


_FP32_SUBCLASSES: dict[type, type] = {}


def _fp32_subclass(cls: type) -> type:
    """``cls`` with a forward that runs with autocast off on fp32 copies of its tensor inputs."""
    if cls not in _FP32_SUBCLASSES:
        def forward(self, *args, **kwargs):
            args = tuple(_fp32(a) for a in args)
            kwargs = {k: _fp32(v) for k, v in kwargs.items()}
            ref = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
            if ref is None:
                return cls.forward(self, *args, **kwargs)
            with _no_autocast(ref):
                return cls.forward(self, *args, **kwargs)

        _FP32_SUBCLASSES[cls] = type(f"Fp32{cls.__name__}", (cls,), {"forward": forward, "__module__": __name__})
    return _FP32_SUBCLASSES[cls]


def run_in_fp32(model: nn.Module, names: list[str] | tuple[str, ...]) -> nn.Module:
    """Make the submodules ``names`` of ``model`` (e.g. ``["h_a", "h_s"]``) compute in fp32 under autocast
    (in place), as the entropy models always do: their inputs are cast to fp32 and autocast is off
    inside. Like :func:`use_fp32_entropy_models`, only the class of each instance changes; parameters,
    state-dict keys and bitstreams are as before.

    Raises:
        ConfigError (a ValueError): a name that is not a submodule of ``model``.
    """
    from vcm.errors import ConfigError

    found = dict(model.named_modules())
    for name in names:
        if not name or name not in found:
            top = ", ".join(n for n in found if n and "." not in n)
            raise ConfigError(f"model.fp32_modules: {name!r} is not a submodule of the codec; its top-level modules: {top}")
        module = found[name]
        if type(module) not in _FP32_SUBCLASSES.values():
            module.__class__ = _fp32_subclass(type(module))
    return model
