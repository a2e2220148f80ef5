"""Per-stream person tracking: stable ids across frames, optional One-Euro smoothing per track.

A ``Tracker`` keeps the tracks of one stream. Joints that are not finite never match or move a track, and
a tracker whose state has run away to non-finite values anyway (joints far beyond any frame, squared in OKS)
starts afresh rather than carrying them on. Each frame, the detections (a ``Poses``) are matched to the
tracks' predicted poses (constant-velocity prediction of the joints) by OKS or keypoint-box IoU, one-to-one,
with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) or greedily. Unmatched detections start
new tracks; a track survives up to ``max_age`` frames without a match, so short misses keep their ids.
``StreamTrackers`` holds one ``Tracker`` per stream id.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.results import Poses
from engine.smoothing import OneEuroFilter, OneEuroParams

MAX_COORD = 1e7  # joints beyond this many pixels are treated as missing


@dataclass(frozen=True)
class TrackerParams:
    """Tracker settings.

    Attributes:
        metric: "oks" (object keypoint similarity) or "iou" (IoU of the keypoints' bounding boxes).
        matcher: "hungarian" (optimal) or "greedy" (best pair first).
        min_similarity: pairs below this similarity are never matched.
        max_age: frames a track may go unmatched before it is dropped.
        joint_threshold: joints with a score below this are ignored for matching.
        smoothing: One-Euro parameters for 2D keypoints, or None for no smoothing (the default).
        smoothing_3d: One-Euro parameters for 3D keypoints (millimetres), or None.
        frame_rate: frames per second assumed when ``update`` gets no timestamp.
    """

    metric: str = "oks"
    matcher: str = "hungarian"
    min_similarity: float = 0.2
    max_age: int = 10
    joint_threshold: float = 0.1
    smoothing: OneEuroParams | None = None
    smoothing_3d: OneEuroParams | None = None
    frame_rate: float = 30.0

    def __post_init__(self) -> None:
        if self.metric not in ("oks", "iou"):
            raise ValueError(f"TrackerParams.metric must be 'oks' or 'iou', got {self.metric!r}")
        if self.matcher not in ("hungarian", "greedy"):
            raise ValueError(f"TrackerParams.matcher must be 'hungarian' or 'greedy', got {self.matcher!r}")
        if self.max_age < 0 or self.frame_rate <= 0:
            raise ValueError(f"TrackerParams: max_age must be >= 0 and frame_rate > 0, got {self}")


@dataclass
class _Track:
    track_id: int
    xy: np.ndarray  # [K,2] last matched (raw) joints
    valid: np.ndarray  # [K] bool
    velocity: np.ndarray  # [K,2] px per frame
    age: int = 0  # frames since last match
    filter_2d: OneEuroFilter | None = None
    filter_3d: OneEuroFilter | None = None

    def predicted(self) -> np.ndarray:
        return self.xy + self.velocity * (self.age + 1)


@dataclass
class _State:
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 0
    frames: int = 0


def keypoint_boxes(xy: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Boxes [N,4] (x0, y0, x1, y1) around the valid joints of xy [N,K,2] (valid [N,K]); all-invalid -> zeros."""
    big = np.where(valid[..., None], xy, np.inf)
    small = np.where(valid[..., None], xy, -np.inf)
    lo, hi = big.min(axis=1), small.max(axis=1)
    boxes = np.concatenate([lo, hi], axis=1)
    return np.where(np.isfinite(boxes), boxes, 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [N,M] of boxes a [N,4] and b [M,4] (x0, y0, x1, y1)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def oks(a: np.ndarray, a_valid: np.ndarray, b: np.ndarray, b_valid: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Object keypoint similarity [N,M] between poses a [N,K,2] and b [M,K,2] (COCO formula).

    The scale is the area of b's keypoint box (the reference); joints invalid in either pose are skipped.
    """
    area = (lambda bx: (bx[:, 2:] - bx[:, :2]).prod(-1))(keypoint_boxes(b, b_valid))
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1)  # [N,M,K]
    var = (2 * sigmas) ** 2
    e = d2 / (2 * var[None, None] * (np.maximum(area, 1.0)[None, :, None] + np.spacing(1)))
    both = a_valid[:, None] & b_valid[None]
    count = both.sum(-1)
    return np.where(count > 0, (np.exp(-e) * both).sum(-1) / np.maximum(count, 1), 0.0)


def match(similarity: np.ndarray, min_similarity: float, method: str) -> list[tuple[int, int]]:
    """One-to-one pairs (row, col) maximising similarity [N,M]; pairs below ``min_similarity`` are dropped."""
    if similarity.size == 0:
        return []
    if method == "hungarian":
        rows, cols = linear_sum_assignment(-similarity)
        pairs = zip(rows.tolist(), cols.tolist())
    else:
        order = np.argsort(-similarity, axis=None, kind="stable")
        used_r, used_c, pairs = set(), set(), []
        for flat in order.tolist():
            r, c = divmod(flat, similarity.shape[1])
            if r not in used_r and c not in used_c:
                used_r.add(r), used_c.add(c), pairs.append((r, c))
    return [(r, c) for r, c in pairs if similarity[r, c] >= min_similarity]


class Tracker:
    """Tracks of one stream. ``update(poses)`` returns the same poses with ``track_id`` set (and smoothed)."""

    def __init__(self, oks_sigmas: np.ndarray | tuple[float, ...], params: TrackerParams = TrackerParams()) -> None:
        self.sigmas = np.asarray(oks_sigmas, dtype=np.float64)
        self.params = params
        self._state = _State()

    def reset(self) -> None:
        self._state = _State()

    def _similarity(self, det_xy: np.ndarray, det_valid: np.ndarray) -> np.ndarray:
        tracks = self._state.tracks
        pred = np.stack([t.predicted() for t in tracks]) if tracks else np.zeros((0,) + det_xy.shape[1:])
        pred_valid = np.stack([t.valid for t in tracks]) if tracks else np.zeros((0, det_xy.shape[1]), bool)
        if self.params.metric == "iou":
            return box_iou(keypoint_boxes(pred, pred_valid), keypoint_boxes(det_xy, det_valid))
        return oks(pred, pred_valid, det_xy, det_valid, self.sigmas)

    def update(self, poses: Poses, t: float | None = None) -> Poses:
        """Assign track ids to ``poses`` (one frame); ``t`` is its time in seconds (default frame / frame_rate)."""
        if poses.xy.shape[1:] != (len(self.sigmas), 2):
            raise ValueError(f"Tracker.update: poses have {poses.xy.shape[1]} joints, tracker has {len(self.sigmas)}")
        p, st = self.params, self._state
        t = st.frames / p.frame_rate if t is None else t
        st.frames += 1
        xy = poses.xy.astype(np.float64)
        valid = (poses.score >= p.joint_threshold) & np.isfinite(xy).all(-1) & (np.abs(xy) < MAX_COORD).all(-1)
        xy = np.where(valid[..., None], xy, 0.0)
        pairs = match(self._similarity(xy, valid), p.min_similarity, p.matcher)
        ids = np.full(len(poses), -1, np.int64)
        matched = set()
        for r, c in pairs:
            track = st.tracks[r]
            both = track.valid & valid[c]
            step = track.age + 1
            new_v = np.where(both[:, None], (xy[c] - track.xy) / step, track.velocity)
            track.velocity = 0.5 * new_v + 0.5 * track.velocity
            track.xy, track.valid, track.age = np.where(valid[c][:, None], xy[c], track.xy), valid[c] | track.valid, 0
            ids[c] = track.track_id
            matched.add(r)
        for i, track in enumerate(st.tracks):
            if i not in matched:
                track.age += 1
        st.tracks = [tr for tr in st.tracks if tr.age <= p.max_age]
        for c in np.flatnonzero(ids < 0).tolist():
            st.tracks.append(_Track(st.next_id, xy[c].copy(), valid[c].copy(), np.zeros_like(xy[c])))
            ids[c] = st.next_id
            st.next_id += 1
        if not all(np.isfinite(tr.xy).all() and np.isfinite(tr.velocity).all() for tr in st.tracks):
            self._state = _State(next_id=st.next_id, frames=st.frames)  # ids keep counting up: none is reused
            return replace(poses, track_id=np.full(len(poses), -1, np.int64))
        return self._smooth(replace(poses, track_id=ids), t)

    def _smooth(self, poses: Poses, t: float) -> Poses:
        p = self.params
        if p.smoothing is None and (p.smoothing_3d is None or poses.xyz is None):
            return poses
        by_id = {tr.track_id: tr for tr in self._state.tracks}
        xy = poses.xy.copy()
        xyz = None if poses.xyz is None else poses.xyz.copy()
        for n, tid in enumerate(poses.track_id.tolist()):
            track = by_id[tid]
            if p.smoothing is not None:
                track.filter_2d = track.filter_2d or OneEuroFilter(p.smoothing)
                xy[n] = track.filter_2d(poses.xy[n], t)
            if p.smoothing_3d is not None and xyz is not None:
                track.filter_3d = track.filter_3d or OneEuroFilter(p.smoothing_3d)
                xyz[n] = track.filter_3d(poses.xyz[n], t)
        return replace(poses, xy=xy, xyz=xyz)


class StreamTrackers:
    """One ``Tracker`` per stream id, created on first sight."""

    def __init__(self, oks_sigmas: np.ndarray | tuple[float, ...], params: TrackerParams = TrackerParams()) -> None:
        self.sigmas = oks_sigmas
        self.params = params
        self._trackers: dict[str, Tracker] = {}

    def update(self, stream_id: str, poses: Poses, t: float | None = None) -> Poses:
        tracker = self._trackers.get(stream_id)
        if tracker is None:
            tracker = self._trackers[stream_id] = Tracker(self.sigmas, self.params)
        return tracker.update(poses, t)

    def drop(self, stream_id: str) -> None:
        """Forget a stream (at its end of stream)."""
        self._trackers.pop(stream_id, None)
