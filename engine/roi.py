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
    """

    threshold: float = 0.3
    joint_threshold: float = 0.2
    min_joints: int = 4
    margin: float = 1.4
    min_size: float = 32.0
    second_look: bool = True
    zoom_below: float = 0.6
    zoom: float = 0.6

    def __post_init__(self) -> None:
        if self.margin < 1.0 or self.min_joints < 2 or self.min_size <= 0 or not 0 < self.zoom < 1:
            raise ValueError(f"RoiParams: need margin >= 1, min_joints >= 2, min_size > 0, 0 < zoom < 1, got {self}")


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
