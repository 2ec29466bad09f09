"""KITTI 2D object data: the ``label_2`` parser, the ``calib`` reader and the Dataset.

Layouts understood:

* object detection: ``ROOT/training/image_2/NNNNNN.png`` + ``ROOT/training/label_2/NNNNNN.txt``
  (+ ``calib/NNNNNN.txt``, optional);
* tracking: ``ROOT/training/image_02/SSSS/NNNNNN.png`` + ``ROOT/training/label_02/SSSS.txt``
  (one label file per sequence, with frame and track id columns). Splits of this layout are made
  by sequence (see :mod:`vcm.data.splits`).
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vcm.errors import DataError

log = logging.getLogger(__name__)

KITTI_TYPES = (
    "Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare",
)
DEFAULT_CLASSES = ("Car", "Pedestrian", "Cyclist")
# KITTI's evaluation ignores these types for the class they resemble (neither TP nor FP).
DEFAULT_NEIGHBOURS = {"Van": "Car", "Person_sitting": "Pedestrian"}

KITTI_HOWTO = (
    "Download the KITTI 2D object benchmark ('left color images of object data set' and "
    "'training labels of object data set') from https://www.cvlibs.net/datasets/kitti/eval_object.php, "
    "unzip both into one folder so that it holds training/image_2 and training/label_2, and pass "
    "data.root=<that folder> (or set KITTI_ROOT). Without a download, use data=synthetic or data=kitti_tiny."
)


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI ``label_2`` file (all 15 fields and the optional score)."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    dimensions: tuple[float, float, float]  # h, w, l in metres
    location: tuple[float, float, float]  # x, y, z in camera coordinates, metres
    rotation_y: float
    score: float | None = None


def _parse_float(tok: str, path: Path, lineno: int, name: str) -> float:
    try:
        value = float(tok)
    except ValueError:
        raise DataError(
            f"{path}:{lineno}: field '{name}' is {tok!r}, expected a number "
            "(KITTI label format: type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score])"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{lineno}: field '{name}' is {tok!r}, expected a finite number")
    return value


def parse_label_line(line: str, path: Path | str = "<string>", lineno: int = 1) -> KittiObject:
    """Parse one KITTI label line (15 fields, or 16 with a detection score)."""
    path = Path(path)
    toks = line.split()
    if len(toks) not in (15, 16):
        raise DataError(
            f"{path}:{lineno}: {len(toks)} fields, expected 15 (or 16 with a score): "
            "type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]"
        )
    names = ("truncated", "occluded", "alpha", "x1", "y1", "x2", "y2", "h", "w", "l", "x", "y", "z", "rotation_y", "score")
    vals = [_parse_float(t, path, lineno, n) for t, n in zip(toks[1:], names)]
    occluded = vals[1]
    if occluded != int(occluded):
        raise DataError(f"{path}:{lineno}: field 'occluded' is {toks[2]!r}, expected an integer 0..3 (or -1)")
    return KittiObject(
        type=toks[0],
        truncated=vals[0],
        occluded=int(occluded),
        alpha=vals[2],
        bbox=(vals[3], vals[4], vals[5], vals[6]),
        dimensions=(vals[7], vals[8], vals[9]),
        location=(vals[10], vals[11], vals[12]),
        rotation_y=vals[13],
        score=vals[14] if len(vals) == 15 else None,
    )


def parse_label_file(path: str | Path, require_score: bool = False) -> list[KittiObject]:
    """Parse a KITTI ``label_2`` file. LF and CRLF line endings and empty files are accepted.

    Args:
        path: the file.
        require_score: a results file (detections): every line must carry the score as its 16th
            field. An empty results file is valid (no detections).

    Raises:
        DataError: the file is missing, not UTF-8/ASCII, or a line is malformed or lacks a required
            score (the message names the file, the line number and what was expected).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text label file ({e}); expected KITTI label_2 lines") from None
    objects = []
    # Lines end at LF only; a CR is whitespace within a line. splitlines() would also end a line at a
    # lone CR, so "<15 fields>\r <score>" (a score appended to a CRLF file by an LF tool) would read
    # as a line without its score and a line with only the score. A file of CR-only line ends is rare
    # but read as such.
    lines = text.split("\n") if "\n" in text or "\r" not in text else text.split("\r")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        obj = parse_label_line(line, path, lineno)
        if require_score and obj.score is None:
            raise DataError(
                f"{path}:{lineno}: 15 fields and no score; a KITTI results line has 16, the label_2 fields "
                "then the detection score"
            )
        objects.append(obj)
    return objects


