"""Training the 3D refiner (models/refine3d.py): ``python -m tools.train --config configs/refine3d_default.toml``.

A config with a ``[refine3d]`` section trains the refiner instead of an image network, with the image trainer's
optimiser and schedule settings ([optim]), checkpoints (``last`` / ``best`` .safetensors with their manifests),
``--resume`` (``last_state``: optimiser and schedule, no pickle) and logs (``log.csv``, TensorBoard when
installed, one line per epoch). It needs no images: an epoch of 10**5 people takes seconds on a CPU.

Data (``python -m tools.data.refine3d`` writes it):

* real pairs: the first stage's own predictions matched to the truth (``data``), kept when the match's mean 2D
  distance is within ``max_match`` x the truth's size (a wrong match teaches nothing);
* noised true poses (``noisy_share`` of each epoch): the generator's true poses with the first stage's errors
  added, drawn per joint from those measured on the real pairs (tools/train/refine3d_data.py).

Augmentation: mirror (probability 1/2), rotation about the vertical axis through the root (within
``rotate_real_deg`` for real pairs, prediction and truth together; ``rotate_poses_deg`` for true poses, before
their noise), and joints flagged invalid at a rate drawn per sample from [0, ``drop_joints``] (teaches filling
them in).

Loss: mean per-joint position error (mm) of the refined root-relative 3D, every joint (those outside the frame
too: the truth knows them), plus ``bone_weight`` x the absolute error of the lengths of the bones that touch a
joint it filled in (an invalid one), averaged over all bones (mm: keeps filled-in joints at plausible
distances without holding the seen ones to a length); with ``root_depth``, plus ``root_weight`` x 1000 x
|log(root depth / true)|.
Validation (``val_data``, every matched pair): root-relative MPJPE, PA-MPJPE and 3D PCK@150 mm over the joints
inside the frame, as tools.evaluate counts them, beside the first stage's own (the identity); the best
checkpoint is the lowest validation MPJPE.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.layouts import get_layout
from models.refine3d import Refine3D, Refine3DConfig, load_refine3d, save_refine3d
from tools import metrics as M
from tools.train.config import TrainConfig
from tools.train.refine3d_data import Augment, ErrorModel, layout_facts
from tools.train.state import load_state, log_row, open_tensorboard, save_state

LOG_FIELDS = ("epoch", "train_loss", "val_mpjpe_mm", "val_pa_mpjpe_mm", "val_pck3d", "lr", "samples_per_s",
              "seconds")


@dataclass
class Refine3DParams:
    """The ``[refine3d]`` section: data and augmentation (see the module docstring), and the network's shape and
    input convention: the section's keys that are :class:`Refine3DConfig` fields (layout, width, blocks, ...)."""

    data: str = "runs/refine3d_data/train"
    val_data: str = "runs/refine3d_data/val"
    root_weight: float = 1.0
    bone_weight: float = 0.0
    noisy_share: float = 0.5
    max_match: float = 0.15
    flip: bool = True
    rotate_real_deg: float = 20.0
    rotate_poses_deg: float = 180.0
    drop_joints: float = 0.05
    model: Refine3DConfig = field(default_factory=Refine3DConfig)

    @classmethod
    def from_dict(cls, data: dict) -> Refine3DParams:
        own = {f.name for f in fields(cls)} - {"model"}
        net = {f.name for f in fields(Refine3DConfig)}
        unknown = sorted(set(data) - own - net)
        if unknown:
            raise ValueError(f"train config: unknown keys {unknown} in [refine3d]")
        model = Refine3DConfig.from_dict({k: v for k, v in data.items() if k in net}, "train config [refine3d]")
        params = cls(**{k: v for k, v in data.items() if k in own}, model=model)
        if not 0.0 <= params.noisy_share < 1.0:
            raise ValueError(f"train config: refine3d.noisy_share must be in [0, 1), got {params.noisy_share}")
        return params


def _real(folder: str, max_match: float | None) -> dict[str, torch.Tensor]:
    from tools.data.refine3d import load_records

    d = load_records(folder, "pred")
    keep = np.ones(len(d["seed"]), bool) if max_match is None else d["match_px"] <= max_match * d["gt_size"]
    return {"pred": torch.from_numpy(d["pred_xyz"][keep]).float(), "score": torch.from_numpy(d["pred_score"][keep]).float(),
            "gt": torch.from_numpy(d["gt_xyz"][keep]).float(), "in_frame": torch.from_numpy(d["gt_vis"][keep] > 0)}


