"""The LightningModule of every learned image codec (factorized, hyperprior, mean-scale, ROI)."""
from __future__ import annotations

import torch

from vcm.codecs.base import pad_image
from vcm.conditioning import codec_condition
from vcm.data.masks import target_masks
from vcm.evaluation.runners import LearnedImageRunner
from vcm.modules.base import CodecModule


class ImageCodecModule(CodecModule):
    """Trains an image codec with an RD (or ROI-RD) loss; validates with real bitstreams.

    Training batches are crops (uint8 [B,3,h,w]); the codec sees them padded to its ``min_div``
    and the loss is computed on the original pixels, with ``bpp`` per original pixel. A codec
    with ``needs_features`` is given what its conditioning kind says (:mod:`vcm.conditioning`,
    computed without gradient): the frozen detector's features of the same images, or with
    ``roi_source=boxes`` the map of their ROI boxes; the decoder never needs either.
    """

    kind = "image"

    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        if not torch.is_tensor(images):
            images = torch.stack(list(images)) if all(i.shape == images[0].shape for i in images) else None
            if images is None:
                raise ValueError("training images of one batch differ in size; set data.crop_size or data.batch_size=1")
        x = (images.to(self.device).float() / 255.0).contiguous(memory_format=self.memory_format)
        _, _, h, w = x.shape
        with torch.no_grad():
            cond = codec_condition(self.codec, x, targets, self.detector, name=self.codec_name)
        x_pad, _pad = pad_image(x, self.codec.min_div)
        out = self.codec(x_pad, cond=cond) if cond is not None else self.codec(x_pad)
        out = dict(out)
        out["x_hat"] = out["x_hat"][..., :h, :w]
        roi = target_masks(targets, "boxes", h, w, self.device)
        ignore = target_masks(targets, "ignore_boxes", h, w, self.device)
        return self.loss_fn(out, x, num_pixels=h * w, roi_mask=roi, ignore_mask=ignore)

    def _runner(self) -> LearnedImageRunner:
        return LearnedImageRunner(self.codec, name=self.codec_name, params=self.params, update=False)

