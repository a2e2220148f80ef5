"""Pose metrics: PCKh (MPII), OKS AP (COCO, through pycocotools), MPJPE, PA-MPJPE and 3D PCK, joint precision/recall/F1,
acceleration error (temporal jitter).

Shapes: N persons, K joints; 2D points [N,K,2] pixels, 3D points [N,K,3] millimetres; masks [N,K] bool.

PCKh: a joint is correct when its distance to the truth is at most ``threshold x head size``. The official
MPII evaluation takes head size = 0.6 x the diagonal of the annotated head box (``SC_BIAS = 0.6``); data
without head boxes (the MPII JSON split, our generator) use **head size = 0.6 x the head segment length**
(upper_neck to head_top), as this project's brief specifies. ``head_sizes`` computes either.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

from models.layouts import Layout

HEAD_BIAS = 0.6


def head_sizes(gt: np.ndarray, layout: Layout, headboxes: np.ndarray | None = None) -> np.ndarray:
    """Head sizes [N] for PCKh: 0.6 x head-box diagonal (boxes [N,2,2]) or 0.6 x head segment of gt [N,K,2]."""
    if headboxes is not None:
        box = np.asarray(headboxes, np.float64)
        return HEAD_BIAS * np.linalg.norm(box[:, 1] - box[:, 0], axis=-1)
    if layout.head_segment is None:
        raise ValueError(f"PCKh needs a head segment; layout {layout.name!r} has none (use mpii16)")
    a, b = layout.head_segment
    gt = np.asarray(gt, np.float64)
    return HEAD_BIAS * np.linalg.norm(gt[:, b] - gt[:, a], axis=-1)


def pckh(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray,
         threshold: float = 0.5) -> tuple[np.ndarray, float]:
    """Per-joint PCKh [K] (NaN where no joint is visible) and the mean over all visible joints.

    pred, gt [N,K,2]; visible [N,K] bool (joints that count); head_size [N] pixels. Missing predictions
    (NaN) count as wrong.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"pckh: pred {pred.shape} and gt {gt.shape} must both be [N,K,2]")
    visible = np.asarray(visible, bool) & (np.asarray(head_size)[:, None] > 0)
    dist = np.linalg.norm(pred - gt, axis=-1)
    ok = (dist <= threshold * np.asarray(head_size, np.float64)[:, None]) & visible
    count = visible.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = ok.sum(axis=0) / count
    total = float(ok.sum() / visible.sum()) if visible.any() else float("nan")
    return per_joint, total


