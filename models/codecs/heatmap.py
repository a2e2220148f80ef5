"""Gaussian heatmap codec: training targets (keypoint and limb maps) and their decoding.

Input pixel x maps to heatmap pixel ``(x + 0.5) * W_hm / W_in - 0.5`` (pixel-centre convention, no rounding:
Gaussian centres are sub-pixel). One torch implementation serves numpy and torch callers, so both give the
same numbers: numpy in -> numpy float32 out, torch in -> torch out (same device).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.codecs._arrays import check_shape, like_input, to_torch
from models.codecs.decoders import argmax_quarter, dark, dark_kernel_size

SCORE_EPS = 1e-3  # scores below this count as "not labelled" (PYSKL's EPS)
TRUNCATE = 3.0  # Gaussians are cut at +-3 sigma


def _size(name: str, value) -> tuple[int, int]:
    if len(value) != 2 or any(int(v) != v or v <= 0 for v in value):
        raise ValueError(f"{name} must be (width, height) positive integers, got {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class HeatmapParams:
    """Heatmap codec parameters.

    Attributes:
        input_size: (w, h) of the network input in pixels.
        heatmap_size: (w, h) of the output maps.
        sigma: Gaussian standard deviation in heatmap pixels.
    """

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    sigma: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "input_size", _size("input_size", self.input_size))
        object.__setattr__(self, "heatmap_size", _size("heatmap_size", self.heatmap_size))
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma!r}")


def _axis_gauss(centres: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """1D Gaussians [..., n] around centres [...], zero beyond +-3 sigma."""
    grid = torch.arange(n, dtype=centres.dtype, device=centres.device)
    d = grid - centres[..., None]
    return torch.exp(-(d * d) / (2.0 * sigma * sigma)) * (d.abs() <= TRUNCATE * sigma)


def _segment_d2(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distance [..., H, W] from the pixel grid points [H,W,2] to segments a, b [..., 2]."""
    ab = b - a
    len2 = (ab * ab).sum(-1)
    ap = points - a[..., None, None, :]
    t = (ap * ab[..., None, None, :]).sum(-1) / len2.clamp_min(1e-12)[..., None, None]
    t = t.clamp(0.0, 1.0) * (len2 > 1e-12)[..., None, None]
    closest = ap - t[..., None] * ab[..., None, None, :]
    return (closest * closest).sum(-1)


