"""The training loop: data, optimiser, schedule, AMP, clipping, validation, checkpoints, logs, DDP."""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.checkpoint import load_checkpoint, load_matching, read_manifest, save_checkpoint
from models.factory import build_model, model_config
from models.layouts import get_layout
from tools.data.augment import AugmentParams
from tools.data.dataset import ShardDataset, SynthDataset, Targets
from tools.data.footage import Footage, FootageTargets, FootageValidation, MixedDataset
from tools.metrics import pckh
from tools.train.config import TrainConfig
from tools.train.losses import heatmap_loss, spm_loss
from tools.train.state import load_state, log_row, open_tensorboard, save_state

LOSS_WEIGHTS = ("foreground_weight", "root_weight", "disp_weight", "depth_weight", "heatmap_weight")
LOG_FIELDS = ("epoch", "train_loss", "val_loss", "val_pckh", "lr", "samples_per_s", "seconds")


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


class Trainer:
    """Trains ``cfg.model`` as configured; ``fit()`` runs the epochs and returns the log rows."""

    def __init__(self, cfg: TrainConfig, device: str | None = None) -> None:
        self.cfg = cfg
        self.rank, self.world, local = _distributed()
        if device is None:
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        for seed_fn in (torch.manual_seed, np.random.seed, random.seed):
            seed_fn(cfg.seed + self.rank)
        self.model_cfg = model_config(cfg.model, **cfg.model_overrides)
        self.layout = get_layout(self.model_cfg.layout)
        self.model = build_model(self.model_cfg)
        if cfg.init:
            fresh = load_matching(self.model, cfg.init, widen=cfg.widen)
            if hasattr(self.model, "grow"):  # a stacked network grown from fewer stacks
                fresh = self.model.grow(fresh)
            if self.rank == 0:
                print(f"tools.train: initialised from {cfg.init}; fresh: {', '.join(fresh) or 'none'}", file=sys.stderr)
        self.model = self.model.to(self.device)
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self._optimizer()
        self.use_pckh = self.model_cfg.arch == "hourglass" and self.layout.head_segment is not None
        self.scheduler = self._scheduler()
        self.amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.mean = torch.tensor(self.model_cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.model_cfg.std, device=self.device).view(1, 3, 1, 1)
        self.out = Path(cfg.out)
        self.footage = self._footage() if cfg.source == "footage" else []
        self.train_targets, self.val_targets = self._targets()
        self.deadline: float | None = None
        self.best: float | None = None
        self.start_epoch = 0

    def _footage(self) -> list[Footage]:
        """The configured labelled videos (decoded once into ``out/frames-I.npy``)."""
        return [Footage(item["video"], item["labels"], self.model_cfg.layout, self.out / f"frames-{i}.npy",
                        int(item.get("start", 0)), item.get("stop"), self.cfg.val_fraction, self.cfg.val_gap)
                for i, item in enumerate(self.cfg.footage)]

    def _targets(self):
        """(training, validation) target makers for the configured data."""
        c, size = self.cfg, self.model_cfg.input_size
        if c.source != "footage":
            return (Targets(self.model_cfg, AugmentParams(input_size=size, train=True, **c.augment)),
                    Targets(self.model_cfg, AugmentParams(input_size=size, train=False)))
        fw, fh = self.footage[0].size
        side = c.footage_side or max(fw / size[0], fh / size[1])  # as the engine letterboxes the frame
        train = AugmentParams(input_size=tuple(c.train_size or size), train=True, **c.augment)
        return (FootageTargets(self.model_cfg, train, side, c.min_conf),
                FootageTargets(self.model_cfg, AugmentParams(input_size=size, train=False), side, c.min_conf))

    def _optimizer(self) -> torch.optim.Optimizer:
        c, params = self.cfg, self.model.parameters()
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.RMSprop(params, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum)

    def _scheduler(self):
        c = self.cfg
        if c.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=c.step_size, gamma=c.factor)
        mode = "max" if self.use_pckh else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode=mode, factor=c.factor,
                                                          patience=c.patience)

    def _loader(self, train: bool, epoch: int) -> DataLoader:
        c = self.cfg
        targets = self.train_targets if train else self.val_targets
        if c.source == "footage":
            ds = (MixedDataset(targets, self.footage, c.train_samples, c.footage_ratio, c.seed * 1000 + self.rank + 1,
                               c.synth_size, c.persons) if train else FootageValidation(targets, self.footage))
        elif c.source == "shards":
            files = c.shards if train else c.val_shards
            files = sorted(str(p) for pattern in files for p in Path().glob(pattern)) or list(files)
            ds = ShardDataset(targets, files[self.rank::self.world] if train else files, c.shuffle_buffer, c.seed)
        else:
            val_seed = c.seed if c.val_seed is None else c.val_seed
            seed = (c.seed * 1000 + self.rank + 1) if train else (val_seed * 1000 + 999)
            ds = SynthDataset(targets, c.train_samples if train else c.val_samples, seed, c.synth_size, c.persons)
        ds.set_epoch(epoch if train else 0)
        return DataLoader(ds, batch_size=c.batch_size, num_workers=c.workers, pin_memory=self.device.type == "cuda",
                          drop_last=train)  # no 1-sample batch for BatchNorm

    def _forward(self, batch: dict) -> tuple[list[dict], torch.Tensor]:
        bgr = batch["image"].to(self.device, non_blocking=True)  # uint8 [B,H,W,3] BGR
        x = (bgr.permute(0, 3, 1, 2).flip(1).float().contiguous() - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            outputs = self.net(x)
        if self.model_cfg.arch == "hourglass":
            loss = heatmap_loss(outputs, batch["heatmaps"].to(self.device), self.cfg.foreground_weight)
        else:
            maps = {k: v.to(self.device) for k, v in batch.items() if k != "image"}
            loss = spm_loss(outputs, maps, self.cfg.disp_weight, self.cfg.depth_weight, self.cfg.root_weight,
                            self.cfg.heatmap_weight)
        return outputs, loss

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One epoch; returns (mean loss, samples/s). Under DDP, ranks with fewer batches join the others
        (``torch.distributed.algorithms.join.Join``), so uneven data never hangs."""
        self.net.train()
        bar = tqdm(self._loader(True, epoch), desc=f"epoch {epoch}", disable=self.rank != 0, leave=False)
        if self.world > 1:
            from torch.distributed.algorithms.join import Join

            with Join([self.net]):
                return self._steps(bar)
        return self._steps(bar)

    def _steps(self, bar) -> tuple[float, float]:
        total, count, steps, t0 = 0.0, 0, 0, time.perf_counter()
        for batch in bar:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    break
                for group in self.optimizer.param_groups:  # cosine over the time budget
                    group["lr"] = self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (1.0 - left / self.budget_s)))
            _, loss = self._forward(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = len(batch["image"])
            total, count, steps = total + loss.item() * n, count + n, steps + 1
            bar.set_postfix(loss=f"{total / count:.4f}", samples_s=f"{count / (time.perf_counter() - t0):.1f}")
            if self.cfg.max_steps and steps >= self.cfg.max_steps:
                break
        return total / max(count, 1), count / max(time.perf_counter() - t0, 1e-9)

    @torch.no_grad()
    def validate(self) -> tuple[float, float | None]:
        """(mean validation loss, PCKh@0.5 or None) on the fixed validation set."""
        self.net.eval()
        total, count, preds, gts, vis, heads = 0.0, 0, [], [], [], []
        codec = self.model_cfg.heatmap_codec() if self.use_pckh else None
        for batch in self._loader(False, 0):
            outputs, loss = self._forward(batch)
            n = len(batch["image"])
            total, count = total + loss.item() * n, count + n
            if codec is not None:
                xy, _ = codec.decode(outputs[-1]["heatmaps"].float(), method="dark")
                preds.append(xy.cpu().numpy())
                gts.append(batch["keypoints"].numpy())
                vis.append(batch["vis"].numpy() > 0)
                heads.append(batch["head_size"].numpy())
        metric = None
        if codec is not None and preds:
            metric = pckh(np.concatenate(preds), np.concatenate(gts), np.concatenate(vis), np.concatenate(heads))[1]
        return total / max(count, 1), metric

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.use_pckh else value < self.best

    def _save(self, epoch: int, row: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        provenance = {"data": self.cfg.source, "epochs": epoch + 1, "metrics": row, "train_config": asdict(self.cfg)}
        value = row["val_pckh"] if self.use_pckh else row["val_loss"]
        improved = value is not None and self._improved(value)
        if improved:
            self.best = value
        save_checkpoint(self.model, self.out / "last.safetensors", provenance)
        save_state(self.out / "last_state", self.optimizer, self.scheduler, self.scaler, epoch, self.best)
        if improved:
            save_checkpoint(self.model, self.out / "best.safetensors", provenance)

    def resume(self) -> None:
        """Load weights, optimiser, schedule and epoch from ``out/last.*``."""
        last = self.out / "last.safetensors"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: {last} does not exist")
        self.model.load_state_dict(load_checkpoint(last).state_dict())
        self.model.to(self.device)
        epoch, self.best = load_state(self.out / "last_state", self.optimizer, self.scheduler, self.scaler)
        self.start_epoch = epoch + 1
        before = read_manifest(last).get("provenance", {}).get("train_config", {})
        changed = [f for f in LOSS_WEIGHTS if f in before and before[f] != getattr(self.cfg, f)]
        if changed and not self.use_pckh:  # the validation loss changes scale: its old best means nothing now
            self.best = None
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.best, self.scheduler.num_bad_epochs = self.scheduler.mode_worse, 0
            if self.rank == 0:
                print(f"tools.train: --resume with changed {', '.join(changed)}: the best validation loss and the "
                      "plateau schedule start afresh", file=sys.stderr)

    def fit(self, resume: bool = False) -> list[dict]:
        """Train from ``start_epoch`` to ``cfg.epochs``; returns this run's log rows."""
        if resume:
            self.resume()
        writer = open_tensorboard(self.out, self.rank == 0 and self.cfg.tensorboard)
        rows = []
        if self.cfg.budget_min > 0:
            self.budget_s = self.cfg.budget_min * 60.0
            self.deadline = time.monotonic() + self.budget_s
        for epoch in range(self.start_epoch, self.cfg.epochs):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                break
            t0 = time.perf_counter()
            train_loss, rate = self.train_epoch(epoch)
            val_loss, metric = self.validate()
            if self.deadline is not None:
                pass  # the learning rate follows the time budget (_steps)
            elif self.cfg.schedule == "plateau":
                self.scheduler.step(metric if self.use_pckh and metric is not None else val_loss)
            else:
                self.scheduler.step()
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_pckh": metric,
                   "lr": self.optimizer.param_groups[0]["lr"], "samples_per_s": rate,
                   "seconds": time.perf_counter() - t0}
            rows.append(row)
            if self.rank == 0:
                self._save(epoch, row)
                log_row(self.out, row, LOG_FIELDS, writer)
        if writer is not None:
            writer.close()
        return rows