class Refine3DTrainer:
    """Trains the refiner as ``cfg`` (a TrainConfig with a ``refine3d`` section) says; ``fit()`` returns log rows."""

    def __init__(self, cfg: TrainConfig, device: str | None = None) -> None:
        self.cfg, self.params = cfg, Refine3DParams.from_dict(cfg.refine3d)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng([cfg.seed, 23])
        self.layout = get_layout(self.params.model.layout)
        self.flip_index, self.root_joints = layout_facts(self.params.model.layout)
        self.bones = [list(side) for side in zip(*self.layout.bones)]
        self.model = Refine3D(self.params.model)
        if cfg.init:
            start = load_refine3d(cfg.init)
            if start.config != self.model.config:
                raise ValueError(f"{cfg.init}: refiner config {start.config} differs from the [refine3d] section's")
            self.model.load_state_dict(start.state_dict())
        self.model.to(self.device)
        self.real = _real(self.params.data, self.params.max_match)
        self.val = _real(self.params.val_data, None)
        self.poses = self._poses() if self.params.noisy_share > 0 else None
        valid = self.model.valid(self.real["pred"], self.real["score"])
        self.errors = ErrorModel.measure(self.real["pred"], self.real["score"], valid, self.real["gt"],
                                         self.real["in_frame"], self.root_joints)
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)  # for the shared training state format
        self.out = Path(cfg.out)
        self.best: float | None = None
        self.start_epoch = 0

    def _poses(self) -> dict[str, torch.Tensor]:
        from tools.data.refine3d import load_records

        d = load_records(self.params.data, "poses")
        return {"gt": torch.from_numpy(d["gt_xyz"]).float(), "in_frame": torch.from_numpy(d["in_frame"])}

    def _optimizer(self) -> torch.optim.Optimizer:
        c, params = self.cfg, self.model.parameters()
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.RMSprop(params, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum)

    def _scheduler(self):
        c = self.cfg
        if c.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=c.step_size, gamma=c.factor)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min", factor=c.factor, patience=c.patience)

    def epoch_samples(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(predictions [N,K,3], scores [N,K], truths [N,K,3]) of one epoch, augmented, in random order."""
        p = self.params
        real = Augment(p.flip, p.rotate_real_deg, p.drop_joints)
        pred, gt, score = real.geometry([self.real["pred"], self.real["gt"], self.real["score"]], self.flip_index,
                                        self.root_joints, self.rng)
        parts = [(pred, real.drop(score, self.rng), gt)]
        if self.poses is not None:
            n = int(round(len(pred) * p.noisy_share / (1.0 - p.noisy_share)))
            pick = torch.from_numpy(self.rng.integers(len(self.poses["gt"]), size=n))
            truth, inside = self.poses["gt"][pick], self.poses["in_frame"][pick]
            aug = Augment(p.flip, p.rotate_poses_deg, p.drop_joints)
            truth, inside = aug.geometry([truth, inside], self.flip_index, self.root_joints, self.rng)
            noisy, flags = self.errors.noised(truth, inside, self.root_joints, self.rng)
            parts.append((noisy, aug.drop(flags, self.rng), truth))
        order = torch.from_numpy(self.rng.permutation(sum(len(x[0]) for x in parts)))
        return tuple(torch.cat([x[i] for x in parts])[order] for i in range(3))

    def loss(self, pred: torch.Tensor, score: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Mean per-joint error (mm) of the refined root-relative 3D (+ the root depth term with root_depth)."""
        rel, root = self.model.refine(pred, score)
        gr = gt[:, list(self.root_joints)].mean(dim=1)
        loss = (rel - (gt - gr[:, None])).norm(dim=-1).mean()
        if self.params.bone_weight > 0:  # the bones of joints it filled in: plausible lengths
            a, b = self.bones
            bones = lambda x: (x[:, a] - x[:, b]).norm(dim=-1)  # noqa: E731
            valid = self.model.valid(pred, score)
            filled = (~(valid[:, a] & valid[:, b])).float()
            loss = loss + self.params.bone_weight * ((bones(rel) - bones(gt)).abs() * filled).mean()
        if self.params.model.root_depth:
            ratio = root[:, 2].clamp_min(1.0) / gr[:, 2].clamp_min(1.0)
            loss = loss + self.params.root_weight * 1000.0 * ratio.log().abs().mean()
        return loss

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One epoch; returns (mean loss, samples/s)."""
        self.model.train()
        pred, score, gt = self.epoch_samples()
        b, total, count, steps, t0 = self.cfg.batch_size, 0.0, 0, 0, time.perf_counter()
        bar = tqdm(range(0, len(pred) - b + 1, b), desc=f"epoch {epoch}", leave=False, mininterval=2.0)
        for i in bar:  # the last partial batch is dropped: no 1-sample batch for BatchNorm
            batch = [t[i:i + b].to(self.device) for t in (pred, score, gt)]
            loss = self.loss(*batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            total, count, steps = total + loss.item() * b, count + b, steps + 1
            bar.set_postfix(loss=f"{total / count:.1f}")
            if self.cfg.max_steps and steps >= self.cfg.max_steps:
                break
        return total / max(count, 1), count / max(time.perf_counter() - t0, 1e-9)

    @torch.no_grad()
    def validate(self, refined: bool = True) -> dict[str, float]:
        """Root-relative MPJPE, PA-MPJPE (mm) and 3D PCK@150 mm on the validation pairs (joints inside the
        frame), of the refiner or (``refined=False``) of the first stage alone."""
        self.model.eval()
        pred, gt, mask = self.val["pred"], self.val["gt"].numpy(), self.val["in_frame"].numpy()
        if refined:
            pred = torch.cat([self.model(pred[i:i + 4096].to(self.device), self.val["score"][i:i + 4096].to(self.device)).cpu()
                              for i in range(0, len(pred), 4096)])
        p = pred.numpy()
        rel = lambda x: x - self.layout.root_point(x)[:, None]  # noqa: E731
        return {"mpjpe_mm": M.mpjpe(p, gt, mask, self.layout), "pa_mpjpe_mm": M.pa_mpjpe(rel(p), rel(gt), mask),
                "pck3d": M.pck3d(p, gt, mask, 150.0, self.layout)}

    def provenance(self, epoch: int, row: dict) -> dict:
        return {"data": {"train": self.params.data, "val": self.params.val_data, "real_pairs": len(self.real["pred"]),
                         "true_poses": 0 if self.poses is None else len(self.poses["gt"]),
                         "val_pairs": len(self.val["pred"])},
                "epochs": epoch + 1, "metrics": row, "first_stage_val": self.baseline,
                "first_stage_errors": self.errors.summary(self.layout.names), "train_config": asdict(self.cfg)}

    def _save(self, epoch: int, row: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        value = row["val_mpjpe_mm"]
        improved = self.best is None or value < self.best
        if improved:
            self.best = value
        prov = self.provenance(epoch, row)
        save_refine3d(self.model, self.out / "last.safetensors", prov)
        save_state(self.out / "last_state", self.optimizer, self.scheduler, self.scaler, epoch, self.best)
        if improved:
            save_refine3d(self.model, self.out / "best.safetensors", prov)

    def resume(self) -> None:
        """Weights, optimiser, schedule and epoch from ``out/last.*``."""
        last = self.out / "last.safetensors"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: {last} does not exist")
        self.model.load_state_dict(load_refine3d(last).state_dict())
        self.model.to(self.device)
        epoch, self.best = load_state(self.out / "last_state", self.optimizer, self.scheduler, self.scaler)
        self.start_epoch = epoch + 1

    def fit(self, resume: bool = False) -> list[dict]:
        """Train from ``start_epoch`` to ``cfg.epochs``; returns this run's log rows."""
        if resume:
            self.resume()
        self.baseline = {k: round(v, 2) for k, v in self.validate(refined=False).items()}
        print(f"tools.train: 3D refiner, {len(self.real['pred'])} real pairs, "
              f"{0 if self.poses is None else len(self.poses['gt'])} true poses; first stage on validation: "
              f"{self.baseline}", file=sys.stderr, flush=True)
        writer = open_tensorboard(self.out, self.cfg.tensorboard)
        rows = []
        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            train_loss, rate = self.train_epoch(epoch)
            val = self.validate()
            if self.cfg.schedule == "plateau":
                self.scheduler.step(val["mpjpe_mm"])
            else:
                self.scheduler.step()
            row = {"epoch": epoch, "train_loss": train_loss, "val_mpjpe_mm": val["mpjpe_mm"],
                   "val_pa_mpjpe_mm": val["pa_mpjpe_mm"], "val_pck3d": val["pck3d"],
                   "lr": self.optimizer.param_groups[0]["lr"], "samples_per_s": rate, "seconds": time.perf_counter() - t0}
            rows.append(row)
            self._save(epoch, row)
            log_row(self.out, row, LOG_FIELDS, writer)
        if writer is not None:
            writer.close()
        return rows
