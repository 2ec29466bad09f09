"""Rendering: the background (sky, road, facades, vegetation) and the scene with its labels."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vcm.data.synthetic.camera import (
    _FAR_Z,
    CAMERA_HEIGHT,
    HAZE_M,
    KITTI_HEIGHT,
    KITTI_WIDTH,
    MIN_BOX_HEIGHT,
    MIN_VISIBLE_FRACTION,
    Camera,
    _r2,
    _wrap_angle,
)
from vcm.data.synthetic.geometry import (
    _clip_box,
    _draw_ops,
    _Env,
    _extent,
    _object_ops,
    _project_ops,
    occlusion_level,
    truncation_fraction,
)
from vcm.data.synthetic.layout import (
    _footprint,
    frame_rng,
    sample_layout,
    sample_objects,
)
from vcm.data.synthetic.scene import (
    LabelledObject,
    ObjectSpec,
    RoadLayout,
    SyntheticFrame,
)


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
    return (1.0 - np.exp(-np.maximum(np.asarray(depth, np.float32), 0.0) / np.float32(HAZE_M))).astype(np.float32)


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
            type=kitti_type, truncated=_r2(truncation_fraction(box, camera)), occluded=occlusion_level(vis),
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
