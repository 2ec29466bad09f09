"""The ``vcm`` entry of a training checkpoint: the one place its keys are defined.

vcm-train stores this metadata beside the weights (``checkpoint["vcm"]``); vcm-eval, vcm-compress,
``init_from`` and the zoo read it back. Keys of a codec checkpoint:

- ``kind``: ``image``, ``feature`` or ``detector``.
- ``codec_name``: the codec's name (``hyperprior``, ``lmsfc``...), which names its RD curve.
- ``codec``, ``model``: the Hydra configs that rebuild the codec and its LightningModule.
- ``quality``, ``lmbda``, ``alpha``, ``det_weight``: the rate point (:data:`RATE_POINT_KEYS`).
- ``variant``: an extra curve label (``lmsfc_light``), or None.
- ``class_names``: the detection classes of the training data.
- ``git_commit``: the commit of the training code.
- ``init_from``: the checkpoint the run was warm-started from (``zoo:<name>`` when it was one).
- ``detector``: the frozen detector's ``config``, ``weights_hash`` and ``name`` (codecs trained with one).
- ``zoo_name``: set in a zoo file, the name it is published under.

A detector checkpoint holds ``kind``, ``class_names``, ``detector`` (its build settings,
:data:`DETECTOR_BUILD_KEYS` among them) and ``git_commit``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Where a checkpoint keeps the metadata.
META_KEY = "vcm"
#: The parameters of a codec's rate point; an evaluation names its curve point by them.
RATE_POINT_KEYS = ("quality", "lmbda", "alpha", "det_weight")
#: A detector's build settings that a published detector file keeps.
DETECTOR_BUILD_KEYS = ("backbone", "min_size", "max_size")


def codec_metadata(*, kind: str, codec_name: str, codec: Mapping[str, Any], model: Mapping[str, Any],
                   rate_point: Mapping[str, Any], variant: str | None, class_names: list[str]) -> dict[str, Any]:
    """The metadata of a codec checkpoint (the keys the module docstring lists, but those that are
    added as training goes: ``git_commit``, ``init_from``, ``detector``).

    Args:
        kind: ``image`` or ``feature``.
        codec_name: the codec's name.
        codec: the codec's plain config (rebuilds it with ``hydra.utils.instantiate``).
        model: the LightningModule's plain config.
        rate_point: values of :data:`RATE_POINT_KEYS` (missing ones are stored as None).
        variant: an extra curve label, or None.
        class_names: the detection classes of the training data.
    """
    return {"kind": kind, "codec_name": codec_name, "codec": dict(codec), "model": dict(model),
            **{k: rate_point.get(k) for k in RATE_POINT_KEYS}, "variant": variant, "class_names": list(class_names)}


def rate_point(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The rate point a checkpoint's metadata records (:data:`RATE_POINT_KEYS` that are set)."""
    return {k: meta[k] for k in RATE_POINT_KEYS if meta.get(k) is not None}
