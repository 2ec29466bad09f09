"""The synthetic scenes' camera (KITTI's camera 2, intrinsics scaled to the image size), its
calibration file and the constants of the generator."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
HAZE_M = 320.0  # distance over which colours fade to the horizon sky colour


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