def format_result_line(kitti_type: str, bbox: Sequence[float], score: float) -> str:
    """One line of a KITTI results file for a 2D detection (no 3D box).

    The fields the 2D evaluation does not read take the devkit's "unknown" values (truncation and
    occlusion -1, alpha and rotation -10, dimensions -1, location -1000). Numbers are written with
    ``repr``, which round-trips exactly, so a reader gets the very boxes and scores that were
    written.

    Args:
        kitti_type: the class name, e.g. ``"Car"`` (no whitespace).
        bbox: x1, y1, x2, y2 in pixels of the original image.
        score: the detection's confidence; higher = more confident.
    """
    if not kitti_type or any(c.isspace() for c in kitti_type):
        raise ValueError(f"KITTI type {kitti_type!r} must be one word (it is the first field of the line)")
    x1, y1, x2, y2 = (float(v) for v in bbox)
    numbers = (x1, y1, x2, y2, float(score))
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"non-finite box {bbox} or score {score} for a {kitti_type} detection")
    return f"{kitti_type} -1 -1 -10 {x1!r} {y1!r} {x2!r} {y2!r} -1 -1 -1 -1000 -1000 -1000 -10 {float(score)!r}"


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Read a KITTI ``calib`` file into ``{"P0": (3,4), ..., "R0_rect": (3,3), "Tr_velo_to_cam": (3,4), ...}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"calib file not found: {path}")
    shapes = {"R0_rect": (3, 3), "R_rect": (3, 3)}
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(path.read_text(encoding="ascii", errors="strict").splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(f"{path}:{lineno}: expected 'KEY: v1 v2 ...', got {line[:40]!r}")
        key, vals = line.split(":", 1)
        try:
            arr = np.array([float(v) for v in vals.split()], dtype=np.float64)
        except ValueError:
            raise DataError(f"{path}:{lineno}: non-numeric value in {key!r}") from None
        shape = shapes.get(key, (3, 4))
        if arr.size != shape[0] * shape[1]:
            raise DataError(f"{path}:{lineno}: {key} has {arr.size} values, expected {shape[0] * shape[1]}")
        out[key] = arr.reshape(shape)
    return out


class HighBitDepthWarning(UserWarning):
    """An image with more than 8 bits per sample was reduced to the 8 bits vcm codes."""


def _is_16_bit(im: Image.Image) -> bool:
    """True for an image stored with 16 bits per sample (before Pillow decodes it)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return True
    return any(len(t) > 3 and str(t[3]).endswith((";16B", ";16", ";16L")) for t in (im.tile or []))


def load_image(path: str | Path) -> torch.Tensor:
    """Load an image file as a uint8 RGB tensor [3, H, W]. Grey and RGBA images are converted to RGB.

    Images with 16 bits per sample (16-bit PNG, grey or colour) are reduced to 8 bits by one rule,
    the high byte of each sample (``v >> 8``, which is Pillow's own reduction of 16-bit colour), and
    a :class:`HighBitDepthWarning` says so: vcm's codecs and anchors code 8-bit images.

    Raises:
        DataError: the file is missing, empty, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"image file is empty: {path}; expected a PNG/JPEG image")
    try:
        with Image.open(path) as im:
            high_bit_depth = _is_16_bit(im)
            im.load()
            if high_bit_depth:
                warnings.warn(f"{path}: 16 bits per sample, coded as 8 (the high byte of each sample); vcm codes "
                              "8-bit images", HighBitDepthWarning, stacklevel=2)
            if im.mode != "RGB":
                if im.mode not in ("L", "RGBA", "P", "LA", "I;16", "I;16B", "I;16L", "I", "CMYK", "YCbCr"):
                    warnings.warn(f"{path}: unusual image mode {im.mode}, converting to RGB", stacklevel=2)
                if im.mode.startswith("I"):
                    # 16-bit grey: the same high-byte rule as Pillow applies to 16-bit colour (a plain
                    # convert would clip every value above 255 to white)
                    a = np.asarray(im).astype(np.int64)
                    im = Image.fromarray(np.clip(a >> 8, 0, 255).astype(np.uint8))
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}; expected a complete PNG/JPEG file") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


