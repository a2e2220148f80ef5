"""BlazePose GHUM as a multi-person teacher: the arithmetic (anchors, detections, regions, crops, landmarks).

This module imports nothing but numpy: the teacher's child process (``engine/_blazepose_child.py``) loads it by
file path inside the teacher's own virtual environment, and posestream's tests import it as ``engine.blazepose``.
It is written from MediaPipe's graphs (``pose_detection_cpu.pbtxt``, ``pose_detection_to_roi.pbtxt``,
``pose_landmark_by_roi_cpu.pbtxt``, ``tensors_to_pose_landmarks_and_segmentation.pbtxt``,
``pose_landmarks_to_roi.pbtxt``); the multi-person search that uses them (:class:`SearchParams`) runs in the child.

Terminology (frame pixels follow posestream's convention: the top-left pixel's centre is (0, 0)):

* region ``[R, 4]`` float64 ``(cx, cy, side, angle)``: a square of ``side`` frame pixels centred at
  ``(cx, cy)``, turned by ``angle`` radians (MediaPipe's sense: positive turns the square's "up" from the
  frame's up towards its right). A crop of size ``S`` maps its continuous coordinate ``c`` in ``[0, S]``
  (pixel ``i`` spans ``[i, i + 1)``, the models' convention) to ``centre + side * R(angle) @ (c / S - 0.5)``.
* detector: ``pose_detection.tflite``, input ``[1, 224, 224, 3]`` RGB in [-1, 1]; outputs ``[1, 2254, 12]``
  (box centre x, y, width, height, then 4 keypoints x, y, all in input pixels relative to an SSD anchor) and
  ``[1, 2254, 1]`` logits. Keypoints: 0 mid-hip centre, 1 a point whose distance from 0 gives the full body's
  size and whose direction its rotation, 2 mid-shoulder centre, 3 the same for the upper body.
* landmarks: ``pose_landmark_{full,heavy}.tflite``, input ``[1, 256, 256, 3]`` RGB in [0, 1]; outputs
  ``[1, 195]`` (39 x (x, y, z, visibility logit, presence logit), crop pixels), ``[1, 1]`` person presence
  (a probability), ``[1, 256, 256, 1]`` segmentation, ``[1, 64, 64, 39]`` heatmap logits, ``[1, 117]``
  (39 world points x (x, y, z) metres, hip-centred, in the crop's orientation). Of the 39, 0-32 are the body
  (``models.layouts.BlazePose``), 33 and 34 the alignment points for the next frame's region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DETECTOR_SIZE = 224
LANDMARK_SIZE = 256
HEATMAP_SIZE = 64
BODY_LANDMARKS = 33
REGION_SCALE = 1.25          # MediaPipe's margin around the alignment points' square (full body)
DETECTOR_STRIDES = (8, 16, 32, 32, 32)
DETECTOR_MIN_SCALE, DETECTOR_MAX_SCALE = 0.1484375, 0.75


@dataclass(frozen=True)
class SearchParams:
    """How the teacher looks for people in a frame (the knobs that trade coverage for time).

    Attributes:
        tiles: detector passes, each the number of square tiles across the frame's shorter side (1: the whole
            frame, letterboxed; 2, 3: overlapping tiles, upscaled for the detector, which finds people only
            when they are a quarter or more of its 224-pixel input).
        tile_overlap: neighbouring tiles overlap by this share of a side.
        detect_every: run the detector on every n-th labelled frame only (tracks carry people in between).
        min_detection: detector score from which a detection proposes a region (MediaPipe decodes from 0.2
            and follows the best one only).
        merge_distance: detections whose hip centres lie within this share of their body radius are one person
            (``merge_detections``).
        min_presence: the landmark model's person presence from which a region's person is accepted
            (MediaPipe's 0.5).
        ignore_presence: a detection whose presence lies between this and ``min_presence`` becomes an ignore
            region (the teacher is unsure); below it the landmark model is sure nobody is there: a true negative,
            not ignored (on vtest.avi most rejected detections score under 0.01: cones, posts). A region from last
            frame's person that finds nobody is always ignored (the person may be hidden).
        box_scale: region side / longer side of a proposal box (the caller's, e.g. posestream's own detections).
        ignore_proposals: a caller's box in which the landmark model finds nobody becomes an ignore region too.
            Off by default: an ignore region is where the teacher saw somebody it could not label (a detection,
            last frame's person); a caller's box (the student's guess) found empty is a true negative, and
            ignoring it would keep the student from unlearning its false detections.
        refine: run the landmark model a second time on the region its first landmarks give, when that region
            differs from the proposal's (as MediaPipe's tracking does on the next frame).
        same_person: two regions whose centres lie closer than this share of the smaller one's side (and whose
            sides differ by less than half) frame the same person: the second is not looked at. Side by side,
            two pedestrians' regions are a fifth of a side apart.
        max_crops: landmark runs per frame at most (tracks first, then detections by score, then boxes).
        max_tilt: people whose body axis (mid-hips to mid-shoulders) is turned more than this many degrees from
            the frame's up are not labelled but ignored (None: any tilt). BlazePose takes upright person-sized
            things (a coat on the grass) for people lying down; a fixed camera's people mostly stand, and one
            lying down becomes an ignore region, not a negative.
    """

    tiles: tuple[int, ...] = (2, 3)
    tile_overlap: float = 0.25
    detect_every: int = 1
    min_detection: float = 0.5
    merge_distance: float = 0.3
    min_presence: float = 0.5
    ignore_presence: float = 0.1
    box_scale: float = 1.25
    ignore_proposals: bool = False
    refine: bool = True
    same_person: float = 0.1
    max_crops: int = 40
    max_tilt: float | None = 60.0

    def __post_init__(self) -> None:
        if not self.tiles or min(self.tiles) < 1 or self.detect_every < 1 or self.max_crops < 1:
            raise ValueError(f"SearchParams: need tiles >= 1, detect_every >= 1, max_crops >= 1, got {self}")
        if not 0 <= self.tile_overlap < 1 or self.box_scale <= 0:
            raise ValueError(f"SearchParams: need 0 <= tile_overlap < 1 and box_scale > 0, got {self}")


def ssd_anchors() -> np.ndarray:
    """Anchor centres [2254, 2] (x, y) of the pose detector, in [0, 1] of its input.

    MediaPipe's SSD anchors with fixed size: layers of equal stride share a grid; each layer puts two anchors
    on every cell (aspect ratio 1 plus the interpolated scale), so 28x28x2 + 14x14x2 + 7x7x6 = 2254.
    """
    centres, layer = [], 0
    while layer < len(DETECTOR_STRIDES):
        stride, per_cell = DETECTOR_STRIDES[layer], 0
        while layer < len(DETECTOR_STRIDES) and DETECTOR_STRIDES[layer] == stride:
            per_cell += 2
            layer += 1
        cells = math.ceil(DETECTOR_SIZE / stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -100.0, 100.0)))


def decode_detections(raw: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
                      min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections above ``min_score`` from raw [2254, 12] and logits [2254] (or [2254, 1]).

    Returns boxes [N, 4] (x0, y0, x1, y1), keypoints [N, 4, 2] and scores [N], all coordinates in [0, 1] of the
    detector's input (MediaPipe's ``TensorsToDetections``: x, y order, scaled by 224, offset by the anchor).
    """
    scores = sigmoid(np.asarray(logits, np.float64).reshape(-1))
    keep = np.flatnonzero(scores >= min_score)
    r = np.asarray(raw, np.float64).reshape(-1, 12)[keep] / DETECTOR_SIZE
    a = anchors[keep]
    centre, half = r[:, 0:2] + a, r[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = r[:, 4:12].reshape(-1, 4, 2) + a[:, None, :]
    return boxes, keypoints, scores[keep]


def merge_detections(keypoints: np.ndarray, scores: np.ndarray,
                     distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted non-maximum suppression on the alignment points: the best remaining detection takes every other
    one whose hip centre lies within ``distance`` x its body radius (|keypoint 1 - keypoint 0|, the smaller of
    the two, at most 1.5 times apart) and becomes their score-weighted mean, keeping its own score.

    MediaPipe merges by the overlap of the detection boxes (IoU 0.3), which are wider than the head they frame:
    in a crowd, neighbours' boxes overlap, and one detection between two people comes out. Keypoints [D, 4, 2]
    and scores [D] in; merged keypoints [K, 4, 2] and scores [K] out, best first.
    """
    order = np.argsort(-scores, kind="stable")
    radius = np.hypot(*(keypoints[:, 1] - keypoints[:, 0]).T)
    out_k, out_s = [], []
    while len(order):
        best, rest = order[0], order
        small, big = np.minimum(radius[best], radius[rest]), np.maximum(radius[best], radius[rest])
        near = np.hypot(*(keypoints[rest, 0] - keypoints[best, 0]).T) <= distance * small
        group_mask = near & (big <= 1.5 * np.maximum(small, 1e-9))
        group_mask[0] = True
        group = order[group_mask]
        w = scores[group][:, None, None]
        out_k.append((keypoints[group] * w).sum(0) / w.sum())
        out_s.append(scores[best])
        order = order[~group_mask]
    return np.array(out_k).reshape(-1, 4, 2), np.array(out_s)


def to_frame(points: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Points [..., 2] in [0, 1] of the crop of ``region`` (cx, cy, side, angle) -> frame pixels."""
    cx, cy, side, angle = region
    c, s = math.cos(angle), math.sin(angle)
    d = (np.asarray(points, np.float64) - 0.5) * side
    return np.stack([cx + c * d[..., 0] - s * d[..., 1], cy + s * d[..., 0] + c * d[..., 1]], axis=-1)


def alignment_regions(centre: np.ndarray, scale_point: np.ndarray, scale: float = REGION_SCALE) -> np.ndarray:
    """Regions [N, 4] from alignment points centre [N, 2] and scale point [N, 2] (frame pixels).

    MediaPipe's ``AlignmentPointsRectsCalculator`` (square of twice the points' distance, turned so that the
    centre -> scale point vector points up, i.e. a target angle of 90 degrees) then ``RectTransformation``
    (``scale`` times larger, square).
    """
    v = np.asarray(scale_point, np.float64) - np.asarray(centre, np.float64)
    side = 2.0 * np.hypot(v[:, 0], v[:, 1]) * scale
    angle = np.pi / 2 - np.arctan2(-v[:, 1], v[:, 0])
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    return np.column_stack([centre[:, 0], centre[:, 1], side, angle])


def box_regions(boxes: np.ndarray, scale: float) -> np.ndarray:
    """Upright regions [N, 4] around person boxes [N, 4] (x0, y0, x1, y1): centred, side ``scale`` x the longer
    box side (a box carries no rotation)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * scale
    return np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, side, np.zeros(len(b))])


def region_boxes(regions: np.ndarray, shrink: float = 1.0, aspect: float = 1.0) -> np.ndarray:
    """Axis-aligned boxes [N, 4] around regions [N, 4]: each square shrunk by ``shrink``, then narrowed to
    ``aspect`` (width / height, in the region's own axes: 0.5 is a standing person's shape), then turned."""
    r = np.asarray(regions, np.float64).reshape(-1, 4)
    h = r[:, 2] / shrink
    c, s = np.abs(np.cos(r[:, 3])), np.abs(np.sin(r[:, 3]))
    hx, hy = (c * aspect + s) * h / 2, (s * aspect + c) * h / 2
    return np.column_stack([r[:, 0] - hx, r[:, 1] - hy, r[:, 0] + hx, r[:, 1] + hy])


def tile_regions(frame_size: tuple[int, int], across: int, overlap: float) -> np.ndarray:
    """Upright square regions [T, 4] for the detector: ``across`` = 1 gives the whole frame (letterboxed to a
    square); ``across`` = n > 1 gives squares of side ``short / n * (1 + overlap)`` (``short``: the frame's
    shorter side) in a grid that covers the frame, neighbours overlapping."""
    w, h = frame_size
    if across <= 1:
        return np.array([[(w - 1) / 2, (h - 1) / 2, float(max(w, h)), 0.0]])
    side = min(w, h) / across * (1 + overlap)

    def starts(n: int) -> np.ndarray:
        count = max(1, math.ceil((n - side) / (side * (1 - overlap)) + 1 - 1e-9))
        return np.linspace(0, max(0.0, n - side), count)

    return np.array([[x + side / 2 - 0.5, y + side / 2 - 0.5, side, 0.0] for y in starts(h) for x in starts(w)])


def _pyramid(frame: np.ndarray, factor: int) -> np.ndarray:
    """``frame`` averaged over ``factor`` x ``factor`` blocks (float32), so that a shrinking crop does not alias."""
    if factor <= 1:
        return frame.astype(np.float32)
    h, w = frame.shape[0] // factor * factor, frame.shape[1] // factor * factor
    return frame[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).astype(np.float32).mean((1, 3))


def crop(frame: np.ndarray, region: np.ndarray, size: int, replicate: bool) -> np.ndarray:
    """Bilinear crop float32 [size, size, 3] RGB in [0, 1] of the BGR uint8 ``frame`` [H, W, 3] inside ``region``.

    Outside the frame: the nearest edge pixel when ``replicate`` (MediaPipe's default for the landmark crops),
    black otherwise (the detector's letterbox). A crop that shrinks the frame more than twofold samples a
    block-averaged copy of it.
    """
    cx, cy, side, angle = (float(v) for v in region)
    factor = max(1, int(side / size / 2))
    src = _pyramid(frame, factor) if factor > 1 else frame
    h, w = src.shape[:2]
    c, s = math.cos(angle), math.sin(angle)
    n = (np.arange(size, dtype=np.float32) + 0.5) * (side / size) - side / 2     # offsets along the crop's axes
    if angle == 0.0:                                                              # upright: one axis at a time
        rows = _taps((cy + n + 0.5) / factor - 0.5, h, replicate)
        cols = _taps((cx + n + 0.5) / factor - 0.5, w, replicate)
        lo, hi = int(cols[0][0].min()), int(cols[1][0].max()) + 1                 # the columns it reads
        part = sum(wy[:, None, None] * src[iy, lo:hi].astype(np.float32) for iy, wy in rows)
        out = sum(wx[None, :, None] * part[:, ix - lo] for ix, wx in cols)
        return out[..., ::-1] * np.float32(1 / 255)
    x = (cx + c * n[None, :] - s * n[:, None] + 0.5) / factor - 0.5              # frame (or pyramid) pixels
    y = (cy + s * n[None, :] + c * n[:, None] + 0.5) / factor - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int32), y0.astype(np.int32)
    flat = src.reshape(-1, 3)
    out = None
    for dy, wy in ((0, 1 - fy), (1, fy)):
        yi = y0 + dy
        rows = np.clip(yi, 0, h - 1) * w
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi = x0 + dx
            weight = wx * wy
            if not replicate:
                weight = weight * ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[..., None]
            term = flat[rows + np.clip(xi, 0, w - 1)] * weight
            out = term if out is None else out + term
    return out[..., ::-1] * np.float32(1 / 255)


def _taps(pos: np.ndarray, n: int, replicate: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bilinear taps along one axis: [(indices, weights), (indices, weights)] for positions ``pos`` in pixels of an
    axis of ``n`` pixels; outside it the edge pixel (``replicate``) or nothing."""
    i0 = np.floor(pos)
    f = (pos - i0).astype(np.float32)
    taps = []
    for i, wgt in ((i0.astype(np.int64), 1 - f), (i0.astype(np.int64) + 1, f)):
        if not replicate:
            wgt = wgt * ((i >= 0) & (i < n))
        taps.append((np.clip(i, 0, n - 1), wgt))
    return taps


def refine_from_heatmap(xy: np.ndarray, heatmap: np.ndarray, kernel: int = 7, min_confidence: float = 0.5) -> np.ndarray:
    """Landmarks xy [K, 2] in [0, 1] of the crop, each moved to the sigmoid-weighted mean of its ``kernel``-wide
    heatmap window (heatmap logits [64, 64, K]) when that window's peak reaches ``min_confidence``
    (MediaPipe's ``RefineLandmarksFromHeatmap``). Cell ``c`` stands at ``c / 64``, as in MediaPipe: so placed,
    the refined joints agree with the regressed ones (mean offset -0.25, -0.8 crop pixels over 722 joints of
    vtest.avi; cell centres, ``(c + 0.5) / 64``, gave +1.75, +1.2)."""
    hm_h, hm_w, _ = heatmap.shape
    out = np.array(xy, np.float64)
    half = (kernel - 1) // 2
    for j, (x, y) in enumerate(out):
        col, row = int(math.floor(x * hm_w)), int(math.floor(y * hm_h))
        if not (0 <= col < hm_w and 0 <= row < hm_h):
            continue
        r0, r1, c0, c1 = max(0, row - half), min(hm_h, row + half + 1), max(0, col - half), min(hm_w, col + half + 1)
        conf = sigmoid(heatmap[r0:r1, c0:c1, j].astype(np.float64))
        total = conf.sum()
        if conf.max() >= min_confidence and total > 0:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[j] = ((conf * cols).sum() / total / hm_w, (conf * rows).sum() / total / hm_h)
    return out


def decode_landmarks(outputs: dict[str, np.ndarray], region: np.ndarray, refine: bool = True) -> dict[str, np.ndarray]:
    """One landmark-model run on ``region`` -> frame-space results.

    ``outputs``: ``landmarks`` [195], ``presence`` [1], ``heatmap`` [64, 64, 39], ``world`` [117].
    Returns ``xy`` [39, 2] frame pixels, ``visibility`` and ``presence`` [39] in [0, 1], ``world`` [33, 3]
    metres (hip-centred, turned back to the frame's orientation by the region's angle), ``flag`` (float).
    """
    raw = np.asarray(outputs["landmarks"], np.float64).reshape(-1, 5)
    norm = raw[:, :2] / LANDMARK_SIZE
    if refine:
        norm = refine_from_heatmap(norm, np.asarray(outputs["heatmap"]).reshape(HEATMAP_SIZE, HEATMAP_SIZE, -1))
    world = np.asarray(outputs["world"], np.float64).reshape(-1, 3)[:BODY_LANDMARKS]
    c, s = math.cos(region[3]), math.sin(region[3])
    world = np.column_stack([c * world[:, 0] - s * world[:, 1], s * world[:, 0] + c * world[:, 1], world[:, 2]])
    return {"xy": to_frame(norm, region), "visibility": sigmoid(raw[:, 3]), "presence": sigmoid(raw[:, 4]),
            "world": world, "flag": float(np.asarray(outputs["presence"]).reshape(-1)[0])}


def next_region(xy: np.ndarray) -> np.ndarray:
    """The region [4] for the next look at a person from its 39 landmarks xy [39, 2] (frame pixels):
    MediaPipe's tracking ROI from the two auxiliary alignment points (33: centre, 34: scale point)."""
    return alignment_regions(xy[None, 33], xy[None, 34])[0]


def same_region(a: np.ndarray, b: np.ndarray, centre: float = 0.25, size: float = 1.5) -> bool:
    """Whether regions a [4] and b [4] frame the same person: centres closer than ``centre`` x the smaller
    side, sides within a factor ``size``."""
    small, big = sorted((a[2], b[2]))
    return small > 0 and big / small <= size and math.hypot(a[0] - b[0], a[1] - b[1]) <= centre * small
