"""The frozen detector: P2..P6 features, detections and differentiable losses for codecs."""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops

from vcm.detectors.checkpoints import load_detector_checkpoint
from vcm.detectors.faster_rcnn import build_torchvision_detector
from vcm.detectors.features import LEVEL_NAMES, DetectorFeatures, p6_from_p5
from vcm.errors import ConfigError

_TV_LEVELS = ("0", "1", "2", "3", "pool")  # torchvision's FPN keys for p2..p6


# ------------------------------------------------------------------------------------ the wrapper
class FrozenDetector(nn.Module):
    """A trained Faster R-CNN that never changes: features, detections and losses for codecs.

    The detector is always in eval mode and none of its parameters requires gradient; no method
    changes a parameter, a BatchNorm statistic or a module's mode. Gradients flow through
    ``features`` (into the images) and through ``detect``/``losses`` (into the features), so a codec
    can be trained with detection losses; the caller decides with ``torch.no_grad()`` when not.

    Args:
        model: a torchvision ``FasterRCNN`` with a 5-level FPN (from :func:`build_faster_rcnn`).
        class_names: object classes; label ``i + 1`` is ``class_names[i]``.
        backbone_name: the backbone's name in ``BACKBONE_NAMES`` (recorded with results).
    """

    def __init__(self, model: FasterRCNN, class_names: Sequence[str], backbone_name: str) -> None:
        super().__init__()
        num_classes = model.roi_heads.box_predictor.cls_score.out_features
        if num_classes != len(class_names) + 1:
            raise ConfigError(f"detector predicts {num_classes - 1} classes but {len(class_names)} class names were given: {list(class_names)}")
        self.model = model
        self.class_names = [str(c) for c in class_names]
        self.backbone_name = str(backbone_name)
        for p in self.model.parameters():
            p.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_config(
        cls,
        class_names: Sequence[str],
        backbone: str = "resnet50_fpn_v2",
        weights: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        init_seed: int | None = 0,
        **kwargs: Any,
    ) -> FrozenDetector:
        """Build (and load) the detector described by a config; see :func:`build_faster_rcnn`.

        ``init_seed`` makes random initial weights reproducible (the global RNG is left alone), so
        a codec trained against a randomly initialised detector can be evaluated later against the
        very same detector (its weights hash matches).

        Args:
            class_names: object classes; their count fixes the predictor size, and a checkpoint that
                recorded other names (or another count) is refused.
            backbone, weights, min_size, max_size, **kwargs: as in :func:`build_faster_rcnn`.
            checkpoint: trained detector weights (normally required for meaningful detections).
        """
        class_names = [str(c) for c in class_names]
        with torch.random.fork_rng(devices=[]):
            if init_seed is not None:
                torch.manual_seed(int(init_seed))
            model = build_torchvision_detector(backbone, len(class_names) + 1, weights, checkpoint is not None, min_size, max_size,
                           kwargs.pop("trainable_backbone_layers", None), **kwargs)
        if checkpoint is not None:
            load_detector_checkpoint(model, checkpoint, backbone=backbone, class_names=class_names)
        return cls(model, class_names, backbone)

    def train(self, mode: bool = True) -> FrozenDetector:
        """Stay in eval mode whatever ``mode`` is.

        Lightning calls ``train()`` on the whole LightningModule (so on every child) when a training
        epoch starts and again after each validation loop. In train mode the detector would update
        its BatchNorm statistics with codec outputs, sample a random resize and use training-time
        proposal counts; the frozen detector must behave identically at every step.
        """
        return super().train(False)

    # ---------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Device of the detector's weights; inputs are moved there."""
        return next(self.model.parameters()).device

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names) + 1

    # ------------------------------------------------------------------------------------ features
    def features(self, images: Sequence[Tensor] | Tensor, scale_factors: Sequence[float] | None = None) -> DetectorFeatures:
        """Run the detector's transform, backbone and FPN.

        Args:
            images: list of [3, H_i, W_i] or a [B, 3, H, W] tensor, float in [0, 1] (uint8 is
                divided by 255); any device.
            scale_factors: per image, the resize factor to use instead of the transform's own (which
                brings every image to ``min_size``/``max_size``). For a crop, the factor of the frame
                it was cut from (:meth:`resize_factor`), so the crop reaches the backbone at the scale
                its frame does in evaluation (the transform would enlarge a 256x256 crop to 375x375).

        Returns:
            DetectorFeatures with levels p2..p6 of [B, 256, Hp / 2**k, Wp / 2**k], where (Hp, Wp)
            is the largest resized image padded up to a multiple of 32.
        """
        imgs = self._prepare_images(images)
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in imgs]
        if scale_factors is None:
            image_list, _ = self.model.transform(imgs)
        else:
            image_list = self._transform_at(imgs, scale_factors)
        out = self.model.backbone(image_list.tensors)
        if tuple(out) != _TV_LEVELS:
            raise RuntimeError(f"{self.backbone_name} FPN returned levels {list(out)}, expected {list(_TV_LEVELS)}")
        levels = OrderedDict((name, out[key]) for name, key in zip(LEVEL_NAMES, _TV_LEVELS))
        image_sizes = [(int(h), int(w)) for h, w in image_list.image_sizes]
        return DetectorFeatures(levels, image_sizes, original_sizes)

    def resize_factor(self, height: int, width: int) -> float:
        """The factor by which the detector's transform resizes a ``height x width`` image in eval mode."""
        t = self.model.transform
        if t.fixed_size is not None:
            raise ValueError(f"detector resizes to a fixed size {t.fixed_size}: no single resize factor")
        return min(t.min_size[-1] / min(height, width), t.max_size / max(height, width))

    def _transform_at(self, imgs: list[Tensor], scale_factors: Sequence[float]) -> ImageList:
        """The transform's normalisation, resize (by the given factors, as torchvision resizes) and batching."""
        if len(scale_factors) != len(imgs):
            raise ValueError(f"got {len(scale_factors)} scale factors for {len(imgs)} images")
        t = self.model.transform
        out = []
        for im, s in zip(imgs, scale_factors):
            if not s > 0:
                raise ValueError(f"scale factors must be positive, got {list(scale_factors)}")
            im = F.interpolate(t.normalize(im)[None], scale_factor=float(s), mode="bilinear",
                               recompute_scale_factor=True, align_corners=False)[0]
            out.append(im)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in out]
        return ImageList(t.batch_images(out, size_divisible=t.size_divisible), sizes)

    def _prepare_images(self, images: Sequence[Tensor] | Tensor) -> list[Tensor]:
        if isinstance(images, Tensor):
            if images.dim() != 4:
                raise ValueError(f"images tensor must be [B,3,H,W], got shape {tuple(images.shape)}")
            images = list(images.unbind(0))
        if len(images) == 0:
            raise ValueError("features() needs at least one image")
        device = self.device
        dtype = next(self.model.parameters()).dtype
        out = []
        for i, im in enumerate(images):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
                raise ValueError(f"image {i}: expected a [3,H,W] RGB tensor, got {shape}")
            if im.dtype == torch.uint8:
                im = im.to(device=device, dtype=dtype) / 255.0
            elif im.is_floating_point():
                im = im.to(device=device, dtype=dtype)
            else:
                raise ValueError(f"image {i}: expected float in [0,1] or uint8, got {im.dtype}")
            out.append(im)
        return out

    # -------------------------------------------------------------------------------------- heads
    def _heads_input(self, features: DetectorFeatures) -> tuple[OrderedDict, ImageList]:
        """torchvision-keyed levels on the detector's device, and an ImageList carrying the sizes.

        The RPN's anchor generator only reads the padded input size from ``ImageList.tensors``, so a
        zero-stride expanded view stands in for the (absent) image batch.
        """
        levels = features.levels
        missing = [k for k in LEVEL_NAMES[:4] if k not in levels]
        if missing:
            raise ValueError(f"features lack levels {missing}; expected {list(LEVEL_NAMES)} (p6 optional)")
        levels = OrderedDict((k, levels[k]) for k in LEVEL_NAMES if k in levels)
        if "p6" not in levels:  # what LastLevelMaxPool computes from the FPN's p5
            levels["p6"] = p6_from_p5(levels["p5"])
        batch = features.batch_size
        if len(features.original_sizes) != batch:
            raise ValueError(f"features have {batch} image_sizes but {len(features.original_sizes)} original_sizes")
        hp, wp = features.padded_size
        device = self.device
        cast = not torch.is_autocast_enabled(device.type)
        dtype = next(self.model.parameters()).dtype
        out = OrderedDict()
        for i, (name, key) in enumerate(zip(LEVEL_NAMES, _TV_LEVELS)):
            x = levels[name]
            stride = 2 ** (i + 2)
            expected = (-(-hp // stride), -(-wp // stride))
            if x.dim() != 4 or x.shape[0] != batch or tuple(x.shape[-2:]) != expected:
                raise ValueError(
                    f"feature level {name} has shape {tuple(x.shape)}; expected [{batch}, C, {expected[0]}, {expected[1]}] "
                    f"(stride {stride} of the {hp}x{wp} padded input implied by p2)"
                )
            x = x.to(device=device, dtype=dtype) if cast else x.to(device=device)
            out[key] = x
        stand_in = out["0"].new_zeros(()).expand(batch, 3, hp, wp)
        return out, ImageList(stand_in, [tuple(s) for s in features.image_sizes])

    def detect(self, features: DetectorFeatures) -> list[dict[str, Tensor]]:
        """Detections from (possibly decoded) features, exactly as torchvision's eval forward does.

        Args:
            features: from :meth:`features` (or with levels replaced by a codec's reconstruction).

        Returns:
            Per image a dict with ``boxes`` [N, 4] xyxy in ORIGINAL image coordinates, ``scores`` [N]
            and ``labels`` [N] int64 in 1..C.
        """
        levels, image_list = self._heads_input(features)
        proposals, _ = self.model.rpn(image_list, levels)
        detections, _ = self.model.roi_heads(levels, proposals, image_list.image_sizes)
        return self.model.transform.postprocess(detections, image_list.image_sizes, list(features.original_sizes))

    def losses(self, features: DetectorFeatures, targets: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        """torchvision's four Faster R-CNN training losses, differentiable with respect to the features.

        Computed as torchvision computes them in training mode (training proposal counts, the same
        anchor and RoI sampling, which draws from torch's global RNG), but by calling the RPN's and
        RoI heads' steps directly instead of switching any module to train mode: BatchNorm layers
        (in the v2 FPN and box head) keep using their running statistics and no flag ever changes,
        not even for the duration of the call.

        Args:
            features: from :meth:`features` (or a codec's reconstruction of them).
            targets: per image a dict with ``boxes`` [K, 4] xyxy in ORIGINAL image coordinates and
                ``labels`` [K] in 1..C; K may be 0. Other keys are ignored.

        Returns:
            ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg`` (scalars).
        """
        levels, image_list = self._heads_input(features)
        targets = self._prepare_targets(features, targets)
        rpn, roi_heads = self.model.rpn, self.model.roi_heads
        image_sizes = image_list.image_sizes

        # Region proposal network (RegionProposalNetwork.forward, training branch).
        maps = list(levels.values())
        objectness, pred_bbox_deltas = rpn.head(maps)
        anchors = rpn.anchor_generator(image_list, maps)
        num_anchors_per_level = [int(o[0].shape[0] * o[0].shape[1] * o[0].shape[2]) for o in objectness]
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        # Faster R-CNN does not backpropagate through the proposals' coordinates.
        proposals = rpn.box_coder.decode(pred_bbox_deltas.detach(), anchors).view(len(anchors), -1, 4)
        proposals = _filter_proposals(rpn, proposals, objectness, image_sizes, num_anchors_per_level,
                                      rpn._pre_nms_top_n["training"], rpn._post_nms_top_n["training"])
        labels, matched_gt_boxes = rpn.assign_targets_to_anchors(anchors, targets)
        regression_targets = rpn.box_coder.encode(matched_gt_boxes, anchors)
        loss_objectness, loss_rpn_box_reg = rpn.compute_loss(objectness, pred_bbox_deltas, labels, regression_targets)

        # Box head (RoIHeads.forward, training branch).
        proposals, _, labels, regression_targets = roi_heads.select_training_samples(proposals, targets)
        box_features = roi_heads.box_head(roi_heads.box_roi_pool(levels, proposals, image_sizes))
        class_logits, box_regression = roi_heads.box_predictor(box_features)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        return {
            "loss_classifier": loss_classifier,
            "loss_box_reg": loss_box_reg,
            "loss_objectness": loss_objectness,
            "loss_rpn_box_reg": loss_rpn_box_reg,
        }

    def _prepare_targets(self, features: DetectorFeatures, targets: Sequence[Mapping[str, Any]]) -> list[dict[str, Tensor]]:
        """Boxes and labels checked, on the detector's device, scaled to the resized images."""
        if len(targets) != features.batch_size:
            raise ValueError(f"got {len(targets)} targets for {features.batch_size} images")
        device = self.device
        out = []
        for i, (t, original, resized) in enumerate(zip(targets, features.original_sizes, features.image_sizes)):
            where = f"target {i}" + (f" (image {t['name']})" if "name" in t else "")
            if "boxes" not in t or "labels" not in t:
                raise ValueError(f"{where}: needs 'boxes' and 'labels', has {sorted(t)}")
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device)
            labels = torch.as_tensor(t["labels"], device=device)
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ValueError(f"{where}: boxes must be [K,4] xyxy, got shape {tuple(boxes.shape)}")
            if labels.is_floating_point() or labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
                raise ValueError(f"{where}: labels must be [K={boxes.shape[0]}] integers, got {labels.dtype} {tuple(labels.shape)}")
            labels = labels.to(torch.int64)
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"{where}: labels must be in 1..{self.num_classes - 1} ({self.class_names}), got {labels.tolist()}")
            bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            if bool(bad.any()):
                raise ValueError(f"{where}: boxes need positive width and height, got {boxes[bad][:3].tolist()}")
            out.append({"boxes": resize_boxes(boxes, list(original), list(resized)), "labels": labels})
        return out

    # ------------------------------------------------------------------------------ identification
    def weights_hash(self) -> str:
        """sha256 over the detector's state dict (sorted names, dtype, shape, raw bytes), 16 hex chars.

        Same scheme as ``vcm.codecs.base.weights_hash``, over the torchvision model's keys, so a
        detector has the same hash as the checkpoint it was loaded from. Hashes ~170 MB for the
        ResNet-50 detector (a fraction of a second); call it once per run.
        """
        digest = hashlib.sha256()
        state = self.model.state_dict()
        for name in sorted(state):
            t = state[name].detach().to("cpu").contiguous()
            digest.update(name.encode("utf-8"))
            digest.update(b"\0")
            digest.update(f"{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            digest.update(b"\1")
        return digest.hexdigest()[:16]

    def state_fingerprint(self) -> dict[str, Tensor]:
        """Copies of every parameter and buffer (BatchNorm statistics, ``num_batches_tracked``)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict(keep_vars=True).items()}

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name}, class_names={self.class_names}"


def _filter_proposals(rpn: nn.Module, proposals: Tensor, objectness: Tensor, image_sizes: list[tuple[int, int]],
                      num_anchors_per_level: list[int], pre_nms_top_n: int, post_nms_top_n: int) -> list[Tensor]:
    """``RegionProposalNetwork.filter_proposals`` with explicit top-n counts.

    torchvision picks the counts from ``rpn.training``, which the frozen detector never sets; the
    steps and thresholds are the same (``rpn.min_size``, ``rpn.score_thresh``, ``rpn.nms_thresh``).

    Args:
        proposals: [B, A, 4] decoded anchors. objectness: [B*A, 1] logits.

    Returns:
        Per image the kept proposals [N_i, 4].
    """
    num_images, device = proposals.shape[0], proposals.device
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat([torch.full((n,), idx, dtype=torch.int64, device=device)
                        for idx, n in enumerate(num_anchors_per_level)]).reshape(1, -1).expand_as(objectness)
    top_n_idx, offset = [], 0
    for ob in objectness.split(num_anchors_per_level, 1):
        _, idx = ob.topk(min(pre_nms_top_n, ob.shape[1]), dim=1)
        top_n_idx.append(idx + offset)
        offset += ob.shape[1]
    top_n_idx = torch.cat(top_n_idx, dim=1)
    batch_idx = torch.arange(num_images, device=device)[:, None]
    scores_all = torch.sigmoid(objectness[batch_idx, top_n_idx])
    levels, proposals = levels[batch_idx, top_n_idx], proposals[batch_idx, top_n_idx]
    kept = []
    for boxes, scores, lvl, size in zip(proposals, scores_all, levels, image_sizes):
        boxes = box_ops.clip_boxes_to_image(boxes, size)
        keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = box_ops.batched_nms(boxes, scores, lvl, rpn.nms_thresh)[:post_nms_top_n]
        kept.append(boxes[keep])
    return kept