@dataclass
class ClassSpec:
    """Which KITTI types are objects, which are neighbours and which are ignore regions.

    Args:
        classes: object classes, label i+1 = classes[i].
        neighbours: type -> class it is a neighbour of (ignored for that class by KITTI's evaluation).
        class_map: extra type -> class mapping (e.g. ``{"Van": "Car"}`` to train on vans as cars).
        ignore_types: types kept as ignore regions (KITTI's ``DontCare``).
    """

    classes: Sequence[str] = DEFAULT_CLASSES
    neighbours: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_NEIGHBOURS))
    class_map: dict[str, str] = field(default_factory=dict)
    ignore_types: Sequence[str] = ("DontCare",)

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        if not self.classes:
            raise DataError("data.classes is empty; expected at least one class, e.g. [Car, Pedestrian, Cyclist]")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"data.classes has duplicates: {self.classes}")
        for src, dst in {**dict(self.neighbours), **dict(self.class_map)}.items():
            # A neighbour of an unconfigured class is simply irrelevant; a class_map target must exist.
            if dst not in self.classes and src in self.class_map:
                raise DataError(f"data.class_map maps {src!r} to {dst!r}, which is not in data.classes {self.classes}")
        self.neighbours = {k: v for k, v in dict(self.neighbours).items() if v in self.classes and k not in self.class_map}
        self.class_map = dict(self.class_map)
        self.ignore_types = list(self.ignore_types)

    def label_of(self, kitti_type: str) -> int:
        """1-based label of a type that is an object, else 0."""
        name = self.class_map.get(kitti_type, kitti_type)
        return self.classes.index(name) + 1 if name in self.classes else 0


def objects_to_target(
    objects: Sequence[KittiObject],
    spec: ClassSpec,
    height: int,
    width: int,
    image_id: int,
    name: str,
    source: str = "",
) -> dict:
    """Turn parsed objects into vcm's target dict (see ``vcm.data`` docs); boxes are clipped to the image."""
    boxes, labels, trunc, occ = [], [], [], []
    ignore, nb_boxes, nb_labels = [], [], []
    clipped = 0
    for obj in objects:
        x1, y1, x2, y2 = obj.bbox
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            clipped += 1
        if cx2 <= cx1 or cy2 <= cy1:
            continue  # degenerate after clipping: nothing of it is in the image
        box = [cx1, cy1, cx2, cy2]
        if obj.type in spec.ignore_types:
            ignore.append(box)
            continue
        label = spec.label_of(obj.type)
        if label:
            boxes.append(box)
            labels.append(label)
            trunc.append(obj.truncated)
            occ.append(obj.occluded)
        elif obj.type in spec.neighbours:
            nb_boxes.append(box)
            nb_labels.append(spec.classes.index(spec.neighbours[obj.type]) + 1)
    if clipped:
        # KITTI's own labels sit up to a pixel outside the image; more than that hints at a size mismatch.
        warnings.warn(f"{source or name}: {clipped} box(es) outside the {width}x{height} image were clipped", stacklevel=2)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "truncation": torch.tensor(trunc, dtype=torch.float32),
        "occlusion": torch.tensor(occ, dtype=torch.int64),
        "ignore_boxes": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
        "neighbour_boxes": torch.tensor(nb_boxes, dtype=torch.float32).reshape(-1, 4),
        "neighbour_labels": torch.tensor(nb_labels, dtype=torch.int64),
        "image_id": int(image_id),
        "name": name,
        "orig_size": torch.tensor([height, width], dtype=torch.int64),
    }


@dataclass(frozen=True)
class KittiFrame:
    """One frame of an index: its id, image path and (for the object layout) label path."""

    frame_id: str  # "000012" or, for tracking, "0004/000012"
    image: Path
    label: Path | None
    group: str  # split unit: the frame itself, or the tracking sequence


