"""PYSKL-compatible pseudo-heatmap volumes for skeleton action recognition, vectorised.

:func:`heatmap_volume` gives the same numbers (within 1e-5) as PYSKL's ``GeneratePoseTarget`` with
``use_score=True``: per keypoint a Gaussian on the window ``[max(int(mu - 3 sigma), 0), min(int(mu + 3 sigma) + 1,
size))`` on each axis (``int`` truncates toward zero), peak = score, scores < 1e-3 skipped, persons merged by
element-wise max; per limb the distance to the segment on the endpoints' box grown by 3 sigma, peak = the smaller
score, and a limb shorter than 1 pixel drawn as its start keypoint with the start's score. Instead of a Python
loop per keypoint, every window of every person, frame and channel is computed at once (windows padded to a
common size per group) and max-merged into the volume with ``np.maximum.at``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-3  # PYSKL's score threshold


def _window(lo: np.ndarray, hi: np.ndarray, sigma: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """PYSKL's window [start, end) on one axis for items spanning lo..hi (arrays [I])."""
    start = np.maximum(np.trunc(lo - 3 * sigma).astype(np.int64), 0)
    end = np.minimum(np.trunc(hi + 3 * sigma).astype(np.int64) + 1, n)
    return start, end


class _Items:
    """Windows of I limb segments of one volume: where they go, their endpoints and peak values."""

    def __init__(self, base, start, end, value, size, sigma):
        w, h = size
        lo, hi = np.minimum(start, end), np.maximum(start, end)
        self.x0, x1 = _window(lo[:, 0], hi[:, 0], sigma, w)
        self.y0, y1 = _window(lo[:, 1], hi[:, 1], sigma, h)
        keep = (x1 > self.x0) & (y1 > self.y0)
        self.wx, self.wy = (x1 - self.x0)[keep], (y1 - self.y0)[keep]
        self.x0, self.y0 = self.x0[keep], self.y0[keep]
        self.start, self.end, self.value = start[keep], end[keep], value[keep]
        self.base = base[keep]
        self.size = size

    def groups(self, splits: int):
        """Index arrays splitting the items into up to ``splits**2`` groups of similar window width, then height,
        so that padding every window to its group's largest is cheap."""
        out = []
        for by_x in np.array_split(np.argsort(self.wx, kind="stable"), splits):
            by_y = by_x[np.argsort(self.wy[by_x], kind="stable")]
            out.extend(g for g in np.array_split(by_y, splits) if len(g))
        return out

    def grid(self, sel: np.ndarray):
        """Pixel coordinates x [S,1,X], y [S,Y,1] and flat indices [S,Y,X] of the selected items' windows.

        Windows are padded to the largest in ``sel`` by repeating their last row and column: the repeated
        pixels get the same value as the originals, so max-merging them changes nothing.
        """
        ox = np.minimum(np.arange(self.wx[sel].max())[None, None, :], self.wx[sel, None, None] - 1)
        oy = np.minimum(np.arange(self.wy[sel].max())[None, :, None], self.wy[sel, None, None] - 1)
        xi, yi = self.x0[sel, None, None] + ox, self.y0[sel, None, None] + oy
        flat = (self.base[sel, None, None] + xi) + yi * self.size[0]
        dtype = self.start.dtype
        return xi.astype(dtype), yi.astype(dtype), flat


def _splat_points(out: np.ndarray, base, mu, value, size, sigma: float) -> None:
    """Max-merge Gaussian windows into the flat volume ``out``.

    Args:
        base: [I] flat offset of each item's map; mu: [I,2] centres; value: [I] peaks.
    Windows are padded to the largest by repeating their last row/column (same values: the max ignores them);
    the Gaussian is separable, so each window is the outer product of two 1D profiles.
    """
    w, h = size
    x0, x1 = _window(mu[:, 0], mu[:, 0], sigma, w)
    y0, y1 = _window(mu[:, 1], mu[:, 1], sigma, h)
    keep = (x1 > x0) & (y1 > y0)
    if not keep.all():
        base, mu, value, x0, x1, y0, y1 = (a[keep] for a in (base, mu, value, x0, x1, y0, y1))
    if not len(base):
        return
    o = np.arange(max((x1 - x0).max(), (y1 - y0).max()))
    xi = np.minimum(x0[:, None] + o, x1[:, None] - 1)  # [I,S]
    yi = np.minimum(y0[:, None] + o, y1[:, None] - 1)
    k = -0.5 / sigma**2
    gx = np.exp((xi.astype(mu.dtype) - mu[:, :1]) ** 2 * k)
    gy = np.exp((yi.astype(mu.dtype) - mu[:, 1:]) ** 2 * k) * value[:, None]
    flat = (base[:, None] + yi * w)[:, :, None] + xi[:, None, :]
    np.maximum.at(out, flat.ravel(), (gy[:, :, None] * gx[:, None, :]).ravel())


