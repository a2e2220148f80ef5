"""An articulated human body: proportions, joint angles with limits, and forward kinematics.

The body is built on the CMU Panoptic coco19 kinematic tree plus MPII's ``head_top`` and ``upper_neck``
(so every layout of :mod:`models.layouts` can be derived) and a few points used only for drawing.

Local body frame (millimetres): X towards the person's own left, Y up, Z forward (the way the person
faces); the origin is the body centre (the middle of the hips, Panoptic's root). All angles are degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Points returned by ``forward_kinematics``: Panoptic coco19 (0-18), then the extras below.
HEAD_TOP, UPPER_NECK, HEAD_CENTER, L_TOE, R_TOE, L_HAND, R_HAND, HAIR_CENTER = range(19, 27)
NUM_POINTS = 27
NUM_KEYPOINTS = 21  # Panoptic 19 + head_top + upper_neck: the ground-truth points
EXTRA_NAMES = {"head_top": HEAD_TOP, "upper_neck": UPPER_NECK}

# Joint angles (degrees) in the order of a pose vector, with their limits.
ANGLE_LIMITS: dict[str, tuple[float, float]] = {
    "yaw": (-1e9, 1e9),          # facing direction about the vertical axis; 0 faces the camera
    "lean": (-15.0, 30.0),       # whole-body forward lean
    "spine_flex": (-20.0, 60.0),
    "spine_lat": (-25.0, 25.0),
    "spine_twist": (-35.0, 35.0),
    "neck_pitch": (-40.0, 50.0),  # positive looks down
    "neck_yaw": (-70.0, 70.0),
    "l_hip_flex": (-30.0, 120.0), "l_hip_abd": (-20.0, 45.0), "l_knee": (0.0, 150.0),
    "r_hip_flex": (-30.0, 120.0), "r_hip_abd": (-20.0, 45.0), "r_knee": (0.0, 150.0),
    "l_sh_flex": (-50.0, 180.0), "l_sh_abd": (-10.0, 170.0), "l_sh_twist": (-60.0, 90.0), "l_elbow": (0.0, 150.0),
    "r_sh_flex": (-50.0, 180.0), "r_sh_abd": (-10.0, 170.0), "r_sh_twist": (-60.0, 90.0), "r_elbow": (0.0, 150.0),
}
ANGLES: tuple[str, ...] = tuple(ANGLE_LIMITS)
A = {name: i for i, name in enumerate(ANGLES)}
LOWER = np.array([lo for lo, _ in ANGLE_LIMITS.values()])
UPPER = np.array([hi for _, hi in ANGLE_LIMITS.values()])


def clip_angles(angles: np.ndarray) -> np.ndarray:
    """Angles [..., len(ANGLES)] clipped to the joint limits."""
    return np.clip(angles, LOWER, UPPER)


@dataclass(frozen=True)
class Proportions:
    """Body size (``height`` mm, head top to floor when standing) and segment lengths as fractions of it."""

    height: float = 1700.0
    thigh: float = 0.245
    shin: float = 0.245
    ankle: float = 0.04       # ankle above the floor
    spine: float = 0.30       # body centre to neck
    hip_half: float = 0.095
    shoulder_half: float = 0.13
    upper_arm: float = 0.186
    forearm: float = 0.146
    head: float = 1.0         # head size factor
    girth: float = 1.0        # limb and torso thickness factor

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Proportions:
        """Random proportions: adults 1.5-1.95 m, sometimes children 1.0-1.5 m."""
        height = rng.uniform(1000.0, 1500.0) if rng.random() < 0.15 else rng.uniform(1500.0, 1950.0)
        child = height < 1500.0
        f = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        return cls(
            height=height, thigh=0.245 * f(0.93, 1.07), shin=0.245 * f(0.93, 1.07), spine=0.30 * f(0.92, 1.08),
            hip_half=0.095 * f(0.85, 1.2), shoulder_half=0.13 * f(0.85, 1.15) * (0.92 if child else 1.0),
            upper_arm=0.186 * f(0.93, 1.07), forearm=0.146 * f(0.93, 1.07),
            head=f(0.9, 1.1) * (1.25 if child else 1.0), girth=f(0.8, 1.35),
        )


def _rx(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


DOWN = np.array([0.0, -1.0, 0.0])


def _leg(out: np.ndarray, side: str, hip: np.ndarray, root: np.ndarray, a: np.ndarray, p: Proportions) -> None:
    sign = 1.0 if side == "l" else -1.0
    r_thigh = root @ _rz(sign * a[A[f"{side}_hip_abd"]]) @ _rx(-a[A[f"{side}_hip_flex"]])
    r_shin = r_thigh @ _rx(a[A[f"{side}_knee"]])
    knee = hip + r_thigh @ DOWN * (p.thigh * p.height)
    ankle = knee + r_shin @ DOWN * (p.shin * p.height)
    toe = ankle + root @ np.array([0.0, -0.03, 0.11]) * p.height
    j = {"l": (6, 7, 8, L_TOE), "r": (12, 13, 14, R_TOE)}[side]
    out[j[0]], out[j[1]], out[j[2]], out[j[3]] = hip, knee, ankle, toe


def _arm(out: np.ndarray, side: str, shoulder: np.ndarray, spine: np.ndarray, a: np.ndarray, p: Proportions) -> None:
    sign = 1.0 if side == "l" else -1.0
    r_upper = spine @ _rz(sign * a[A[f"{side}_sh_abd"]]) @ _rx(-a[A[f"{side}_sh_flex"]]) @ _ry(
        sign * a[A[f"{side}_sh_twist"]])
    r_fore = r_upper @ _rx(-a[A[f"{side}_elbow"]])
    elbow = shoulder + r_upper @ DOWN * (p.upper_arm * p.height)
    wrist = elbow + r_fore @ DOWN * (p.forearm * p.height)
    hand = wrist + r_fore @ DOWN * (0.07 * p.height)
    j = {"l": (3, 4, 5, L_HAND), "r": (9, 10, 11, R_HAND)}[side]
    out[j[0]], out[j[1]], out[j[2]], out[j[3]] = shoulder, elbow, wrist, hand


def forward_kinematics(angles: np.ndarray, p: Proportions) -> np.ndarray:
    """Points [NUM_POINTS, 3] in the local body frame (mm) for joint angles [len(ANGLES)] (degrees).

    Angles are clipped to ``ANGLE_LIMITS`` first.
    """
    a = clip_angles(np.asarray(angles, dtype=np.float64))
    h = p.height
    out = np.zeros((NUM_POINTS, 3))
    root = _ry(a[A["yaw"]]) @ _rx(a[A["lean"]])
    spine = root @ _ry(a[A["spine_twist"]]) @ _rz(-a[A["spine_lat"]]) @ _rx(a[A["spine_flex"]])
    neck = spine @ np.array([0.0, p.spine * h, 0.0])
    out[0] = neck
    _leg(out, "l", root @ np.array([p.hip_half * h, 0.0, 0.0]), root, a, p)
    _leg(out, "r", root @ np.array([-p.hip_half * h, 0.0, 0.0]), root, a, p)
    _arm(out, "l", neck + spine @ np.array([p.shoulder_half * h, -0.02 * h, 0.0]), spine, a, p)
    _arm(out, "r", neck + spine @ np.array([-p.shoulder_half * h, -0.02 * h, 0.0]), spine, a, p)
    head = spine @ _ry(a[A["neck_yaw"]]) @ _rx(a[A["neck_pitch"]])
    s = p.head * h
    local = {
        1: (0.0, 0.10, 0.062), 15: (0.03, 0.12, 0.052), 17: (-0.03, 0.12, 0.052),  # nose, l_eye, r_eye
        16: (0.06, 0.105, 0.0), 18: (-0.06, 0.105, 0.0),                              # l_ear, r_ear
        HEAD_TOP: (0.0, 0.17, 0.0), UPPER_NECK: (0.0, 0.045, 0.0), HEAD_CENTER: (0.0, 0.105, 0.005),
        HAIR_CENTER: (0.0, 0.115, -0.012),
    }
    for j, offset in local.items():
        out[j] = neck + head @ (np.array(offset) * s)
    return out


def head_radius(p: Proportions) -> float:
    """Radius (mm) of the head sphere centred on ``HEAD_CENTER``."""
    return 0.066 * p.head * p.height


def ground_offset(points: np.ndarray, p: Proportions) -> float:
    """Height (mm) of the body centre above the floor so that the lowest ankle is at ankle height."""
    return float(-points[[8, 14], 1].min() + p.ankle * p.height)
