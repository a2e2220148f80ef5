"""Random scenes: a perspective camera and people who stand, walk, reach or sit, moving smoothly in time.

World frame (mm): x right, y down (gravity), z forward, origin at the camera centre; the floor is the plane
y = ``camera.height``. The camera is pitched down by ``camera.pitch`` degrees; camera coordinates are
``camera.rotation @ world``. Everything is drawn from one ``numpy.random.Generator``, so a scene is a pure
function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tools.synth.body import ANGLES, A, Proportions, forward_kinematics, ground_offset

ACTIVITIES = ("stand", "walk", "reach", "sit")
# Local body frame (X left, Y up, Z forward) -> world (x right, y down, z away from the camera) for yaw 0,
# i.e. a person with yaw 0 faces the camera and their left appears on the image's right.
LOCAL_TO_WORLD = np.diag([1.0, -1.0, -1.0])
SKIN = ((172, 200, 241), (140, 180, 225), (110, 150, 205), (80, 120, 170), (60, 90, 140), (45, 65, 100),
        (190, 215, 245), (120, 165, 215))


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: intrinsics in pixels, ``height`` (mm) above the floor, ``pitch`` (degrees, down)."""

    fx: float
    fy: float
    cx: float
    cy: float
    height: float
    pitch: float

    @property
    def rotation(self) -> np.ndarray:
        """3x3 world -> camera rotation."""
        c, s = np.cos(np.radians(self.pitch)), np.sin(np.radians(self.pitch))
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """Pixels [..., 2] (pixel-centre convention) of camera points [..., 3] mm with Z > 0."""
        z = xyz[..., 2]
        return np.stack([self.fx * xyz[..., 0] / z + self.cx, self.fy * xyz[..., 1] / z + self.cy], axis=-1)

    @property
    def intrinsics(self) -> dict[str, float]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}

    @classmethod
    def sample(cls, rng: np.random.Generator, size: tuple[int, int]) -> Camera:
        w, h = size
        fov = np.radians(rng.uniform(45.0, 80.0))  # horizontal field of view
        fx = (w / 2.0) / np.tan(fov / 2.0)
        return cls(fx=float(fx), fy=float(fx * rng.uniform(0.99, 1.01)),
                   cx=float((w - 1) / 2.0 + rng.uniform(-0.02, 0.02) * w),
                   cy=float((h - 1) / 2.0 + rng.uniform(-0.02, 0.02) * h),
                   height=float(rng.uniform(800.0, 2000.0)), pitch=float(rng.uniform(-4.0, 15.0)))


@dataclass(frozen=True)
class Clothing:
    """BGR colours of one person and their clothing style."""

    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    shoes: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_sleeves: bool
    long_pants: bool
    stripes: int  # 0 plain shirt, n > 0: n horizontal stripes
    stripe_color: tuple[int, int, int]

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Clothing:
        col = lambda: tuple(int(v) for v in rng.integers(0, 256, 3))  # noqa: E731
        dark = lambda: tuple(int(v) for v in rng.integers(10, 90, 3))  # noqa: E731
        hair = tuple(int(v) for v in np.array((20, 40, 60)) * rng.uniform(0.3, 3.0)) if rng.random() < 0.85 else col()
        return cls(skin=SKIN[rng.integers(len(SKIN))], shirt=col(), pants=col() if rng.random() < 0.6 else dark(),
                   shoes=dark(), hair=tuple(min(255, v) for v in hair), long_sleeves=bool(rng.random() < 0.5),
                   long_pants=bool(rng.random() < 0.7), stripes=int(rng.integers(2, 7)) if rng.random() < 0.3 else 0,
                   stripe_color=col())


@dataclass
class Person:
    """One person's body, clothes and smooth motion (angles = base + amp * sin(2 pi freq t + phase) + gait)."""

    track_id: int
    props: Proportions
    clothing: Clothing
    activity: str
    base: np.ndarray            # [len(ANGLES)] degrees
    amp: np.ndarray
    freq: np.ndarray            # Hz
    phase: np.ndarray           # radians
    start: np.ndarray           # [2] world (x, z) mm of the body centre at t = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # mm/s
    gait: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # cadence Hz, hip amp, knee amp, arm amp

    def angles(self, t: float) -> np.ndarray:
        """Joint angles [len(ANGLES)] (degrees) at time ``t`` seconds."""
        a = self.base + self.amp * np.sin(2.0 * np.pi * self.freq * t + self.phase)
        cadence, hip, knee, arm = self.gait
        if cadence > 0:
            th = 2.0 * np.pi * cadence * t
            a[A["l_hip_flex"]] += hip * np.sin(th)
            a[A["r_hip_flex"]] -= hip * np.sin(th)
            a[A["l_knee"]] += knee * max(0.0, np.sin(th + 1.9))
            a[A["r_knee"]] += knee * max(0.0, np.sin(th + 1.9 + np.pi))
            a[A["l_sh_flex"]] -= arm * np.sin(th)
            a[A["r_sh_flex"]] += arm * np.sin(th)
        return a

    def world_points(self, t: float, floor_y: float) -> np.ndarray:
        """Points [body.NUM_POINTS, 3] in world mm at time ``t``, feet on the floor."""
        local = forward_kinematics(self.angles(t), self.props)
        local[:, 1] += ground_offset(local, self.props)
        xz = self.start + self.velocity * t
        return local @ LOCAL_TO_WORLD.T + np.array([xz[0], floor_y, xz[1]])


