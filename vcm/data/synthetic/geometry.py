"""Object geometry: drawing operations in 3D (vehicles, people, cyclists, clutter), projected to 2D."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from vcm.data.synthetic.camera import HAZE_M, OCCLUSION_THRESHOLDS, Camera
from vcm.data.synthetic.scene import ObjectSpec


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
    k = 1.0 - math.exp(-max(depth, 0.0) / HAZE_M)
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


def truncation_fraction(box, cam: Camera) -> float:
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
