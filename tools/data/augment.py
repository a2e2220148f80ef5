"""Augmentation: square person crops, whole-frame views, scale, rotation, flips, colour jitter, occluders.

Person crops follow pose-facts.md's recipe without its aspect distortion: the box of the person's labelled
joints, grown on every side by ``margin x body height`` (body height = MPII ``scale x 200`` when known,
else the larger side of the joints' box; margin uniform in 0.1-0.3 for training, 0.2 for validation), made
square around its centre (never clipped: the outside is padding) and resized to the input size through
``models.codecs.Crop``. Flips swap left and right joints with ``layout.flip_index``.

Images are uint8 BGR [H,W,3]; points [N,K,2] pixels; visibility [N,K] (0 unlabelled, 1 occluded, 2 visible).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.codecs import Crop
from models.layouts import Layout

PIXEL_STD = 200.0  # MPII: person height = scale x 200 px


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation settings; ``train=False`` gives the deterministic validation view."""

    input_size: tuple[int, int] = (256, 256)
    train: bool = True
    margin: tuple[float, float] = (0.1, 0.3)
    val_margin: float = 0.2
    scale: tuple[float, float] = (0.75, 1.25)
    rotation: float = 30.0        # degrees, uniform in +-rotation
    rotation_prob: float = 0.5
    shift: float = 0.05           # centre jitter, fraction of the box side
    flip_prob: float = 0.5
    jitter: float = 0.3           # brightness / contrast / saturation strength
    occluder_prob: float = 0.3
    max_occluders: int = 2


def person_box(xy: np.ndarray, vis: np.ndarray, margin: float, scale: float | None = None
               ) -> tuple[np.ndarray, float] | None:
    """Square box (centre [2], side) of one person's labelled joints xy [K,2] / vis [K]; None if none."""
    ok = (vis > 0) & np.isfinite(xy).all(axis=-1)
    if not ok.any():
        return None
    lo, hi = xy[ok].min(axis=0), xy[ok].max(axis=0)
    height = scale * PIXEL_STD if scale is not None and scale > 0 else float(max(hi - lo))
    lo, hi = lo - margin * height, hi + margin * height
    return (lo + hi) / 2.0, float(max(max(hi - lo), 8.0))


def _flip(image: np.ndarray, xy: np.ndarray, vis: np.ndarray, layout: Layout):
    w = image.shape[1]
    xy = xy[:, layout.flip_index].copy()
    xy[..., 0] = (w - 1) - xy[..., 0]
    return cv2.flip(image, 1), xy, vis[:, layout.flip_index]


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation (each within +-strength) of a BGR uint8 image."""
    alpha = 1.0 + rng.uniform(-strength, strength)
    beta = 128.0 * rng.uniform(-strength, strength) * 0.5
    out = cv2.convertScaleAbs(image, alpha=alpha, beta=beta + (1.0 - alpha) * 128.0 * 0.5)
    sat = 1.0 + rng.uniform(-strength, strength)
    gray = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(out, sat, gray, 1.0 - sat, 0.0)


def add_occluders(image: np.ndarray, xy: np.ndarray, vis: np.ndarray, count: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Draw ``count`` random blobs on ``image`` in place; visible joints under them become occluded (1).

    Returns the new visibility [N,K].
    """
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(count):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(0.05, 0.2) * w), int(rng.uniform(0.05, 0.2) * h))
        angle = float(rng.uniform(0, 180))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.ellipse(image, c, axes, angle, 0, 360, color, -1)
        cv2.ellipse(mask, c, axes, angle, 0, 360, 1, -1)
    px = np.floor(xy + 0.5).astype(np.int64)
    inside = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
    pxc = np.clip(px, 0, [w - 1, h - 1])
    covered = inside & (mask[pxc[..., 1], pxc[..., 0]] > 0)
    return np.where(covered & (vis >= 2), 1.0, vis).astype(np.float32)


def _photometric(img: np.ndarray, xy: np.ndarray, vis: np.ndarray, layout: Layout, p: AugmentParams,
                 rng: np.random.Generator, flip: bool):
    if flip:
        img, xy, vis = _flip(img, xy, vis, layout)
    if p.jitter > 0:
        img = color_jitter(img, p.jitter, rng)
    if rng.random() < p.occluder_prob:
        vis = add_occluders(img, xy, vis, int(rng.integers(1, p.max_occluders + 1)), rng)
    return img, xy, vis


