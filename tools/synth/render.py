"""Fast OpenCV rendering of synthetic people and backgrounds, with an id buffer for exact occlusion.

Every body part is a primitive (tapered capsule, convex polygon or disc) with a depth; primitives of all
people are drawn far to near (painter's algorithm) into the BGR frame, shaded with a darker rim and a
lighter core shifted towards the light, and with the same outline into a uint8 id buffer holding
``1 + person slot`` (0 = background). Coordinates are drawn with 4 fractional bits (``shift=4``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tools.synth import body as B
from tools.synth.scene import Clothing

SHIFT = 4
ONE = 1 << SHIFT


@dataclass
class Primitive:
    """One drawable part with its outline and lighter core precomputed in fixed point (``shift=4``).

    ``polys`` and ``discs`` are the outline (convex polygons int32 [n,2], discs (x, y, r) ints); ``core_*``
    the same for the lighter core drawn on top; ``color`` is the core's BGR colour, the outline is darker.
    """

    depth: float
    label: int
    color: tuple[int, int, int]
    polys: list
    discs: list
    core_polys: list
    core_discs: list


def _fx(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p) * ONE).astype(np.int32)


def capsules(a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray, light: np.ndarray,
             depth: np.ndarray, label: int, colors: list) -> list[Primitive]:
    """Tapered capsules from a [M,2] (radius ra [M] px) to b [M,2] (radius rb [M]), batched."""
    d = b - a
    n = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)[:, None]
    perp = np.stack([-d[:, 1], d[:, 0]], axis=1) / n
    ra, rb = np.maximum(ra, 0.5)[:, None], np.maximum(rb, 0.5)[:, None]
    quad = np.stack([a + perp * ra, b + perp * rb, b - perp * rb, a - perp * ra], axis=1)
    shift = light[None, :] * 0.3 * np.maximum(ra, rb)
    core_quad = np.stack([a + shift + perp * ra * 0.55, b + shift + perp * rb * 0.55,
                          b + shift - perp * rb * 0.55, a + shift - perp * ra * 0.55], axis=1)
    q, cq = _fx(quad), _fx(core_quad)
    ends = np.concatenate([_fx(a), _fx(b), _fx(ra), _fx(rb), _fx(a + shift), _fx(b + shift),
                           _fx(ra * 0.55), _fx(rb * 0.55)], axis=1).tolist()
    big = (np.maximum(ra, rb)[:, 0] >= 1.5).tolist()
    out = []
    for i, e in enumerate(ends):
        core = big[i]
        out.append(Primitive(
            float(depth[i]), label, colors[i], [q[i]], [(e[0], e[1], e[4]), (e[2], e[3], e[5])],
            [cq[i]] if core else [], [(e[6], e[7], e[10]), (e[8], e[9], e[11])] if core else []))
    return out


def polygon(pts: np.ndarray, light: np.ndarray, depth: float, label: int, color) -> Primitive:
    """A convex polygon pts [n,2] (px) with a shrunken core shifted towards the light."""
    centre = pts.mean(axis=0)
    core = centre + (pts - centre) * 0.7 + light * 0.08 * np.ptp(pts, axis=0).max()
    return Primitive(depth, label, color, [_fx(pts)], [], [_fx(core)], [])


def disc(c: np.ndarray, r: float, light: np.ndarray, depth: float, label: int, color) -> Primitive:
    """A disc centred on c [2] of radius r px."""
    x, y, rr = _fx(np.array([c[0], c[1], max(r, 0.5)])).tolist()
    core = []
    if r >= 1.5:
        cx, cy, cr = _fx(np.array([c[0] + light[0] * 0.3 * r, c[1] + light[1] * 0.3 * r, 0.55 * r])).tolist()
        core = [(cx, cy, cr)]
    return Primitive(depth, label, color, [], [(x, y, rr)], [], core)


def _shapes(img: np.ndarray, polys: list, discs: list, color, line: int) -> None:
    for p in polys:
        cv2.fillConvexPoly(img, p, color, line, SHIFT)
    for x, y, r in discs:
        cv2.circle(img, (x, y), r, color, -1, line, SHIFT)


def draw(frame: np.ndarray, labels: np.ndarray, prims: list[Primitive]) -> None:
    """Draw ``prims`` far to near into ``frame`` (uint8 [H,W,3]) and ``labels`` (uint8 [H,W]) in place."""
    for p in sorted(prims, key=lambda q: -q.depth):
        _shapes(labels, p.polys, p.discs, p.label, cv2.LINE_8)
        rim = (int(p.color[0] * 0.62), int(p.color[1] * 0.62), int(p.color[2] * 0.62))
        _shapes(frame, p.polys, p.discs, rim, cv2.LINE_AA)
        _shapes(frame, p.core_polys, p.core_discs, p.color, cv2.LINE_AA)


def _hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def person_primitives(uv: np.ndarray, xyz: np.ndarray, props: B.Proportions, cloth: Clothing,
                      fx: float, label: int, light: np.ndarray) -> list[Primitive]:
    """Primitives of one person from projected points uv [NUM_POINTS,2] and camera points xyz [NUM_POINTS,3] mm."""
    h, g, z = props.height, props.girth, xyz[:, 2]
    sleeve = cloth.shirt if cloth.long_sleeves else cloth.skin
    legs = cloth.pants if cloth.long_pants else cloth.skin
    segs, colors = [], []
    for sh, el, wr, hand, hip, kn, an, toe in ((3, 4, 5, B.L_HAND, 6, 7, 8, B.L_TOE),
                                               (9, 10, 11, B.R_HAND, 12, 13, 14, B.R_TOE)):
        segs += [(sh, el, 0.042, 0.033), (el, wr, 0.031, 0.024), (wr, hand, 0.026, 0.022),
                 (hip, kn, 0.064, 0.046), (kn, an, 0.044, 0.028), (an, toe, 0.026, 0.024)]
        colors += [cloth.shirt, sleeve, cloth.skin, cloth.pants, legs, cloth.shoes]
    segs.append((0, B.UPPER_NECK, 0.032, 0.03))
    colors.append(cloth.skin)
    i, j = np.array([s[0] for s in segs]), np.array([s[1] for s in segs])
    ri, rj = np.array([s[2] for s in segs]) * h * g * fx / z[i], np.array([s[3] for s in segs]) * h * g * fx / z[j]
    prims = capsules(uv[i], uv[j], ri, rj, light, (z[i] + z[j]) / 2, label, colors)
    prims += _torso(uv, z, fx, props, cloth, label, light)
    prims += _head(uv, xyz, fx, props, cloth, label, light)
    return prims


def _torso(uv, z, fx: float, props: B.Proportions, cloth: Clothing, label: int, light) -> list[Primitive]:
    ls, rs, rh, lh = uv[3], uv[9], uv[12], uv[6]
    depth = float(z[[3, 9, 12, 6]].mean())
    belt = 0.8
    bl, br = ls + (lh - ls) * belt, rs + (rh - rs) * belt
    out = [polygon(_hull(np.stack([ls, rs, br, bl])), light, depth, label, cloth.shirt),
           polygon(_hull(np.stack([bl, br, rh, lh])), light, depth, label, cloth.pants)]
    r = 0.075 * props.height * props.girth * fx
    waist = uv[0] + (uv[2] - uv[0]) * belt
    out += capsules(np.stack([uv[0], waist]), np.stack([waist, uv[2]]), np.array([r / z[0], r / z[2]]),
                    np.array([r / z[2], r / z[2]]), light, np.array([depth + 1.0, depth + 1.0]), label,
                    [cloth.shirt, cloth.pants])
    for k in range(cloth.stripes):
        t0, t1 = belt * (2 * k + 0.5) / (2 * cloth.stripes), belt * (2 * k + 1.5) / (2 * cloth.stripes)
        quad = np.stack([ls + (lh - ls) * t0, rs + (rh - rs) * t0, rs + (rh - rs) * t1, ls + (lh - ls) * t1])
        out.append(polygon(_hull(quad), light, depth - 0.5, label, cloth.stripe_color))
    return out


def facing_camera(xyz: np.ndarray) -> bool:
    """Whether the face of a person (camera points [NUM_POINTS,3]) is turned towards the camera."""
    face = xyz[1] - xyz[B.HEAD_CENTER]
    return float(face @ -xyz[B.HEAD_CENTER]) > 0.0


def _head(uv, xyz, fx: float, props: B.Proportions, cloth: Clothing, label: int, light) -> list[Primitive]:
    c, hc = B.HEAD_CENTER, B.HAIR_CENTER
    r = B.head_radius(props)
    depth = float(xyz[c, 2])
    front = facing_camera(xyz)
    out = [disc(uv[c], r * fx / xyz[c, 2], light, depth, label, cloth.skin),
           disc(uv[hc], 1.02 * r * fx / xyz[hc, 2], light, depth + 2.0 if front else depth - 2.0, label, cloth.hair)]
    eye_r = 0.008 * props.height * props.head * fx / depth
    if front and eye_r >= 0.7:
        out += [disc(uv[j], eye_r, light * 0, depth - 3.0, label, (30, 30, 40)) for j in (15, 17)]
    return out
