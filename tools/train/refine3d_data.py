"""The 3D refiner's training samples: real first-stage predictions and noised true poses, augmented.

Tensors are camera-space joints ``xyz`` [N,K,3] mm, joint scores [N,K] (the refiner's validity flags come from
them) and true joints [N,K,3] mm. Everything is vectorised over rows (an epoch of 10**5 rows takes a second).

The first stage's errors are measured on the real pairs (:class:`ErrorModel`) in the form the refiner sees
them: per joint, its 2D error as an offset of its ray (``(x/z, y/z)``) relative to the root's, times the true
root depth (mm, x and y), and its depth error relative to the root's (mm, z); the root's own ray error (mm) and
the log-ratio of its depth; how often each joint is flagged invalid, apart for joints inside and outside the
frame. Noised true poses draw each joint's error from those measured for that joint (a bootstrap: the
measured per-joint, per-axis distributions with their biases and tails).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.layouts import get_layout
from models.refine3d import MIN_DEPTH_MM


def root_of(xyz: torch.Tensor, root_joints: tuple[int, ...]) -> torch.Tensor:
    return xyz[:, list(root_joints)].mean(dim=1)


def rays(xyz: torch.Tensor) -> torch.Tensor:
    return xyz[..., :2] / xyz[..., 2:3].clamp_min(MIN_DEPTH_MM)


@dataclass
class ErrorModel:
    """The first stage's errors measured on real pairs (see the module docstring).

    joint_errors: per joint, [M_j, 4] (x, y, z mm, and the joint's score) of the pairs where that joint was valid
    (a noised joint takes an error and the score that came with it); root_ray [M, 2] mm;
    root_log [M]; valid_in / valid_out [K]: how often a joint inside / outside the frame is valid.
    """

    joint_errors: list[np.ndarray]
    root_ray: np.ndarray
    root_log: np.ndarray
    valid_in: np.ndarray
    valid_out: np.ndarray

    @classmethod
    def measure(cls, pred: torch.Tensor, score: torch.Tensor, valid: torch.Tensor, gt: torch.Tensor,
                in_frame: torch.Tensor, root_joints: tuple[int, ...]) -> ErrorModel:
        pr, gr = root_of(pred, root_joints), root_of(gt, root_joints)
        zg = gr[:, 2:3]
        e2 = ((rays(pred) - rays(pr)[:, None]) - (rays(gt) - rays(gr)[:, None])) * zg[:, None]
        ez = (pred[..., 2] - pr[:, None, 2]) - (gt[..., 2] - gr[:, None, 2])
        err = torch.cat([e2, ez[..., None], score[..., None]], dim=-1).numpy()
        v = valid.numpy()
        inside = in_frame.numpy()
        rate = lambda m: np.array([(v[:, j] & m[:, j]).sum() / max(1, m[:, j].sum()) for j in range(v.shape[1])])  # noqa: E731
        return cls(joint_errors=[err[v[:, j], j] for j in range(v.shape[1])],
                   root_ray=((rays(pr) - rays(gr)) * zg).numpy(), root_log=torch.log(pr[:, 2] / gr[:, 2]).numpy(),
                   valid_in=rate(inside), valid_out=rate(~inside))

    def summary(self, names: tuple[str, ...]) -> dict:
        """Per joint and axis mean and standard deviation (mm), the root's figures and the valid rates."""
        def stats(e):
            e = e[:, :3] if e.shape[1] > 3 else e
            return {"mean": [round(float(x), 1) for x in e.mean(0)], "std": [round(float(x), 1) for x in e.std(0)]}
        return {"joints": {n: {**stats(e), "valid_in_frame": round(float(a), 3), "valid_outside": round(float(b), 3)}
                           for n, e, a, b in zip(names, self.joint_errors, self.valid_in, self.valid_out) if len(e)},
                "root_ray_mm": stats(self.root_ray),
                "root_depth_log_ratio": {"mean": round(float(self.root_log.mean()), 4),
                                         "std": round(float(self.root_log.std()), 4)}}

    def noised(self, gt: torch.Tensor, in_frame: torch.Tensor, root_joints: tuple[int, ...],
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions [N,K,3], scores [N,K]: 0 where invalid) made from true poses gt [N,K,3]."""
        n, k = gt.shape[:2]
        err = np.zeros((n, k, 4), np.float32)
        for j, pool in enumerate(self.joint_errors):
            if len(pool):
                err[:, j] = pool[rng.integers(len(pool), size=n)]
        pick = rng.integers(len(self.root_log), size=n)
        err, root_ray = torch.from_numpy(err), torch.from_numpy(self.root_ray[pick]).float()
        log = torch.from_numpy(self.root_log[pick]).float()
        gr = root_of(gt, root_joints)
        zg = gr[:, 2:3]
        zp = zg * torch.exp(log)[:, None]
        ray_root = rays(gr) + root_ray / zg
        ray = ray_root[:, None] + (rays(gt) - rays(gr)[:, None]) + err[..., :2] / zg[:, None]
        z = zp + (gt[..., 2] - gr[:, None, 2]) + err[..., 2]
        pred = torch.cat([ray * z[..., None], z[..., None]], dim=-1)
        u = torch.from_numpy(rng.random((n, k))).float()
        rate = torch.where(in_frame, torch.from_numpy(self.valid_in).float(), torch.from_numpy(self.valid_out).float())
        return pred, torch.where(u < rate, err[..., 3], 0.0)


def rotate_about_root(xyz: torch.Tensor, angle: torch.Tensor, root_joints: tuple[int, ...]) -> torch.Tensor:
    """xyz [N,K,3] rotated by ``angle`` [N] radians about the vertical (camera y) axis through each root."""
    root = root_of(xyz, root_joints)[:, None]
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    rel = xyz - root
    x, y, z = rel.unbind(-1)
    return torch.stack([c * x + s * z, y, -s * x + c * z], dim=-1) + root


def mirror(xyz: torch.Tensor, flip_index: np.ndarray) -> torch.Tensor:
    """xyz [N,K,3] mirrored (x -> -x about the optical axis) with left and right joints swapped."""
    out = xyz[:, torch.as_tensor(flip_index)].clone()
    out[..., 0] = -out[..., 0]
    return out


@dataclass
class Augment:
    """Mirror with probability 1/2, rotation about the vertical axis, joints dropped (flagged invalid): each
    sample draws a rate uniformly from [0, ``drop_joints``] and flags each of its joints at that rate, so some
    samples lose none and some lose many."""

    flip: bool = True
    rotate_deg: float = 0.0
    drop_joints: float = 0.0

    def geometry(self, tensors: list[torch.Tensor], flip_index: np.ndarray, root_joints: tuple[int, ...],
                 rng: np.random.Generator) -> list[torch.Tensor]:
        """The same mirror and rotation applied to each of ``tensors`` (xyz [N,K,3]; [N,K] ones are only
        reordered by the mirror)."""
        n = tensors[0].shape[0]
        out = list(tensors)
        if self.flip:
            flip = torch.from_numpy(rng.random(n) < 0.5)
            out = [torch.where(flip.view(-1, *([1] * (t.dim() - 1))),
                               mirror(t, flip_index) if t.dim() == 3 else t[:, torch.as_tensor(flip_index)], t)
                   for t in out]
        if self.rotate_deg > 0:
            angle = torch.from_numpy(rng.uniform(-1, 1, n) * math.radians(self.rotate_deg)).float()
            out = [rotate_about_root(t, angle, root_joints) if t.dim() == 3 else t for t in out]
        return out

    def drop(self, score: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.drop_joints <= 0:
            return score
        rate = rng.uniform(0.0, self.drop_joints, (score.shape[0], 1))
        return torch.where(torch.from_numpy(rng.random(tuple(score.shape)) < rate), 0.0, score)


def layout_facts(layout: str) -> tuple[np.ndarray, tuple[int, ...]]:
    lay = get_layout(layout)
    return lay.flip_index, tuple(int(j) for j in lay.root_joints)
