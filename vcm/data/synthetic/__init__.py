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

    python -m vcm.cli.synthetic --out DIR --num N --seed S [--width 1242 --height 375] [--overwrite]
"""
from vcm.data.synthetic.camera import (
    CAMERA_HEIGHT,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    KITTI_HEIGHT,
    KITTI_WIDTH,
    Camera,
    calib_text,
)
from vcm.data.synthetic.geometry import occlusion_level
from vcm.data.synthetic.layout import (
    frame_rng,
    make_object,
    sample_layout,
    sample_objects,
)
from vcm.data.synthetic.render import encode_png, render_frame, render_scene
from vcm.data.synthetic.writer import generate, label_statistics, read_params

__all__ = [
    "CAMERA_HEIGHT",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "KITTI_HEIGHT",
    "KITTI_WIDTH",
    "Camera",
    "calib_text",
    "encode_png",
    "frame_rng",
    "generate",
    "label_statistics",
    "make_object",
    "occlusion_level",
    "read_params",
    "render_frame",
    "render_scene",
    "sample_layout",
    "sample_objects",
]
