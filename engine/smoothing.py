"""One-Euro filter (Casiez et al., CHI 2012) over arrays of any shape: jitter removal for keypoints.

The cutoff frequency adapts to speed: slow motion is smoothed hard (``min_cutoff``), fast motion
follows closely (``beta``). Used per track on 2D keypoints [K,2] and 3D keypoints [K,3].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """Filter parameters.

    Attributes:
        min_cutoff: cutoff frequency (Hz) at zero speed; lower = smoother when still.
        beta: speed coefficient; higher = less lag when moving.
        d_cutoff: cutoff frequency (Hz) of the speed estimate.
    """

    min_cutoff: float = 1.0
    beta: float = 0.05
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(f"OneEuroParams: cutoffs must be > 0 and beta >= 0, got {self}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One-Euro filter of an array signal (every element filtered independently)."""

    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample ``x`` (any shape, constant across calls) taken at time ``t`` seconds."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.astype(np.float32)
        dt = t - self._t
        p = self.params
        with np.errstate(over="ignore", invalid="ignore"):  # a runaway input is caught below
            dx = (x - self._x) / dt
            a_d = _alpha(p.d_cutoff, dt)
            self._dx = a_d * dx + (1 - a_d) * self._dx
            cutoff = p.min_cutoff + p.beta * np.abs(self._dx)
            a = _alpha(cutoff, dt)
            self._x = a * x + (1 - a) * self._x
        self._t = t
        if not (np.isfinite(self._x).all() and np.isfinite(self._dx).all()):  # ran away: start again from x
            self._x, self._dx = x.copy(), np.zeros_like(x)
        with np.errstate(over="ignore"):
            return self._x.astype(np.float32)
