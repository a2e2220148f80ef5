"""Random backgrounds: gradients, smooth noise, rooms with a floor, textures, clutter and grain."""

from __future__ import annotations

import cv2
import numpy as np


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _gradient(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    sw, sh = max(2, w // 16), max(2, h // 16)  # a linear ramp survives linear resizing exactly
    x = np.linspace(-0.5, 0.5, sw, dtype=np.float32)[None, :] * np.cos(angle)
    y = np.linspace(-0.5, 0.5, sh, dtype=np.float32)[:, None] * np.sin(angle)
    t = (x + y + 0.5)[..., None]
    c0, c1 = np.array(_color(rng), np.float32), np.array(_color(rng), np.float32)
    small = (c0 + (c1 - c0) * t).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    cells = int(rng.integers(2, 24))
    small = rng.integers(0, 256, (max(2, cells * h // w), cells, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _room(rng: np.random.Generator, w: int, h: int, horizon: float) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = _color(rng)
    top = int(np.clip(horizon + rng.uniform(0.05, 0.4) * h, 0, h))
    floor = _gradient(rng, w, h - top) if top < h else None
    if floor is not None:
        img[top:] = floor
    return img


def _texture(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    period = int(rng.integers(6, 60))
    color = _color(rng)
    thick = max(1, int(period * rng.uniform(0.1, 0.5)))
    if rng.random() < 0.5:  # stripes at an angle
        angle = rng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        n = np.array([-d[1], d[0]])
        diag = int(np.hypot(w, h))
        centre = np.array([w / 2, h / 2])
        for k in range(-diag // period, diag // period + 1):
            p = centre + n * k * period
            a, b = p - d * diag, p + d * diag
            cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color, thick)
    else:  # checker
        for y in range(0, h, period):
            for x in range((y // period) % 2 * period, w, 2 * period):
                cv2.rectangle(img, (x, y), (x + period - 1, y + period - 1), color, -1)


def _clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    h, w = img.shape[:2]
    s = max(w, h)
    for _ in range(count):
        kind = int(rng.integers(5))
        color = _color(rng)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.uniform(0.01, 0.15) * s)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.uniform(0.3, 3) * r)), color, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
        elif kind == 2:
            cv2.ellipse(img, (x, y), (r, max(1, r // 3)), float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
        elif kind == 3:  # limb-like distractor
            x2, y2 = x + int(rng.normal(0, r * 2)), y + int(rng.normal(0, r * 2))
            cv2.line(img, (x, y), (x2, y2), color, max(2, r // 4), cv2.LINE_AA)
        else:
            pts = rng.normal(0, r, (int(rng.integers(3, 7)), 2)) + (x, y)
            cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)


def make_background(rng: np.random.Generator, size: tuple[int, int], horizon: float) -> np.ndarray:
    """A random background, uint8 BGR [H, W, 3] for ``size`` (w, h); ``horizon`` is the floor line's y (px)."""
    w, h = size
    kind = int(rng.integers(3))
    img = _gradient(rng, w, h) if kind == 0 else _noise(rng, w, h) if kind == 1 else _room(rng, w, h, horizon)
    if rng.random() < 0.35:
        _texture(rng, img)
    _clutter(rng, img, int(rng.integers(0, 30)))
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.5))
    if rng.random() < 0.4:
        grain = rng.integers(-12, 13, (h // 2 + 1, w // 2 + 1, 1), dtype=np.int16)
        grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
        img = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return img