def mpjpe(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, layout: Layout | None = None) -> float:
    """Mean per-joint position error (mm) over masked joints of pred, gt [N,K,3].

    With ``layout`` the error is root-relative: each person's root point (``layout.root_point``) is
    subtracted from its joints first.
    """
    pred, gt = _relative(pred, gt, layout)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    return float(np.linalg.norm(pred - gt, axis=-1)[mask].mean())


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Procrustes-aligned MPJPE (mm): each person's predicted joints pred [N,K,3] are first moved, rotated and
    scaled onto the truth gt [N,K,3] by the similarity that fits its masked joints best (least squares:
    Umeyama's SVD, reflections excluded); then the mean error over masked joints. Persons with fewer than three
    masked joints are left out. It measures the pose's shape alone: a correct pose seen at the wrong scale,
    rotation or place scores 0."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pa_mpjpe: pred {pred.shape} and gt {gt.shape} must both be [N,K,3]")
    mask = np.asarray(mask, bool)
    errors = []
    for p, g, m in zip(pred, gt, mask):
        m = m & np.isfinite(p).all(-1) & np.isfinite(g).all(-1)
        if m.sum() < 3:
            continue
        errors.append(np.linalg.norm(procrustes(p[m], g[m]) - g[m], axis=-1))
    return float(np.concatenate(errors).mean()) if errors else float("nan")


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` [M,3] moved by the similarity (scale, rotation, translation) closest to ``target`` [M,3]."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(s.T @ t)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    fix = np.diag([1.0, 1.0, d])
    rotation = u @ fix @ vt  # applied on the right: s @ rotation
    var = (s * s).sum()
    scale = (sigma * np.diag(fix)).sum() / var if var > 0 else 1.0
    return scale * s @ rotation + mu_t


def mpjpe_breakdown(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, layout: Layout) -> dict:
    """Where the root-relative 3D error lies: ``per_joint`` (mm, [K], NaN where a joint is never masked in),
    ``per_axis`` (mean absolute error in mm along x, y and z: image right, image down, depth) and ``image_plane``
    (the MPJPE of x and y alone: what would be left with every depth right, a floor no depth correction
    lowers)."""
    pred, gt = _relative(pred, gt, layout)
    mask = np.asarray(mask, bool)
    err = np.where(mask[..., None], pred - gt, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": a joint never masked in
        per_joint = np.nanmean(np.linalg.norm(err, axis=-1), axis=0)
        per_axis = np.nanmean(np.abs(err).reshape(-1, 3), axis=0)
        plane = np.nanmean(np.linalg.norm(err[..., :2], axis=-1))
    return {"per_joint": per_joint, "per_axis": dict(zip("xyz", per_axis.tolist())), "image_plane": float(plane)}


def pck3d(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, threshold: float = 150.0,
          layout: Layout | None = None) -> float:
    """Fraction of masked joints within ``threshold`` mm (root-relative with ``layout``)."""
    pred, gt = _relative(pred, gt, layout)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    return float((np.linalg.norm(pred - gt, axis=-1)[mask] <= threshold).mean())


def accel_error(frames: list[dict]) -> float:
    """Acceleration error (HMMR, VIBE): the mean norm of ``(p[t-1] - 2 p[t] + p[t+1]) - (g[t-1] - 2 g[t] + g[t+1])``
    over every joint of a person matched in three consecutive frames, masked in all three and finite; 0 for a
    prediction exactly as smooth as the truth, larger the more it jitters. NaN when no such triple exists.

    ``frames``: one dict per consecutive frame, {person id: (pred [K,D], gt [K,D], mask [K] bool)}.
    """
    errors = []
    for a, b, c in zip(frames, frames[1:], frames[2:]):
        for pid in a.keys() & b.keys() & c.keys():
            (pa, ga, ma), (pb, gb, mb), (pc, gc, mc) = a[pid], b[pid], c[pid]
            accel = (np.asarray(pa, np.float64) - 2 * pb + pc) - (np.asarray(ga, np.float64) - 2 * gb + gc)
            errors.append(np.linalg.norm(accel, axis=-1)[ma & mb & mc & np.isfinite(accel).all(-1)])
    errors = np.concatenate(errors) if errors else np.zeros(0)
    return float(errors.mean()) if errors.size else float("nan")


def _relative(pred, gt, layout):
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"3D metrics: pred {pred.shape} and gt {gt.shape} must both be [N,K,3]")
    if layout is not None:
        pred = pred - layout.root_point(pred)[..., None, :]
        gt = gt - layout.root_point(gt)[..., None, :]
    return pred, gt


@dataclass
class Counts:
    """True positives, false positives and false negatives, with precision, recall and F1."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        return self

    @property
    def precision(self) -> float:
        return 1.0 if self.tp + self.fp == 0 else self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        return 1.0 if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def greedy_pairs(cost: np.ndarray, max_cost: float = np.inf) -> list[tuple[int, int]]:
    """Greedy one-to-one (row, column) pairs of a cost matrix [P,G], cheapest first, up to ``max_cost``
    (inclusive); non-finite costs never pair."""
    cost = np.asarray(cost, np.float64)
    used_p, used_g, pairs = set(), set(), []
    for flat in np.argsort(cost, axis=None, kind="stable"):
        p, g = divmod(int(flat), cost.shape[1])
        if not cost[p, g] <= max_cost:
            break
        if p not in used_p and g not in used_g:
            used_p.add(p)
            used_g.add(g)
            pairs.append((p, g))
    return pairs


def greedy_match(pred: np.ndarray, gt: np.ndarray, max_dist: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of points pred [P,D] and gt [G,D], closest pairs first, within ``max_dist``.

    Returns (pred index, gt index) pairs.
    """
    if len(pred) == 0 or len(gt) == 0:
        return []
    return greedy_pairs(np.linalg.norm(np.asarray(pred, np.float64)[:, None] - np.asarray(gt, np.float64)[None],
                                       axis=-1), max_dist)


def torso_sizes(xy: np.ndarray, ok: np.ndarray, layout: Layout) -> np.ndarray:
    """Torso lengths [N] of persons xy [N,K,2]: the distance from the mean of the shoulders to the mean of the
    hips (the layout's joints named ``*shoulder`` and ``*hip``, those with ``ok`` [N,K]); NaN where a person
    has neither shoulder or neither hip."""
    xy, ok = np.asarray(xy, np.float64), np.asarray(ok, bool)
    ends = []
    for part in ("shoulder", "hip"):
        idx = [j for j, n in enumerate(layout.names) if n.endswith(part)]
        w = ok[:, idx].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ends.append((xy[:, idx] * w[..., None]).sum(1) / w.sum(1)[:, None])
    return np.linalg.norm(ends[0] - ends[1], axis=-1)


def joint_counts(pred: np.ndarray, pred_ok: np.ndarray, gt: np.ndarray, gt_ok: np.ndarray, max_dist: float) -> Counts:
    """The seed's joint detection counts for one image: joints of the same type matched one-to-one within
    ``max_dist`` (pixels or mm). pred [P,K,D] with pred_ok [P,K] bool, gt [G,K,D] with gt_ok [G,K] bool.
    Empty prediction and empty truth give precision = recall = F1 = 1.
    """
    counts = Counts()
    k = gt.shape[1] if gt.ndim == 3 and gt.shape[0] else pred.shape[1] if pred.ndim == 3 else 0
    for j in range(k):
        p = pred[pred_ok[:, j], j] if len(pred) else np.zeros((0, 2))
        g = gt[gt_ok[:, j], j] if len(gt) else np.zeros((0, 2))
        tp = len(greedy_match(p, g, max_dist))
        counts += Counts(tp, len(p) - tp, len(g) - tp)
    return counts


def oks_ap(images: list[dict], sigmas: tuple[float, ...]) -> dict[str, float]:
    """COCO keypoint AP with pycocotools for per-image dicts with numpy arrays:

    ``gt_xy`` [G,K,2], ``gt_vis`` [G,K] (0 unlabelled, >0 labelled), optional ``gt_area`` [G] (default: the
    area of the labelled joints' box grown by 10% per side), ``pred_xy`` [P,K,2], ``pred_score`` [P,K],
    ``pred_person_score`` [P]. Returns {"AP", "AP50", "AP75", "AR"}.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    k = len(sigmas)
    gts, dts = [], []
    for i, im in enumerate(images):
        gts += _gt_annotations(i, im, len(gts))
        for p in range(len(im["pred_xy"])):
            kps = np.concatenate([im["pred_xy"][p], np.asarray(im["pred_score"][p])[:, None]], axis=1)
            dts.append({"image_id": i, "category_id": 1, "keypoints": kps.reshape(-1).tolist(),
                        "score": float(im["pred_person_score"][p])})
    if not any(g["num_keypoints"] for g in gts):
        raise ValueError("oks_ap: the ground truth has no labelled joint")
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": i} for i in range(len(images))], "annotations": gts,
                       "categories": [{"id": 1, "name": "person", "keypoints": [str(j) for j in range(k)]}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts) if dts else None
        if coco_dt is None:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR": 0.0}
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {"AP": float(s[0]), "AP50": float(s[1]), "AP75": float(s[2]), "AR": float(s[5])}


def _gt_annotations(image_id: int, im: dict, start_id: int) -> list[dict]:
    out = []
    for g, (xy, vis) in enumerate(zip(im["gt_xy"], im["gt_vis"])):
        vis = np.asarray(vis)
        labelled = vis > 0
        if labelled.any():
            lo, hi = xy[labelled].min(axis=0), xy[labelled].max(axis=0)
            pad = 0.1 * (hi - lo)
            lo, hi = lo - pad, hi + pad
        else:
            lo = hi = np.zeros(2)
        area = float(im["gt_area"][g]) if im.get("gt_area") is not None else float(np.prod(hi - lo))
        v = np.where(labelled, np.where(vis >= 2, 2, 1), 0)
        kps = np.concatenate([np.where(labelled[:, None], xy, 0.0), v[:, None]], axis=1)
        out.append({"id": start_id + len(out) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                    "keypoints": kps.reshape(-1).tolist(), "num_keypoints": int(labelled.sum()),
                    "area": max(area, 1.0), "bbox": [float(lo[0]), float(lo[1]), *map(float, hi - lo)]})
    return out
