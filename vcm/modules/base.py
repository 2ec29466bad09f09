"""What every codec LightningModule shares: net/aux optimisation, real-bitstream evaluation, logging.

A codec module owns the training procedure, not the architecture: the codec, loss and optimisers
come from config. CompressAI models have two parameter sets — the network and the entropy
bottlenecks' quantiles (the "aux" parameters, trained on their own loss) — so the module uses
manual optimisation with two optimisers, CompressAI's split asserted disjoint and complete.
"""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch import nn
from torchvision.utils import draw_bounding_boxes

from vcm.codecs.base import net_aux_parameters
from vcm.codecs.checkpoint import (
    ENTROPY_TABLE_SUFFIXES,
    codec_state_dict,
    load_codec_state,
)
from vcm.codecs.precision import run_in_fp32, use_fp32_entropy_models
from vcm.errors import ConfigError
from vcm.evaluation.pipeline import MetricAccumulator, evaluate_image
from vcm.utils.io import atomic_write_bytes

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def gather_objects(obj: Any) -> list:
    """all_gather_object across processes (a one-element list without distributed training)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def step_drop(optimizer: torch.optim.Optimizer, total_steps: int, at: float = 0.85,
              gamma: float = 0.1) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the learning rate by ``gamma`` once, after ``at * total_steps`` steps."""
    if not 0 < float(at) < 1 or int(total_steps) < 1:
        raise ConfigError(f"scheduler step_drop: at={at}, total_steps={total_steps}; expected 0 < at < 1 and total_steps >= 1")
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[max(1, int(total_steps * float(at)))], gamma=gamma)


