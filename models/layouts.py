"""Keypoint layouts: the one home of joint names, bones, flips, roots and the SPM hierarchy.

Conventions used across posestream:

* keypoints are (x, y) in that order, in pixels, with the pixel-centre convention
  (the centre of the top-left pixel is (0, 0));
* image sizes are written ``(width, height)``; arrays are indexed ``[..., H, W]``;
* ``parents[j] == -1`` means the parent of joint ``j`` is the layout's *root point*,
  the mean of ``root_joints`` (a real joint such as MPII's pelvis, or a virtual point
  such as the middle of COCO's hips);
* drawing colours are BGR (OpenCV order), one per bone;
* a joint that a layout lacks but can make from its own joints (BlazePose has no neck: the middle of its
  shoulders) is a *derived joint*: ``Layout.derived`` lists it as an affine combination of the layout's joints
  (weights summing to 1, so it works on 2D and 3D points alike), and :func:`convert` fills it, with the
  smallest score of its sources.

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


class BlazePose(IntEnum):
    """BlazePose GHUM's 33 body landmarks (MediaPipe Pose), in the model's order; "left" is the person's left."""

    NOSE = 0
    L_EYE_INNER = 1
    L_EYE = 2
    L_EYE_OUTER = 3
    R_EYE_INNER = 4
    R_EYE = 5
    R_EYE_OUTER = 6
    L_EAR = 7
    R_EAR = 8
    L_MOUTH = 9
    R_MOUTH = 10
    L_SHOULDER = 11
    R_SHOULDER = 12
    L_ELBOW = 13
    R_ELBOW = 14
    L_WRIST = 15
    R_WRIST = 16
    L_PINKY = 17
    R_PINKY = 18
    L_INDEX = 19
    R_INDEX = 20
    L_THUMB = 21
    R_THUMB = 22
    L_HIP = 23
    R_HIP = 24
    L_KNEE = 25
    R_KNEE = 26
    L_ANKLE = 27
    R_ANKLE = 28
    L_HEEL = 29
    R_HEEL = 30
    L_FOOT_INDEX = 31
    R_FOOT_INDEX = 32


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
        derived: joints this layout lacks but makes from its own, as (name, ((joint, weight), ...)) with the
            weights summing to 1; a derived joint's score is the smallest of its sources' scores.
        bone_mm: per bone, the (shortest, longest) plausible length in millimetres for people from a 1 m
            child to a 2 m adult, or None (layouts without 3D data); checks of 3D poses use it.
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
    derived: tuple[tuple[str, tuple[tuple[int, float], ...]], ...] = ()
    bone_mm: tuple[tuple[float, float], ...] | None = None

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
    if layout.bone_mm is not None and len(layout.bone_mm) != len(layout.bones):
        raise ValueError(f"layout {layout.name}: bone_mm has {len(layout.bone_mm)} entries for {len(layout.bones)} bones")
    for j, p in enumerate(layout.parents):
        want = 2 if p == -1 else layout.levels[p] + 1
        if layout.levels[j] != want:
            raise ValueError(f"layout {layout.name}: joint {j} level {layout.levels[j]} != {want}")
    for name, terms in layout.derived:
        if name in layout.names or abs(sum(w for _, w in terms) - 1.0) > 1e-9 or not all(0 <= j < k for j, _ in terms):
            raise ValueError(f"layout {layout.name}: derived joint {name!r} must be new, of own joints, weights sum 1")
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
    # the synthetic bodies' extremes (tools/synth/body.py: 1.0-1.95 m tall, segments +-7%) widened by 15%,
    # in the order of ``bones``: neck-nose, neck-centre, neck-shoulder, upper arm, forearm, centre-hip, thigh,
    # shin (each side), nose-eye, eye-ear
    bone_mm=((110, 290), (230, 730), (85, 340), (145, 450), (115, 350), (65, 260), (195, 590), (195, 590),
             (85, 340), (145, 450), (115, 350), (65, 260), (195, 590), (195, 590), (35, 95), (60, 155),
             (35, 95), (60, 155)),
))

