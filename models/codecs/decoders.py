"""Heatmap decoders on torch: batched, CPU/CUDA, ONNX-exportable (opset 17, dynamic batch).

Both take heatmaps ``[B, K, H, W]`` and return ``(xy [B, K, 2], score [B, K])`` with ``xy`` in *heatmap*
pixels (pixel-centre convention) and ``score`` the map's maximum. They use only ops that ONNX exports
(max/argmax, gather, conv2d, pad, where), no data-dependent Python control flow.
"""

from __future__ import annotations

import torch


def _check(heatmaps: torch.Tensor) -> None:
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.dim() != 4:
        shape = list(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
        raise ValueError(f"heatmaps must be a torch tensor [B,K,H,W], got {shape}")


def _argmax(heatmaps: torch.Tensor):
    """Integer peak (x, y) [B,K] (int64), score [B,K] and the flat maps [B,K,H*W]."""
    w = heatmaps.shape[3]
    flat = heatmaps.flatten(2)
    score, idx = flat.max(dim=2)
    return idx % w, torch.div(idx, w, rounding_mode="floor"), score, flat


def _at(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Values [B,K] of flat maps [B,K,H*W] at integer (x, y) [B,K], clamped to the map."""
    w, h = size
    idx = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    return torch.gather(flat, 2, idx.unsqueeze(-1)).squeeze(-1)


def argmax_quarter(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax, then a quarter pixel toward the larger neighbour on each axis (the classic baseline).

    Args:
        heatmaps: [B,K,H,W].
    Returns:
        xy [B,K,2] heatmap pixels (float), score [B,K] (map maximum).
    """
    _check(heatmaps)
    h, w = heatmaps.shape[2], heatmaps.shape[3]
    x, y, score, flat = _argmax(heatmaps)
    dx = _at(flat, x + 1, y, (w, h)) - _at(flat, x - 1, y, (w, h))
    dy = _at(flat, x, y + 1, (w, h)) - _at(flat, x, y - 1, (w, h))
    inside_x = ((x > 0) & (x < w - 1)).to(heatmaps.dtype)
    inside_y = ((y > 0) & (y < h - 1)).to(heatmaps.dtype)
    ox = 0.25 * torch.sign(dx) * inside_x
    oy = 0.25 * torch.sign(dy) * inside_y
    return torch.stack([x.to(heatmaps.dtype) + ox, y.to(heatmaps.dtype) + oy], dim=-1), score


def dark_kernel_size(sigma: float) -> int:
    """Blur kernel size for DARK matched to a target sigma (11 for sigma 2, as OpenCV's sigma rule)."""
    return max(3, 2 * round((sigma - 0.8) / 0.3 + 1.0) + 1)


def _gaussian_kernel(kernel: int, dtype, device) -> torch.Tensor:
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1.0) + 0.8  # OpenCV's default for GaussianBlur(sigma=0)
    r = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2.0
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _band(n_in: int, n_out: int, kernel: torch.Tensor) -> torch.Tensor:
    """[n_in, n_out] matrix B with (v @ B)[c] = sum_j kernel[j] * v[c + j] (a 'valid' 1D correlation)."""
    k = kernel.shape[0]
    tap = torch.arange(n_in, device=kernel.device)[:, None] - torch.arange(n_out, device=kernel.device)[None, :]
    inside = (tap >= 0) & (tap < k)
    return torch.where(inside, kernel[tap.clamp(0, k - 1)], torch.zeros((), dtype=kernel.dtype, device=kernel.device))


def _patch(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int], r: int) -> torch.Tensor:
    """Windows [B,K,2r+1,2r+1] of flat maps [B,K,H*W] centred on (x, y) [B,K], zero outside the map."""
    w, h = size
    o = torch.arange(-r, r + 1, device=flat.device)
    xs, ys = x[..., None] + o, y[..., None] + o  # [B,K,S]
    inside = ((xs >= 0) & (xs < w))[..., None, :] & ((ys >= 0) & (ys < h))[..., :, None]
    # Reads outside the map are masked to zero, so wrapped or clamped flat indices are harmless there.
    offsets = (o[:, None] * w + o[None, :]).flatten()  # [S*S]
    idx = ((y * w + x)[..., None] + offsets).clamp(0, h * w - 1)
    values = torch.gather(flat, 2, idx).reshape(inside.shape)
    return values * inside.to(flat.dtype)


def modulated_log_3x3(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int], kernel: int):
    """Log of DARK's modulated heatmap on the 3x3 neighbourhood of (x, y): [B,K,3,3].

    The modulation is a Gaussian blur with zero padding (as the DARK/MMPose reference); only the nine blurred
    values the Taylor step needs are computed. DARK's rescaling of the blurred map to the original maximum adds
    a constant to the log and cancels in the derivatives, so it is left out.
    """
    g = _gaussian_kernel(kernel, flat.dtype, flat.device)
    patch = _patch(flat, x, y, size, kernel // 2 + 1)  # [B,K,k+2,k+2]
    band = _band(kernel + 2, 3, g)  # [k+2, 3]
    blurred = band.T @ patch @ band  # [B,K,3,3]
    return torch.log(blurred.clamp_min(1e-10))


def dark(heatmaps: torch.Tensor, kernel: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """DARK: second-order Taylor refinement of the argmax on the log of the modulated heatmap.

    Args:
        heatmaps: [B,K,H,W].
        kernel: odd blur size of the modulation (:func:`dark_kernel_size` of the training sigma).
    Returns:
        xy [B,K,2] heatmap pixels, score [B,K] (maximum of the raw map). Peaks on the border, on flat
        maps or where the log-map is not locally concave keep the integer argmax; offsets are clamped to 1 px.
    """
    _check(heatmaps)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
    h, w = heatmaps.shape[2], heatmaps.shape[3]
    x, y, score, flat = _argmax(heatmaps)
    log = modulated_log_3x3(flat, x, y, (w, h), kernel)
    c = log[..., 1, 1]
    right, left, down, up = log[..., 1, 2], log[..., 1, 0], log[..., 2, 1], log[..., 0, 1]
    dx, dy = 0.5 * (right - left), 0.5 * (down - up)
    dxx, dyy = right - 2.0 * c + left, down - 2.0 * c + up
    dxy = 0.25 * (log[..., 2, 2] - log[..., 0, 2] - log[..., 2, 0] + log[..., 0, 0])
    det = dxx * dyy - dxy * dxy
    valid = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1) & (det > 1e-10) & (dxx < 0)
    safe = torch.where(valid, det, torch.ones_like(det))
    ox = torch.where(valid, -(dyy * dx - dxy * dy) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    oy = torch.where(valid, -(dxx * dy - dxy * dx) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    return torch.stack([x.to(heatmaps.dtype) + ox, y.to(heatmaps.dtype) + oy], dim=-1), score
