"""PYSKL-compatible heatmap volumes in torch, on any device (the engine's: CUDA where it runs there).

The same algorithm and numbers as :func:`models.codecs.volume.heatmap_volume` (see its module for what is matched
of PYSKL's ``GeneratePoseTarget``), with ``scatter_reduce_(..., "amax")`` as the max-merge. On the CPU the numpy
function is the faster of the two (``python -m tools.bench codecs --only volume`` times both); on a GPU every
window is one block of a single padded group, so a clip costs a few kernel launches and two small host reads
(the largest window sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models.codecs.volume import EPS, GROUPS, check_inputs
from models.codecs.volume import _group_ranges as _numpy_group_ranges


def _window(lo: torch.Tensor, hi: torch.Tensor, sigma: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PYSKL's window on one axis (see volume._window): start and width, int32 [I]."""
    lim = 2.0**40
    start = (lo - 3 * sigma).clamp_(-lim, lim).to(torch.int64).clamp_(0, n)  # float -> int truncates toward zero
    end = (hi + 3 * sigma).clamp_(-lim, lim).to(torch.int64).add_(1).clamp_(max=n)
    return start.to(torch.int32), (end - start).to(torch.int32)


def _grid(start, width, n, stride):
    j = torch.arange(int(width.max()), dtype=torch.int32, device=start.device)[:, None]
    pos = start + j
    off = pos.clamp(max=n - 1) if isinstance(n, int) else torch.minimum(pos, n - 1)
    return pos, j >= width, off.mul_(stride)


def _splat_points(out, base, x, y, value, size, sigma: float) -> None:
    w, h = size
    x0, wx = _window(x, x, sigma, w)
    y0, wy = _window(y, y, sigma, h)
    on = (value >= EPS) & (wx > 0) & (wy > 0)
    base, x, y, value, x0, wx, y0, wy = (a[on] for a in (base, x, y, value, x0, wx, y0, wy))
    if not len(base):
        return
    k = -0.5 / sigma**2
    xs, x_out, fx = _grid(x0, wx, w, 1)
    ys, y_out, fy = _grid(y0, wy, h, w)
    gx = (xs.float() - x).square_().mul_(k).exp_().masked_fill_(x_out, 0)
    gy = (ys.float() - y).square_().mul_(k).exp_().mul_(value).masked_fill_(y_out, 0)
    flat = (fy.long() + base)[:, None, :] + fx[None, :, :]
    out.scatter_reduce_(0, flat.reshape(-1), (gy[:, None, :] * gx[None, :, :]).reshape(-1), "amax")


def _side(width, start, n, stride, middle, along, across):
    pos, past, off = _grid(start, width, n, stride)
    p = pos.double() - middle
    return (p * along).float(), (p * across).float().masked_fill_(past, float("inf")), off


def _group_ranges(long: torch.Tensor, short: torch.Tensor, splits: tuple[int, int]):
    order, ranges = _numpy_group_ranges(long.cpu().numpy(), short.cpu().numpy(), splits)
    return torch.from_numpy(order).to(long.device), ranges


