"""Scenes -> frames with exact ground truth: 2D, visibility, 3D camera mm and intrinsics.

Visibility (stored where pose files hold the score), COCO style:
    2  inside the frame and not covered;
    1  inside the frame but occluded: a nearer person's body covers the joint's pixel in the rendered id
       buffer, or a face point (nose, eyes, ears) lies on the far side of its own head;
    0  outside the frame (x or y beyond the pixel-centre bounds [-0.5, size - 0.5)).
A person with no joint inside the frame is left out of the frame's record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.results import Poses
from models.layouts import PANOPTIC19, get_layout, index_map
from stream.posefile import PoseRecord
from tools.synth import body as B
from tools.synth.background import make_background
from tools.synth.render import draw, person_primitives
from tools.synth.scene import Camera, Person, camera_points, sample_person

FACE_POINTS = (1, 15, 16, 17, 18)


@dataclass
class Scene:
    """A camera, people, a background and a light direction (image plane unit vector)."""

    size: tuple[int, int]
    camera: Camera
    persons: list[Person]
    background: np.ndarray
    light: np.ndarray


@dataclass
class Rendered:
    """One rendered frame. N persons (all of the scene's, in scene order), K = body.NUM_KEYPOINTS (21).

    frame uint8 [H,W,3] BGR; labels uint8 [H,W] (0 background, 1 + index into scene.persons);
    uv float64 [N,K,2] pixels; xyz float64 [N,K,3] camera mm; visibility int [N,K] in {0,1,2};
    track_id int64 [N].
    """

    frame: np.ndarray
    labels: np.ndarray
    uv: np.ndarray
    xyz: np.ndarray
    visibility: np.ndarray
    track_id: np.ndarray


def sample_scene(seed: int, persons: tuple[int, int] = (1, 6), size: tuple[int, int] = (640, 480),
                 duration: float = 10.0) -> Scene:
    """A random scene with ``persons`` = (min, max) people (inclusive), deterministic from ``seed``."""
    lo, hi = persons
    if not 0 <= lo <= hi or hi > 250:
        raise ValueError(f"persons must be (min, max) with 0 <= min <= max <= 250, got {persons}")
    if size[0] < 8 or size[1] < 8:
        raise ValueError(f"size must be (width, height) of at least 8 px, got {size}")
    rng = np.random.default_rng(seed)
    camera = Camera.sample(rng, size)
    count = int(rng.integers(lo, hi + 1))
    people = [sample_person(rng, i, camera, size, duration, central=(i == 0)) for i in range(count)]
    horizon = camera.cy - camera.fy * np.tan(np.radians(camera.pitch))
    angle = rng.uniform(0, 2 * np.pi)
    return Scene(size=size, camera=camera, persons=people, background=make_background(rng, size, horizon),
                 light=np.array([np.cos(angle), np.sin(angle)]))


def render_scene(scene: Scene, t: float) -> Rendered:
    """Render ``scene`` at time ``t`` seconds with exact ground truth."""
    w, h = scene.size
    frame = scene.background.copy()
    labels = np.zeros((h, w), np.uint8)
    pts = [camera_points(p, scene.camera, t) for p in scene.persons]
    k = B.NUM_KEYPOINTS
    xyz = np.array([q[:k] for q in pts]).reshape(-1, k, 3)
    prims, drawn = [], np.array([bool(np.all(q[:, 2] > 100.0)) for q in pts], bool)
    for i, (p, q) in enumerate(zip(scene.persons, pts)):
        if drawn[i]:
            prims += person_primitives(scene.camera.project(q), q, p.props, p.clothing, scene.camera.fx, i + 1,
                                       scene.light)
    draw(frame, labels, prims)
    uv = scene.camera.project(xyz)
    vis = visibility(uv, labels)
    vis[~drawn] = 0  # (never happens in sampled scenes: everybody stays >= 1.8 m in front of the camera)
    for i, q in enumerate(pts):
        vis[i, _self_occluded_face(q) & (vis[i] == 2)] = 1
    ids = np.array([p.track_id for p in scene.persons], np.int64)
    return Rendered(frame=frame, labels=labels, uv=uv, xyz=xyz, visibility=vis, track_id=ids)


def visibility(uv: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Visibility [N,K] (0/1/2, see the module docstring) of points uv [N,K,2] of persons 1..N in ``labels``."""
    h, w = labels.shape
    n = uv.shape[0]
    inside = (uv[..., 0] >= -0.5) & (uv[..., 0] < w - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] < h - 0.5)
    px = np.clip(np.floor(uv + 0.5).astype(np.int64), 0, [w - 1, h - 1])
    hit = labels[px[..., 1], px[..., 0]].astype(np.int64)
    own = np.arange(1, n + 1)[:, None]
    occluded = (hit != 0) & (hit != own)
    return np.where(inside, np.where(occluded, 1, 2), 0)