class CodecModule(L.LightningModule):
    """Base class of the image- and feature-codec modules.

    Args:
        codec: a CompressAI ``CompressionModel``.
        loss: a loss module returning a dict with ``loss`` and ``bpp_loss``.
        optimizer: partial optimiser for the network parameters (e.g. Adam lr 1e-4).
        aux_optimizer: partial optimiser for the aux (quantile) parameters (e.g. Adam lr 1e-3).
        scheduler: optional partial LR scheduler for the network optimiser.
        scheduler_monitor: metric that ``ReduceLROnPlateau`` watches (e.g. ``val/loss``).
        scheduler_interval: ``epoch`` (step other schedulers after each training epoch) or ``step``
            (after each training batch, e.g. ``MultiStepLR`` milestones in steps for short runs).
            ``ReduceLROnPlateau`` always steps after validation.
        clip_grad_norm: gradient-norm clipping of the network parameters (0 disables).
        nonfinite: ``raise`` (stop with a message naming the step) or ``skip`` (skip the batch).
        num_log_images: decoded validation images logged (with boxes) per epoch.
        codec_name: name used in bitstreams and results; defaults to ``codec.codec_name``.
        params: the rate point's parameters (quality, lmbda, ...) recorded in results.
        lambdas: the model's quality -> lambda table (kept for reference; ``lmbda`` is resolved by Hydra).
        channels_last: keep the codec's weights and the training batches in channels-last memory
            format during training (faster convolutions on CPU and on tensor-core GPUs); evaluation
            codes with the standard layout, so bitstreams do not depend on it.
        fp32_modules: codec submodules (e.g. ``[h_a, h_s]``) that compute in fp32 under mixed
            precision, as the entropy models always do (:func:`vcm.codecs.precision.run_in_fp32`).

    Mixed precision is Lightning's (``trainer.precision=bf16-mixed``): training steps run under
    autocast, the entropy models always in fp32 (:mod:`vcm.codecs.precision`), and every evaluation
    (``update()``, real coding, the loss of the full frames) runs in fp32 with autocast off.
    """

    kind = "image"
    monitor = ("val/loss", "min")  # what the best checkpoint is chosen by

    def __init__(
        self,
        codec: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        aux_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable | None = None,
        scheduler_monitor: str = "val/loss",
        scheduler_interval: str = "epoch",
        clip_grad_norm: float = 1.0,
        nonfinite: str = "raise",
        num_log_images: int = 2,
        codec_name: str | None = None,
        params: dict | None = None,
        lambdas: dict | None = None,
        channels_last: bool = False,
        fp32_modules: list[str] | tuple[str, ...] = (),
    ):
        super().__init__()
        if nonfinite not in ("raise", "skip"):
            raise ConfigError(f"model.nonfinite={nonfinite!r}; expected 'raise' or 'skip'")
        self.codec = run_in_fp32(use_fp32_entropy_models(codec), list(fp32_modules or ()))
        self.channels_last = bool(channels_last)
        self.loss_fn = loss
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=1e-4)
        self.aux_optimizer_factory = aux_optimizer or partial(torch.optim.Adam, lr=1e-3)
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(f"model.scheduler_interval={scheduler_interval!r}; expected 'epoch' or 'step'")
        self.scheduler_interval = scheduler_interval
        self.clip_grad_norm = float(clip_grad_norm)
        self.nonfinite = nonfinite
        self.num_log_images = int(num_log_images)
        self.codec_name = codec_name or getattr(codec, "codec_name", type(codec).__name__)
        self.params = dict(params or {})
        self.lambdas = dict(lambdas or {})
        self.automatic_optimization = False
        self.vcm_meta: dict[str, Any] = {}
        self.skipped_batches = 0
        self._acc: dict[str, MetricAccumulator] = {}
        self.last_eval: dict[str, dict] = {}

    # ------------------------------------------------------------------ frozen detector (set by the callback)
    @property
    def detector(self):
        return self.__dict__.get("_frozen_detector")

    def set_detector(self, detector) -> None:
        """Attach the frozen detector without registering it as a submodule (so it is in no
        optimiser, not in ``state_dict`` and not switched by Lightning's train/eval toggles)."""
        self.__dict__["_frozen_detector"] = detector

    @property
    def class_names(self) -> list[str]:
        if self.detector is not None:
            return list(self.detector.class_names)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return list(getattr(dm, "class_names", []) or [])

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        net, aux = net_aux_parameters(self.codec)
        opt = self.optimizer_factory(net)
        aux_opt = self.aux_optimizer_factory(aux)
        self._scheduler = self.scheduler_factory(opt) if self.scheduler_factory else None
        # The scheduler is stepped here, not by Lightning, so its state travels in our own checkpoint key.
        pending = self.__dict__.pop("_pending_scheduler_state", None)
        if self._scheduler is not None and pending is not None:
            self._scheduler.load_state_dict(pending)
        return [opt, aux_opt]

    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        opt, aux_opt = self.optimizers()
        out = self.compute_loss(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            msg = (f"non-finite training loss {float(loss.detach())} at global step {self.global_step} "
                   f"(epoch {self.current_epoch}, batch {batch_idx}); components: "
                   + ", ".join(f"{k}={float(v):.4g}" for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1))
            if self.nonfinite == "raise":
                raise NonFiniteLossError(msg + ". Lower the learning rate or set model.nonfinite=skip to skip such batches.")
            log.warning("skipping batch: %s", msg)
            self.skipped_batches += 1
            opt.zero_grad(set_to_none=True)
            return None
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.clip_grad_norm > 0:
            self.clip_gradients(opt, gradient_clip_val=self.clip_grad_norm, gradient_clip_algorithm="norm")
        lr = float(opt.optimizer.param_groups[0]["lr"])  # the rate this step used
        opt.step()
        if self.scheduler_interval == "step":
            self._step_scheduler()
        aux_loss = self.codec.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        self.manual_backward(aux_loss)
        # The raw optimiser's step: Lightning counts every LightningOptimizer.step() as a global
        # step, and trainer.max_steps should count training batches, not two steps per batch.
        aux_opt.optimizer.step()
        bs = self._batch_size(batch)
        for k, v in out.items():
            if torch.is_tensor(v) and v.numel() == 1:
                self.log(f"train/{k}", v.detach(), on_step=True, on_epoch=True, prog_bar=k in ("loss", "bpp_loss"), batch_size=bs)
        self.log("train/aux_loss", aux_loss.detach(), on_step=True, on_epoch=False, batch_size=bs)
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=bs)
        return loss.detach()

    @staticmethod
    def _batch_size(batch) -> int:
        images = batch[0]
        return images.shape[0] if torch.is_tensor(images) else len(images)

    def _step_scheduler(self) -> None:
        sch = getattr(self, "_scheduler", None)
        if sch is not None and not isinstance(sch, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sch.step()

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of training batches (and of the codec's weights while training)."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _set_codec_layout(self, training: bool) -> None:
        if self.channels_last:
            self.codec.to(memory_format=torch.channels_last if training else torch.contiguous_format)

    def on_train_start(self) -> None:
        self._set_codec_layout(training=True)

    def on_train_epoch_end(self) -> None:
        if self.scheduler_interval == "epoch":
            self._step_scheduler()

    # ------------------------------------------------------------------ evaluation with real bitstreams
    def _start_eval(self, stage: str) -> None:
        self._set_codec_layout(training=False)
        # Real range coding needs CDF tables that match the current quantiles (built in fp32).
        with torch.autocast(device_type=self.device.type, enabled=False):
            self.codec.update(force=True)
        self._acc[stage] = MetricAccumulator(self.class_names, detection=self.detector is not None)
        self._logged_images = 0

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def validation_step(self, batch, batch_idx):
        # Evaluation is fp32 whatever the training precision: bitstreams must not depend on it.
        with torch.autocast(device_type=self.device.type, enabled=False):
            self.eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        with torch.autocast(device_type=self.device.type, enabled=False):
            self.eval_step(batch, "test")

    def _runner(self):
        raise NotImplementedError

    @torch.no_grad()
    def eval_step(self, batch, stage: str) -> None:
        """Real coding of every full frame + the loss and estimated rate from one forward pass."""
        images, targets = batch
        runner = self._runner()
        for image, target in zip(images, targets):
            m, preds, decoded = evaluate_image(runner, image, target, detector=self.detector, estimate=False)
            single = self.compute_loss((image[None], [target]))
            m["bpp_estimated"] = float(single["bpp_loss"])
            m["loss"] = float(single["loss"])
            self._acc[stage].add(m, preds, target)
            if decoded is not None:
                self.log_sample(stage, image, decoded, target, preds)

    def _end_eval(self, stage: str) -> dict:
        acc = self._acc[stage]
        gathered = gather_objects((acc.per_image, acc.preds, acc.targets))
        merged = MetricAccumulator(acc.class_names, detection=acc.detection)
        seen: set = set()
        for per_image, preds, targets in gathered:
            aligned = len(preds) == len(per_image)
            for i, m in enumerate(per_image):
                # A padding sampler (e.g. Lightning's DistributedSampler) hands some images to two
                # processes; each image counts once.
                key = (m.get("name"), m.get("height"), m.get("width"))
                if m.get("name") is not None and key in seen:
                    continue
                seen.add(key)
                merged.per_image.append(m)
                if aligned:
                    merged.preds.append(preds[i])
                    merged.targets.append(targets[i])
            if not aligned:
                merged.preds.extend(preds)
                merged.targets.extend(targets)
        metrics = merged.compute() if merged.per_image else {}
        # Every rank holds the same gathered values, so no further reduction is needed.
        for k, v in metrics.items():
            if isinstance(v, float) and math.isfinite(v):
                self.log(f"{stage}/{k}", v, sync_dist=False, rank_zero_only=False, prog_bar=k in ("bpp_real", "psnr", "map_50"))
        self.last_eval[stage] = {"metrics": metrics, "per_image": merged.per_image}
        return metrics

    def on_validation_epoch_end(self) -> None:
        metrics = self._end_eval("val")
        if self._trainer is not None and self.trainer.training:  # validation hooks also run without a Trainer
            self._set_codec_layout(training=True)
        sch = getattr(self, "_scheduler", None)
        if isinstance(sch, torch.optim.lr_scheduler.ReduceLROnPlateau):
            key = self.scheduler_monitor.split("/", 1)[-1]
            if key in metrics and math.isfinite(metrics[key]):
                sch.step(metrics[key])

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    # ------------------------------------------------------------------ sample images
    def log_sample(self, stage: str, original: torch.Tensor, decoded: torch.Tensor, target: dict, preds: dict | None) -> None:
        """Save a decoded image with ground-truth (green) and detected (red) boxes; to wandb or TensorBoard too."""
        if self._logged_images >= self.num_log_images or self.global_rank != 0 or self.trainer.sanity_checking:
            return
        img = decoded.cpu()
        if target["boxes"].numel():
            img = draw_bounding_boxes(img, target["boxes"], colors="lime", width=2)
        if preds is not None and preds["boxes"].numel():
            keep = preds["scores"] >= 0.5
            if keep.any():
                img = draw_bounding_boxes(img, preds["boxes"][keep], colors="red", width=2)
        name = f"{stage}_epoch{self.current_epoch:03d}_{target.get('name', self._logged_images)}".replace("/", "_")
        log_dir = Path(self.trainer.default_root_dir) / "samples"
        log_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        atomic_write_bytes(log_dir / f"{name}.png", buf.getvalue())
        for lg in self.loggers:
            if type(lg).__name__ == "WandbLogger":
                lg.log_image(key=f"{stage}/samples", images=[img.permute(1, 2, 0).numpy()], caption=[name], step=self.global_step)
            elif type(lg).__name__ == "TensorBoardLogger":
                lg.experiment.add_image(f"{stage}/samples/{name}", img, self.global_step)
        self._logged_images += 1

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The entropy tables are written with the weights, computed from them now (in fp32), so that
        # every machine that loads the checkpoint codes with the same tables.
        with torch.no_grad(), torch.autocast(device_type=self.device.type, enabled=False):
            self.codec.update(force=True)
        state = checkpoint.setdefault("state_dict", {})
        for name, table in self.codec.state_dict().items():
            if name.endswith(ENTROPY_TABLE_SUFFIXES):
                state[f"codec.{name}"] = table.detach().clone()
        checkpoint["vcm"] = dict(self.vcm_meta)
        sch = getattr(self, "_scheduler", None)
        if sch is not None:
            checkpoint["vcm_scheduler"] = sch.state_dict()
        checkpoint["vcm_skipped_batches"] = int(self.skipped_batches)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The entropy models' CDF tables stay empty until update(): load the codec's state (which
        # resizes them) first, so that Lightning's strict load then finds matching shapes.
        sd = codec_state_dict(checkpoint.get("state_dict", {}))
        if sd:
            load_codec_state(self.codec, sd)
        # configure_optimizers runs after this hook when resuming; it applies the state.
        if checkpoint.get("vcm_scheduler") is not None:
            self.__dict__["_pending_scheduler_state"] = checkpoint["vcm_scheduler"]
        self.skipped_batches = int(checkpoint.get("vcm_skipped_batches", 0))
