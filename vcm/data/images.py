"""Any folder of images (``data=images data.root=<folder>``): PNG / JPEG files of any sizes, no labels.

Codecs are measured on pixels only (rate, PSNR, MS-SSIM), e.g. on the field's standard sets (Kodak,
CLIC). Every ``.png``, ``.jpg`` and ``.jpeg`` file under the root (sub-folders included) is an image,
named by its path relative to the root without the suffix; grey, palette and RGBA images are
converted to RGB (alpha dropped). Targets are empty (no boxes), so crops, flips and the evaluation
work as for KITTI frames.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vcm.data.kitti import ClassSpec, load_image, objects_to_target
from vcm.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset", "check_crop", "image_size", "index_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def index_images(root: str | Path) -> dict[str, Path]:
    """The images under ``root``: ``{name: path}`` sorted by name (relative path without suffix).

    Raises:
        DataError: ``root`` is not a folder, or holds no PNG/JPEG file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder; expected a folder of PNG/JPEG images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no PNG/JPEG image in {root}; expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    images: dict[str, Path] = {}
    for p in paths:
        name = p.relative_to(root).with_suffix("").as_posix()
        if name in images:
            raise DataError(f"{images[name]} and {p} have the same name {name!r}; keep one of them")
        images[name] = p
    return images


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header.

    Raises:
        DataError: the file is empty or not an image (names it).
    """
    if path.stat().st_size == 0:
        raise DataError(f"image file is empty: {path}; expected a PNG/JPEG image")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}; expected a complete PNG/JPEG file") from None
    return h, w


class ImageFolderDataset(Dataset):
    """Images as ``(uint8 [3, H, W] RGB, target dict without boxes)``.

    Args:
        images: ``{name: path}`` (see :func:`index_images`).
        spec: the class spec of the (empty) targets.
        transform: optional ``(image, target) -> (image, target)`` (training crops).
        cache: keep decoded images in memory.
    """

    def __init__(self, images: dict[str, Path], spec: ClassSpec | None = None, transform=None, cache: bool = False):
        self.names = list(images)
        self.paths = [images[n] for n in self.names]
        self.spec = spec or ClassSpec()
        self.transform = transform
        self.cache = cache
        self._decoded: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = self._decoded.get(index)
        if image is None:
            image = load_image(self.paths[index])
            if self.cache:
                self._decoded[index] = image
        _, h, w = image.shape
        target = objects_to_target([], self.spec, h, w, image_id=index, name=self.names[index],
                                   source=str(self.paths[index]))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def check_crop(images: dict[str, Path], crop_size: Sequence[int]) -> None:
    """Refuse training crops larger than an image (naming the smallest ones) rather than padding them.

    Raises:
        DataError: an image is smaller than ``crop_size`` in height or width.
    """
    ch, cw = (int(c) for c in crop_size)
    sizes = [(p, image_size(p)) for p in images.values()]
    small = [(p, hw) for p, hw in sizes if hw[0] < ch or hw[1] < cw]
    if small:
        listed = ", ".join(f"{p} ({h}x{w})" for p, (h, w) in small[:3]) + (" ..." if len(small) > 3 else "")
        raise DataError(f"data.crop_size={[ch, cw]} is larger than {len(small)} training image(s): {listed}; "
                        "set a smaller data.crop_size or remove those images")