def _base_angles(rng: np.random.Generator, activity: str) -> tuple[np.ndarray, np.ndarray]:
    """Base angles and oscillation amplitudes [len(ANGLES)] for an activity."""
    base, amp = np.zeros(len(ANGLES)), rng.uniform(0.0, 6.0, len(ANGLES))
    u = rng.uniform
    base[A["yaw"]] = u(-180, 180)
    base[[A["lean"], A["spine_flex"], A["spine_lat"], A["spine_twist"]]] = u(-3, 8), u(-5, 15), u(-6, 6), u(-12, 12)
    base[[A["neck_pitch"], A["neck_yaw"]]] = u(-15, 25), u(-45, 45)
    amp[A["yaw"]] = u(0, 15) if activity != "walk" else 0.0
    amp[A["neck_yaw"]] = u(0, 25)
    for s in "lr":
        base[[A[f"{s}_hip_flex"], A[f"{s}_hip_abd"], A[f"{s}_knee"]]] = u(-5, 15), u(-5, 15), u(0, 20)
        base[[A[f"{s}_sh_flex"], A[f"{s}_sh_abd"], A[f"{s}_sh_twist"], A[f"{s}_elbow"]]] = (
            u(-20, 40), u(0, 40), u(-20, 40), u(0, 100))
        if rng.random() < 0.3:  # anywhere within the limits
            for name in ("sh_flex", "sh_abd", "sh_twist", "elbow"):
                base[A[f"{s}_{name}"]] = u(-40, 170) if name == "sh_flex" else u(0, 140)
            amp[A[f"{s}_sh_flex"]] = u(0, 30)
    if activity == "reach":
        base[A["spine_flex"]] = u(0, 30)
        for s in ("l", "r") if rng.random() < 0.4 else (str(rng.choice(["l", "r"])),):
            base[[A[f"{s}_sh_flex"], A[f"{s}_sh_abd"], A[f"{s}_elbow"]]] = u(60, 175), u(0, 90), u(0, 40)
            amp[[A[f"{s}_sh_flex"], A[f"{s}_elbow"]]] = u(10, 40), u(0, 25)
    elif activity == "sit":
        base[A["spine_flex"]] = u(-10, 20)
        for s in "lr":
            base[[A[f"{s}_hip_flex"], A[f"{s}_hip_abd"], A[f"{s}_knee"]]] = u(75, 105), u(0, 20), u(70, 110)
    elif activity == "walk":
        base[[A["lean"], A["spine_flex"]]] = u(0, 6), u(-3, 8)
        for s in "lr":
            base[[A[f"{s}_hip_flex"], A[f"{s}_hip_abd"], A[f"{s}_knee"]]] = 5.0, u(0, 6), 8.0
            base[[A[f"{s}_sh_flex"], A[f"{s}_sh_abd"], A[f"{s}_elbow"]]] = 0.0, u(5, 15), u(10, 40)
            amp[[A[f"{s}_hip_flex"], A[f"{s}_knee"], A[f"{s}_sh_flex"]]] = 0.0
    return base, amp


def sample_person(rng: np.random.Generator, track_id: int, camera: Camera, size: tuple[int, int],
                  duration: float, central: bool = False) -> Person:
    """A random person somewhere in (or near) the camera's view; ``central`` keeps them near the middle."""
    activity = str(rng.choice(ACTIVITIES, p=(0.3, 0.35, 0.2, 0.15)))
    base, amp = _base_angles(rng, activity)
    props = Proportions.sample(rng)
    z = rng.uniform(2000.0, 11000.0) if not central else rng.uniform(2000.0, 7000.0)
    half = z * (size[0] / 2.0) / camera.fx
    x = rng.uniform(-0.5, 0.5) * half if central else rng.uniform(-1.3, 1.3) * half
    person = Person(track_id=track_id, props=props, clothing=Clothing.sample(rng), activity=activity,
                    base=base, amp=amp, freq=rng.uniform(0.05, 0.5, len(ANGLES)),
                    phase=rng.uniform(0, 2 * np.pi, len(ANGLES)), start=np.array([x, z]))
    if activity == "walk":
        speed = rng.uniform(700.0, 1700.0)
        heading = float(base[A["yaw"]])
        z_end = z - speed * np.cos(np.radians(heading)) * duration
        if not 1800.0 <= z_end <= 14000.0:
            heading = 180.0 - heading
            z_end = z - speed * np.cos(np.radians(heading)) * duration
            if not 1800.0 <= z_end <= 14000.0:
                heading = 90.0 if heading % 360.0 < 180.0 else -90.0
        person.base[A["yaw"]] = heading
        person.velocity = speed * np.array([np.sin(np.radians(heading)), -np.cos(np.radians(heading))])
        cadence = speed / (0.85 * props.height)
        person.gait = (cadence, rng.uniform(15, 30), rng.uniform(30, 55), rng.uniform(8, 30))
        person.phase[A["yaw"]] = 0.0
    return person


def camera_points(person: Person, camera: Camera, t: float) -> np.ndarray:
    """Points [body.NUM_POINTS, 3] of ``person`` in camera mm at time ``t``."""
    return person.world_points(t, camera.height) @ camera.rotation.T
