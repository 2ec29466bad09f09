"""FrozenDetector: feature shapes, detections equal to torchvision's, a detector that never changes,
losses equal to torchvision's training losses, offline weight handling and checkpoints."""
from __future__ import annotations

import copy
import math
import socket
import time
import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights, resnet18
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    fasterrcnn_resnet50_fpn_v2,
)
from torchvision.ops import FrozenBatchNorm2d

import vcm.detectors.weights as frcnn
from vcm.detectors import (
    BACKBONE_NAMES,
    DetectorFeatures,
    FrozenDetector,
    WeightsUnavailableError,
    build_faster_rcnn,
    load_detector_state,
    save_detector,
)
from vcm.errors import ConfigError

CLASSES = ["Car", "Pedestrian", "Cyclist"]
LIGHT = ["resnet18_fpn", "mobilenet_v3_fpn"]
# Small inputs and proposal counts keep the ResNet-50 heads affordable on one CPU thread. A large RPN
# sample makes the (few) p6 anchors take part in the objectness loss, so p6 receives a gradient.
FAST = {
    "min_size": 128, "max_size": 416, "box_score_thresh": 0.0,
    "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 50, "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 100, "rpn_batch_size_per_image": 4096, "box_batch_size_per_image": 64,
}


def make_detector(backbone: str, seed: int = 0, classes=CLASSES, **overrides) -> FrozenDetector:
    return FrozenDetector.from_config(classes, backbone=backbone, init_seed=seed, **{**FAST, **overrides})


_CACHE: dict[str, FrozenDetector] = {}


@pytest.fixture(params=BACKBONE_NAMES)
def detector(request) -> FrozenDetector:
    """One random-weight detector per backbone, built once for the module (ResNet-50 is slow to build)."""
    if request.param not in _CACHE:
        _CACHE[request.param] = make_detector(request.param)
    return _CACHE[request.param]


def images() -> list[torch.Tensor]:
    """Two images of odd, different sizes (batch padding and per-image resize both matter)."""
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 101, 131, generator=g), torch.rand(3, 77, 150, generator=g)]


def targets() -> list[dict]:
    """Boxes of several sizes in ORIGINAL coordinates for image 0, none for image 1."""
    return [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 5.0, 125.0, 50.0], [2.0, 2.0, 130.0, 100.0]]),
         "labels": torch.tensor([1, 2, 3]), "name": "000001"},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "name": "000002"},
    ]


