"""Synthetic multi-person video with exact 2D / 3D ground truth (``python -m tools.synth --help``).

Articulated people on the CMU Panoptic coco19 kinematic tree (plus MPII's head_top and upper_neck), with
joint limits, varied proportions and clothes, standing / walking / reaching / sitting with smooth motion,
at several depths in front of a random perspective camera; rendered with OpenCV far to near, with an id
buffer that gives exact occlusion. See :mod:`tools.synth.generate` for the visibility convention.

API::

    generate_clip(seed, persons=(1, 6), frames=300, size=(640, 480), layout="coco17", fps=30.0)
        -> iterator of (frame uint8 [H,W,3] BGR, stream.posefile.PoseRecord)
    generate_sample(seed, persons=(1, 6), size=(640, 480), layout="coco17") -> (frame, PoseRecord)

The records hold visibility (0 outside, 1 occluded, 2 visible) in place of the score, ``xyz`` in camera
millimetres and ``intrinsics`` {"fx", "fy", "cx", "cy"} in pixels.
"""

from tools.synth.generate import Rendered, Scene, generate_clip, generate_sample, render_scene, sample_scene

__all__ = ["Rendered", "Scene", "generate_clip", "generate_sample", "render_scene", "sample_scene"]
