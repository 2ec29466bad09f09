"""Synthetic KITTI-format road scenes: images, ``label_2`` and ``calib`` files from a seed.

The generator renders a street seen from a car roof camera with KITTI's geometry (P2 intrinsics
scaled to the chosen size, camera 1.65 m above a flat ground, no pitch) and writes a tree that the
KITTI reader takes as it is::

    DIR/synthetic.json                      parameters (num, seed, size, generator version)
    DIR/training/image_2/000000.png         uint8 RGB
    DIR/training/label_2/000000.txt         KITTI label_2 lines (15 fields, no score)
    DIR/training/calib/000000.txt           P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo

What makes it useful as a stand-in for KITTI:

* Geometry is real. Every object has a 3D box (bottom-centre location, h/w/l in metres,
  rotation_y) sampled on the road, the sidewalk or a bike lane, and is drawn as a 3D shape
  (vehicles as shaded polyhedra with cabin, windows, wheels and lights; pedestrians and cyclists
  as limbs, torso and head, the cyclist on a bicycle) projected with P2, so image size follows
  distance (box height ~ f * h / z) and appearance follows the orientation.
* Labels are honest. The 2D box is the tight box of the projected shape, clipped to the image;
  ``truncated`` is the fraction of that projected box outside the image; ``occluded`` comes from
  the fraction of the object's own pixels still visible after every nearer object (labelled or
  not: poles and trees occlude too) is painted in far-to-near order (> 0.9 -> 0, > 0.5 -> 1,
  else 2). Objects that end up almost invisible (< 10 % of their pixels), and far tiny objects,
  are written as ``DontCare`` regions like KITTI's annotators did; occasional vans exercise the
  neighbour-class handling.
* Images are not trivial to code: sky gradient with clouds, asphalt and sidewalk texture, lane
  markings, facades with window grids, vegetation, a hazy skyline, shadows, blur and sensor noise.

Labels use the rectified frame of camera 2 itself: P2 has a zero translation column and R0_rect is
the identity, so ``P2 @ [x, y, z, 1]`` of a label's 3D box reproduces its 2D box. The other
matrices place cameras 0, 1, 3, the LiDAR and the IMU as KITTI's rig does.

Determinism: frame ``i`` of seed ``s`` is drawn from ``numpy.random.Generator(PCG64([s, i]))``
only, and the PNG is written by Pillow with fixed settings and no metadata, so the same
parameters give the same bytes (for the same numpy and Pillow versions).

Command line::

    python -m vcm.data.synthetic --out DIR --num N --seed S [--width 1242 --height 375] [--overwrite]
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vcm.errors import ConfigError, DataError
from vcm.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

#: Bump when the rendered pixels or labels change, so cached sets are not silently reused.
GENERATOR_VERSION = 1
GENERATOR_NAME = "vcm.data.synthetic"

# KITTI's P2 for 1242x375 frames (e.g. calib/000003.txt of the object benchmark).
KITTI_WIDTH, KITTI_HEIGHT = 1242, 375
KITTI_FOCAL, KITTI_CX, KITTI_CY = 721.5377, 609.5593, 172.854
CAMERA_HEIGHT = 1.65  # metres above the ground, KITTI's rig
MIN_WIDTH, MIN_HEIGHT = 64, 32

#: KITTI occlusion levels from the visible fraction of an object's pixels: > 0.9 -> 0, > 0.5 -> 1, else 2.
OCCLUSION_THRESHOLDS = (0.9, 0.5)
#: Objects with less than this fraction of their pixels visible are written as DontCare regions.
MIN_VISIBLE_FRACTION = 0.1
#: Labelled objects whose clipped box is lower than this (pixels) are written as DontCare regions.
MIN_BOX_HEIGHT = 10.0

_FAR_Z = 250.0  # skyline plane; the ground ends there
_HAZE_M = 320.0  # distance over which colours fade to the horizon sky colour


def _wrap_angle(a: float) -> float:
    """Angle in [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def _r2(v: float) -> float:
    """Round to KITTI's 2 decimals without producing -0.00."""
    return round(float(v), 2) + 0.0


# ---------------------------------------------------------------------------------------------
# Camera and calibration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    """Pinhole camera 2 of the KITTI rig, intrinsics scaled to the image size.

    Coordinates are KITTI's rectified camera frame: x right, y down, z forward, metres; the camera
    centre is the origin and the ground is the plane y = CAMERA_HEIGHT.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def kitti(cls, width: int = KITTI_WIDTH, height: int = KITTI_HEIGHT) -> Camera:
        """KITTI's P2 intrinsics scaled from 1242x375 to ``width`` x ``height``."""
        sx, sy = width / KITTI_WIDTH, height / KITTI_HEIGHT
        return cls(KITTI_FOCAL * sx, KITTI_FOCAL * sy, KITTI_CX * sx, KITTI_CY * sy, int(width), int(height))

    @property
    def K(self) -> np.ndarray:
        """Intrinsic matrix [3, 3]."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def P2(self) -> np.ndarray:
        """Projection matrix [3, 4] of the labelled camera (zero translation column)."""
        return np.hstack([self.K, np.zeros((3, 1))])

    def project(self, pts: np.ndarray) -> np.ndarray:
        """Project camera-frame points [N, 3] (z > 0) to pixels [N, 2] with P2."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        z = pts[:, 2]
        return np.stack([self.fx * pts[:, 0] / z + self.cx, self.fy * pts[:, 1] / z + self.cy], axis=1)


def _fmt_matrix(name: str, m: np.ndarray) -> str:
    return name + ": " + " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=np.float64).ravel())


def calib_text(camera: Camera) -> str:
    """KITTI ``calib`` file text for ``camera`` (same keys, order and number format as KITTI).

    Camera 2 is the reference here; cameras 0, 1 and 3 sit where KITTI's rig has them relative to
    camera 2 (0.06 m, 0.60 m and 0.54 m to its right), LiDAR and IMU as in KITTI.
    """
    K = camera.K

    def p_matrix(centre_x: float) -> np.ndarray:
        # P = K [I | -c] for a camera centred at (centre_x, 0, 0) with the same orientation.
        return K @ np.hstack([np.eye(3), np.array([[-centre_x], [0.0], [0.0]])])

    velo_to_cam = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
    imu_to_velo = np.array([[1.0, 0.0, 0.0, -0.81], [0.0, 1.0, 0.0, 0.32], [0.0, 0.0, 1.0, -0.80]])
    lines = [
        _fmt_matrix("P0", p_matrix(0.06)),
        _fmt_matrix("P1", p_matrix(0.60)),
        _fmt_matrix("P2", camera.P2),
        _fmt_matrix("P3", p_matrix(0.54)),
        _fmt_matrix("R0_rect", np.eye(3)),
        _fmt_matrix("Tr_velo_to_cam", velo_to_cam),
        _fmt_matrix("Tr_imu_to_velo", imu_to_velo),
    ]
    return "\n".join(lines) + "\n\n"


# ---------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------
@dataclass
class ObjectSpec:
    """One 3D object of a scene.

    Attributes:
        kind: shape drawn: ``Car``, ``Van``, ``Pedestrian``, ``Cyclist``, ``Pole`` or ``Tree``.
        dims: (h, w, l) in metres (KITTI order).
        loc: (x, y, z) bottom centre in camera coordinates, metres (y = CAMERA_HEIGHT on the ground).
        rotation_y: yaw around the camera y axis in radians (KITTI convention: -pi/2 drives away).
        label: KITTI type written to ``label_2`` (``"DontCare"`` for ignore regions) or None for
            unlabelled clutter.
        style: colours and pose parameters (seeded).
    """

    kind: str
    dims: tuple[float, float, float]
    loc: tuple[float, float, float]
    rotation_y: float
    label: str | None
    style: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LabelledObject:
    """One line of a KITTI ``label_2`` file as written by the generator.

    ``visible_fraction`` (not written) is the share of the object's in-image pixels left visible
    after nearer objects were painted; ``occluded`` is derived from it.
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    box: tuple[float, float, float, float]
    dims: tuple[float, float, float]
    loc: tuple[float, float, float]
    rotation_y: float
    visible_fraction: float

    def to_line(self) -> str:
        """The 15-field KITTI line (2 decimals, integer occlusion; DontCare with KITTI's -1/-10/-1000)."""
        x1, y1, x2, y2 = self.box
        if self.type == "DontCare":
            return f"DontCare -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} -1 -1 -1 -1000 -1000 -1000 -10"
        h, w, l = self.dims
        x, y, z = self.loc
        return (
            f"{self.type} {self.truncated:.2f} {self.occluded:d} {self.alpha:.2f} "
            f"{x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {h:.2f} {w:.2f} {l:.2f} "
            f"{x:.2f} {y:.2f} {z:.2f} {self.rotation_y:.2f}"
        )


@dataclass
class SyntheticFrame:
    """A rendered frame: ``image`` uint8 [H, W, 3] RGB, its labels and its camera."""

    image: np.ndarray
    objects: list[LabelledObject]
    camera: Camera

    def label_text(self) -> str:
        """The ``label_2`` file content (empty for a frame without objects)."""
        return "".join(o.to_line() + "\n" for o in self.objects)


@dataclass
class _Segments:
    """Facade segments along one side of the street (contiguous in z)."""

    starts: np.ndarray
    ends: np.ndarray
    kind: np.ndarray  # 0 gap, 1 building, 2 vegetation
    height: np.ndarray
    color: np.ndarray  # [n, 3]
    glass: np.ndarray  # [n, 3]
    pitch: np.ndarray  # window pitch along the street
    win_w: np.ndarray  # window width fraction of pitch
    win_off: np.ndarray
    floor_h: np.ndarray
    win_h: np.ndarray  # window height fraction of floor height
    ground_floor: np.ndarray
    wave: np.ndarray  # [n, 6] vegetation top profile: amplitudes, frequencies
    seed: np.ndarray  # per-segment hash seed for window brightness


@dataclass
class RoadLayout:
    """The street: lanes, markings, sidewalks, facades, sky and light of one frame (metres)."""

    lane_width: float
    lanes: list[tuple[float, float]]  # (centre x, heading rotation_y) of driving lanes
    parking: list[float]  # centre x of parking strips
    lanes_left: float  # x of the outer edge of the leftmost driving lane
    lanes_right: float
    road_left: float
    road_right: float
    wall_left: float
    wall_right: float
    markings: list[tuple[float, float, bool, float, float]]  # (x, width, dashed, period, dash length)
    dash_phase: float
    segments: dict[str, _Segments]
    asphalt: np.ndarray
    sidewalk: np.ndarray
    grass: np.ndarray
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    cloudiness: float
    skyline_color: np.ndarray
    skyline: np.ndarray  # [8] sine parameters of the skyline profile
    sun: np.ndarray  # unit vector towards the sun (camera frame)
    gain: float
    noise_sigma: float
    tile: float


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of frame ``index`` of a set with ``seed`` (independent streams)."""
    return np.random.Generator(np.random.PCG64([int(seed), int(index)]))


_FACADE_COLORS = np.array([
    [205, 190, 165], [222, 220, 212], [200, 155, 140], [150, 80, 62], [140, 140, 138],
    [212, 192, 128], [180, 170, 150], [120, 110, 100], [190, 200, 205],
], dtype=np.float32)
_CAR_COLORS = np.array([
    [228, 228, 226], [172, 174, 180], [32, 32, 36], [80, 82, 88], [175, 28, 30], [35, 62, 145],
    [24, 34, 72], [40, 92, 52], [215, 182, 38], [205, 102, 30], [192, 172, 132], [112, 70, 42],
    [120, 30, 60], [60, 140, 170],
], dtype=np.float32)
_VAN_COLORS = np.array([[236, 236, 234], [236, 236, 234], [180, 182, 186], [40, 70, 140], [200, 40, 35]], dtype=np.float32)
_SKIN = np.array([[232, 190, 160], [200, 150, 110], [150, 100, 70], [95, 65, 45]], dtype=np.float32)
_HAIR = np.array([[30, 25, 20], [80, 55, 35], [190, 160, 100], [120, 120, 120]], dtype=np.float32)
_PANTS = np.array([[30, 35, 60], [25, 25, 28], [90, 90, 95], [170, 150, 110], [60, 45, 35]], dtype=np.float32)


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 12.0) -> np.ndarray:
    c = palette[rng.integers(len(palette))] + rng.normal(0.0, jitter, 3)
    return np.clip(c, 0, 255).astype(np.float32)


def _sample_segments(rng: np.random.Generator, z_max: float = 170.0) -> _Segments:
    rows: list[dict] = []
    z = 0.0
    while z < z_max:
        r = rng.random()
        kind = 1 if r < 0.58 else (2 if r < 0.86 else 0)
        length = {0: rng.uniform(4, 14), 1: rng.uniform(8, 30), 2: rng.uniform(6, 24)}[kind]
        height = rng.uniform(6, 18) if kind == 1 else rng.uniform(1.8, 6.5)
        greens = np.array([rng.uniform(40, 80), rng.uniform(85, 125), rng.uniform(30, 60)], np.float32)
        rows.append({
            "start": z, "end": z + length, "kind": kind, "height": height,
            "color": _pick(rng, _FACADE_COLORS, 10) if kind == 1 else greens,
            "glass": np.array([rng.uniform(40, 90), rng.uniform(55, 100), rng.uniform(70, 120)], np.float32),
            "pitch": rng.uniform(2.4, 4.0), "win_w": rng.uniform(0.35, 0.6), "win_off": rng.uniform(0, 3),
            "floor_h": rng.uniform(2.8, 3.5), "win_h": rng.uniform(0.4, 0.6), "ground_floor": rng.uniform(0.6, 1.2),
            "wave": np.array([rng.uniform(0.3, 1.2), rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.5),
                           rng.uniform(0.8, 2.5), rng.uniform(0, 6.3), rng.uniform(0, 6.3)], np.float32),
            "seed": int(rng.integers(1, 2**20)),
        })
        z += length
    return _Segments(
        starts=np.array([r["start"] for r in rows]), ends=np.array([r["end"] for r in rows]),
        kind=np.array([r["kind"] for r in rows]), height=np.array([r["height"] for r in rows]),
        color=np.stack([r["color"] for r in rows]), glass=np.stack([r["glass"] for r in rows]),
        pitch=np.array([r["pitch"] for r in rows]), win_w=np.array([r["win_w"] for r in rows]),
        win_off=np.array([r["win_off"] for r in rows]), floor_h=np.array([r["floor_h"] for r in rows]),
        win_h=np.array([r["win_h"] for r in rows]), ground_floor=np.array([r["ground_floor"] for r in rows]),
        wave=np.stack([r["wave"] for r in rows]), seed=np.array([r["seed"] for r in rows], dtype=np.int64),
    )


def sample_layout(rng: np.random.Generator) -> RoadLayout:
    """Sample a street layout (lanes, sidewalks, facades, sky, light)."""
    lane_w = rng.uniform(3.1, 3.8)
    n_left = int(rng.choice([1, 1, 1, 2]))  # lanes left of the ego lane
    n_right = int(rng.choice([0, 0, 0, 1]))
    two_way = rng.random() < 0.8
    c0 = rng.uniform(-0.4, 0.4)  # ego lane centre (the camera rides at x = 0)
    lanes = []
    for k in range(-n_left, n_right + 1):
        heading = math.pi / 2 if (two_way and k < 0) else -math.pi / 2
        lanes.append((c0 + k * lane_w, heading))
    lanes_left = c0 - (n_left + 0.5) * lane_w
    lanes_right = c0 + (n_right + 0.5) * lane_w
    parking = []
    road_left, road_right = lanes_left, lanes_right
    if rng.random() < 0.55:
        road_left -= 2.2
        parking.append(road_left + 1.1)
    if rng.random() < 0.65:
        road_right += 2.2
        parking.append(road_right - 1.1)
    wall_left = road_left - rng.uniform(2.0, 4.5)
    wall_right = road_right + rng.uniform(2.0, 4.5)
    markings = [(lanes_left + 0.2, 0.15, False, 1.0, 1.0), (lanes_right - 0.2, 0.15, False, 1.0, 1.0)]
    for k in range(-n_left, n_right):
        x = c0 + (k + 0.5) * lane_w
        centre_line = two_way and k == -1
        solid = centre_line and rng.random() < 0.3
        markings.append((x, 0.15 if centre_line else 0.12, not solid, rng.uniform(8, 12), rng.uniform(2.5, 4.0)))
    overcast = rng.random() < 0.3
    if overcast:
        sky_top = np.array([150, 156, 168], np.float32) + rng.normal(0, 6, 3).astype(np.float32)
        sky_horizon = np.array([205, 208, 214], np.float32) + rng.normal(0, 5, 3).astype(np.float32)
    else:
        sky_top = np.array([62, 112, 190], np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        sky_horizon = np.array([185, 208, 232], np.float32) + rng.normal(0, 6, 3).astype(np.float32)
    sun = np.array([rng.uniform(-0.8, 0.8), -rng.uniform(0.45, 0.95), rng.uniform(-0.6, 0.6)])
    sun /= np.linalg.norm(sun)
    a = rng.uniform(82, 118)
    return RoadLayout(
        lane_width=lane_w, lanes=lanes, parking=parking, lanes_left=lanes_left, lanes_right=lanes_right,
        road_left=road_left, road_right=road_right, wall_left=wall_left, wall_right=wall_right,
        markings=markings, dash_phase=rng.uniform(0, 12),
        segments={"left": _sample_segments(rng), "right": _sample_segments(rng)},
        asphalt=np.array([a, a + rng.uniform(-2, 3), a + rng.uniform(0, 7)], np.float32),
        sidewalk=np.array([rng.uniform(145, 185)] * 3, np.float32) + rng.normal(0, 4, 3).astype(np.float32),
        grass=np.array([rng.uniform(60, 110), rng.uniform(95, 135), rng.uniform(40, 70)], np.float32),
        sky_top=np.clip(sky_top, 0, 255), sky_horizon=np.clip(sky_horizon, 0, 255),
        cloudiness=float(rng.uniform(0.0, 0.8)) if not overcast else 0.2,
        skyline_color=np.array([rng.uniform(95, 135), rng.uniform(110, 145), rng.uniform(110, 140)], np.float32),
        skyline=np.array([rng.uniform(5, 16), rng.uniform(2, 8), rng.uniform(0.01, 0.03), rng.uniform(0, 6.3),
                          rng.uniform(1, 4), rng.uniform(0.05, 0.15), rng.uniform(0, 6.3), rng.uniform(0.5, 2)]),
        sun=sun, gain=float(rng.uniform(0.88, 1.08)), noise_sigma=float(rng.uniform(1.5, 3.5)),
        tile=float(rng.uniform(0.4, 1.0)),
    )


def _vehicle_style(rng: np.random.Generator, van: bool) -> dict:
    return {
        "color": _pick(rng, _VAN_COLORS if van else _CAR_COLORS, 10),
        "glass": np.array([rng.uniform(25, 60), rng.uniform(35, 70), rng.uniform(45, 85)], np.float32),
        "cab_shift": float(rng.uniform(-0.04, 0.04)),
        "wheel_r": float(rng.uniform(0.29, 0.33) if not van else rng.uniform(0.32, 0.36)),
    }


def _person_style(rng: np.random.Generator) -> dict:
    shirt = np.clip(np.array([rng.uniform(20, 235), rng.uniform(20, 235), rng.uniform(20, 235)]), 0, 255)
    return {
        "shirt": shirt.astype(np.float32), "pants": _pick(rng, _PANTS, 8), "skin": _pick(rng, _SKIN, 6),
        "hair": _pick(rng, _HAIR, 6), "stride": float(rng.uniform(-1, 1)), "crank": float(rng.uniform(0, 2 * math.pi)),
        "frame": _pick(rng, _CAR_COLORS, 20),
    }


_DIMS = {  # mean, std, low, high of (h, w, l)
    "Car": ((1.52, 1.63, 3.9), (0.08, 0.08, 0.3), (1.35, 1.45, 3.3), (1.75, 1.85, 4.7)),
    "Van": ((2.15, 1.88, 4.9), (0.12, 0.07, 0.35), (1.9, 1.75, 4.3), (2.5, 2.05, 5.6)),
    "Pedestrian": ((1.75, 0.6, 0.8), (0.09, 0.06, 0.12), (1.5, 0.45, 0.5), (1.95, 0.75, 1.1)),
    "Cyclist": ((1.7, 0.6, 1.8), (0.08, 0.05, 0.1), (1.5, 0.5, 1.6), (1.9, 0.72, 2.0)),
}


def _sample_dims(rng: np.random.Generator, kind: str) -> tuple[float, float, float]:
    mean, std, lo, hi = _DIMS[kind]
    d = np.clip(rng.normal(mean, std), lo, hi)
    return (_r2(d[0]), _r2(d[1]), _r2(d[2]))


def make_object(kind: str, x: float, z: float, rotation_y: float, rng: np.random.Generator,
                dims: Sequence[float] | None = None, label: str | None = "") -> ObjectSpec:
    """An object on the ground at (x, z), with sampled (or given) dimensions and style.

    Args:
        kind: ``Car``, ``Van``, ``Pedestrian``, ``Cyclist``, ``Pole`` or ``Tree``.
        x, z: lateral position and depth of the bottom centre, metres.
        rotation_y: yaw in radians.
        rng: generator for dimensions and colours.
        dims: (h, w, l) to use instead of sampling.
        label: KITTI type to write; ``""`` (default) means ``kind`` for labelled kinds and None
            (unlabelled) for clutter.

    Values are rounded to KITTI's 2 decimals before rendering, so the written label describes
    exactly the drawn object.
    """
    if kind in ("Car", "Van", "Pedestrian", "Cyclist"):
        d = _sample_dims(rng, kind) if dims is None else tuple(_r2(v) for v in dims)
        style = _vehicle_style(rng, kind == "Van") if kind in ("Car", "Van") else _person_style(rng)
        default_label: str | None = kind
    elif kind == "Pole":
        hh = rng.uniform(4.0, 7.5)
        d = (_r2(hh), 0.16, 0.16) if dims is None else tuple(_r2(v) for v in dims)
        style = {"color": np.array([rng.uniform(70, 140)] * 3, np.float32), "sign": bool(rng.random() < 0.4),
                 "sign_color": _pick(rng, np.array([[30, 80, 170], [200, 30, 30], [240, 240, 240]], np.float32), 8)}
        default_label = None
    elif kind == "Tree":
        hh = rng.uniform(4.5, 8.0)
        d = (_r2(hh), 0.3, 0.3) if dims is None else tuple(_r2(v) for v in dims)
        style = {"trunk": np.array([rng.uniform(60, 95), rng.uniform(45, 70), rng.uniform(30, 45)], np.float32),
                 "crown": np.array([rng.uniform(40, 85), rng.uniform(80, 125), rng.uniform(30, 55)], np.float32),
                 "crown_r": float(rng.uniform(1.1, 2.0)), "blobs": rng.uniform(-1, 1, (4, 3))}
        default_label = None
    else:
        raise ConfigError(f"unknown object kind {kind!r}; expected one of Car, Van, Pedestrian, Cyclist, Pole, Tree")
    ry = _r2(_wrap_angle(rotation_y))
    return ObjectSpec(kind=kind, dims=d, loc=(_r2(x), _r2(CAMERA_HEIGHT), _r2(z)), rotation_y=ry,
                      label=default_label if label == "" else label, style=style)


def _footprint(spec: ObjectSpec, margin: float) -> np.ndarray:
    _h, w, l = spec.dims
    if spec.kind == "Tree":
        w = l = 0.5
    c, s = math.cos(spec.rotation_y), math.sin(spec.rotation_y)
    hl, hw = l / 2 + margin, w / 2 + margin
    lx = np.array([hl, hl, -hl, -hl])
    lz = np.array([hw, -hw, -hw, hw])
    return np.stack([c * lx + s * lz + spec.loc[0], -s * lx + c * lz + spec.loc[2]], axis=1)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex polygons [4, 2]."""
    for poly in (a, b):
        for i in range(len(poly)):
            e = poly[(i + 1) % len(poly)] - poly[i]
            axis = np.array([-e[1], e[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _propose(kind: str, rng: np.random.Generator, lay: RoadLayout) -> ObjectSpec:
    if kind in ("Car", "Van", "FarVehicle"):
        shape = "Van" if (kind == "Van" or (kind == "FarVehicle" and rng.random() < 0.15)) else "Car"
        if kind == "FarVehicle":
            cx, heading = lay.lanes[rng.integers(len(lay.lanes))]
            return make_object(shape, cx + rng.normal(0, 0.3), rng.uniform(62, 95), heading + rng.normal(0, 0.05),
                               rng, label="DontCare")
        z = rng.uniform(5, 45) if rng.random() < 0.85 else rng.uniform(45, 60)
        if lay.parking and rng.random() < 0.4:
            cx = lay.parking[rng.integers(len(lay.parking))] + rng.normal(0, 0.12)
            ry = (math.pi / 2 if rng.random() < 0.5 else -math.pi / 2) + rng.normal(0, 0.04)
        else:
            cx, ry = lay.lanes[rng.integers(len(lay.lanes))]
            cx += rng.normal(0, 0.25)
            ry = rng.uniform(-math.pi, math.pi) if rng.random() < 0.08 else ry + rng.normal(0, 0.05)
        return make_object(shape, cx, z, ry, rng)
    if kind == "Pedestrian":
        if rng.random() < 0.75:
            side = 1 if rng.random() < 0.5 else -1
            edge, wall = (lay.road_right, lay.wall_right) if side > 0 else (-lay.road_left, -lay.wall_left)
            x = side * rng.uniform(edge + 0.5, max(edge + 0.6, wall - 0.5))
            z = rng.uniform(5, 40)
            ry = rng.uniform(-math.pi, math.pi) if rng.random() < 0.3 else \
                (math.pi / 2 if rng.random() < 0.5 else -math.pi / 2) + rng.normal(0, 0.25)
        else:
            x = rng.uniform(lay.road_left + 0.8, lay.road_right - 0.8)
            z = rng.uniform(7, 35)
            ry = (0.0 if rng.random() < 0.5 else math.pi) + rng.normal(0, 0.3)
        return make_object("Pedestrian", x, z, ry, rng)
    if kind == "Cyclist":
        r = rng.random()
        if r < 0.45:
            x, ry = lay.lanes_right - 0.8, -math.pi / 2
        elif r < 0.7:
            x, ry = lay.lanes_left + 0.8, lay.lanes[0][1]
        else:
            x, ry = lay.lanes[rng.integers(len(lay.lanes))]
        return make_object("Cyclist", x + rng.normal(0, 0.15), rng.uniform(6, 45), ry + rng.normal(0, 0.08), rng)
    raise ConfigError(f"unknown object kind {kind!r}")


#: Expected objects per frame (Poisson means) of each kind; DontCare are far vehicles.
OBJECT_RATES = {"Car": 3.9, "Van": 0.35, "Pedestrian": 1.3, "Cyclist": 0.6, "FarVehicle": 0.9}
EMPTY_FRAME_PROBABILITY = 0.05


def sample_objects(rng: np.random.Generator, camera: Camera, lay: RoadLayout) -> list[ObjectSpec]:
    """Sample the objects of a frame: clutter (poles, trees) and road users without collisions.

    Proposals that collide with a placed object, or whose projection is mostly (> 75 %) outside
    the image, are retried (up to 25 times, then dropped).
    """
    objects: list[ObjectSpec] = []
    prints: list[np.ndarray] = []
    for side in (-1, 1):
        edge = lay.road_right if side > 0 else -lay.road_left
        wall = lay.wall_right if side > 0 else -lay.wall_left
        for _ in range(rng.poisson(1.4)):
            objects.append(make_object("Pole", side * (edge + 0.45), rng.uniform(4, 80), 0.0, rng))
        for _ in range(rng.poisson(0.7)):
            x = side * min(edge + rng.uniform(0.9, 1.6), wall - 0.5)
            objects.append(make_object("Tree", x, rng.uniform(6, 80), 0.0, rng))
    prints = [_footprint(o, 0.1) for o in objects]
    if rng.random() < EMPTY_FRAME_PROBABILITY:
        return objects
    kinds: list[str] = []
    for kind, rate in OBJECT_RATES.items():
        kinds += [kind] * int(rng.poisson(rate))
    for kind in kinds:
        for _ in range(25):
            spec = _propose(kind, rng, lay)
            fp = _footprint(spec, 0.25)
            if any(_overlap(fp, p) for p in prints):
                continue
            box = _object_extent(spec, camera)
            if box is None or _truncation(box, camera) > 0.75:
                continue
            objects.append(spec)
            prints.append(fp)
            break
    return objects


# ---------------------------------------------------------------------------------------------
# Object geometry: drawing operations in 3D, projected to 2D
# ---------------------------------------------------------------------------------------------
@dataclass
class _Op:
    kind: str  # "poly", "capsule", "disc", "ring"
    pts: np.ndarray  # [N, 3] camera frame
    color: np.ndarray
    radius: float = 0.0  # metres: capsule / disc radius, ring tyre width


@dataclass
class _Env:
    sun: np.ndarray
    haze_color: np.ndarray


_NEUTRAL_ENV = _Env(sun=np.array([0.0, -1.0, 0.0]), haze_color=np.array([200.0, 200.0, 200.0]))

# Hexahedron faces: bottom, top, z0 side, front (+x), z1 side, back (-x).
_HEX_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7))
_HEX_NAMES = ("bottom", "top", "z0", "front", "z1", "back")


def _hexa(xb, zb, yb, xt, zt, yt) -> np.ndarray:
    """8 local vertices of a box-like frustum: bottom ring at height yb, top ring at yt."""
    return np.array([
        [xb[0], yb, zb[0]], [xb[1], yb, zb[0]], [xb[1], yb, zb[1]], [xb[0], yb, zb[1]],
        [xt[0], yt, zt[0]], [xt[1], yt, zt[0]], [xt[1], yt, zt[1]], [xt[0], yt, zt[1]],
    ], dtype=np.float64)


def _rot(ry: float) -> np.ndarray:
    c, s = math.cos(ry), math.sin(ry)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _faces(verts: np.ndarray, faces: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(points, outward normal, faces the camera) of each face of a convex polyhedron, in order."""
    centroid = verts.mean(axis=0)
    out: list = [None] * len(faces)
    groups: dict[int, list[int]] = {}
    for j, idx in enumerate(faces):
        groups.setdefault(len(idx), []).append(j)
    for js in groups.values():  # faces with the same vertex count are handled together
        P = verts[np.array([faces[j] for j in js])]  # [F, k, 3]
        fc = P.mean(axis=1)
        n = np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        n *= np.where(np.einsum("fi,fi->f", n, fc - centroid) < 0, -1.0, 1.0)[:, None]
        vis = np.einsum("fi,fi->f", n, fc) < -1e-9
        for a, j in enumerate(js):
            out[j] = (P[a], n[a], bool(vis[a]))
    return out


def _shade(color: np.ndarray, normal: np.ndarray, env: _Env, depth: float, ambient: float = 0.58) -> np.ndarray:
    lit = ambient + (1.0 - ambient) * 1.15 * max(0.0, float(np.dot(normal, env.sun)))
    return _haze(np.clip(color * lit, 0, 255), depth, env)


def _haze(color: np.ndarray, depth: float, env: _Env) -> np.ndarray:
    k = 1.0 - math.exp(-max(depth, 0.0) / _HAZE_M)
    return color * (1.0 - k) + env.haze_color * k


def _vehicle_ops(spec: ObjectSpec, env: _Env) -> list[_Op]:
    h, w, l = spec.dims
    st = spec.style
    van = spec.kind == "Van"
    R, loc = _rot(spec.rotation_y), np.asarray(spec.loc)
    depth = spec.loc[2]

    def world(p: np.ndarray) -> np.ndarray:
        return p @ R.T + loc

    r = st["wheel_r"]
    clear = 0.2 if van else 0.16
    belt = (0.5 if van else 0.56) * h
    body = world(_hexa((-l / 2, l / 2), (-w / 2, w / 2), -clear, (-l / 2, l / 2), (-w / 2, w / 2), -belt))
    if van:
        cab = _hexa((-l / 2, 0.31 * l), (-w / 2 + 0.02, w / 2 - 0.02), -belt,
                    (-l / 2, 0.17 * l), (-w / 2 + 0.07, w / 2 - 0.07), -h)
    else:
        sh = st["cab_shift"] * l
        cab = _hexa((-0.40 * l + sh, 0.21 * l + sh), (-w / 2 + 0.04, w / 2 - 0.04), -belt,
                    (-0.29 * l + sh, 0.05 * l + sh), (-w / 2 + 0.13, w / 2 - 0.13), -h)
    cab = world(cab)
    color = st["color"]
    body_faces = dict(zip(_HEX_NAMES, _faces(body, _HEX_FACES)))
    ops_far: list[_Op] = []
    ops: list[_Op] = []
    # Wheels: far wheels go before the body (seen only below it); the outer disc of the near side after it.
    wheelbase = 0.62 * l
    t = np.linspace(0, 2 * np.pi, 13)[:-1]
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    tyre = np.array([28.0, 28.0, 30.0], np.float32)
    near_discs: list[_Op] = []
    for side, zs in (("z0", -w / 2), ("z1", w / 2)):
        z_in = zs + (0.22 if zs < 0 else -0.22)
        for sx in (-0.5, 0.5):
            cx = sx * wheelbase
            ring = np.stack([cx + r * circle[:, 0], -r + r * circle[:, 1]], axis=1)
            outer = world(np.column_stack([ring, np.full(12, zs)]))
            inner = world(np.column_stack([ring, np.full(12, z_in)]))
            verts = np.vstack([outer, inner])
            faces = [tuple(range(12)), tuple(range(12, 24))] + [(i, (i + 1) % 12, 12 + (i + 1) % 12, 12 + i) for i in range(12)]
            for p, n, vis in _faces(verts, faces):
                if vis:
                    ops_far.append(_Op("poly", p, _shade(tyre, n, env, depth, 0.8)))
            if body_faces[side][2]:
                n = body_faces[side][1]
                near_discs.append(_Op("poly", outer, _shade(tyre, n, env, depth, 0.8)))
                hub = world(np.column_stack([cx + 0.55 * r * circle[:, 0], -r + 0.55 * r * circle[:, 1], np.full(12, zs)]))
                near_discs.append(_Op("poly", hub, _shade(np.array([150.0, 150.0, 155.0]), n, env, depth)))
    ops_far.sort(key=lambda o: -float(np.linalg.norm(o.pts.mean(axis=0))))
    ops += ops_far
    for name in _HEX_NAMES:
        p, n, vis = body_faces[name]
        if vis:
            ops.append(_Op("poly", p, _shade(color, n, env, depth)))
    # Lights and plates on the visible front / back faces.
    for name, xf, lamp in (("back", -l / 2 - 0.005, np.array([200.0, 25.0, 25.0])),
                           ("front", l / 2 + 0.005, np.array([235.0, 230.0, 200.0]))):
        if not body_faces[name][2]:
            continue
        y0, y1 = -belt + 0.06, -belt + 0.2
        for za, zb in ((w / 2 - 0.34, w / 2 - 0.06), (-w / 2 + 0.06, -w / 2 + 0.34)):
            q = np.array([[xf, y0, za], [xf, y0, zb], [xf, y1, zb], [xf, y1, za]])
            ops.append(_Op("poly", world(q), _haze(lamp, depth, env)))
        q = np.array([[xf, -clear - 0.14, -0.26], [xf, -clear - 0.14, 0.26], [xf, -clear - 0.25, 0.26], [xf, -clear - 0.25, -0.26]])
        ops.append(_Op("poly", world(q), _haze(np.array([225.0, 225.0, 215.0]), depth, env)))
        if name == "front":
            q = np.array([[xf, -belt + 0.24, -0.3], [xf, -belt + 0.24, 0.3], [xf, -belt + 0.06, 0.3], [xf, -belt + 0.06, -0.3]])
            ops.append(_Op("poly", world(q), _haze(np.array([35.0, 35.0, 38.0]), depth, env)))
    ops += near_discs
    cab_faces = dict(zip(_HEX_NAMES, _faces(cab, _HEX_FACES)))
    for name in _HEX_NAMES:
        p, n, vis = cab_faces[name]
        if vis:
            ops.append(_Op("poly", p, _shade(color, n, env, depth)))
    glass = st["glass"]
    for name in ("z0", "front", "z1", "back"):
        p, n, vis = cab_faces[name]
        if not vis:
            continue
        c = p.mean(axis=0)
        inset = c + (p - c) * (0.84 if name in ("z0", "z1") else 0.86)
        # Skies reflect in glass facing up; a touch of the normal's lighting keeps it 3D.
        ops.append(_Op("poly", inset, _shade(glass, n, env, depth, 0.85)))
    return ops


def _capsule(a, b, r, color) -> _Op:
    return _Op("capsule", np.array([a, b], dtype=np.float64), color, r)


def _person_ops(spec: ObjectSpec, env: _Env) -> list[_Op]:
    h, w, l = spec.dims
    st = spec.style
    R, loc = _rot(spec.rotation_y), np.asarray(spec.loc)
    depth = spec.loc[2]
    s = h / 1.75
    r_leg, r_arm, r_torso, r_head = 0.065 * s, 0.045 * s, 0.095 * s, 0.11 * s
    hip_y, sh_y = -0.50 * h, -0.80 * h
    stride = st["stride"] * max(l / 2 - r_leg, 0.05)
    arm_z = max(w / 2 - r_arm, 0.1)
    parts = []
    pants, shirt, skin, hair = (_haze(st[k], depth, env) for k in ("pants", "shirt", "skin", "hair"))
    for sgn in (-1, 1):
        parts.append(_capsule((0, hip_y, sgn * 0.08 * s), (sgn * stride, -r_leg, sgn * 0.1 * s), r_leg, pants))
        parts.append(_capsule((0, hip_y + 0.04, sgn * 0.07 * s), (0.02, sh_y + 0.05, sgn * 0.085 * s), r_torso, shirt))
        parts.append(_capsule((0, sh_y + 0.04, sgn * 0.8 * arm_z), (-sgn * 0.6 * stride, -0.47 * h, sgn * arm_z), r_arm,
                              shirt * 0.85))
    parts.append(_Op("disc", np.array([[0.02, -(h - r_head), 0.0]]), hair, r_head))
    head_ops = [_Op("disc", np.array([[0.03, -(h - r_head) + 0.02 * s, 0.0]]), skin, 0.8 * r_head)]
    return _to_world_sorted(parts, R, loc) + [_to_world(o, R, loc) for o in head_ops]


def _cyclist_ops(spec: ObjectSpec, env: _Env) -> list[_Op]:
    h, w, l = spec.dims
    st = spec.style
    R, loc = _rot(spec.rotation_y), np.asarray(spec.loc)
    depth = spec.loc[2]
    s, sl = h / 1.7, l / 1.8
    rw = 0.34 * sl
    rear, front = np.array([-(l / 2 - rw), -rw, 0.0]), np.array([l / 2 - rw, -rw, 0.0])
    bb = np.array([-0.05 * sl, -0.30, 0.0])
    seat = np.array([-0.28 * sl, -0.92 * s, 0.0])
    hbar = np.array([front[0] - 0.14 * sl, -1.02 * s, 0.0])
    frame = _haze(st["frame"], depth, env)
    dark = _haze(np.array([25.0, 25.0, 28.0]), depth, env)
    shirt, pants, skin, hair = (_haze(st[k], depth, env) for k in ("shirt", "pants", "skin", "hair"))
    parts = []
    t = np.linspace(0, 2 * np.pi, 21)[:-1]
    for hub in (rear, front):
        pts = np.stack([hub[0] + rw * np.cos(t), hub[1] + rw * np.sin(t), np.zeros_like(t)], axis=1)
        parts.append(_Op("ring", pts, dark, 0.05))
    for a, b in ((rear, bb), (rear, seat), (seat, bb), (bb, hbar), (seat, hbar), (hbar, front)):
        parts.append(_capsule(a, b, 0.025, frame))
    half_bar = max(w / 2 - 0.02, 0.15)
    parts.append(_capsule(hbar + [0, 0, -half_bar], hbar + [0, 0, half_bar], 0.02, dark))
    r_head = 0.11 * s
    hip = seat + np.array([0.0, -0.06, 0.0])
    shoulder = np.array([hbar[0] - 0.36 * sl, -(h - 0.30 * s), 0.0])
    for sgn in (-1, 1):
        parts.append(_capsule(hip + [0, 0, sgn * 0.07], shoulder + [0, 0, sgn * 0.08], 0.1 * s, shirt))
        parts.append(_capsule(shoulder + [0, 0, sgn * 0.18], hbar + [0, 0, sgn * (half_bar - 0.04)], 0.045 * s, shirt * 0.85))
        ang = st["crank"] + (0.0 if sgn < 0 else math.pi)
        pedal = bb + np.array([0.17 * math.cos(ang), 0.17 * math.sin(ang), sgn * 0.14])
        hip_s = hip + [0, 0, sgn * 0.1]
        knee = (hip_s + pedal) / 2 + np.array([0.2 * s, -0.08 * s, 0.0])
        parts.append(_capsule(hip_s, knee, 0.07 * s, pants))
        parts.append(_capsule(knee, pedal, 0.055 * s, pants))
    head = np.array([shoulder[0] + 0.1 * sl, -(h - r_head), 0.0])
    parts.append(_Op("disc", head[None], hair, r_head))
    return _to_world_sorted(parts, R, loc) + [_to_world(_Op("disc", (head + [0.03, 0.02 * s, 0])[None], skin, 0.8 * r_head), R, loc)]


def _clutter_ops(spec: ObjectSpec, env: _Env) -> list[_Op]:
    h = spec.dims[0]
    st = spec.style
    loc = np.asarray(spec.loc)
    depth = spec.loc[2]
    if spec.kind == "Pole":
        ops = [_capsule(loc + [0, -0.05, 0], loc + [0, -h, 0], 0.07, _haze(st["color"], depth, env))]
        if st["sign"]:
            c = loc + [0, -(h * 0.45), -0.02]
            q = np.array([c + [-0.3, -0.3, 0], c + [0.3, -0.3, 0], c + [0.3, 0.3, 0], c + [-0.3, 0.3, 0]])
            ops.append(_Op("poly", q, _haze(st["sign_color"], depth, env)))
        return ops
    r = st["crown_r"]
    ops = [_capsule(loc + [0, -0.05, 0], loc + [0, -(h - r), 0], 0.13, _haze(st["trunk"], depth, env))]
    centre = loc + [0, -(h - r), 0]
    for i, (bx, by, bz) in enumerate(st["blobs"]):
        shade = 0.8 + 0.1 * i
        ops.append(_Op("disc", (centre + [0.45 * r * bx, 0.3 * r * by, 0.2 * bz])[None],
                       _haze(st["crown"] * shade, depth + 0.2 * bz, env), r * 0.7))
    return ops


def _to_world(op: _Op, R: np.ndarray, loc: np.ndarray) -> _Op:
    return _Op(op.kind, op.pts @ R.T + loc, op.color, op.radius)


def _to_world_sorted(ops: list[_Op], R: np.ndarray, loc: np.ndarray) -> list[_Op]:
    """Transform local parts to the camera frame and paint them far to near."""
    ops = [_to_world(o, R, loc) for o in ops]
    ops.sort(key=lambda o: -float(np.linalg.norm(o.pts.mean(axis=0))))
    return ops


def _object_ops(spec: ObjectSpec, env: _Env = _NEUTRAL_ENV) -> list[_Op]:
    if spec.kind in ("Car", "Van"):
        return _vehicle_ops(spec, env)
    if spec.kind == "Pedestrian":
        return _person_ops(spec, env)
    if spec.kind == "Cyclist":
        return _cyclist_ops(spec, env)
    return _clutter_ops(spec, env)


@dataclass
class _Op2D:
    kind: str
    pts: np.ndarray  # [N, 2] pixels
    radii: np.ndarray  # [N] pixels (0 for polygons)
    color: tuple[int, int, int]


def _project_ops(ops: list[_Op], cam: Camera) -> list[_Op2D]:
    out = []
    for op in ops:
        uv = cam.project(op.pts)
        z = op.pts[:, 2]
        f = 0.5 * (cam.fx + cam.fy)
        radii = op.radius * f / z if op.kind != "poly" else np.zeros(len(z))
        if op.kind == "ring":
            radii = np.maximum(radii, 0.6)  # a tyre thinner than a pixel still shows
        out.append(_Op2D(op.kind, uv, radii, tuple(int(v) for v in np.clip(np.round(op.color), 0, 255))))
    return out


def _extent(ops2d: list[_Op2D]) -> tuple[float, float, float, float]:
    lo = np.min([(o.pts - o.radii[:, None]).min(axis=0) for o in ops2d], axis=0)
    hi = np.max([(o.pts + o.radii[:, None]).max(axis=0) for o in ops2d], axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _object_extent(spec: ObjectSpec, cam: Camera) -> tuple[float, float, float, float] | None:
    """Unclipped tight 2D box of the projected object, or None if part of it is behind the camera."""
    ops = _object_ops(spec)
    if min(float(o.pts[:, 2].min()) for o in ops) < 0.3:
        return None
    return _extent(_project_ops(ops, cam))


def _clip_box(box, cam: Camera) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    W, H = cam.width - 1, cam.height - 1
    return (min(max(x1, 0.0), W), min(max(y1, 0.0), H), min(max(x2, 0.0), W), min(max(y2, 0.0), H))


def _truncation(box, cam: Camera) -> float:
    """Fraction of the (unclipped) box area outside the image."""
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 1e-9) * max(y2 - y1, 1e-9)
    cx1, cy1, cx2, cy2 = _clip_box(box, cam)
    return float(min(max(1.0 - max(cx2 - cx1, 0.0) * max(cy2 - cy1, 0.0) / area, 0.0), 1.0))


def occlusion_level(visible_fraction: float) -> int:
    """KITTI occlusion level from the visible fraction of an object's pixels (0, 1 or 2)."""
    if visible_fraction > OCCLUSION_THRESHOLDS[0]:
        return 0
    if visible_fraction > OCCLUSION_THRESHOLDS[1]:
        return 1
    return 2


def _draw_ops(ops2d: list[_Op2D], x0: int, y0: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Paint projected ops on a canvas whose top-left pixel is (x0, y0); returns (rgb, mask)."""
    rgb = Image.new("RGB", size)
    mask = Image.new("L", size)
    dr, dm = ImageDraw.Draw(rgb), ImageDraw.Draw(mask)
    off = np.array([x0, y0], dtype=np.float64)
    for o in ops2d:
        p = o.pts - off
        if o.kind == "poly":
            pts = [tuple(v) for v in p.tolist()]
            dr.polygon(pts, fill=o.color)
            dm.polygon(pts, fill=255)
        elif o.kind == "disc":
            (u, v), r = p[0], float(o.radii[0])
            bb = [u - r, v - r, u + r, v + r]
            dr.ellipse(bb, fill=o.color)
            dm.ellipse(bb, fill=255)
        elif o.kind == "capsule":
            (ua, va), (ub, vb) = p
            ra, rb = float(o.radii[0]), float(o.radii[1])
            d = np.array([ub - ua, vb - va])
            n = np.linalg.norm(d)
            perp = np.array([-d[1], d[0]]) / n if n > 1e-9 else np.array([1.0, 0.0])
            quad = [tuple(p[0] + perp * ra), tuple(p[1] + perp * rb), tuple(p[1] - perp * rb), tuple(p[0] - perp * ra)]
            for d_ in (dr, dm):
                fill = o.color if d_ is dr else 255
                d_.polygon(quad, fill=fill)
                d_.ellipse([ua - ra, va - ra, ua + ra, va + ra], fill=fill)
                d_.ellipse([ub - rb, vb - rb, ub + rb, vb + rb], fill=fill)
        elif o.kind == "ring":
            width = max(1, round(2 * float(o.radii.mean())))
            pts = [tuple(v) for v in p.tolist()]
            pts.append(pts[0])
            dr.line(pts, fill=o.color, width=width, joint="curve")
            dm.line(pts, fill=255, width=width, joint="curve")
    return np.asarray(rgb), np.asarray(mask) > 0


# ---------------------------------------------------------------------------------------------
# Background
# ---------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise in about [0, 1], [h, w] float32, features about ``cell`` pixels wide."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    small = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)


def _coverage(d_px: np.ndarray, half_px: np.ndarray) -> np.ndarray:
    """Fraction of a 1-pixel box covered by a line of half-width ``half_px`` at distance ``d_px``."""
    return np.clip(np.minimum(d_px + 0.5, half_px) - np.maximum(d_px - 0.5, -half_px), 0.0, 1.0).astype(np.float32)


def _haze_factor(depth: np.ndarray | float) -> np.ndarray:
    """Blend weight towards the horizon colour (aerial perspective), float32, same shape as depth."""
    return (1.0 - np.exp(-np.maximum(np.asarray(depth, np.float32), 0.0) / np.float32(_HAZE_M))).astype(np.float32)


def _render_background(cam: Camera, lay: RoadLayout, rng: np.random.Generator) -> np.ndarray:
    """Sky, skyline, ground (road, markings, sidewalks) and facades: float32 [H, W, 3] in 0..255.

    A ray caster with one depth per row for the ground and one per column for the facades, so
    everything stays a handful of vectorised operations.
    """
    H, W = cam.height, cam.width
    f32 = np.float32
    dx = ((np.arange(W) - cam.cx) / cam.fx).astype(f32)  # ray x / z per column
    dy = ((np.arange(H) - cam.cy) / cam.fy).astype(f32)  # ray y / z per row
    grain = rng.standard_normal((H, W), dtype=f32)  # fine texture shared by all materials
    mid = _smooth_noise(rng, H, W, 6)
    low = _smooth_noise(rng, H, W, 40)
    horizon = lay.sky_horizon.astype(f32)

    # Sky: gradient to the horizon plus soft clouds.
    t = np.clip((cam.cy - np.arange(H)) / max(cam.cy, 1.0), 0.0, 1.0).astype(f32)
    sky_rows = horizon[None] * (1 - t[:, None]) + lay.sky_top.astype(f32)[None] * t[:, None]  # [H, 3]
    img = np.empty((H, W, 3), f32)
    img[:] = sky_rows[:, None, :]
    clouds = _smooth_noise(rng, H, W, 90)
    clouds = np.clip((clouds - f32(1.0 - lay.cloudiness)) * f32(2.5), 0.0, 1.0) * (t > 0)[:, None] * (f32(0.75) + f32(0.25) * mid)
    img += (f32(245.0) - img) * clouds[..., None]

    # Ground: rows below the horizon hit the plane y = CAMERA_HEIGHT at depth zg (one depth per row).
    r0 = int(np.searchsorted(dy, 1e-9, side="right"))
    if r0 < H:
        zg = (CAMERA_HEIGHT / dy[r0:]).astype(f32)  # [Hg]
        Xg = dx[None, :] * zg[:, None]  # [Hg, W]
        mpp = (zg / f32(cam.fx))[:, None]  # metres per pixel across the road
        gr, lo_, md = grain[r0:], low[r0:], mid[r0:]
        road = (Xg >= lay.road_left) & (Xg <= lay.road_right)
        walk = ~road & (Xg > lay.wall_left) & (Xg < lay.wall_right)
        mat = road.astype(np.int8) * 2 + walk.astype(np.int8)  # 0 grass, 1 sidewalk, 2 road
        palette = np.stack([lay.grass, lay.sidewalk, lay.asphalt]).astype(f32)
        gain = np.where(road, f32(0.86) + f32(0.22) * lo_ + f32(0.06) * md,
                        np.where(walk, f32(0.9) + f32(0.14) * lo_, f32(0.7) + f32(0.5) * md))
        amp = np.array([10.0, 5.0, 7.0], f32)[mat]
        # Sidewalk tiles: seams every `tile` metres both ways, drawn with pixel coverage to avoid aliasing.
        tile = f32(lay.tile)
        mz = (zg ** 2 / f32(cam.fy * CAMERA_HEIGHT))[:, None]  # metres per pixel along the road
        seam_z = _coverage(np.abs((zg[:, None] + 0.5 * tile) % tile - 0.5 * tile) / mz, 0.02 / mz)
        seam_x = _coverage(np.abs((Xg + 0.5 * tile) % tile - 0.5 * tile) / mpp, 0.02 / mpp)
        gain *= f32(1.0) - f32(0.3) * np.maximum(seam_z, seam_x) * walk
        g = palette[mat] * gain[..., None] + (amp * gr)[..., None]
        # Curbs (bright strip at each road edge) and lane markings (dashed ones by depth): paint
        # coverage towards a near-white.
        paint = np.zeros(Xg.shape, f32)
        for edge in (lay.road_left, lay.road_right):
            paint = np.maximum(paint, f32(0.8) * _coverage(np.abs(Xg - f32(edge)) / mpp, 0.09 / mpp))
        for x, width, dashed, period, dash in lay.markings:
            cov = _coverage(np.abs(Xg - f32(x)) / mpp, f32(0.5 * width) / mpp)
            if dashed:
                cov = cov * (((zg + f32(lay.dash_phase)) % f32(period)) < dash)[:, None]
            paint = np.maximum(paint, f32(0.92) * cov)
        g += (f32(222.0) - g) * (paint * (f32(0.85) + f32(0.15) * md))[..., None]
        k = _haze_factor(zg)[:, None, None]
        img[r0:] = g * (1 - k) + horizon * k

    # Skyline: a plane at _FAR_Z with a wavy top (distant buildings and trees); the ground ends there.
    a0, a1, k1, p1, a2, k2, p2, a3 = (float(v) for v in lay.skyline)
    Xf = dx.astype(np.float64) * _FAR_Z
    prof = a0 + a1 * np.sin(Xf * k1 + p1) + a2 * np.sin(Xf * k2 + p2) + a3 * np.sign(np.sin(Xf * 0.4 + p1))
    hb = CAMERA_HEIGHT - dy.astype(np.float64) * _FAR_Z  # height above ground where each row meets the plane
    rows = np.nonzero((hb >= 0) & (hb < prof.max()))[0]
    if rows.size:
        rs = slice(int(rows[0]), int(rows[-1]) + 1)
        m = (hb[rs, None] >= 0) & (hb[rs, None] < prof[None, :])
        sk = lay.skyline_color.astype(f32)[None, None] * (f32(0.85) + f32(0.3) * mid[rs])[..., None] + f32(4.0) * grain[rs][..., None]
        k = _haze_factor(_FAR_Z)
        sk = sk * (1 - k) + horizon * k
        block = img[rs]
        block[m] = sk[m]

    # Facades: planes x = wall_left / wall_right, one depth per column.
    light = {"left": 0.75 + 0.35 * max(0.0, float(lay.sun[0])), "right": 0.75 + 0.35 * max(0.0, float(-lay.sun[0]))}
    for side in ("left", "right"):
        cols = np.nonzero(dx < -1e-6)[0] if side == "left" else np.nonzero(dx > 1e-6)[0]
        if cols.size == 0:
            continue
        xw = -lay.wall_left if side == "left" else lay.wall_right
        zw = (xw / np.abs(dx[cols].astype(np.float64)))  # [C]
        seg = lay.segments[side]
        idx = np.searchsorted(seg.ends, zw)
        inside = idx < len(seg.ends)
        ic = np.minimum(idx, len(seg.ends) - 1)
        kind = np.where(inside, seg.kind[ic], 0)
        wave = seg.wave[ic]
        top = np.where(kind == 1, seg.height[ic], seg.height[ic] + wave[:, 0] * np.sin(zw * wave[:, 3] + wave[:, 4])
                       + wave[:, 1] * np.sin(zw * 7.3 + wave[:, 5]) + wave[:, 2] * np.sin(zw * 2.1))
        top = np.where(kind == 0, -1.0, top)
        hw_all = CAMERA_HEIGHT - dy[:, None].astype(np.float64) * zw[None, :]  # [H, C] height above ground
        ri, cj = np.nonzero((hw_all >= 0) & (hw_all < top[None, :]))
        if ri.size == 0:
            continue
        # Everything below works on the gathered facade pixels only (1-D arrays).
        hw = hw_all[ri, cj].astype(f32)
        gc = cols[cj]
        md, gr = mid[ri, gc], grain[ri, gc]
        icp, kindp, topp, zwp = ic[cj], kind[cj], top[cj].astype(f32), zw[cj]
        # Windows: a grid in facade coordinates, faded to the wall colour where they get sub-pixel.
        along = zw - seg.starts[ic] - seg.win_off[ic]  # per column
        win_col = ((along % seg.pitch[ic]) / seg.pitch[ic] < seg.win_w[ic]) & (kind == 1)
        fade_col = np.clip(seg.win_w[ic] * seg.pitch[ic] * cam.fx * xw / zw ** 2 / 3.0, 0.0, 1.0).astype(f32)
        hash_col = (np.floor(along / seg.pitch[ic]).astype(np.int64) * 19349663) ^ seg.seed[ic]
        rel = (hw - seg.ground_floor[icp].astype(f32)) / seg.floor_h[icp].astype(f32)
        win = win_col[cj] & (rel > 0) & (hw < topp - 0.8) & ((rel % 1.0) < seg.win_h[icp])
        fade = fade_col[cj]
        hsh = ((np.floor(rel).astype(np.int64) * 73856093) ^ hash_col[cj]) & 255
        # Colour multiplier of the segment colour: texture, plinth/cornice bands; vegetation darker low.
        bld = (f32(0.9) + f32(0.16) * md) * f32(light[side])
        bld = np.where((hw < 0.6) | (hw > topp - 0.35), bld * f32(0.78), bld)
        veg = (f32(0.5) + f32(0.55) * md) * f32(0.8 + 0.25 * light[side]) \
            * (f32(0.8) + f32(0.2) * np.clip(hw / np.maximum(topp, 0.1), 0, 1))
        is_veg = kindp == 2
        col = seg.color[icp].astype(f32) * np.where(is_veg, veg, bld)[:, None] \
            + (np.where(is_veg, f32(16.0), f32(3.0)) * gr)[:, None]
        wcol = seg.glass[icp].astype(f32) * (f32(0.55) + f32(0.9 / 255.0) * hsh.astype(f32))[:, None]
        col = np.where(win[:, None], col + (wcol - col) * fade[:, None], col)
        k = _haze_factor(zwp)[:, None]
        img[ri, gc] = col * (1 - k) + horizon * k
    return img


# ---------------------------------------------------------------------------------------------
# Rendering and labels
# ---------------------------------------------------------------------------------------------
def render_scene(camera: Camera, layout: RoadLayout, objects: Sequence[ObjectSpec],
                 rng: np.random.Generator) -> SyntheticFrame:
    """Render ``objects`` in the street ``layout`` and derive their KITTI labels.

    Objects are painted far to near (by depth of the bottom centre). The visible fraction of each
    object is measured on an id buffer after all objects are painted; truncation from its
    unclipped projected box.

    Returns:
        The frame: image uint8 [H, W, 3] and its labels, objects near to far, then DontCare regions.
    """
    H, W = camera.height, camera.width
    env = _Env(sun=layout.sun, haze_color=layout.sky_horizon.astype(np.float64))
    bg = _render_background(camera, layout, rng)

    # Soft contact shadows under road users.
    shadow = Image.new("L", (W, H))
    sd = ImageDraw.Draw(shadow)
    for o in objects:
        if o.kind in ("Pole", "Tree"):
            continue
        fp = _footprint(o, 0.12 if o.kind in ("Car", "Van") else 0.05)
        pts = np.column_stack([fp[:, 0], np.full(4, CAMERA_HEIGHT), fp[:, 1]])
        if pts[:, 2].min() > 0.3:
            sd.polygon([tuple(v) for v in camera.project(pts).tolist()], fill=150)
    sh = np.asarray(shadow.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) / 255.0
    bg *= (1.0 - 0.6 * sh)[..., None]
    img = np.clip(bg, 0, 255).astype(np.uint8)

    order = sorted(range(len(objects)), key=lambda i: (-objects[i].loc[2], i))
    idbuf = np.full((H, W), -1, np.int32)
    own = np.zeros(len(objects), np.int64)
    extents: dict[int, tuple[float, float, float, float]] = {}
    for i in order:
        ops = _object_ops(objects[i], env)
        if min(float(op.pts[:, 2].min()) for op in ops) < 0.3:
            continue  # behind the camera: not drawn, not labelled
        ops2d = _project_ops(ops, camera)
        box = _extent(ops2d)
        extents[i] = box
        x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
        x1, y1 = min(W, math.ceil(box[2]) + 2), min(H, math.ceil(box[3]) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        rgb, mask = _draw_ops(ops2d, x0, y0, (x1 - x0, y1 - y0))
        img[y0:y1, x0:x1][mask] = rgb[mask]
        idbuf[y0:y1, x0:x1][mask] = i
        own[i] = int(mask.sum())
    visible = np.bincount(idbuf[idbuf >= 0].ravel(), minlength=len(objects))

    labels: list[LabelledObject] = []
    dontcare: list[LabelledObject] = []
    for i in sorted(extents, key=lambda i: (objects[i].loc[2], i)):
        o = objects[i]
        if o.label is None or own[i] == 0 or visible[i] == 0:
            continue
        box = extents[i]
        clipped = tuple(_r2(v) for v in _clip_box(box, camera))
        if clipped[2] - clipped[0] < 1.0 or clipped[3] - clipped[1] < 1.0:
            continue
        vis = float(visible[i]) / float(own[i])
        x, _y, z = o.loc
        kitti_type = o.label
        if vis < MIN_VISIBLE_FRACTION or clipped[3] - clipped[1] < MIN_BOX_HEIGHT:
            kitti_type = "DontCare"
        rec = LabelledObject(
            type=kitti_type, truncated=_r2(_truncation(box, camera)), occluded=occlusion_level(vis),
            alpha=_r2(_wrap_angle(o.rotation_y - math.atan2(x, z))), box=clipped, dims=o.dims, loc=o.loc,
            rotation_y=o.rotation_y, visible_fraction=vis,
        )
        (dontcare if kitti_type == "DontCare" else labels).append(rec)

    # Optics and sensor: slight blur, exposure, noise.
    out = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float32)
    out = out * layout.gain + layout.noise_sigma * rng.standard_normal(out.shape, dtype=np.float32)
    image = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return SyntheticFrame(image=image, objects=labels + dontcare, camera=camera)


def render_frame(index: int, seed: int, width: int = KITTI_WIDTH, height: int = KITTI_HEIGHT) -> SyntheticFrame:
    """Render frame ``index`` of the set with ``seed`` (a pure function of its arguments)."""
    rng = frame_rng(seed, index)
    camera = Camera.kitti(width, height)
    layout = sample_layout(rng)
    objects = sample_objects(rng, camera, layout)
    return render_scene(camera, layout, objects, rng)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 [H, W, 3] image; no metadata, fixed zlib level (deterministic).

    Level 3 is about twice as fast as Pillow's default 6 on these noisy frames for ~9 % more bytes.
    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=3, optimize=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Writing a set
# ---------------------------------------------------------------------------------------------
_FRAME_FILE = re.compile(r"^\d{6}\.(png|txt)$")
_SUBDIRS = (("image_2", ".png"), ("label_2", ".txt"), ("calib", ".txt"))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ConfigError(f"{name}={value!r}; expected an integer >= {minimum}")
    return int(value)


def _frame_paths(training: Path, index: int) -> list[Path]:
    return [training / sub / f"{index:06d}{ext}" for sub, ext in _SUBDIRS]


def _frame_files(training: Path) -> list[Path]:
    files = []
    for sub, _ in _SUBDIRS:
        d = training / sub
        if d.is_dir():
            files += [p for p in d.iterdir() if _FRAME_FILE.match(p.name) or p.name.endswith(".tmp")]
    return files


def read_params(root: str | Path) -> dict | None:
    """The parameters recorded in ``root/synthetic.json``, or None if there is no such file.

    Raises:
        DataError: the file exists but is not a JSON object.
    """
    path = Path(root) / "synthetic.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); expected the record written by {GENERATOR_NAME}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object written by {GENERATOR_NAME}, got {type(meta).__name__}")
    return meta


def generate(out: str | Path, num: int, seed: int, width: int = KITTI_WIDTH, height: int = KITTI_HEIGHT,
             *, overwrite: bool = False) -> Path:
    """Write ``num`` synthetic KITTI frames under ``out/training`` (idempotent and resumable).

    Args:
        out: root folder; ``out/training/{image_2,label_2,calib}`` and ``out/synthetic.json`` are written.
        num: number of frames (>= 1), named 000000 .. num-1.
        seed: seed of the set (>= 0); frame i uses ``frame_rng(seed, i)``.
        width, height: image size; the intrinsics are KITTI's scaled to it.
        overwrite: replace a set generated here with other parameters.

    Returns:
        ``out`` (the folder that holds ``training/``).

    Raises:
        ConfigError: bad parameters; ``out`` holds a set made with other parameters and
            ``overwrite`` is False; or ``out/training`` holds frames this generator did not write.
        DataError: ``out/synthetic.json`` is unreadable.

    A set already complete with the same parameters is left as it is. Files are written
    atomically and ``synthetic.json`` says ``"complete": true`` only after the last frame, so an
    interrupted run is finished (same bytes) by the next call with the same parameters.
    """
    num = _check_int("num", num, 1)
    seed = _check_int("seed", seed, 0)
    width = _check_int("width", width, MIN_WIDTH)
    height = _check_int("height", height, MIN_HEIGHT)
    root = Path(out).expanduser()
    training = root / "training"
    params = {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "num": num, "seed": seed,
              "width": width, "height": height}
    meta = read_params(root)
    existing = _frame_files(training)
    if meta is None:
        if existing:
            raise ConfigError(
                f"{training} already holds {len(existing)} frame files but {root / 'synthetic.json'} is missing, so "
                f"they were not written by {GENERATOR_NAME}; refusing to touch them. Choose an empty --out folder."
            )
    else:
        old = {k: meta.get(k) for k in params}
        if old != params:
            if not overwrite:
                diff = ", ".join(f"{k}={old[k]!r} (requested {params[k]!r})" for k in params if old[k] != params[k])
                raise ConfigError(
                    f"{root} already holds a synthetic set with other parameters: {diff}. "
                    "Pass overwrite=True (--overwrite) to replace it, or choose another folder."
                )
            for p in existing:
                p.unlink()
            log.info("overwriting %s (%s -> %s)", root, old, params)
        elif meta.get("complete") and all(p.is_file() for i in range(num) for p in _frame_paths(training, i)):
            log.info("synthetic set %s is complete (num=%d seed=%d %dx%d); skipping", root, num, seed, width, height)
            return root
        else:
            # Leftovers of an interrupted write; finished frames of the same parameters are kept.
            for p in existing:
                if p.name.endswith(".tmp"):
                    p.unlink()
    atomic_write_json(root / "synthetic.json", {**params, "complete": False})
    camera = Camera.kitti(width, height)
    calib = calib_text(camera)
    t0 = time.perf_counter()
    for i in range(num):
        paths = _frame_paths(training, i)
        if all(p.is_file() for p in paths):
            continue
        frame = render_frame(i, seed, width, height)
        atomic_write_bytes(paths[0], encode_png(frame.image))
        atomic_write_text(paths[2], calib)
        atomic_write_text(paths[1], frame.label_text())
    atomic_write_json(root / "synthetic.json", {**params, "complete": True})
    log.info("wrote %d synthetic frames to %s in %.1f s", num, root, time.perf_counter() - t0)
    return root


def label_statistics(root: str | Path) -> dict:
    """Counts of a written set: objects per type, per-frame mean (DontCare excluded), occlusion
    histogram, truncated objects, and Car box heights (pixels)."""
    label_dir = Path(root) / "training" / "label_2"
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise DataError(f"no label files in {label_dir}; expected a KITTI tree written by {GENERATOR_NAME}")
    per_type: dict[str, int] = {}
    occ = {0: 0, 1: 0, 2: 0, 3: 0}
    truncated = empty = 0
    car_h: list[float] = []
    for f in files:
        lines = [ln.split() for ln in f.read_text(encoding="ascii").splitlines() if ln.strip()]
        if not [t for t in lines if t[0] != "DontCare"]:
            empty += 1
        for t in lines:
            per_type[t[0]] = per_type.get(t[0], 0) + 1
            if t[0] == "DontCare":
                continue
            occ[int(t[2])] += 1
            truncated += float(t[1]) > 0
            if t[0] == "Car":
                car_h.append(float(t[7]) - float(t[5]))
    n_obj = sum(v for k, v in per_type.items() if k != "DontCare")
    return {
        "frames": len(files), "per_type": dict(sorted(per_type.items(), key=lambda kv: -kv[1])),
        "objects_per_frame": n_obj / len(files), "frames_without_objects": empty,
        "occlusion": occ, "truncated": truncated,
        "car_box_height_px": {"min": min(car_h), "median": float(np.median(car_h)), "max": max(car_h)} if car_h else None,
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _int_arg(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vcm.data.synthetic",
        description="Generate synthetic road scenes as a KITTI object tree (training/image_2, label_2, calib).",
    )
    p.add_argument("--out", type=Path, required=True, help="root folder (gets training/ and synthetic.json)")
    p.add_argument("--num", type=_int_arg(1, "a positive integer (number of frames)"), required=True)
    p.add_argument("--seed", type=_int_arg(0, "a non-negative integer"), default=0)
    p.add_argument("--width", type=_int_arg(MIN_WIDTH, f"an integer >= {MIN_WIDTH}"), default=KITTI_WIDTH)
    p.add_argument("--height", type=_int_arg(MIN_HEIGHT, f"an integer >= {MIN_HEIGHT}"), default=KITTI_HEIGHT)
    p.add_argument("--overwrite", action="store_true", help="replace a set generated with other parameters")
    p.add_argument("--stats", action="store_true", help="print label statistics as JSON afterwards")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0, exits with status 2 and a message on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    try:
        root = generate(args.out, args.num, args.seed, args.width, args.height, overwrite=args.overwrite)
    except (ConfigError, DataError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(f"{root}: {args.num} frames ({args.width}x{args.height}, seed {args.seed}) in {time.perf_counter() - t0:.1f} s")
    if args.stats:
        print(json.dumps(label_statistics(root), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
