"""Settings, goals and helpers shared by the benchmarks (frames, small codecs, timing statistics)."""
from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT / ".." / "shared" / "data"
DEFAULT_OUT = Path("outputs") / "bench" / "bench.json"
FRAME = "000001"  # a 1242x375 frame (KITTI's usual size; a few kitti_tiny frames are 1224x370 or 1238x374)
SECTIONS = ("codec", "bpp", "train", "anchors", "precision")
# Upper bounds, except AT_LEAST's keys, which are lower bounds.
GOALS = {"codec": 1.05, "bpp": 0.01, "train": 1.10, "precision": 0.50, "precision_lightning": 1.05, "loader": 3.0}
AT_LEAST = frozenset({"loader"})
LMBDA_Q3 = 0.0067  # CompressAI's MSE lambda of quality 3 (vcm/conf/model/hyperprior.yaml)


@dataclass(frozen=True)
class Settings:
    """What one benchmark run measures; ``--quick`` shrinks every size so a test runs in seconds.

    Attributes:
        repeats: timed rounds of sections 1 and 4 (after one warm-up round).
        frame_crop: (H, W) top-left crop of the benchmark frame, or None for the whole 1242x375 frame.
        codec_nm: (N, M) of the section-1/4 learned codecs, or None for quality 3's channel numbers.
        bpp_nm: (N, M) of the hyperprior trained in section 2, or None for quality 3's.
        train_steps, train_batch, train_crop, train_lr: section 2's short training.
        bpp_frames: frames measured in section 2 (None: all).
        step_nm, step_batch, step_crop: architecture and fixed batch of section 3.
        step_warmup: steps excluded at the start of each of the first two timed runs (1 in the others).
        step_steps: timed steps per loop, split over two runs (A-B-B-A).
        anchors: include HEVC / AV1 (slow) in section 4.
        fine_table_levels: also measure section 2 with a scale table of this many entries (None: skip).
        prec_nm, prec_batch, prec_crop: section 5's hyperprior (None: quality 3) and its batch of
            kitti_mini training crops (also the loader's batch size and crop).
        prec_steps, prec_warmup: section 5's timed steps per loop (A-B-B-A) and warm-up steps.
        det_frames, det_size: the detector's batch of full kitti_mini frames and its (min_size,
            max_size) resize (None: vcm/conf/detector/mobilenet_v2_fpn.yaml's, KITTI frames at 1:1).
        det_overrides: further ``detector.*`` overrides (fewer proposals in quick runs).
        lmsfc_nm, lmsfc_batch, lmsfc_crop: L-MSFC's (N, M) (None: quality 1's) and its batch of crops.
        loader_batches: timed loader batches per loader run (A-B-B-A against training steps).
    """

    repeats: int = 5
    frame_crop: tuple[int, int] | None = None
    codec_nm: tuple[int, int] | None = None
    bpp_nm: tuple[int, int] | None = (64, 96)
    train_steps: int = 300
    train_batch: int = 8
    train_crop: int = 128
    train_lr: float = 1e-3
    bpp_frames: int | None = None
    step_nm: tuple[int, int] | None = None
    step_batch: int = 8
    step_crop: int = 256
    step_warmup: int = 2
    step_steps: int = 8
    anchors: bool = True
    fine_table_levels: int | None = 64
    prec_nm: tuple[int, int] | None = None
    prec_batch: int = 8
    prec_crop: int = 256
    prec_steps: int = 6
    prec_warmup: int = 2
    det_frames: int = 2
    det_size: tuple[int, int] | None = None
    det_overrides: tuple[str, ...] = ()
    lmsfc_nm: tuple[int, int] | None = None
    lmsfc_batch: int = 2
    lmsfc_crop: int = 256
    loader_batches: int = 16


FULL = Settings()
QUICK = Settings(
    repeats=1,
    frame_crop=(120, 250),
    codec_nm=(16, 16),
    bpp_nm=(16, 16),
    train_steps=2,
    train_batch=2,
    train_crop=64,
    bpp_frames=3,
    step_nm=(16, 16),
    step_batch=2,
    step_crop=64,
    step_warmup=1,
    step_steps=2,
    prec_nm=(16, 16),
    prec_batch=2,
    prec_crop=64,
    prec_steps=2,
    prec_warmup=1,
    det_frames=1,
    det_size=(96, 320),
    det_overrides=("+detector.rpn_pre_nms_top_n_train=200", "+detector.rpn_post_nms_top_n_train=100",
                   "+detector.box_batch_size_per_image=64"),
    lmsfc_nm=(32, 32),
    lmsfc_crop=64,
    loader_batches=4,
)


# ---------------------------------------------------------------------------------------------- helpers
def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _ratio(num: list[float], den: list[float]) -> float:
    """``median(num) / median(den)``: the ratio every section reports."""
    return _median(num) / _median(den)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment() -> dict[str, Any]:
    import compressai
    import lightning

    from vcm.rd.record import current_git_commit

    return {
        "torch": torch.__version__,
        "compressai": compressai.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": current_git_commit(),
        "device": "cpu",
    }


def _kitti_images(data_root: Path) -> list[tuple[str, torch.Tensor]]:
    """All kitti_tiny frames as (frame id, uint8 [3,H,W]), sorted by id."""
    from vcm.data.kitti import index_kitti, load_image

    root = Path(data_root) / "kitti_tiny"
    if not (root / "training" / "image_2").is_dir():
        raise FileNotFoundError(
            f"kitti_tiny not found under {Path(data_root).resolve()}; expected {root}/training/image_2 "
            "(pass --data <folder holding kitti_tiny>)"
        )
    return [(f.frame_id, load_image(f.image)) for f in index_kitti(root)]


def _train_frame_ids(frame_ids: list[str]) -> list[str]:
    """The training split of kitti_tiny as vcm/conf/data/kitti_tiny.yaml makes it (seed 0, 0.75/0.125/0.125)."""
    from vcm.data.splits import split_groups

    return split_groups(frame_ids, (0.75, 0.125, 0.125), seed=0)["train"]


def _hyperprior(nm: tuple[int, int] | None, seed: int = 0):
    from vcm.codecs.image import hyperprior

    torch.manual_seed(seed)
    return hyperprior(3) if nm is None else hyperprior(N=nm[0], M=nm[1])


def _factorized(nm: tuple[int, int] | None, seed: int = 0):
    from vcm.codecs.image import factorized

    torch.manual_seed(seed)
    return factorized(3) if nm is None else factorized(N=nm[0], M=nm[1])


def _describe(model, weights: str) -> dict[str, Any]:
    return {
        "codec": model.codec_name,
        "quality": model.quality,
        "N": int(model.N),
        "M": int(model.M),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": weights,
    }


def plain_step(model, loss: torch.Tensor, net: list, opt: torch.optim.Optimizer,
               aux_opt: torch.optim.Optimizer) -> torch.Tensor:
    """One optimisation step of a CompressAI model in a bare PyTorch loop, as ``CodecModule``
    does it: the network (gradient clipping 1.0), then the aux (quantile) parameters.

    Returns:
        The aux loss of the step.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net, 1.0)
    opt.step()
    aux_loss = model.aux_loss()
    aux_opt.zero_grad(set_to_none=True)
    aux_loss.backward()
    aux_opt.step()
    return aux_loss
