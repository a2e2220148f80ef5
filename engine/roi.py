"""Person crops from keypoints: single-person ROI tracking and the cascade's per-person crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.codecs import Crop


@dataclass(frozen=True)
class RoiParams:
    """ROI settings.

    Attributes:
        threshold: a person whose mean joint score is below this loses its ROI (next frame: full frame).
        joint_threshold: joints scoring below this are left out of the box.
        min_joints: fewer confident joints than this -> no crop.
        margin: the joints' box is grown by this factor (each side), then widened to the input's aspect.
        min_size: smallest crop side in frame pixels.
        second_look: a frame without an ROI (seen whole, its person small in the input) is run again on the
            crop its keypoints give, and the look with the higher mean joint score is kept: acquisition at
            crop resolution, for one extra pass on such frames only.
        zoom_below: a tracked frame whose mean joint score is below this is run again on a crop ``zoom`` times
            the size, centred on its confident joints, and the more confident look is kept: a crop locked too
            large (the person small in it, its joints spread, so the next crop as large again) recovers
            (0 disables). Chosen on validation clips (docs/benchmarks.md).
        zoom: the size factor of that crop.
        check_every: a lock that looks fine is checked by a sweep of search windows (``search_windows``)
            starting every this many frames: a lock on the background that scores above ``threshold`` is never
            dropped by the rule above, so the tracker looks elsewhere now and then (0: never, no relock at all).
        doubt_below: a frame whose mean joint score is below this (or has fallen by more than ``doubt_drop``
            since the frame before) starts a sweep after only ``doubt_every`` frames.
        sweep_looks: search windows looked at per frame while a sweep runs (a sweep is spread over frames so
            that no frame's latency grows by more than this many looks).
        relock_margin: a window whose look's mean joint score beats the frame's own look by this much (and
            reaches ``threshold``) replaces it (this frame's result and the next frame's ROI); the sweep then ends.
        scales: the sides of the search windows as fractions of the frame's shorter side, tiled over the
            frame with a third overlap; 1.0 stands for the whole (letterboxed) frame. Chosen on validation
            clips (docs/benchmarks.md).
    """

    threshold: float = 0.3
    joint_threshold: float = 0.2
    min_joints: int = 4
    margin: float = 1.4
    min_size: float = 32.0
    second_look: bool = True
    zoom_below: float = 0.6
    zoom: float = 0.6
    check_every: int = 90
    doubt_below: float = 0.7
    doubt_drop: float = 0.2
    doubt_every: int = 10
    sweep_looks: int = 2
    relock_margin: float = 0.1
    scales: tuple[float, ...] = (1.0, 0.75, 0.5)

    def __post_init__(self) -> None:
        if self.margin < 1.0 or self.min_joints < 2 or self.min_size <= 0 or not 0 < self.zoom < 1:
            raise ValueError(f"RoiParams: need margin >= 1, min_joints >= 2, min_size > 0, 0 < zoom < 1, got {self}")
        if self.check_every < 0 or self.doubt_every < 1 or self.sweep_looks < 1 or not self.scales \
                or not all(0 < s <= 1 for s in self.scales):
            raise ValueError(f"RoiParams: need check_every >= 0, doubt_every >= 1, sweep_looks >= 1 and scales in "
                             f"(0, 1], got {self}")


def _confident(xy: np.ndarray, score: np.ndarray, params: RoiParams) -> np.ndarray:
    """Mask [K] of the joints that place a crop: finite and scoring at least ``joint_threshold``."""
    return (score >= params.joint_threshold) & np.isfinite(xy).all(-1)


def crop_from_keypoints(xy: np.ndarray, score: np.ndarray, input_size: tuple[int, int],
                        params: RoiParams = RoiParams()) -> Crop | None:
    """The crop (input-size aspect) around one person's confident joints xy [K,2] (score [K]), or None."""
    valid = _confident(xy, score, params)
    if valid.sum() < params.min_joints:
        return None
    lo, hi = xy[valid].min(0), xy[valid].max(0)
    center = (lo + hi) / 2.0
    w, h = np.maximum((hi - lo) * params.margin, params.min_size)
    aspect = input_size[0] / input_size[1]
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    return Crop((float(center[0]), float(center[1])), (float(w), float(h)), input_size)


def next_roi(xy: np.ndarray, score: np.ndarray, input_size: tuple[int, int], params: RoiParams) -> Crop | None:
    """The next frame's crop from this frame's single-person result, or None (go back to the full frame)."""
    if len(score) == 0 or float(score.mean()) < params.threshold:
        return None
    return crop_from_keypoints(xy, score, input_size, params)


def zoom_crop(roi: Crop, xy: np.ndarray, score: np.ndarray, params: RoiParams) -> Crop | None:
    """A crop ``params.zoom`` times the size of ``roi`` (not under ``min_size``), centred on the confident joints
    (or on ``roi``'s centre), when the mean joint score seen in ``roi`` is below ``params.zoom_below``; else None."""
    if len(score) == 0 or float(score.mean()) >= params.zoom_below:
        return None
    valid = _confident(xy, score, params)
    center = xy[valid].mean(0) if valid.sum() >= 2 else np.asarray(roi.center)
    factor = max(params.zoom, params.min_size / min(roi.size))
    if factor >= 1.0:
        return None
    return Crop((float(center[0]), float(center[1])), (roi.size[0] * factor, roi.size[1] * factor), roi.dst_size)


def search_windows(frame_size: tuple[int, int], input_size: tuple[int, int], scales: tuple[float, ...]) -> list[Crop]:
    """Windows (input aspect) covering a ``frame_size`` (w, h) frame at each scale: the side (its shorter one) is
    ``scale`` times the frame's shorter side, windows overlap by a third; 1.0 is the whole frame, letterboxed."""
    fw, fh = frame_size
    aspect = input_size[0] / input_size[1]
    out = []
    for scale in scales:
        if scale >= 1.0:
            w, h = (fw, fw / aspect) if fw / fh > aspect else (fh * aspect, fh)
            out.append(Crop((fw / 2.0, fh / 2.0), (float(w), float(h)), input_size))
            continue
        h = scale * min(fw, fh)
        w = h * aspect
        xs = _tile(fw, w)
        ys = _tile(fh, h)
        out += [Crop((float(x), float(y)), (w, h), input_size) for y in ys for x in xs]
    return out


def _tile(extent: float, side: float) -> np.ndarray:
    """Centres of windows of ``side`` covering ``extent`` with at least a third of overlap."""
    if side >= extent:
        return np.array([extent / 2.0])
    n = int(np.ceil((extent - side) / (side * 2 / 3))) + 1
    return np.linspace(side / 2.0, extent - side / 2.0, n)


class Relock:
    """One stream's self-check of its single-person lock: when to sweep the frame with search windows.

    Per frame, ``windows(frame_size, score, ...)`` gets the mean joint score of the frame's own look and returns
    the windows to look at as well (none outside a sweep). A sweep starts ``check_every`` frames after the last
    one ended, or ``doubt_every`` frames after it when the look is doubtful (see ``RoiParams``), and looks at
    ``sweep_looks`` windows per frame until all were seen or ``relocked()`` says one was taken.
    """

    def __init__(self, params: RoiParams):
        self.params = params
        self.idle = params.doubt_every - 1                        # frames since the last sweep ended
        self.cursor: int | None = None                            # next window of the running sweep
        self.previous: float | None = None
        self.looks = 0                                            # windows looked at so far (for benchmarks)

    def doubtful(self, score: float) -> bool:
        p, previous = self.params, self.previous
        self.previous = score
        return score < p.doubt_below or (previous is not None and previous - score > p.doubt_drop)

    def windows(self, frame_size: tuple[int, int], score: float, input_size: tuple[int, int]) -> list[Crop]:
        p = self.params
        doubtful = self.doubtful(score)
        if p.check_every == 0:
            return []
        if self.cursor is None:
            self.idle += 1
            if self.idle < (p.doubt_every if doubtful else p.check_every):
                return []
            self.cursor = 0
        every = search_windows(frame_size, input_size, p.scales)
        take = every[self.cursor:self.cursor + p.sweep_looks]
        self.cursor += len(take)
        if self.cursor >= len(every):
            self.relocked()
        self.looks += len(take)
        return take

    def relocked(self) -> None:
        """End the running sweep (a window was taken, or every window was seen)."""
        self.cursor, self.idle = None, 0
