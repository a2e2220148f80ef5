"""Frame <-> network-input geometry: letterbox and (rotated) crop as 2x3 affine maps.

Points use the pixel-centre convention of :mod:`models.layouts` (centre of the top-left pixel is
(0, 0)); sizes are ``(width, height)``. ``.matrix`` is the 2x3 float64 map from source to destination
pixels in that convention, which is also OpenCV's: ``cv2.warpAffine(frame, t.matrix, t.dst_size)``
produces the destination image that agrees with ``t.forward`` on points.

``forward`` and ``inverse`` take arrays ``[..., 2]`` (numpy or torch; the result has the input's type,
dtype and device).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _check_size(name: str, size) -> tuple[int, int]:
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be (width, height) with positive values, got {size!r}")
    return float(size[0]), float(size[1])


def _invert(matrix: np.ndarray) -> np.ndarray:
    a = matrix[:, :2]
    a_inv = np.linalg.inv(a)
    return np.concatenate([a_inv, -a_inv @ matrix[:, 2:]], axis=1)


def apply_affine(matrix: np.ndarray, points):
    """Apply a 2x3 affine ``matrix`` to points ``[..., 2]`` (numpy or torch, type kept)."""
    if isinstance(points, torch.Tensor):
        if points.shape[-1:] != (2,):
            raise ValueError(f"points must have shape [..., 2], got {tuple(points.shape)}")
        dtype = points.dtype if points.is_floating_point() else torch.float32
        m = torch.as_tensor(matrix, dtype=dtype, device=points.device)
        p = points.to(dtype)
        return p @ m[:, :2].T + m[:, 2]
    points = np.asarray(points)
    if points.shape[-1:] != (2,):
        raise ValueError(f"points must have shape [..., 2], got {points.shape}")
    dtype = points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64
    p = points.astype(np.float64)
    return (p @ matrix[:, :2].T + matrix[:, 2]).astype(dtype)


class _Affine:
    """Base of the transforms: ``matrix`` source -> destination, ``inverse_matrix`` back."""

    matrix: np.ndarray
    dst_size: tuple[int, int]

    @property
    def inverse_matrix(self) -> np.ndarray:
        """2x3 float64 destination -> source map."""
        return _invert(self.matrix)

    def forward(self, points):
        """Source points [..., 2] -> destination points [..., 2]."""
        return apply_affine(self.matrix, points)

    def inverse(self, points):
        """Destination points [..., 2] -> source points [..., 2]."""
        return apply_affine(self.inverse_matrix, points)

    def warp(self, image: np.ndarray, border_value=(0, 0, 0)) -> np.ndarray:
        """The destination image (``cv2.warpAffine`` with ``matrix``, bilinear, constant border)."""
        import cv2

        return cv2.warpAffine(image, self.matrix, tuple(int(s) for s in self.dst_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


class Letterbox(_Affine):
    """Resize ``src_size`` into ``dst_size`` keeping the aspect ratio, centred, with padding.

    Attributes:
        scale: destination pixels per source pixel.
        pad: (x, y) offset of the scaled image's left/top edge in the destination, in pixels
            (may be fractional: the map is exact, not rounded).
        matrix: 2x3 float64 source -> destination.
    """

    def __init__(self, src_size: tuple[int, int], dst_size: tuple[int, int]):
        sw, sh = _check_size("src_size", src_size)
        dw, dh = _check_size("dst_size", dst_size)
        self.src_size = (int(sw), int(sh))
        self.dst_size = (int(dw), int(dh))
        self.scale = min(dw / sw, dh / sh)
        self.pad = ((dw - self.scale * sw) / 2.0, (dh - self.scale * sh) / 2.0)
        s = self.scale
        # Edges map to edges: (x + 0.5) * s + pad - 0.5.
        self.matrix = np.array([[s, 0.0, 0.5 * s - 0.5 + self.pad[0]],
                                [0.0, s, 0.5 * s - 0.5 + self.pad[1]]], dtype=np.float64)

    def __repr__(self) -> str:
        return f"Letterbox(src_size={self.src_size}, dst_size={self.dst_size})"


class Crop(_Affine):
    """A (possibly rotated) box of the source, resized to ``dst_size``.

    Args:
        center: (x, y) centre of the box in source pixels.
        size: (w, h) of the box in source pixels; the box's width maps to the destination's width
            (aspect ratio changes when ``size`` and ``dst_size`` differ in shape).
        dst_size: (w, h) of the destination image.
        rotation: degrees, counter-clockwise as seen on screen (OpenCV's ``getRotationMatrix2D`` sign):
            the destination shows the source rotated by this angle about ``center``.
    """

    def __init__(self, center: tuple[float, float], size: tuple[float, float], dst_size: tuple[int, int],
                 rotation: float = 0.0):
        if len(center) != 2 or not all(math.isfinite(c) for c in center):
            raise ValueError(f"center must be a finite (x, y), got {center!r}")
        bw, bh = _check_size("size", size)
        dw, dh = _check_size("dst_size", dst_size)
        if not math.isfinite(rotation):
            raise ValueError(f"rotation must be finite, got {rotation!r}")
        self.center = (float(center[0]), float(center[1]))
        self.size = (bw, bh)
        self.dst_size = (int(dw), int(dh))
        self.rotation = float(rotation)
        a = math.radians(self.rotation)
        cos, sin = math.cos(a), math.sin(a)
        sx, sy = dw / bw, dh / bh
        # p_dst = S R (p - center) + (dst/2 - 0.5); R as cv2.getRotationMatrix2D (y axis down).
        lin = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]], dtype=np.float64)
        offset = np.array([dw / 2.0 - 0.5, dh / 2.0 - 0.5]) - lin @ np.array(self.center)
        self.matrix = np.concatenate([lin, offset[:, None]], axis=1)

    def __repr__(self) -> str:
        return (f"Crop(center={self.center}, size={self.size}, dst_size={self.dst_size}, "
                f"rotation={self.rotation})")
