"""PYSKL-compatible pseudo-heatmap volumes for skeleton action recognition, vectorised (numpy).

What is matched, checked against PYSKL's ``GeneratePoseTarget`` (``pyskl/datasets/pipelines/heatmap_related.py``)
with ``use_score=True``; :func:`heatmap_volume` gives the same numbers within 1e-5 (tested against the loop
rendering of that algorithm in ``tools/bench/codecs.py``; for limbs hundreds of sigmas long, against that loop in
float64: PYSKL's float32 arithmetic is itself off by ~1e-5 there):

* keypoints: a Gaussian ``exp(-d^2 / (2 sigma^2))`` times the keypoint's score, drawn only on PYSKL's window
  ``[max(int(mu - 3 sigma), 0), min(int(mu + 3 sigma) + 1, size))`` on each axis (``int`` truncates toward zero);
  scores below ``EPS`` = 1e-3 are skipped;
* limbs: the same with ``d`` the distance to the segment between the two keypoints, peak = the smaller of the
  two scores, window = the endpoints' box grown by 3 sigma (same rounding); a limb shorter than 1 pixel is drawn
  as its start keypoint with the start's score;
* persons are merged into one map per frame and channel by element-wise maximum; output float32 [T, C, H, W];
* arithmetic in float32, as PYSKL's (its grids are float32 and ``PoseDecode`` makes keypoints float32).

PYSKL's default limb set for COCO-17 is :data:`PYSKL_LIMBS` (17 limbs, its ``skeletons`` argument).

How it is fast. PYSKL (and the loop baseline) draw one window per Python call. Here every window of a clip is
computed at once: each window is a block of ``[long side, short side]`` pixels (a vertical limb's block is its
window transposed), blocks of similar size are grouped (:data:`GROUPS`), and a group is computed as arrays
``[B_long, B_short, S]`` with its S windows on the innermost axis, so that numpy's inner loops run over hundreds
of items rather than over a window's 5-20 pixels. A limb's squared distance is written in the limb's own frame:
the positions along and across it are per-item 1D grids of each side, so the full-size work is two outer sums
and a few contiguous passes. Pixels of a block outside its item's window get the value 0 (a no-op for the max);
each group is max-merged into the volume with one ``np.maximum.at`` on flat indices (one more outer sum).

Why the limb path was slow before (3-14x the loop): its windows were laid out item by item ``[S, Y, X]``, so
every broadcast pass ran numpy's inner loop over a window row of ~8 pixels (3-7x slower per element than over a
long axis); the distance used five such broadcast passes plus two per-item ones; full-size int64 index grids were
built per group; and windows were padded to their group's largest by width and height, ignoring orientation
(235k pixels computed for 138k window pixels on the benchmark clip; 180k now).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-3  # PYSKL's score threshold
# PYSKL's GeneratePoseTarget default ``skeletons``: the limbs of its COCO-17 limb volumes.
PYSKL_LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8), (8, 10), (5, 11), (11, 13), (13, 15),
    (6, 12), (12, 14), (14, 16), (11, 12))
# Limb windows are grouped by their long side into GROUPS[0] sets, each split by the short side into GROUPS[1]:
# fewer groups pad more pixels, more groups pay more calls (4 x 3 was the fastest on the benchmark clip).
GROUPS = (4, 3)


def _window(lo: np.ndarray, hi: np.ndarray, sigma: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """PYSKL's window on one axis for items spanning lo..hi (float32 [I]): start and width (int32 [I]; a width
    <= 0 means the window misses the map).

    ``int(x)`` truncates toward zero, so clipping x to [0, n] before truncating gives PYSKL's ``max(int(x), 0)``
    clipped to n; the end is clipped to [-2, n + 2] first, where every value beyond acts alike, so that the cast
    cannot overflow."""
    start = lo - 3 * sigma
    np.maximum(start, 0, out=start)
    np.minimum(start, n, out=start)
    end = hi + 3 * sigma
    np.maximum(end, -2, out=end)
    np.minimum(end, n + 2, out=end)
    start, end = start.astype(np.int32), end.astype(np.int32)
    end += 1
    np.minimum(end, n, out=end)
    end -= start
    return start, end


def _grid(start, width, n, stride):
    """Pixel positions [B,I] along one axis (B = the widest window), the pixels past each window's width
    (bool [B,I]) and flat offsets (positions clamped into the map, times ``stride``); n, stride: int or [I]."""
    j = np.arange(int(width.max()), dtype=np.int32)[:, None]
    pos = start + j
    off = np.minimum(pos, n - 1)
    off *= stride
    return pos, j >= width, off


def _splat_points(out, base, x, y, value, size, sigma: float) -> None:
    """Max-merge keypoint Gaussians into the flat volume ``out``.

    Args: base [I] flat offset of each item's map; x, y, value float32 [I]; size (w, h).
    """
    w, h = size
    x0, wx = _window(x, x, sigma, w)
    y0, wy = _window(y, y, sigma, h)
    on = value >= EPS
    on &= wx > 0
    on &= wy > 0
    if not on.all():
        base, x, y, value, x0, wx, y0, wy = (a[on] for a in (base, x, y, value, x0, wx, y0, wy))
    if not len(base):
        return
    k = np.float32(-0.5 / sigma**2)
    xs, x_out, fx = _grid(x0, wx, w, 1)
    ys, y_out, fy = _grid(y0, wy, h, w)
    gx = xs.astype(np.float32)  # the Gaussian is separable: a window is the outer product of two profiles
    gx -= x
    np.square(gx, out=gx)
    gx *= k
    np.exp(gx, out=gx)
    gx[x_out] = 0
    gy = ys.astype(np.float32)
    gy -= y
    np.square(gy, out=gy)
    gy *= k
    np.exp(gy, out=gy)
    gy *= value
    gy[y_out] = 0
    fy += base
    patch = np.multiply(gy[:, None, :], gx[None, :, :])  # [BY,BX,I]
    flat = np.add(fy[:, None, :], fx[None, :, :])
    np.maximum.at(out, flat.ravel(), patch.ravel())


def _group_ranges(long: np.ndarray, short: np.ndarray, splits: tuple[int, int]):
    """A permutation of the items and [lo, hi) ranges of it: groups of similar window size (``splits[0]`` bands of
    the long side, each cut into ``splits[1]`` runs of the short side)."""
    n, (s1, s2) = len(long), splits
    cuts = np.sort(long)[np.arange(1, s1) * n // s1]
    band = np.searchsorted(cuts, long, side="right")
    key = band * (int(short.max()) + 1) + short
    if key.max() < 2**15:  # numpy sorts 16-bit integers by radix sort: several times faster
        key = key.astype(np.int16)
    order = np.argsort(key, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(band, minlength=s1))])
    ranges = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        cut = lo + np.arange(s2 + 1) * (hi - lo) // s2
        ranges += [(int(a), int(b)) for a, b in zip(cut[:-1], cut[1:]) if b > a]
    return order, ranges


class _LimbGrids:
    """Per-item 1D grids of I limb windows along their long (1) and short (2) sides; a pixel's value comes from
    outer sums of the two sides' grids.

    ``u`` is the position along the limb and ``v`` across it, from the limb's middle (so that float32 sums of
    the two sides' parts stay accurate near both ends), in units of ``sqrt(2) sigma``: a pixel's value is
    ``exp(-(v^2 + (u - clip(u, -half, half))^2))`` with ``half`` the half length; ``v`` is +inf past a window's
    extent (value 0 there); ``f`` are flat offsets into the volume.
    """

    def __init__(self, base, a, b, x0, wx, y0, wy, size, sigma):
        q = np.sqrt(0.5) / sigma
        a, b = a.astype(np.float64), b.astype(np.float64)
        ab = b - a
        length = np.sqrt(ab[:, 0] * ab[:, 0] + ab[:, 1] * ab[:, 1])
        cx, cy = ab[:, 0] * q / length, ab[:, 1] * q / length   # the limb's direction, scaled by q
        self.half = (0.5 * q * length).astype(np.float32)
        self.neg_half = -self.half
        mid = 0.5 * (a + b)
        vert = wy > wx

        def pick(if_vert, if_not):
            return np.where(vert, if_vert, if_not)

        self.long, self.short = pick(wy, wx), pick(wx, wy)
        w, h, one = np.int32(size[0]), np.int32(size[1]), np.int32(1)
        axis_y = (y0, h, w, mid[:, 1], cy, -cx)       # start, map size, stride, limb middle, along, across
        axis_x = (x0, w, one, mid[:, 0], cx, cy)
        self.u1, self.v1, self.f1 = self._side(self.long, *(pick(*pair) for pair in zip(axis_y, axis_x)))
        self.u2, self.v2, self.f2 = self._side(self.short, *(pick(*pair) for pair in zip(axis_x, axis_y)))
        self.f1 += base

    @staticmethod
    def _side(width, start, n, stride, middle, along, across):
        j = np.arange(int(width.max()), dtype=np.int32)[:, None]
        off = start + j
        np.minimum(off, n - 1, out=off)
        off *= stride
        # positions from the limb's middle: whole pixels (exact) minus the middle's fraction, then float32
        whole = np.floor(middle)
        origin = (start - whole).astype(np.float32)
        origin -= (middle - whole).astype(np.float32)
        p = np.add(j.astype(np.float32), origin)
        u, v = p * along.astype(np.float32), p * across.astype(np.float32)
        np.copyto(v, np.inf, where=j >= width)
        return u, v, off


def _splat_segments(out, base, a, b, value, size, sigma: float, splits=GROUPS) -> None:
    """Max-merge limb maps into the flat volume ``out``: base [I], a, b float32 [I,2] endpoints, value [I]."""
    w, h = size
    x0, wx = _window(np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0]), sigma, w)
    y0, wy = _window(np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1]), sigma, h)
    idx = np.flatnonzero((wx > 0) & (wy > 0))
    if not len(idx):
        return
    vert = wy[idx] > wx[idx]
    order, ranges = _group_ranges(np.where(vert, wy[idx], wx[idx]), np.where(vert, wx[idx], wy[idx]), splits)
    idx = idx[order]
    g = _LimbGrids(base[idx], a[idx], b[idx], x0[idx], wx[idx], y0[idx], wy[idx], size, sigma)
    log_value = np.log(value[idx])
    lows = [lo for lo, _ in ranges]
    widest = zip(np.maximum.reduceat(g.long, lows).tolist(), np.maximum.reduceat(g.short, lows).tolist())
    for (lo, hi), (n1, n2) in zip(ranges, widest):
        s = slice(lo, hi)
        u = np.add(g.u1[:n1, None, s], g.u2[None, :n2, s])    # [B1,B2,S]
        t = np.minimum(u, g.half[s])
        np.maximum(t, g.neg_half[s], out=t)
        u -= t                                               # past the ends: the distance to the nearer end
        np.square(u, out=u)
        np.add(g.v1[:n1, None, s], g.v2[None, :n2, s], out=t)
        np.square(t, out=t)
        u += t
        np.subtract(log_value[s], u, out=u)                  # value * exp(-d^2 / (2 sigma^2))
        np.exp(u, out=u)
        flat = np.add(g.f1[:n1, None, s], g.f2[None, :n2, s])
        np.maximum.at(out, flat.ravel(), u.ravel())


def check_inputs(keypoints, scores, size, sigma, limbs):
    """Validated float32 keypoints [M,T,K,2] and scores [M,T,K] (non-finite points zeroed, score 0) and the
    limb pairs as int64 [L,2] (or None); raises ValueError naming the bad argument."""
    kp = np.asarray(keypoints, dtype=np.float32)
    sc = np.asarray(scores, dtype=np.float32)
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
    if not ok.all():
        kp, sc = np.where(ok[..., None], kp, 0), np.where(ok, sc, 0)
    return kp, sc, pairs


def heatmap_volume(keypoints, scores, size: tuple[int, int], sigma: float = 0.6,
                   limbs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Pseudo-heatmap volume of a clip, as PYSKL's GeneratePoseTarget (use_score=True).

    Args:
        keypoints: [M,T,K,2] map pixels (M persons, T frames); non-finite points are skipped.
        scores: [M,T,K] keypoint scores (the Gaussian peaks).
        size: (w, h) of the maps.
        sigma: Gaussian standard deviation in pixels.
        limbs: None for keypoint maps, else L pairs (a, b) of keypoint indices for limb maps
            (PYSKL's COCO-17 set: :data:`PYSKL_LIMBS`).
    Returns:
        float32 [T,K,H,W] (keypoints) or [T,L,H,W] (limbs).
    """
    kp, sc, pairs = check_inputs(keypoints, scores, size, sigma, limbs)
    m, t, k = sc.shape
    w, h = int(size[0]), int(size[1])
    channels = k if pairs is None else len(pairs)
    out = np.zeros(t * channels * h * w, dtype=np.float32)
    base = np.tile(np.arange(t * channels, dtype=np.int64) * (h * w), m)  # [M*T*C] map offsets, (m, t, c) order
    if pairs is None:
        _splat_points(out, base, kp[..., 0].ravel(), kp[..., 1].ravel(), sc.ravel(), (w, h), sigma)
    else:
        a, b = kp[:, :, pairs[:, 0]].reshape(-1, 2), kp[:, :, pairs[:, 1]].reshape(-1, 2)
        s_a, s_b = sc[:, :, pairs[:, 0]].ravel(), sc[:, :, pairs[:, 1]].ravel()
        value = np.minimum(s_a, s_b)
        d = a - b
        short = (d * d).sum(1) < 1
        on = value >= EPS
        seg, pt = on & ~short, on & short
        _splat_segments(out, base[seg], a[seg], b[seg], value[seg], (w, h), sigma)
        _splat_points(out, base[pt], a[pt, 0], a[pt, 1], s_a[pt], (w, h), sigma)
    return out.reshape(t, channels, h, w)