def expected_level_shapes(image_sizes: list[tuple[int, int]]) -> dict[str, tuple[int, int]]:
    hp = math.ceil(max(h for h, _ in image_sizes) / 32) * 32
    wp = math.ceil(max(w for _, w in image_sizes) / 32) * 32
    shapes = {f"p{k}": (hp // 2**k, wp // 2**k) for k in (2, 3, 4, 5)}
    shapes["p6"] = (math.ceil(shapes["p5"][0] / 2), math.ceil(shapes["p5"][1] / 2))
    return shapes


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("backbone", LIGHT)
def test_feature_shapes_at_kitti_size(backbone):
    det = make_detector(backbone, min_size=375, max_size=1242)
    with torch.no_grad():
        feats = det.features([torch.rand(3, 375, 1242)])
    # 375x1242 is kept as is and padded to 384x1248; strides 4, 8, 16, 32 and 64 (p6 = ceil(p5 / 2)).
    assert {k: tuple(v.shape) for k, v in feats.levels.items()} == {
        "p2": (1, 256, 96, 312), "p3": (1, 256, 48, 156), "p4": (1, 256, 24, 78),
        "p5": (1, 256, 12, 39), "p6": (1, 256, 6, 20),
    }
    assert feats.image_sizes == [(375, 1242)] and feats.original_sizes == [(375, 1242)]
    assert feats.padded_size == (384, 1248)


def test_feature_shapes_at_odd_sizes(detector):
    with torch.no_grad():
        feats = detector.features(images())
    resized = []
    for h, w in [(101, 131), (77, 150)]:  # torchvision's rule: shorter side 128 unless the longer exceeds 416
        s = min(128 / min(h, w), 416 / max(h, w))
        resized.append((math.floor(h * s), math.floor(w * s)))
    assert feats.image_sizes == resized
    assert feats.original_sizes == [(101, 131), (77, 150)]
    assert list(feats.levels) == ["p2", "p3", "p4", "p5", "p6"]
    shapes = expected_level_shapes(resized)
    for name, level in feats.levels.items():
        assert tuple(level.shape) == (2, 256, *shapes[name]), name
        assert level.dtype == torch.float32
    anchors = detector.model.rpn.anchor_generator
    if detector.backbone_name == "mobilenet_v2_fpn":  # KITTI's small objects: two sizes per level from 16 px
        assert anchors.sizes == ((16, 24), (32, 48), (64, 96), (128, 192), (256, 384))
        assert anchors.num_anchors_per_location() == [6] * 5
    else:  # torchvision's: one anchor size per level p2..p6
        assert anchors.sizes == ((32,), (64,), (128,), (256,), (512,))
        assert anchors.num_anchors_per_location() == [3] * 5


def test_resnet50_fpn_v2_is_torchvisions_architecture():
    torch.manual_seed(0)
    ours = build_faster_rcnn("resnet50_fpn_v2", num_classes=4)
    torch.manual_seed(0)
    ref = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=4)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same modules built in the same order
    assert ours.rpn.anchor_generator.sizes == ref.rpn.anchor_generator.sizes


# -------------------------------------------------------------------------------------- detections
def test_detect_equals_torchvision_forward(detector):
    imgs = images()
    with torch.no_grad():
        ours = detector.detect(detector.features(imgs))
        ref = detector.model(imgs)  # eval-mode torchvision forward
    assert len(ours) == len(ref) == 2
    for o, r, (h, w) in zip(ours, ref, [(101, 131), (77, 150)]):
        assert len(o["boxes"]) > 0  # box_score_thresh=0 keeps random-weight detections
        assert torch.equal(o["labels"], r["labels"]) and o["labels"].dtype == torch.int64
        assert torch.equal(o["boxes"], r["boxes"])
        assert torch.equal(o["scores"], r["scores"])
        # original-image coordinates
        assert float(o["boxes"][:, 2].max()) <= w and float(o["boxes"][:, 3].max()) <= h


def test_detect_rebuilds_p6_and_checks_level_shapes():
    det = make_detector("resnet18_fpn")
    with torch.no_grad():
        feats = det.features(images())
        full = det.detect(feats)
        without_p6 = det.detect(feats.with_levels({k: v for k, v in feats.levels.items() if k != "p6"}))
    for a, b in zip(full, without_p6):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    bad = feats.with_levels({**feats.levels, "p4": feats.levels["p4"][..., :-1]})
    with pytest.raises(ValueError, match="p4"):
        det.detect(bad)
    with pytest.raises(ValueError, match="p3"):
        det.detect(feats.with_levels({k: v for k, v in feats.levels.items() if k != "p3"}))


def test_features_accept_uint8_and_batched_tensor():
    det = make_detector("mobilenet_v3_fpn")
    u8 = (torch.rand(2, 3, 64, 96) * 255).round().to(torch.uint8)
    with torch.no_grad():
        a = det.features(u8)
        b = det.features([u8[0].float() / 255.0, u8[1].float() / 255.0])
    assert all(torch.equal(a.levels[k], b.levels[k]) for k in a.levels)
    with pytest.raises(ValueError, match="image 0"):
        det.features([torch.rand(1, 64, 64)])
    with pytest.raises(ValueError, match="int64"):
        det.features([torch.zeros(3, 8, 8, dtype=torch.int64)])


# --------------------------------------------------------------------------- frozen, yet differentiable
def test_detector_never_changes_and_gradients_reach_features_only(detector):
    before = detector.state_fingerprint()
    modes = [(name, m.training) for name, m in detector.named_modules()]
    assert not any(training for _, training in modes)
    assert not any(p.requires_grad for p in detector.parameters())
    assert any("num_batches_tracked" in k for k in before)  # BatchNorm buffers are part of the check

    imgs = [im.clone().requires_grad_(True) for im in images()]
    feats = detector.features(imgs)
    # leaves standing in for a codec's reconstruction
    rec = feats.with_levels({k: v.detach().clone().requires_grad_(True) for k, v in feats.levels.items()})
    detector.detect(rec)
    losses = detector.losses(rec, targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    for name, level in rec.levels.items():
        assert level.grad is not None and float(level.grad.abs().sum()) > 0, name
    sum(detector.losses(feats, targets()).values()).backward()
    assert all(im.grad is not None and float(im.grad.abs().sum()) > 0 for im in imgs)  # through features()

    assert all(p.grad is None for p in detector.parameters())
    after = detector.state_fingerprint()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [(name, m.training) for name, m in detector.named_modules()] == modes


def test_losses_equal_torchvision_training_losses(detector):
    """The explicit RPN / RoI-head steps give exactly what torchvision's training branches give
    (with BatchNorm in eval in both), including the training proposal counts and the sampling."""
    ref = copy.deepcopy(detector.model).eval()
    ref.rpn.training = True  # on the copy only: the two objects whose forward holds the loss branch
    ref.roi_heads.training = True
    imgs = images()
    tg = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets()]
    with torch.no_grad():
        torch.manual_seed(5)
        image_list, tg_resized = ref.transform(imgs, tg)
        maps = ref.backbone(image_list.tensors)
        proposals, expected = ref.rpn(image_list, maps, tg_resized)
        _, roi_losses = ref.roi_heads(maps, proposals, image_list.image_sizes, tg_resized)
        expected.update(roi_losses)
        torch.manual_seed(5)
        ours = detector.losses(detector.features(imgs), targets())
    assert set(ours) == set(expected)
    for k in expected:
        torch.testing.assert_close(ours[k], expected[k], rtol=0, atol=0, msg=k)


def test_losses_without_any_box():
    det = make_detector("resnet18_fpn")
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    with torch.no_grad():
        losses = det.losses(det.features(images()), empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_box_reg"]) == 0.0 and float(losses["loss_rpn_box_reg"]) == 0.0
    assert float(losses["loss_objectness"]) > 0 and float(losses["loss_classifier"]) > 0


def test_losses_reject_bad_targets():
    det = make_detector("mobilenet_v3_fpn")
    with torch.no_grad():
        feats = det.features(images())
    good = targets()
    cases = [
        ([good[0]], "2 images"),
        ([{**good[0], "labels": torch.tensor([1, 0, 3])}, good[1]], "labels must be in 1..3"),
        ([{**good[0], "labels": torch.tensor([1, 4, 3])}, good[1]], "000001"),
        ([{**good[0], "boxes": torch.tensor([[5.0, 5, 5, 9], [1, 1, 2, 2], [0, 0, 3, 3]])}, good[1]], "positive width"),
        ([{**good[0], "boxes": torch.zeros(3, 5)}, good[1]], r"\[K,4\]"),
        ([{"boxes": good[0]["boxes"]}, good[1]], "'labels'"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            det.losses(feats, bad)


def test_train_mode_requests_are_ignored():
    det = make_detector("resnet18_fpn")
    parent = nn.ModuleDict({"detector": det, "codec": nn.Conv2d(3, 3, 1)})
    parent.train()
    assert parent["codec"].training
    assert not any(m.training for m in det.modules())
    assert det.train(True) is det and not det.training


def test_losses_and_detect_under_bfloat16_autocast():
    det = make_detector("resnet18_fpn")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = det.features(images())
        losses = det.losses(feats, targets())
        dets = det.detect(feats)
    assert all(torch.isfinite(v.float()) for v in losses.values())
    assert len(dets) == 2


# ------------------------------------------------------------------------------ pretrained weights
def _block_network(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-3, "name resolution blocked by the test")

    def no_connect(self, *args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket.socket, "connect", no_connect)


@pytest.mark.timeout(60)  # offline, the error comes at once; a hang fails here, not a stopwatch
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_pretrained_weights_offline_fail_fast_with_instructions(backbone, monkeypatch, tmp_path, record_property):
    _block_network(monkeypatch, tmp_path)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        build_faster_rcnn(backbone, weights="DEFAULT")
    record_property("seconds_to_fail", round(time.monotonic() - start, 3))  # a figure (junit XML), not a test
    message = str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, RuntimeError)
    assert "https://download.pytorch.org/models/" in message and "TORCH_HOME" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message  # where to put the file
    assert backbone in message


@pytest.mark.timeout(60)
def test_download_error_is_wrapped_and_socket_timeout_restored(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(frcnn, "_resolve_within", lambda url, timeout: None)
    seen = {}

    def failing_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, dst=dst, hash_prefix=hash_prefix, timeout=socket.getdefaulttimeout())
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    previous = socket.getdefaulttimeout()
    with pytest.raises(WeightsUnavailableError, match="no route to host") as info:
        build_faster_rcnn("mobilenet_v3_fpn", weights="IMAGENET")
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert seen["url"] == MobileNet_V3_Large_Weights.DEFAULT.url
    assert seen["timeout"] == frcnn.DOWNLOAD_TIMEOUT_S and socket.getdefaulttimeout() == previous
    assert seen["hash_prefix"] and seen["hash_prefix"] in seen["dst"]


@pytest.mark.timeout(25)  # the lookup hangs 30 s: only abandoning it ends the test in time
def test_hanging_name_lookup_is_abandoned(monkeypatch, tmp_path, record_property):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(frcnn, "DOWNLOAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(30))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="no answer resolving"):
        build_faster_rcnn("resnet18_fpn", weights="DEFAULT")
    record_property("seconds_to_give_up", round(time.monotonic() - start, 3))


def test_preplaced_backbone_weights_are_used_offline(monkeypatch, tmp_path):
    _block_network(monkeypatch, tmp_path)
    torch.manual_seed(3)
    imagenet = resnet18().state_dict()
    target = tmp_path / "torch" / "hub" / "checkpoints" / ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(imagenet, target)

    model = build_faster_rcnn("resnet18_fpn", weights="DEFAULT", trainable_backbone_layers=3, min_size=128, max_size=416)
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, imagenet["conv1.weight"])
    assert torch.equal(body.layer4[1].bn2.running_var, imagenet["layer4.1.bn2.running_var"])
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # pretrained statistics are kept
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer4[0].conv1.weight.requires_grad

    # a checkpoint of the frozen-BatchNorm variant loads into the BatchNorm variant and vice versa
    path = save_detector(tmp_path / "det.pt", model, {"backbone": "resnet18_fpn", "class_names": CLASSES})
    det = FrozenDetector.from_config(CLASSES, backbone="resnet18_fpn", checkpoint=path, min_size=128, max_size=416)
    assert isinstance(det.model.backbone.body.bn1, nn.BatchNorm2d)
    params = dict(det.model.named_parameters())
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    with torch.no_grad():
        a = det.detect(det.features(images()))
        b = model.eval()(images())
    torch.testing.assert_close(a[0]["scores"], b[0]["scores"], rtol=1e-4, atol=1e-5)


def test_preplaced_coco_detector_gets_a_new_predictor(monkeypatch, tmp_path):
    _block_network(monkeypatch, tmp_path)
    torch.manual_seed(4)
    coco = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).state_dict()
    target = tmp_path / "torch" / "hub" / "checkpoints" / FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(coco, target)

    model = build_faster_rcnn("resnet50_fpn_v2", num_classes=4, weights="DEFAULT")
    state = model.state_dict()
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    assert all(torch.equal(state[k], v) for k, v in coco.items() if not k.startswith("roi_heads.box_predictor."))


def test_unreadable_cached_weights_are_reported(monkeypatch, tmp_path):
    _block_network(monkeypatch, tmp_path)
    target = tmp_path / "torch" / "hub" / "checkpoints" / MobileNet_V3_Large_Weights.DEFAULT.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot be read") as info:
        build_faster_rcnn("mobilenet_v3_fpn", weights="DEFAULT")
    assert str(target) in str(info.value)


# ------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_keeps_weights_hash(tmp_path):
    det = make_detector("resnet18_fpn", seed=7)
    other = make_detector("resnet18_fpn", seed=8)
    assert det.weights_hash() == make_detector("resnet18_fpn", seed=7).weights_hash()
    assert det.weights_hash() != other.weights_hash() and len(det.weights_hash()) == 16

    plain = save_detector(tmp_path / "det.pt", det, {"min_size": 128})
    state, config = load_detector_state(plain)
    assert list(state) == list(det.model.state_dict())  # torchvision's keys, no wrapper prefix
    assert config == {"min_size": 128, "backbone": "resnet18_fpn", "class_names": CLASSES, "num_classes": 4}
    loaded = make_detector("resnet18_fpn", seed=8, checkpoint=plain)
    assert loaded.weights_hash() == det.weights_hash()

    # Lightning checkpoint of the detector training module: prefixed keys, other modules, metadata
    ckpt = tmp_path / "epoch=1.ckpt"
    torch.save({
        "state_dict": {**{f"detector.{k}": v for k, v in det.model.state_dict().items()}, "other.weight": torch.ones(2)},
        "vcm": {"kind": "detector", "class_names": CLASSES, "detector": {"backbone": "resnet18_fpn"}},
        "hyper_parameters": {"note": ("a tuple", 1)},
        "epoch": 1,
    }, ckpt)
    loaded = make_detector("resnet18_fpn", seed=9, checkpoint=ckpt)
    assert loaded.weights_hash() == det.weights_hash()
    with torch.no_grad():
        a = loaded.detect(loaded.features(images()))
        b = det.detect(det.features(images()))
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b))

    # a state dict of a FrozenDetector (keys "model.*") also loads
    bare = tmp_path / "bare.pt"
    torch.save(det.state_dict(), bare)
    assert make_detector("resnet18_fpn", seed=9, checkpoint=bare).weights_hash() == det.weights_hash()


