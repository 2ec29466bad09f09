"""Sampling a scene from a frame's RNG: the road layout and the objects placed on it."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vcm.data.synthetic.camera import CAMERA_HEIGHT, Camera, _r2, _wrap_angle
from vcm.data.synthetic.geometry import _object_extent, truncation_fraction
from vcm.data.synthetic.scene import ObjectSpec, RoadLayout, _Segments
from vcm.errors import ConfigError


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
            if box is None or truncation_fraction(box, camera) > 0.75:
                continue
            objects.append(spec)
            prints.append(fp)
            break
    return objects
