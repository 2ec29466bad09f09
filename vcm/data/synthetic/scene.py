"""Scene description: the road layout, the objects placed on it and a rendered frame with its labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vcm.data.synthetic.camera import Camera


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