def test_checkpoint_mismatches_are_refused(tmp_path):
    det = make_detector("resnet18_fpn")
    path = save_detector(tmp_path / "det.pt", det)
    with pytest.raises(ConfigError, match=r"has 3 classes.*but 2 classes") as info:
        make_detector("resnet18_fpn", classes=["Car", "Pedestrian"], checkpoint=path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="labels would be mixed up"):
        make_detector("resnet18_fpn", classes=["Pedestrian", "Car", "Cyclist"], checkpoint=path)
    with pytest.raises(ConfigError, match="resnet18_fpn detector"):
        make_detector("mobilenet_v3_fpn", checkpoint=path)
    unrecorded = tmp_path / "unrecorded.pt"
    torch.save(det.model.state_dict(), unrecorded)  # no config: the key check catches the wrong backbone
    with pytest.raises(ConfigError, match="does not fit a mobilenet_v3_fpn"):
        make_detector("mobilenet_v3_fpn", checkpoint=unrecorded)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        make_detector("resnet18_fpn", checkpoint=tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    torch.save({"weights": [1, 2, 3]}, junk)
    with pytest.raises(ConfigError, match="not a detector checkpoint"):
        load_detector_state(junk)


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError, match="resnet18_fpn"):  # lists the valid names
        build_faster_rcnn("resnet101")
    with pytest.raises(ConfigError, match="IMAGENET"):
        build_faster_rcnn("resnet18_fpn", weights="COCO")
    with pytest.raises(ConfigError, match="box_score_thresh"):
        build_faster_rcnn("resnet18_fpn", box_score_threshold=0.5)
    with pytest.raises(ConfigError, match="num_classes"):
        build_faster_rcnn("resnet18_fpn", num_classes=1)


def test_detector_features_helpers():
    det = make_detector("mobilenet_v3_fpn")
    with torch.no_grad():
        feats = det.features(images())
    assert isinstance(feats, DetectorFeatures) and feats.batch_size == 2
    moved = feats.detach().to("cpu")
    assert moved.image_sizes == feats.image_sizes and moved.original_sizes == feats.original_sizes
    assert moved.levels is not feats.levels and list(moved.levels) == list(feats.levels)
    assert all(torch.equal(moved.levels[k], feats.levels[k]) and not moved.levels[k].requires_grad for k in feats.levels)


def test_random_init_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = FrozenDetector.from_config(CLASSES, backbone="resnet18_fpn", init_seed=5, **FAST)
    after = torch.rand(3)
    b = FrozenDetector.from_config(CLASSES, backbone="resnet18_fpn", init_seed=5, **FAST)
    assert torch.equal(before, after)
    assert a.weights_hash() == b.weights_hash()
