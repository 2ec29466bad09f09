"""The one Lightning DataModule every vcm model trains and evaluates on.

Sources (``source``): ``kitti`` (a KITTI root, object or tracking layout), ``synthetic`` (KITTI-format
road scenes generated on first use into a cache folder), ``coco`` (instances JSON + images) and
``images`` (any folder of PNG/JPEG images, no labels: pixel metrics only, see :mod:`vcm.data.images`).
Training batches are random crops (boxes clipped, boxes that leave the crop dropped); validation
and test batches are full frames, one per batch since KITTI frame sizes differ.

Reproducibility: the training order is a function of (seed, epoch) and every sample's augmentation
of (seed, epoch, index) only, never of the global RNG, the number of workers or of processes; the
training loader records how far into the epoch it is, so a run resumed from a mid-epoch checkpoint
sees exactly the batches the uninterrupted run would have seen. With several processes (DDP) every
process takes its own share: training shares are padded to equal length (processes step together),
evaluation shares are not (no image is counted twice).
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from vcm.data.kitti import (
    DEFAULT_CLASSES,
    DEFAULT_NEIGHBOURS,
    KITTI_HOWTO,
    ClassSpec,
    KittiDataset,
    index_kitti,
    load_image,
)
from vcm.data.splits import SPLITS, read_list_file, save_split, split_groups
from vcm.data.transforms import ColorJitter, Compose, RandomCrop, RandomHorizontalFlip
from vcm.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor | list[torch.Tensor], list[dict]]:
    """Stack images when they share a size (training crops), else keep a list; targets stay per image."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images), targets
    return images, targets


def _mix(*values: int) -> int:
    """A 64-bit seed from non-negative integers (well mixed, independent of Python's hash seed)."""
    import numpy as np

    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0])