def index_kitti(root: str | Path, subset: str = "training") -> list[KittiFrame]:
    """List the frames of a KITTI root, checking that every image has its label and the reverse.

    Raises:
        DataError: the root does not exist or has no KITTI layout (with how to get KITTI), or an image
            has no label file or a label file has no image.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"KITTI root {root} does not exist. {KITTI_HOWTO}")
    base = root / subset
    if (base / "image_2").is_dir():
        images = {p.stem: p for p in sorted((base / "image_2").iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg")}
        label_dir = base / "label_2"
        if not label_dir.is_dir():
            raise DataError(f"{label_dir} does not exist; expected KITTI label_2 files beside {base / 'image_2'}. {KITTI_HOWTO}")
        labels = {p.stem: p for p in sorted(label_dir.glob("*.txt"))}
        missing_labels = sorted(set(images) - set(labels))
        missing_images = sorted(set(labels) - set(images))
        if missing_labels:
            raise DataError(f"{len(missing_labels)} image(s) in {base / 'image_2'} have no label file in {label_dir}: {missing_labels[:5]}")
        if missing_images:
            raise DataError(f"{len(missing_images)} label file(s) in {label_dir} have no image in {base / 'image_2'}: {missing_images[:5]}")
        if not images:
            raise DataError(f"{base / 'image_2'} holds no images. {KITTI_HOWTO}")
        return [KittiFrame(k, images[k], labels[k], group=k) for k in sorted(images)]
    if (base / "image_02").is_dir():
        frames = []
        for seq in sorted(p for p in (base / "image_02").iterdir() if p.is_dir()):
            for img in sorted(seq.glob("*.png")):
                frames.append(KittiFrame(f"{seq.name}/{img.stem}", img, base / "label_02" / f"{seq.name}.txt", group=seq.name))
        if not frames:
            raise DataError(f"{base / 'image_02'} holds no sequences with PNG frames. {KITTI_HOWTO}")
        return frames
    raise DataError(f"{root} has no {subset}/image_2 (object) or {subset}/image_02 (tracking) folder. {KITTI_HOWTO}")


def parse_tracking_labels(path: Path) -> dict[int, list[KittiObject]]:
    """Parse a KITTI tracking ``label_02/SSSS.txt`` (frame, track id, then the 15 object fields)."""
    if not path.is_file():
        raise DataError(f"tracking label file not found: {path}")
    out: dict[int, list[KittiObject]] = {}
    for lineno, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        toks = line.split()
        if not toks:
            continue
        if len(toks) not in (17, 18):
            raise DataError(f"{path}:{lineno}: {len(toks)} fields, expected 17 (frame track_id + 15 KITTI fields)")
        frame = int(_parse_float(toks[0], path, lineno, "frame"))
        out.setdefault(frame, []).append(parse_label_line(" ".join(toks[2:]), path, lineno))
    return out


class KittiDataset(Dataset):
    """KITTI frames as ``(image uint8 [3,H,W], target dict)``.

    Args:
        frames: the frames of this split (from :func:`index_kitti` and :mod:`vcm.data.splits`).
        spec: classes, neighbours and ignore types.
        transform: optional callable ``(image, target) -> (image, target)`` (e.g. a random crop).
        cache: keep decoded frames and parsed labels in memory after their first use (a KITTI frame
            is ~1.4 MB decoded; worth it for small sets read every few training steps).
    """

    def __init__(self, frames: Sequence[KittiFrame], spec: ClassSpec | None = None, transform=None,
                 cache: bool = False):
        self.frames = list(frames)
        self.spec = spec or ClassSpec()
        self.transform = transform
        self.cache = bool(cache)
        self._decoded: dict[int, tuple[torch.Tensor, dict]] = {}
        self._tracking_cache: dict[Path, dict[int, list[KittiObject]]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def objects(self, index: int) -> list[KittiObject]:
        fr = self.frames[index]
        if fr.label is None:
            return []
        if fr.group != fr.frame_id:  # tracking layout
            if fr.label not in self._tracking_cache:
                self._tracking_cache[fr.label] = parse_tracking_labels(fr.label)
            return self._tracking_cache[fr.label].get(int(fr.image.stem), [])
        return parse_label_file(fr.label)

    def __getitem__(self, index: int):
        if index in self._decoded:
            image, target = self._decoded[index]
            target = dict(target)  # transforms build new dicts and tensors; the cached ones stay intact
        else:
            fr = self.frames[index]
            image = load_image(fr.image)
            _, h, w = image.shape
            target = objects_to_target(self.objects(index), self.spec, h, w, image_id=index, name=fr.frame_id, source=str(fr.label))
            if self.cache:
                self._decoded[index] = (image, dict(target))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