class HeatmapCodec:
    """Encode keypoints to Gaussian heatmaps and decode heatmaps to keypoints (input pixels)."""

    def __init__(self, params: HeatmapParams):
        self.params = params
        (wi, hi), (wh, hh) = params.input_size, params.heatmap_size
        self._scale = (wh / wi, hh / hi)

    def _inputs(self, keypoints, scores) -> tuple[torch.Tensor, torch.Tensor]:
        device = keypoints.device if isinstance(keypoints, torch.Tensor) else None
        kp = to_torch("keypoints", keypoints, device=device)
        sc = to_torch("scores", scores, device=device)
        check_shape("keypoints", kp, (None, None, 2))
        check_shape("scores", sc, (kp.shape[0], kp.shape[1]))
        return kp, sc

    def to_heatmap(self, xy: torch.Tensor) -> torch.Tensor:
        """Input pixels [..., 2] -> heatmap pixels [..., 2]."""
        s = torch.tensor(self._scale, dtype=xy.dtype, device=xy.device)
        return (xy + 0.5) * s - 0.5

    def to_input(self, xy: torch.Tensor) -> torch.Tensor:
        """Heatmap pixels [..., 2] -> input pixels [..., 2]."""
        s = torch.tensor(self._scale, dtype=xy.dtype, device=xy.device)
        return (xy + 0.5) / s - 0.5

    def encode(self, keypoints, scores):
        """Keypoint targets.

        Args:
            keypoints: [N,K,2] input pixels (N persons, may be 0).
            scores: [N,K]; the peak height. Scores < 1e-3, non-finite points and points outside the
                heatmap (beyond its pixel edges) are left out: no Gaussian, and no weight if no person has it.
        Returns:
            heatmaps [K,H,W] float32 (element-wise max over persons), weights [K] float32 (1 where labelled).
        """
        kp, sc = self._inputs(keypoints, scores)
        (wh, hh), sigma = self.params.heatmap_size, self.params.sigma
        uv = self.to_heatmap(kp)
        inside = (uv[..., 0] >= -0.5) & (uv[..., 0] <= wh - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= hh - 0.5)
        active = (sc >= SCORE_EPS) & torch.isfinite(uv).all(-1) & inside
        uv = torch.where(active[..., None], uv, torch.zeros_like(uv))
        gx = _axis_gauss(uv[..., 0], wh, sigma)
        gy = _axis_gauss(uv[..., 1], hh, sigma)
        maps = (sc * active)[..., None, None] * gy[..., :, None] * gx[..., None, :]
        heatmaps = maps.amax(dim=0) if kp.shape[0] else maps.new_zeros((kp.shape[1], hh, wh))
        weights = active.any(dim=0).to(torch.float32)
        return like_input(keypoints, heatmaps), like_input(keypoints, weights)

    def encode_limbs(self, keypoints, scores, bones: Sequence[tuple[int, int]]):
        """Limb targets: exp(-d^2 / 2 sigma^2) with d the distance to the segment, cut at 3 sigma.

        Args:
            keypoints: [N,K,2] input pixels; scores: [N,K]; bones: L pairs (a, b) of joint indices.
        Returns:
            [L,H,W] float32, the max over persons; a limb's height is the smaller of its two scores and
            limbs with either score < 1e-3 (or a non-finite end) are left out.
        """
        kp, sc = self._inputs(keypoints, scores)
        bones_t = torch.as_tensor(bones, dtype=torch.int64).reshape(-1, 2)
        if bones_t.numel() and (bones_t.min() < 0 or bones_t.max() >= kp.shape[1]):
            raise ValueError(f"bones must index joints 0..{kp.shape[1] - 1}, got {list(map(tuple, bones_t.tolist()))}")
        (wh, hh), sigma = self.params.heatmap_size, self.params.sigma
        uv = self.to_heatmap(kp)
        a, b = uv[:, bones_t[:, 0]], uv[:, bones_t[:, 1]]
        value = torch.minimum(sc[:, bones_t[:, 0]], sc[:, bones_t[:, 1]])
        active = (value >= SCORE_EPS) & torch.isfinite(a).all(-1) & torch.isfinite(b).all(-1)
        a = torch.where(active[..., None], a, torch.zeros_like(a))
        b = torch.where(active[..., None], b, torch.zeros_like(b))
        ys, xs = torch.meshgrid(torch.arange(hh, dtype=uv.dtype, device=uv.device),
                                torch.arange(wh, dtype=uv.dtype, device=uv.device), indexing="ij")
        d2 = _segment_d2(torch.stack([xs, ys], dim=-1), a, b)
        maps = torch.exp(-d2 / (2.0 * sigma * sigma)) * (d2 <= (TRUNCATE * sigma) ** 2)
        maps = maps * (value * active)[..., None, None]
        out = maps.amax(dim=0) if kp.shape[0] else maps.new_zeros((len(bones_t), hh, wh))
        return like_input(keypoints, out)

    def decode(self, heatmaps: torch.Tensor, method: str = "dark") -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps [B,K,H,W] -> (xy [B,K,2] input pixels, score [B,K]); method "dark" or "argmax_quarter"."""
        wh, hh = self.params.heatmap_size
        if not isinstance(heatmaps, torch.Tensor) or heatmaps.dim() != 4 or tuple(heatmaps.shape[2:]) != (hh, wh):
            shape = list(heatmaps.shape) if hasattr(heatmaps, "shape") else type(heatmaps).__name__
            raise ValueError(f"heatmaps must be a torch tensor [B,K,{hh},{wh}], got {shape}")
        if method == "dark":
            xy, score = dark(heatmaps, kernel=dark_kernel_size(self.params.sigma))
        elif method == "argmax_quarter":
            xy, score = argmax_quarter(heatmaps)
        else:
            raise ValueError(f"method must be 'dark' or 'argmax_quarter', got {method!r}")
        return self.to_input(xy), score