class SeededAugmentation(Dataset):
    """Training samples keyed ``(epoch, index)`` whose random transform depends on (seed, epoch, index) only.

    The transform draws from torch's global RNG; it runs inside ``fork_rng`` seeded per sample, so
    neither the global RNG (the codec's quantisation noise) nor the sample depends on the order or
    the process samples are loaded in (workers, prefetching, resuming).
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, 2, epoch, index))
            return self.dataset[index]


class TrainSampler(torch.utils.data.Sampler):
    """This process's share of a (shuffled) epoch as ``(epoch, index)`` keys, a pure function of
    (seed, epoch, rank, number of processes).

    Shares are padded by repeating the first indices (as ``DistributedSampler`` does) so every process
    has the same number of batches. ``start`` skips the samples already consumed in ``epoch`` (resume).
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = max(1, int(num_replicas))
        self.rank = int(rank)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.start = 0
        self.epoch = int(epoch)

    def share(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, 1, self.epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = len(self) * self.num_replicas
        order += (order * (total // max(len(order), 1) + 1))[: total - len(order)]
        return order[self.rank:total:self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def __iter__(self):
        start, self.start = self.start, 0
        return iter([(self.epoch, i) for i in self.share()[start:]])


class ResumableLoader(DataLoader):
    """A training DataLoader whose position in the epoch is saved in checkpoints.

    Lightning stores ``state_dict()`` with the loops' state and calls ``load_state_dict`` before
    iterating again; the sampler then skips the batches the checkpointed run had already trained on.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._batches = 0

    def __iter__(self):
        sampler: TrainSampler = self.sampler
        self._batches = sampler.start // self.batch_size
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.epoch = int(state["epoch"])
        self.sampler.start = int(state["batches"]) * self.batch_size
        self._batches = int(state["batches"])


class DetectionDataModule(L.LightningDataModule):
    """KITTI / synthetic / COCO data with deterministic, recorded splits.

    Args:
        source: ``kitti``, ``synthetic``, ``coco`` or ``images``.
        root: KITTI root (holding ``training/``); for ``synthetic`` the folder to generate into; for
            ``images`` the folder of images; falls back to ``$KITTI_ROOT`` for ``kitti``.
        name: dataset name recorded in results (e.g. ``kitti_tiny``).
        classes: object classes (label i+1 = classes[i]).
        neighbours: type -> class it neighbours (ignored by KITTI's evaluation for that class).
        class_map: extra type -> class mapping (e.g. ``{Van: Car}``).
        split_seed, split_fractions: the deterministic split (by frame, or by sequence for tracking).
        split_lists: optional ``{"train": path, "val": path, "test": path}`` of ImageSets-style lists,
            which take precedence over the fractions.
        crop_size: (height, width) of training crops; null trains on full frames (batched as lists).
        object_crop_prob: probability that a training crop is placed around a random object (see
            :class:`vcm.data.transforms.RandomCrop`); 0 = plain random crops.
        batch_size, eval_batch_size, num_workers: loader settings.
        hflip, color_jitter: training augmentation (probability; jitter strength, 0 disables).
        synthetic_num, synthetic_seed: size and seed of the generated synthetic set.
        coco_images, coco_annotations: for ``coco``.
        max_eval_images: evaluate only the first N frames of val/test (quick runs); null = all.
        cache_images: keep decoded frames in memory (small sets; see :class:`KittiDataset`).
        seed: seed of the training order and augmentation (see the module docstring).
    """

    # With several processes an evaluation share may be empty (fewer images than processes).
    allow_zero_length_dataloader_with_multiple_devices = True

    def __init__(
        self,
        source: str = "kitti",
        root: str | None = None,
        name: str | None = None,
        classes: Sequence[str] = DEFAULT_CLASSES,
        neighbours: dict | None = None,
        class_map: dict | None = None,
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        split_lists: dict | None = None,
        crop_size: Sequence[int] | None = (256, 256),
        object_crop_prob: float = 0.0,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        synthetic_num: int = 64,
        synthetic_seed: int = 0,
        synthetic_size: Sequence[int] = (375, 1242),
        coco_images: str | None = None,
        coco_annotations: str | None = None,
        max_eval_images: int | None = None,
        cache_images: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if source not in ("kitti", "synthetic", "coco", "images"):
            raise ConfigError(f"data.source={source!r}; expected one of kitti, synthetic, coco, images")
        if batch_size <= 0 or eval_batch_size <= 0:
            raise ConfigError(f"data.batch_size={batch_size}, data.eval_batch_size={eval_batch_size}: expected positive integers")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers}: expected >= 0")
        self.source = source
        self.root = root
        # an image folder is named after itself (kodak, clic2020, ...) unless data.name says otherwise
        self.name = name or (Path(root).expanduser().resolve().name if source == "images" and root else source)
        self.spec = ClassSpec(
            classes=list(classes),
            neighbours=dict(DEFAULT_NEIGHBOURS if neighbours is None else neighbours),
            class_map=dict(class_map or {}),
        )
        self.split_seed = int(split_seed)
        self.split_fractions = tuple(float(f) for f in split_fractions)
        self.split_lists = dict(split_lists) if split_lists else None
        self.crop_size = tuple(int(c) for c in crop_size) if crop_size else None
        if not 0.0 <= float(object_crop_prob) <= 1.0:
            raise ConfigError(f"data.object_crop_prob={object_crop_prob}: expected a probability in [0, 1]")
        self.object_crop_prob = float(object_crop_prob)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.hflip = float(hflip)
        self.color_jitter = float(color_jitter)
        self.synthetic_num = int(synthetic_num)
        self.synthetic_seed = int(synthetic_seed)
        self.synthetic_size = tuple(int(s) for s in synthetic_size)
        self.coco_images = coco_images
        self.coco_annotations = coco_annotations
        self.max_eval_images = max_eval_images
        self.cache_images = bool(cache_images)
        self.seed = int(seed)
        self.split_record: dict[str, Any] | None = None
        self.datasets: dict[str, Dataset] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def has_labels(self) -> bool:
        """Whether targets hold the objects of the images (not for a plain image folder)."""
        return self.source != "images"

    # ------------------------------------------------------------------ preparation
    def resolve_root(self) -> Path:
        """The data root, generating the synthetic set on first use."""
        if self.source == "synthetic":
            from vcm.data.synthetic import generate

            root = Path(self.root or Path(os.environ.get("VCM_CACHE", Path.home() / ".cache" / "vcm")) / "synthetic").expanduser()
            root = root / f"n{self.synthetic_num}_s{self.synthetic_seed}_{self.synthetic_size[0]}x{self.synthetic_size[1]}"
            return Path(generate(root, num=self.synthetic_num, seed=self.synthetic_seed,
                                 width=self.synthetic_size[1], height=self.synthetic_size[0]))
        if self.source == "kitti":
            root = self.root or os.environ.get("KITTI_ROOT")
            if not root:
                raise DataError(f"no KITTI root configured: set data.root=<folder> or KITTI_ROOT. {KITTI_HOWTO}")
            return Path(root).expanduser()
        if self.source == "images":
            if not self.root:
                raise DataError("data=images needs data.root=<folder of PNG/JPEG images>")
            return Path(self.root).expanduser()
        return Path(self.coco_images or "")

    def prepare_data(self) -> None:
        if self.source == "synthetic":
            self.resolve_root()

    def _train_transform(self):
        return Compose([
            RandomCrop(self.crop_size, object_prob=self.object_crop_prob) if self.crop_size else None,
            RandomHorizontalFlip(self.hflip) if self.hflip > 0 else None,
            ColorJitter(self.color_jitter, self.color_jitter, self.color_jitter) if self.color_jitter > 0 else None,
        ])

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.source == "coco":
            self._setup_coco()
        elif self.source == "images":
            self._setup_images()
        else:
            self._setup_kitti()
        if self.crop_size:
            self._check_crop()

    def _setup_kitti(self) -> None:
        root = self.resolve_root()
        frames = index_kitti(root)
        by_id = {f.frame_id: f for f in frames}
        if self.split_lists:
            ids = {}
            for s in SPLITS:
                lst = read_list_file(self.split_lists[s]) if self.split_lists.get(s) else []
                unknown = [i for i in lst if i not in by_id]
                if unknown:
                    raise DataError(f"split list {self.split_lists[s]} names frames not in {root}: {unknown[:5]}")
                ids[s] = lst
            method = {"method": "lists", "lists": {k: str(v) for k, v in self.split_lists.items()}}
        else:
            groups = split_groups([f.group for f in frames], self.split_fractions, self.split_seed)
            ids = {s: [f.frame_id for f in frames if f.group in set(groups[s])] for s in SPLITS}
            method = {"method": "seeded", "seed": self.split_seed, "fractions": list(self.split_fractions),
                      "unit": "sequence" if frames[0].group != frames[0].frame_id else "frame"}
        self.split_record = {"dataset": self.name, "root": str(root), **method, **{s: ids[s] for s in SPLITS}}
        self.datasets = {
            "train": KittiDataset([by_id[i] for i in ids["train"]], self.spec, transform=self._train_transform(),
                                  cache=self.cache_images),
            "val": KittiDataset([by_id[i] for i in ids["val"]], self.spec, cache=self.cache_images),
            "test": KittiDataset([by_id[i] for i in ids["test"]], self.spec, cache=self.cache_images),
        }

    def _setup_coco(self) -> None:
        import json

        from vcm.data.coco import CocoDetection

        if not self.coco_annotations or not self.coco_images:
            raise DataError("data.source=coco needs data.coco_images and data.coco_annotations")
        ann = Path(self.coco_annotations)
        if not ann.is_file():
            raise DataError(f"COCO annotation file not found: {ann}")
        image_ids = [im["id"] for im in json.loads(ann.read_text())["images"]]
        groups = split_groups([str(i) for i in image_ids], self.split_fractions, self.split_seed)
        ids = {s: sorted(int(i) for i in groups[s]) for s in SPLITS}
        self.split_record = {"dataset": self.name, "root": str(ann), "method": "seeded", "seed": self.split_seed,
                             "fractions": list(self.split_fractions), "unit": "image", **ids}
        self.datasets = {
            s: CocoDetection(self.coco_images, ann, self.spec.classes, ids[s],
                             transform=self._train_transform() if s == "train" else None)
            for s in SPLITS
        }

    def _setup_images(self) -> None:
        from vcm.data.images import (
            ImageFolderDataset,
            check_crop,
            image_size,
            index_images,
        )

        root = self.resolve_root()
        images = index_images(root)
        for path in images.values():
            image_size(path)  # a file that is no image fails here, named, before any run starts
        groups = split_groups(list(images), self.split_fractions, self.split_seed)
        self.split_record = {"dataset": self.name, "root": str(root), "method": "seeded", "seed": self.split_seed,
                             "fractions": list(self.split_fractions), "unit": "image", **groups}
        if self.crop_size and groups["train"]:
            check_crop({n: images[n] for n in groups["train"]}, self.crop_size)
        self.datasets = {
            s: ImageFolderDataset({n: images[n] for n in groups[s]}, self.spec,
                                  transform=self._train_transform() if s == "train" else None, cache=self.cache_images)
            for s in SPLITS
        }

    def _check_crop(self) -> None:
        ds = self.datasets["train"]
        if len(ds) == 0:
            return
        frames = getattr(ds, "frames", None)
        first = frames[0].image if frames else None
        if first is not None:
            _, h, w = load_image(first).shape
            if self.crop_size[0] > h or self.crop_size[1] > w:
                raise ConfigError(
                    f"data.crop_size={list(self.crop_size)} is larger than the training image {first} ({h}x{w}); "
                    "expected a crop no larger than the images"
                )

    def save_split(self, path: str | Path) -> Path:
        """Write the split used (frame ids per split, seed or list files) to ``path``."""
        if self.split_record is None:
            self.setup()
        return save_split(path, self.split_record)

    def export_coco(self, split: str, path: str | Path) -> Path:
        """Write the ground truth of ``split`` as COCO-format JSON (DontCare as crowd regions)."""
        from vcm.metrics.coco import save_coco_json, targets_to_coco

        self.setup()
        ds = self.datasets[split]
        targets = [ds[i][1] for i in range(len(ds))]
        return save_coco_json(path, targets_to_coco(targets, self.class_names))

    # ------------------------------------------------------------------ loaders
    def _processes(self) -> tuple[int, int]:
        """(rank, number of processes) of the attached trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        ds = self.datasets[split]
        if len(ds) == 0:
            hint = (" (data=images puts every image in the test split unless data.split_fractions says otherwise, "
                    "e.g. data.split_fractions=[0.8,0.1,0.1] to train)" if self.source == "images" else "")
            raise DataError(f"the {split} split of {self.name} is empty; check data.split_fractions / split lists{hint}")
        if split != "train" and self.max_eval_images:
            ds = torch.utils.data.Subset(ds, range(min(len(ds), int(self.max_eval_images))))
        rank, world = self._processes()
        # Loaders own a generator so that creating an iterator draws nothing from the global RNG.
        common = {"num_workers": self.num_workers, "collate_fn": collate, "persistent_workers": self.num_workers > 0,
                  "drop_last": False, "generator": torch.Generator().manual_seed(self.seed)}
        if split == "train":
            sampler = TrainSampler(len(ds), self.seed, shuffle=shuffle, num_replicas=world, rank=rank)
            return ResumableLoader(SeededAugmentation(ds, self.seed), batch_size=self.batch_size, sampler=sampler, **common)
        # Full frames of different sizes are batched as lists (the detector handles them). Each
        # process evaluates its own frames, none twice (no padding; the module gathers results).
        sampler = list(range(rank, len(ds), world)) if world > 1 else None
        return DataLoader(ds, batch_size=self.eval_batch_size, shuffle=False, sampler=sampler, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
