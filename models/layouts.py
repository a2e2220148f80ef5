"""Keypoint layouts: the one home of joint names, bones, flips, roots and the SPM hierarchy.

Conventions used across posestream:

* keypoints are (x, y) in that order, in pixels, with the pixel-centre convention
  (the centre of the top-left pixel is (0, 0));
* image sizes are written ``(width, height)``; arrays are indexed ``[..., H, W]``;
* ``parents[j] == -1`` means the parent of joint ``j`` is the layout's *root point*,
  the mean of ``root_joints`` (a real joint such as MPII's pelvis, or a virtual point
  such as the middle of COCO's hips);
* drawing colours are BGR (OpenCV order), one per bone.

Nothing else in the code base repeats these facts: import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class MPII(IntEnum):
    """MPII Human Pose, 16 joints, in the dataset's order."""

    R_ANKLE = 0
    R_KNEE = 1
    R_HIP = 2
    L_HIP = 3
    L_KNEE = 4
    L_ANKLE = 5
    PELVIS = 6
    THORAX = 7
    UPPER_NECK = 8
    HEAD_TOP = 9
    R_WRIST = 10
    R_ELBOW = 11
    R_SHOULDER = 12
    L_SHOULDER = 13
    L_ELBOW = 14
    L_WRIST = 15


class COCO(IntEnum):
    """COCO keypoints, 17 joints."""

    NOSE = 0
    L_EYE = 1
    R_EYE = 2
    L_EAR = 3
    R_EAR = 4
    L_SHOULDER = 5
    R_SHOULDER = 6
    L_ELBOW = 7
    R_ELBOW = 8
    L_WRIST = 9
    R_WRIST = 10
    L_HIP = 11
    R_HIP = 12
    L_KNEE = 13
    R_KNEE = 14
    L_ANKLE = 15
    R_ANKLE = 16


class Panoptic(IntEnum):
    """CMU Panoptic "coco19", 19 joints; BODY_CENTER (centre of the hips) is the root."""

    NECK = 0
    NOSE = 1
    BODY_CENTER = 2
    L_SHOULDER = 3
    L_ELBOW = 4
    L_WRIST = 5
    L_HIP = 6
    L_KNEE = 7
    L_ANKLE = 8
    R_SHOULDER = 9
    R_ELBOW = 10
    R_WRIST = 11
    R_HIP = 12
    R_KNEE = 13
    R_ANKLE = 14
    L_EYE = 15
    L_EAR = 16
    R_EYE = 17
    R_EAR = 18


# BGR drawing colours by body side.
LEFT_COLOR = (255, 160, 40)
RIGHT_COLOR = (40, 90, 255)
CENTER_COLOR = (60, 220, 60)


@dataclass(frozen=True)
class Layout:
    """Everything posestream knows about one keypoint layout.

    Attributes:
        name: short name used in manifests, files and on the wire.
        joints: the IntEnum of joint names, in channel order.
        bones: pairs (a, b) of joints drawn as segments.
        flip_pairs: (left, right) joint pairs swapped by a horizontal flip.
        root_joints: joints whose mean is the root point (SPM centre).
        parents: parent of each joint in the SPM hierarchy, -1 for the root point.
        levels: hierarchy level of each joint (1 is the root point itself).
        oks_sigmas: per-joint OKS constants (COCO's where joints correspond).
        head_segment: (a, b) joints whose distance is the PCKh head size, or None.
    """

    name: str
    joints: type[IntEnum]
    bones: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    root_joints: tuple[int, ...]
    parents: tuple[int, ...]
    levels: tuple[int, ...]
    oks_sigmas: tuple[float, ...]
    head_segment: tuple[int, int] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name.lower() for j in self.joints)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation [K] mapping each joint to its mirror joint (itself if central)."""
        index = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index

    @property
    def bone_colors(self) -> tuple[tuple[int, int, int], ...]:
        """One BGR colour per bone: left, right or centre by the joints' names."""
        return tuple(_side_color(self.names[a], self.names[b]) for a, b in self.bones)

    def root_point(self, keypoints: np.ndarray) -> np.ndarray:
        """Root point [..., D] of keypoints [..., K, D] (mean of ``root_joints``)."""
        return np.asarray(keypoints)[..., list(self.root_joints), :].mean(axis=-2)


