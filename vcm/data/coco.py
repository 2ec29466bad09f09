"""COCO instances data through the same ``(image, target)`` interface as KITTI."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vcm.data.kitti import load_image
from vcm.errors import DataError


class CocoDetection(Dataset):
    """COCO images with vcm target dicts.

    Args:
        image_dir: folder with the images named in the annotation file.
        annotation_file: ``instances_*.json``.
        classes: category names to keep as objects (label i+1 = classes[i]); None keeps every
            category in the file, in category-id order. Crowd annotations become ignore boxes.
        image_ids: restrict to these image ids (for splits); None keeps all.
        transform: optional ``(image, target) -> (image, target)``.
    """

    def __init__(self, image_dir, annotation_file, classes: Sequence[str] | None = None, image_ids=None, transform=None):
        self.image_dir = Path(image_dir)
        ann_path = Path(annotation_file)
        if not ann_path.is_file():
            raise DataError(f"COCO annotation file not found: {ann_path}; expected an instances_*.json")
        if not self.image_dir.is_dir():
            raise DataError(f"COCO image folder not found: {self.image_dir}")
        try:
            coco = json.loads(ann_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{ann_path}: invalid JSON ({e})") from None
        for key in ("images", "annotations", "categories"):
            if key not in coco:
                raise DataError(f"{ann_path}: no '{key}' list; expected a COCO instances file")
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        names = {c["id"]: c["name"] for c in cats}
        if classes is None:
            classes = [c["name"] for c in cats]
        unknown = [c for c in classes if c not in names.values()]
        if unknown:
            raise DataError(f"{ann_path}: classes {unknown} are not categories of this file")
        self.classes = list(classes)
        self._label_of_cat = {cid: self.classes.index(n) + 1 for cid, n in names.items() if n in self.classes}
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        if image_ids is not None:
            keep = {int(i) for i in image_ids}
            self.images = [im for im in self.images if im["id"] in keep]
        self.anns: dict[int, list[dict]] = {}
        for a in coco["annotations"]:
            self.anns.setdefault(a["image_id"], []).append(a)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        info = self.images[index]
        image = load_image(self.image_dir / info["file_name"])
        _, h, w = image.shape
        boxes, labels, ignore = [], [], []
        for a in self.anns.get(info["id"], []):
            x, y, bw, bh = a["bbox"]
            box = [max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)]
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            if a.get("iscrowd", 0):
                ignore.append(box)
            elif a["category_id"] in self._label_of_cat:
                boxes.append(box)
                labels.append(self._label_of_cat[a["category_id"]])
        n = len(boxes)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "truncation": torch.zeros(n),
            "occlusion": torch.full((n,), -1, dtype=torch.int64),
            "ignore_boxes": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "neighbour_boxes": torch.zeros(0, 4),
            "neighbour_labels": torch.zeros(0, dtype=torch.int64),
            "image_id": int(info["id"]),
            "name": Path(info["file_name"]).stem,
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