def augment_person(image: np.ndarray, xy: np.ndarray, vis: np.ndarray, person: int, layout: Layout,
                   params: AugmentParams, rng: np.random.Generator, scale: float | None = None):
    """A square crop around ``person`` (index into xy [N,K,2], vis [N,K]) at ``params.input_size``.

    Returns (crop uint8 [h,w,3] BGR, xy [N,K,2] crop pixels, vis [N,K], Crop transform), or None when the
    person has no labelled joint. The returned ``Crop`` maps source to crop pixels before any flip.
    """
    p = params
    margin = rng.uniform(*p.margin) if p.train else p.val_margin
    box = person_box(xy[person], vis[person], margin, scale)
    if box is None:
        return None
    centre, side = box
    rotation = 0.0
    if p.train:
        side *= rng.uniform(*p.scale)
        centre = centre + rng.normal(0.0, p.shift * side, 2)
        if rng.random() < p.rotation_prob:
            rotation = float(rng.uniform(-p.rotation, p.rotation))
    crop = Crop((float(centre[0]), float(centre[1])), (side, side * p.input_size[1] / p.input_size[0]),
                p.input_size, rotation)
    img = crop.warp(image)
    out_xy = crop.forward(np.asarray(xy, np.float64)).astype(np.float32)
    out_vis = np.asarray(vis, np.float32).copy()
    if p.train:
        img, out_xy, out_vis = _photometric(img, out_xy, out_vis, layout, p, rng, rng.random() < p.flip_prob)
    return img, out_xy, out_vis, crop


def augment_frame(image: np.ndarray, xy: np.ndarray, vis: np.ndarray, layout: Layout, params: AugmentParams,
                  rng: np.random.Generator, intrinsics: tuple | None = None, xyz: np.ndarray | None = None,
                  view: tuple[tuple[float, float], float] | None = None, boxes: np.ndarray | None = None):
    """A view of the frame at ``params.input_size``, with random scale, shift and flip when training (no
    rotation, so pinhole intrinsics stay exact), for multi-person (SPM) training.

    ``view`` None: the whole frame fitted (letterboxed), its centre jittered by ``shift``; else ``(centre, side)``:
    the view centred at ``centre`` (source pixels) with ``side`` source pixels per input pixel (crops of
    footage at the scale the model will see it). Training scales either by ``params.scale``.
    ``boxes`` [M,4] (x0, y0, x1, y1 source pixels, e.g. regions to ignore) follow the view and the flip.

    Returns (image, xy [N,K,2], vis [N,K], intrinsics (fx, fy, cx, cy) in input pixels or None,
    xyz [N,K,3] mm (mirrored with the image: X negated, joints swapped) or None, boxes [M,4] input pixels
    (empty when none were given)).
    """
    p = params
    h, w = image.shape[:2]
    iw, ih = p.input_size
    if view is None:
        side = max(w / iw, h / ih)  # source pixels per input pixel when letterboxed
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    else:
        centre, side = np.asarray(view[0], np.float64), float(view[1])
    if p.train:
        side *= rng.uniform(*p.scale)
        if view is None:
            centre = centre + rng.normal(0.0, p.shift * max(w, h), 2)
    crop = Crop((float(centre[0]), float(centre[1])), (side * iw, side * ih), p.input_size, 0.0)
    img = crop.warp(image)
    out_xy = crop.forward(np.asarray(xy, np.float64)).astype(np.float32)
    out_vis = np.asarray(vis, np.float32).copy()
    corners = np.zeros((0, 2, 2)) if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 2, 2)
    out_boxes = crop.forward(corners).reshape(-1, 4).astype(np.float32)
    k = None
    if intrinsics is not None:
        cx, cy = crop.forward(np.array([intrinsics[2], intrinsics[3]], np.float64))
        k = (intrinsics[0] / side, intrinsics[1] / side, float(cx), float(cy))
    out_xyz = None if xyz is None else np.asarray(xyz, np.float32).copy()
    if p.train:
        flip = bool(rng.random() < p.flip_prob)
        img, out_xy, out_vis = _photometric(img, out_xy, out_vis, layout, p, rng, flip)
        if flip:
            out_boxes[:, [0, 2]] = (iw - 1) - out_boxes[:, [2, 0]]
        if flip and k is not None:
            k = (k[0], k[1], (iw - 1) - k[2], k[3])
        if flip and out_xyz is not None:
            out_xyz = out_xyz[:, layout.flip_index] * np.array([-1.0, 1.0, 1.0], np.float32)
    return img, out_xy, out_vis, k, out_xyz, out_boxes