def _side_color(a: str, b: str) -> tuple[int, int, int]:
    sides = {n[:2] for n in (a, b)}
    if sides & {"l_"} and not sides & {"r_"}:
        return LEFT_COLOR
    if sides & {"r_"} and not sides & {"l_"}:
        return RIGHT_COLOR
    return CENTER_COLOR


def _check(layout: Layout) -> Layout:
    k = layout.num_joints
    for field in ("parents", "levels", "oks_sigmas"):
        if len(getattr(layout, field)) != k:
            raise ValueError(f"layout {layout.name}: {field} has {len(getattr(layout, field))} entries, expected {k}")
    for j, p in enumerate(layout.parents):
        want = 2 if p == -1 else layout.levels[p] + 1
        if layout.levels[j] != want:
            raise ValueError(f"layout {layout.name}: joint {j} level {layout.levels[j]} != {want}")
    return layout


_M = MPII
MPII16 = _check(Layout(
    name="mpii16",
    joints=MPII,
    bones=(
        (_M.R_ANKLE, _M.R_KNEE), (_M.R_KNEE, _M.R_HIP), (_M.R_HIP, _M.PELVIS),
        (_M.L_HIP, _M.PELVIS), (_M.L_HIP, _M.L_KNEE), (_M.L_KNEE, _M.L_ANKLE),
        (_M.PELVIS, _M.THORAX), (_M.THORAX, _M.UPPER_NECK), (_M.UPPER_NECK, _M.HEAD_TOP),
        (_M.R_WRIST, _M.R_ELBOW), (_M.R_ELBOW, _M.R_SHOULDER), (_M.THORAX, _M.R_SHOULDER),
        (_M.THORAX, _M.L_SHOULDER), (_M.L_SHOULDER, _M.L_ELBOW), (_M.L_ELBOW, _M.L_WRIST),
    ),
    flip_pairs=((_M.L_ANKLE, _M.R_ANKLE), (_M.L_KNEE, _M.R_KNEE), (_M.L_HIP, _M.R_HIP),
                (_M.L_WRIST, _M.R_WRIST), (_M.L_ELBOW, _M.R_ELBOW), (_M.L_SHOULDER, _M.R_SHOULDER)),
    root_joints=(_M.PELVIS,),
    #          rA rK rH lH lK lA pel thx neck head rW rE rS lS lE lW
    parents=(1, 2, -1, -1, 3, 4, -1, -1, 7, 8, 11, 12, -1, -1, 13, 14),
    levels=(4, 3, 2, 2, 3, 4, 2, 2, 3, 4, 4, 3, 2, 2, 3, 4),
    oks_sigmas=(0.089, 0.087, 0.107, 0.107, 0.087, 0.089, 0.107, 0.079, 0.079, 0.072,
                0.062, 0.072, 0.079, 0.079, 0.072, 0.062),
    head_segment=(_M.UPPER_NECK, _M.HEAD_TOP),
))

_C = COCO
COCO17 = _check(Layout(
    name="coco17",
    joints=COCO,
    bones=(
        (_C.L_ANKLE, _C.L_KNEE), (_C.L_KNEE, _C.L_HIP), (_C.R_ANKLE, _C.R_KNEE), (_C.R_KNEE, _C.R_HIP),
        (_C.L_HIP, _C.R_HIP), (_C.L_SHOULDER, _C.L_HIP), (_C.R_SHOULDER, _C.R_HIP),
        (_C.L_SHOULDER, _C.R_SHOULDER), (_C.L_SHOULDER, _C.L_ELBOW), (_C.R_SHOULDER, _C.R_ELBOW),
        (_C.L_ELBOW, _C.L_WRIST), (_C.R_ELBOW, _C.R_WRIST), (_C.L_EYE, _C.R_EYE), (_C.NOSE, _C.L_EYE),
        (_C.NOSE, _C.R_EYE), (_C.L_EYE, _C.L_EAR), (_C.R_EYE, _C.R_EAR), (_C.L_EAR, _C.L_SHOULDER),
        (_C.R_EAR, _C.R_SHOULDER),
    ),
    flip_pairs=((_C.L_EYE, _C.R_EYE), (_C.L_EAR, _C.R_EAR), (_C.L_SHOULDER, _C.R_SHOULDER),
                (_C.L_ELBOW, _C.R_ELBOW), (_C.L_WRIST, _C.R_WRIST), (_C.L_HIP, _C.R_HIP),
                (_C.L_KNEE, _C.R_KNEE), (_C.L_ANKLE, _C.R_ANKLE)),
    root_joints=(_C.L_HIP, _C.R_HIP),
    #        nose lEy rEy lEa rEa lS rS lE rE lW rW lH rH lK rK lA rA
    parents=(-1, 0, 0, 1, 2, -1, -1, 5, 6, 7, 8, -1, -1, 11, 12, 13, 14),
    levels=(2, 3, 3, 4, 4, 2, 2, 3, 3, 4, 4, 2, 2, 3, 3, 4, 4),
    oks_sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
))

