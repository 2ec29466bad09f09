"""Conditioning kinds (vcm.conditioning): what each ``Needs`` value gives the encoder and asks of its callers."""
from __future__ import annotations

import pytest
import torch

from vcm.codecs.base import Needs
from vcm.codecs.image import hyperprior
from vcm.codecs.roi_hyperprior import RoiHyperprior, RoiMap
from vcm.conditioning import CONFIGURED, KINDS, TRAINED, codec_condition, conditioning
from vcm.evaluation.pipeline import evaluate_image
from vcm.evaluation.runners import LearnedImageRunner, RoiGainRunner

BOXES = torch.tensor([[2.0, 3.0, 20.0, 30.0], [40.0, 8.0, 60.0, 33.0]])


def _roi_runner(source: str) -> RoiGainRunner:
    torch.manual_seed(0)
    return RoiGainRunner([hyperprior(N=8, M=8)], "hp", ["hp"], roi_source=source)


def test_every_needs_value_has_its_kind():
    assert set(KINDS) == set(Needs)
    for needs, kind in KINDS.items():
        assert kind.needs is needs
    with pytest.raises(ValueError, match="needs='gt'; expected one of"):
        conditioning(type("Odd", (), {"needs": "gt"})())


def test_nothing_gives_none_and_asks_for_nothing():
    codec = hyperprior(N=8, M=8)
    kind = conditioning(codec)
    assert kind.needs is Needs.NOTHING and kind.image_only
    assert kind.detector(codec) is None and not kind.needs_labels(codec)
    assert codec_condition(codec, torch.rand(1, 3, 32, 48), [{"boxes": BOXES}]) is None


def test_boxes_map_needs_the_labels_of_each_image():
    codec = RoiHyperprior(N=8, M=8, roi_source="boxes")
    kind = conditioning(codec)
    assert not kind.image_only and kind.needs_labels(codec) and kind.detector(codec) is None
    x = torch.rand(2, 3, 40, 72)
    cond = codec_condition(codec, x, [{"boxes": BOXES}, {"boxes": torch.zeros(0, 4)}])
    assert isinstance(cond, RoiMap) and cond.levels["p3"].shape == (2, 1, 5, 9)
    with pytest.raises(ValueError, match=r"codec my_roi \(roi_source=boxes\) is conditioned on the ROI boxes"):
        codec_condition(codec, x, None, name="my_roi")
    with pytest.raises(ValueError, match="codec my_roi"):
        codec_condition(codec, x, [{"boxes": BOXES}], name="my_roi")  # one target for two images


def test_detector_features_run_the_trained_detector():
    codec = RoiHyperprior(N=8, M=8)
    kind = conditioning(codec)
    assert kind.needs is Needs.DETECTOR and kind.detector(codec) == TRAINED and not kind.needs_labels(codec)
    with pytest.raises(ValueError, match="codec my_roi is conditioned on detector features; configure a detector"):
        codec_condition(codec, torch.rand(1, 3, 32, 48), [{"boxes": BOXES}], name="my_roi")  # labels are no substitute


def test_roi_boxes_come_from_the_runner_s_source():
    x = torch.rand(1, 3, 40, 72)
    none, labels, detector = (_roi_runner(s) for s in ("none", "labels", "detector"))
    assert conditioning(none).needs is Needs.ROI_BOXES
    assert codec_condition(none, x, None).shape == (0, 4)
    assert torch.equal(codec_condition(labels, x, [{"boxes": BOXES}]), BOXES)
    with pytest.raises(ValueError, match="codec hp takes its ROI boxes from the labels"):
        codec_condition(labels, x, None)
    with pytest.raises(ValueError, match="codec hp takes its ROI boxes from the detector"):
        codec_condition(detector, x, None)
    assert [conditioning(r).detector(r) for r in (none, labels, detector)] == [None, None, CONFIGURED]
    assert [conditioning(r).needs_labels(r) for r in (none, labels, detector)] == [False, True, False]


def test_the_evaluation_times_what_the_kind_times():
    image = torch.randint(0, 256, (3, 40, 72), dtype=torch.uint8)
    m, _, decoded = evaluate_image(_roi_runner("none"), image, None, estimate=False)
    assert m["roi_s"] >= 0 and decoded.shape == image.shape and m["roi_boxes"] == 0
    torch.manual_seed(0)
    plain = hyperprior(N=8, M=8)
    plain.update(force=True)
    m, _, _ = evaluate_image(LearnedImageRunner(plain, name="hp"), image, None, estimate=False)
    assert "roi_s" not in m