def _segments(items: _Items, sel: np.ndarray, sigma: float):
    """Limb windows: flat indices and values [S,Y,X] from the distance to each segment."""
    x, y, flat = items.grid(sel)
    a, b = items.start[sel], items.end[sel]
    ab = b - a
    len2 = (ab**2).sum(-1)
    ax, ay = x - a[:, 0, None, None], y - a[:, 1, None, None]  # [S,1,X], [S,Y,1]
    t = ax * (ab[:, 0] / len2)[:, None, None] + ay * (ab[:, 1] / len2)[:, None, None]
    np.clip(t, 0, 1, out=t)
    dx = t * ab[:, 0, None, None]
    np.subtract(ax, dx, out=dx)
    np.square(dx, out=dx)
    dy = np.multiply(t, ab[:, 1, None, None], out=t)
    np.subtract(ay, dy, out=dy)
    np.square(dy, out=dy)
    dx += dy
    dx *= -0.5 / sigma**2
    np.exp(dx, out=dx)
    dx *= items.value[sel, None, None]
    return flat, dx


def _splat_segments(out: np.ndarray, items: _Items, sigma: float, groups: int = 3) -> None:
    """Max-merge every limb window into the flat volume ``out`` (persons overlap: ``np.maximum.at``)."""
    for sel in items.groups(groups):
        flat, val = _segments(items, sel, sigma)
        np.maximum.at(out, flat.ravel(), val.ravel())


def _check(keypoints, scores, size, sigma, limbs):
    kp = np.asarray(keypoints)
    kp = kp if np.issubdtype(kp.dtype, np.floating) else kp.astype(np.float64)
    sc = np.asarray(scores, dtype=kp.dtype)
    if kp.ndim != 4 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape [M,T,K,2], got {list(kp.shape)}")
    if sc.shape != kp.shape[:3]:
        raise ValueError(f"scores must have shape {list(kp.shape[:3])} (keypoints' [M,T,K]), got {list(sc.shape)}")
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be (width, height) with positive values, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    pairs = None
    if limbs is not None:
        pairs = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
        if pairs.size and (pairs.min() < 0 or pairs.max() >= kp.shape[2]):
            raise ValueError(f"limbs must index keypoints 0..{kp.shape[2] - 1}, got {pairs.tolist()}")
    ok = np.isfinite(kp).all(-1) & np.isfinite(sc)
    return np.where(ok[..., None], kp, 0), np.where(ok, sc, 0), pairs


def heatmap_volume(keypoints, scores, size: tuple[int, int], sigma: float = 0.6,
                   limbs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Pseudo-heatmap volume of a clip, as PYSKL's GeneratePoseTarget (use_score=True).

    Args:
        keypoints: [M,T,K,2] heatmap pixels (M persons, T frames); non-finite points are skipped.
        scores: [M,T,K] keypoint scores (the Gaussian peaks).
        size: (w, h) of the maps.
        sigma: Gaussian standard deviation in pixels.
        limbs: None for keypoint maps, else L pairs (a, b) of keypoint indices for limb maps.
    Returns:
        float32 [T,K,H,W] (keypoints) or [T,L,H,W] (limbs).
    """
    kp, sc, pairs = _check(keypoints, scores, size, sigma, limbs)
    m, t, k = sc.shape
    w, h = int(size[0]), int(size[1])
    channels = k if pairs is None else len(pairs)
    out = np.zeros(t * channels * h * w, dtype=np.float32)
    base = np.tile(np.arange(t * channels) * (h * w), m)  # [M*T*C] map offsets, in (m, t, c) order
    if pairs is None:
        value = sc.ravel()
        on = value >= EPS
        _splat_points(out, base[on], kp.reshape(-1, 2)[on], value[on], (w, h), sigma)
    else:
        start, end = kp[:, :, pairs[:, 0]].reshape(-1, 2), kp[:, :, pairs[:, 1]].reshape(-1, 2)
        s_val, e_val = sc[:, :, pairs[:, 0]].ravel(), sc[:, :, pairs[:, 1]].ravel()
        value = np.minimum(s_val, e_val)
        short = ((start - end) ** 2).sum(-1) < 1
        seg, pt = (value >= EPS) & ~short, (value >= EPS) & short
        _splat_segments(out, _Items(base[seg], start[seg], end[seg], value[seg], (w, h), sigma), sigma)
        _splat_points(out, base[pt], start[pt], s_val[pt], (w, h), sigma)
    return out.reshape(t, channels, h, w)