_P = Panoptic
PANOPTIC19 = _check(Layout(
    name="panoptic19",
    joints=Panoptic,
    bones=(
        (_P.NECK, _P.NOSE), (_P.NECK, _P.BODY_CENTER), (_P.NECK, _P.L_SHOULDER), (_P.L_SHOULDER, _P.L_ELBOW),
        (_P.L_ELBOW, _P.L_WRIST), (_P.BODY_CENTER, _P.L_HIP), (_P.L_HIP, _P.L_KNEE), (_P.L_KNEE, _P.L_ANKLE),
        (_P.NECK, _P.R_SHOULDER), (_P.R_SHOULDER, _P.R_ELBOW), (_P.R_ELBOW, _P.R_WRIST),
        (_P.BODY_CENTER, _P.R_HIP), (_P.R_HIP, _P.R_KNEE), (_P.R_KNEE, _P.R_ANKLE), (_P.NOSE, _P.L_EYE),
        (_P.L_EYE, _P.L_EAR), (_P.NOSE, _P.R_EYE), (_P.R_EYE, _P.R_EAR),
    ),
    flip_pairs=((_P.L_SHOULDER, _P.R_SHOULDER), (_P.L_ELBOW, _P.R_ELBOW), (_P.L_WRIST, _P.R_WRIST),
                (_P.L_HIP, _P.R_HIP), (_P.L_KNEE, _P.R_KNEE), (_P.L_ANKLE, _P.R_ANKLE),
                (_P.L_EYE, _P.R_EYE), (_P.L_EAR, _P.R_EAR)),
    root_joints=(_P.BODY_CENTER,),
    #        neck nose ctr lS lE lW lH lK lA rS rE rW rH rK rA lEy lEa rEy rEa
    parents=(-1, 0, -1, -1, 3, 4, -1, 6, 7, -1, 9, 10, -1, 12, 13, 1, 15, 1, 17),
    levels=(2, 3, 2, 2, 3, 4, 2, 3, 4, 2, 3, 4, 2, 3, 4, 4, 5, 4, 5),
    oks_sigmas=(0.079, 0.026, 0.107, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089, 0.079, 0.072, 0.062,
                0.107, 0.087, 0.089, 0.025, 0.035, 0.025, 0.035),
))

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (MPII16, COCO17, PANOPTIC19)}

# Joints that are the same body point under different names in different layouts.
_ALIASES = {"pelvis": "body_center", "thorax": "neck"}


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (mpii16, coco17, panoptic19); a clear error otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint layout {name!r}; known: {', '.join(LAYOUTS)}") from None


def index_map(src: Layout, dst: Layout) -> np.ndarray:
    """For each joint of ``dst``, the index of the same joint in ``src``, or -1 if ``src`` lacks it."""
    canon = {n: _ALIASES.get(n, n) for n in src.names + dst.names}
    where = {canon[n]: i for i, n in enumerate(src.names)}
    return np.array([where.get(canon[n], -1) for n in dst.names], dtype=np.int64)


def convert(keypoints: np.ndarray, scores: np.ndarray, src: Layout, dst: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Map keypoints [..., K_src, D] and scores [..., K_src] into ``dst``'s joints.

    Joints that ``src`` lacks get zero coordinates and zero score.
    """
    index = index_map(src, dst)
    have = index >= 0
    out = np.zeros(keypoints.shape[:-2] + (dst.num_joints, keypoints.shape[-1]), dtype=keypoints.dtype)
    out_scores = np.zeros(scores.shape[:-1] + (dst.num_joints,), dtype=scores.dtype)
    out[..., have, :] = keypoints[..., index[have], :]
    out_scores[..., have] = scores[..., index[have]]
    return out, out_scores