def _self_occluded_face(xyz_full: np.ndarray) -> np.ndarray:
    """[K] bool: face points on the far side of the head, for camera points [NUM_POINTS, 3]."""
    c = xyz_full[B.HEAD_CENTER]
    out = np.zeros(B.NUM_KEYPOINTS, bool)
    for j in FACE_POINTS:
        out[j] = float((xyz_full[j] - c) @ -c) < 0.0
    return out


def layout_index(layout: str) -> np.ndarray:
    """For each joint of ``layout``, its index among the generator's 21 keypoints."""
    dst = get_layout(layout)
    index = index_map(PANOPTIC19, dst)
    for j, name in enumerate(dst.names):
        if index[j] < 0:
            if name not in B.EXTRA_NAMES:
                raise ValueError(f"layout {layout!r}: joint {name!r} cannot be derived from the synthetic body")
            index[j] = B.EXTRA_NAMES[name]
    return index


def to_record(r: Rendered, layout: str, frame: int, stream: str, intrinsics: dict[str, float]) -> PoseRecord:
    """The ground truth of ``r`` as a PoseRecord in ``layout`` (visibility in place of the score)."""
    index = layout_index(layout)
    keep = np.flatnonzero((r.visibility > 0).any(axis=1))
    poses = Poses(layout=layout, xy=r.uv[keep][:, index].astype(np.float32),
                  score=r.visibility[keep][:, index].astype(np.float32),
                  person_score=np.ones(len(keep), np.float32), track_id=r.track_id[keep],
                  xyz=r.xyz[keep][:, index].astype(np.float32))
    return PoseRecord(stream=stream, frame=frame, layout=layout, poses=poses, pts=frame, intrinsics=dict(intrinsics))


def generate_clip(seed: int, persons: tuple[int, int] = (1, 6), frames: int = 300, size: tuple[int, int] = (640, 480),
                  layout: str = "coco17", fps: float = 30.0) -> Iterator[tuple[np.ndarray, PoseRecord]]:
    """Frames (uint8 [H,W,3] BGR) and their ground truth records of a smooth clip, deterministic from ``seed``."""
    if frames < 0 or fps <= 0:
        raise ValueError(f"frames must be >= 0 and fps > 0, got frames={frames}, fps={fps}")
    layout_index(layout)
    scene = sample_scene(seed, persons, size, duration=frames / fps)
    for i in range(frames):
        r = render_scene(scene, i / fps)
        yield r.frame, to_record(r, layout, i, f"synth-{seed}", scene.camera.intrinsics)


def generate_sample(seed: int, persons: tuple[int, int] = (1, 6), size: tuple[int, int] = (640, 480),
                    layout: str = "coco17") -> tuple[np.ndarray, PoseRecord]:
    """One image (uint8 [H,W,3] BGR) and its ground truth, at a random moment of a random scene."""
    layout_index(layout)
    t = float(np.random.default_rng([seed, 1]).uniform(0.0, 20.0))
    scene = sample_scene(seed, persons, size, duration=t)
    r = render_scene(scene, t)
    return r.frame, to_record(r, layout, 0, f"synth-{seed}", scene.camera.intrinsics)