_B = BlazePose
BLAZEPOSE33 = _check(Layout(
    name="blazepose33",
    joints=BlazePose,
    bones=(
        (_B.NOSE, _B.L_EYE_INNER), (_B.L_EYE_INNER, _B.L_EYE), (_B.L_EYE, _B.L_EYE_OUTER), (_B.L_EYE_OUTER, _B.L_EAR),
        (_B.NOSE, _B.R_EYE_INNER), (_B.R_EYE_INNER, _B.R_EYE), (_B.R_EYE, _B.R_EYE_OUTER), (_B.R_EYE_OUTER, _B.R_EAR),
        (_B.L_MOUTH, _B.R_MOUTH), (_B.L_SHOULDER, _B.R_SHOULDER), (_B.L_SHOULDER, _B.L_ELBOW),
        (_B.L_ELBOW, _B.L_WRIST), (_B.L_WRIST, _B.L_PINKY), (_B.L_WRIST, _B.L_INDEX), (_B.L_WRIST, _B.L_THUMB),
        (_B.L_PINKY, _B.L_INDEX), (_B.R_SHOULDER, _B.R_ELBOW), (_B.R_ELBOW, _B.R_WRIST), (_B.R_WRIST, _B.R_PINKY),
        (_B.R_WRIST, _B.R_INDEX), (_B.R_WRIST, _B.R_THUMB), (_B.R_PINKY, _B.R_INDEX), (_B.L_SHOULDER, _B.L_HIP),
        (_B.R_SHOULDER, _B.R_HIP), (_B.L_HIP, _B.R_HIP), (_B.L_HIP, _B.L_KNEE), (_B.R_HIP, _B.R_KNEE),
        (_B.L_KNEE, _B.L_ANKLE), (_B.R_KNEE, _B.R_ANKLE), (_B.L_ANKLE, _B.L_HEEL), (_B.R_ANKLE, _B.R_HEEL),
        (_B.L_HEEL, _B.L_FOOT_INDEX), (_B.R_HEEL, _B.R_FOOT_INDEX), (_B.L_ANKLE, _B.L_FOOT_INDEX),
        (_B.R_ANKLE, _B.R_FOOT_INDEX),
    ),
    flip_pairs=tuple((_B[n], _B["R" + n[1:]]) for n in _B.__members__ if n.startswith("L_")),
    root_joints=(_B.L_HIP, _B.R_HIP),
    # nose, the shoulders and the hips hang from the root point; faces from the nose, hands from the wrists,
    # feet from the ankles
    parents=(-1, 0, 0, 2, 0, 0, 5, 3, 6, 0, 0, -1, -1, 11, 12, 13, 14, 15, 16, 15, 16, 15, 16, -1, -1, 23, 24,
             25, 26, 27, 28, 27, 28),
    levels=(2, 3, 3, 4, 3, 3, 4, 5, 5, 3, 3, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5, 5, 5, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5),
    # COCO's constants where the joints are COCO's; eye corners and mouth as eyes, hands as wrists, feet as ankles
    oks_sigmas=(0.026, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.035, 0.035, 0.025, 0.025, 0.079, 0.079, 0.072,
                0.072, 0.062, 0.062, 0.062, 0.062, 0.062, 0.062, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089,
                0.089, 0.089, 0.089, 0.089, 0.089),
    derived=(
        # OpenPose's and Panoptic's neck (MPII's thorax): the middle of the shoulders
        ("neck", ((_B.L_SHOULDER, 0.5), (_B.R_SHOULDER, 0.5))),
        # Panoptic's body centre (MPII's pelvis): the middle of the hips
        ("body_center", ((_B.L_HIP, 0.5), (_B.R_HIP, 0.5))),
        # MPII's upper neck (chin level) and head top, along the line from the middle of the shoulders S to the
        # middle of the ears E, from adult proportions (shoulders 0.82, chin 0.87, ears 0.93, crown 1.00 of the
        # stature): upper_neck = 0.6 S + 0.4 E, head_top = 1.6 E - 0.6 S
        ("upper_neck", ((_B.L_SHOULDER, 0.3), (_B.R_SHOULDER, 0.3), (_B.L_EAR, 0.2), (_B.R_EAR, 0.2))),
        ("head_top", ((_B.L_EAR, 0.8), (_B.R_EAR, 0.8), (_B.L_SHOULDER, -0.3), (_B.R_SHOULDER, -0.3))),
    ),
))

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (MPII16, COCO17, PANOPTIC19, BLAZEPOSE33)}

# Joints that are the same body point under different names in different layouts.
_ALIASES = {"pelvis": "body_center", "thorax": "neck"}


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (mpii16, coco17, panoptic19, blazepose33); a clear error otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint layout {name!r}; known: {', '.join(LAYOUTS)}") from None


def index_map(src: Layout, dst: Layout) -> np.ndarray:
    """For each joint of ``dst``, the index of the same joint in ``src``, or -1 if ``src`` lacks it.

    Joints that ``src`` derives (:func:`derived_map`) are -1 here: ``convert`` fills them, ``convertible`` says
    which joints it fills."""
    canon = {n: _ALIASES.get(n, n) for n in src.names + dst.names}
    where = {canon[n]: i for i, n in enumerate(src.names)}
    return np.array([where.get(canon[n], -1) for n in dst.names], dtype=np.int64)


def derived_map(src: Layout, dst: Layout) -> dict[int, tuple[tuple[int, float], ...]]:
    """For each joint of ``dst`` that ``src`` lacks but derives: its (``src`` joint, weight) terms."""
    index = index_map(src, dst)
    table = {_ALIASES.get(name, name): terms for name, terms in src.derived}
    return {j: table[_ALIASES.get(n, n)] for j, n in enumerate(dst.names)
            if index[j] < 0 and _ALIASES.get(n, n) in table}


def convertible(src: Layout, dst: Layout) -> np.ndarray:
    """Mask [K_dst] of the joints of ``dst`` that :func:`convert` fills from ``src`` (same or derived joints)."""
    have = index_map(src, dst) >= 0
    have[list(derived_map(src, dst))] = True
    return have


def convert(keypoints: np.ndarray, scores: np.ndarray, src: Layout, dst: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Map keypoints [..., K_src, D] (any D: 2D, 3D, with or without scores) and scores [..., K_src] into
    ``dst``'s joints.

    A joint of ``dst`` is copied from the same joint of ``src``, or made from ``src``'s joints when ``src``
    derives it (``Layout.derived``: the weighted sum of its sources, scored with the smallest of their scores);
    joints that ``src`` neither has nor derives get zero coordinates and zero score.
    """
    index = index_map(src, dst)
    have = index >= 0
    out = np.zeros(keypoints.shape[:-2] + (dst.num_joints, keypoints.shape[-1]), dtype=keypoints.dtype)
    out_scores = np.zeros(scores.shape[:-1] + (dst.num_joints,), dtype=scores.dtype)
    out[..., have, :] = keypoints[..., index[have], :]
    out_scores[..., have] = scores[..., index[have]]
    for j, terms in derived_map(src, dst).items():
        joints = [i for i, _ in terms]
        weights = np.array([w for _, w in terms], dtype=np.float64)
        out[..., j, :] = np.tensordot(weights, np.moveaxis(keypoints[..., joints, :], -2, 0), axes=1)
        out_scores[..., j] = scores[..., joints].min(axis=-1)
    return out, out_scores