def _splat_segments(out, base, a, b, value, size, sigma: float, splits) -> None:
    w, h = size
    x0, wx = _window(torch.minimum(a[:, 0], b[:, 0]), torch.maximum(a[:, 0], b[:, 0]), sigma, w)
    y0, wy = _window(torch.minimum(a[:, 1], b[:, 1]), torch.maximum(a[:, 1], b[:, 1]), sigma, h)
    on = (wx > 0) & (wy > 0)
    base, a, b, value, x0, wx, y0, wy = (t[on] for t in (base, a, b, value, x0, wx, y0, wy))
    if not len(base):
        return
    vert = wy > wx
    order, ranges = _group_ranges(torch.where(vert, wy, wx), torch.where(vert, wx, wy), splits)
    base, a, b, value, x0, wx, y0, wy, vert = (t[order] for t in (base, a, b, value, x0, wx, y0, wy, vert))
    q = float(np.sqrt(0.5) / sigma)
    a, b = a.double(), b.double()
    ab = b - a
    length = ab.square().sum(1).sqrt_()
    cx, cy = ab[:, 0] * q / length, ab[:, 1] * q / length
    half = (0.5 * q * length).float()
    mid = 0.5 * (a + b)

    def pick(if_vert, if_not):
        return torch.where(vert, if_vert, if_not)

    def const(v):
        return torch.tensor(v, dtype=torch.int32, device=a.device)

    long, short = pick(wy, wx), pick(wx, wy)
    axis_y = (y0, const(h), const(w), mid[:, 1], cy, -cx)
    axis_x = (x0, const(w), const(1), mid[:, 0], cx, cy)
    u1, v1, f1 = _side(long, *(pick(*pair) for pair in zip(axis_y, axis_x)))
    u2, v2, f2 = _side(short, *(pick(*pair) for pair in zip(axis_x, axis_y)))
    f1 = f1.long() + base
    log_value = value.log()
    long_h, short_h = long.cpu().numpy(), short.cpu().numpy()
    for lo, hi in ranges:
        s = slice(lo, hi)
        n1, n2 = int(long_h[s].max()), int(short_h[s].max())
        u = u1[:n1, None, s] + u2[None, :n2, s]
        u -= torch.minimum(u, half[s]).clamp_(min=-half[s])
        d2 = u.square_().add_((v1[:n1, None, s] + v2[None, :n2, s]).square_())
        val = torch.sub(log_value[s], d2, out=d2).exp_()
        flat = f1[:n1, None, s] + f2[None, :n2, s]
        out.scatter_reduce_(0, flat.reshape(-1), val.reshape(-1), "amax")


def _zeros(n: int, device: torch.device) -> torch.Tensor:
    """A zeroed float32 [n]; on the CPU from numpy, whose calloc reuses freed memory (torch.zeros of a volume took
    page faults on every call: 2.4 ms against numpy's 0.5 ms for the benchmark's 15 MB)."""
    if device.type == "cpu":
        return torch.from_numpy(np.zeros(n, dtype=np.float32))
    return torch.zeros(n, dtype=torch.float32, device=device)


def heatmap_volume_torch(keypoints, scores, size: tuple[int, int], sigma: float = 0.6,
                         limbs: Sequence[tuple[int, int]] | None = None,
                         device: str | torch.device | None = None) -> torch.Tensor:
    """:func:`models.codecs.volume.heatmap_volume` on ``device`` (default: the keypoints' if a tensor, else CPU).

    Args: keypoints [M,T,K,2], scores [M,T,K] (tensors or arrays), size (w, h), sigma, limbs (L pairs or None).
    Returns: float32 tensor [T,K|L,H,W] on ``device``.
    """
    if device is None:
        device = keypoints.device if isinstance(keypoints, torch.Tensor) else "cpu"
    device = torch.device(device)
    host = (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t for t in (keypoints, scores))
    kp, sc, pairs = check_inputs(*host, size, sigma, limbs)
    m, t, k = sc.shape
    w, h = int(size[0]), int(size[1])
    channels = k if pairs is None else len(pairs)
    kp, sc = torch.from_numpy(kp).to(device), torch.from_numpy(sc).to(device)
    out = _zeros(t * channels * h * w, device)
    base = (torch.arange(t * channels, device=device) * (h * w)).repeat(m)
    if pairs is None:
        _splat_points(out, base, kp[..., 0].reshape(-1), kp[..., 1].reshape(-1), sc.reshape(-1), (w, h), sigma)
    else:
        pairs = torch.from_numpy(pairs).to(device)
        a, b = kp[:, :, pairs[:, 0]].reshape(-1, 2), kp[:, :, pairs[:, 1]].reshape(-1, 2)
        s_a, s_b = sc[:, :, pairs[:, 0]].reshape(-1), sc[:, :, pairs[:, 1]].reshape(-1)
        value = torch.minimum(s_a, s_b)
        short = (a - b).square().sum(1) < 1
        on = value >= EPS
        seg, pt = on & ~short, on & short
        splits = GROUPS if device.type == "cpu" else (1, 1)
        _splat_segments(out, base[seg], a[seg], b[seg], value[seg], (w, h), sigma, splits)
        _splat_points(out, base[pt], a[pt, 0], a[pt, 1], s_a[pt], (w, h), sigma)
    return out.reshape(t, channels, h, w)
