"""Resumable training state without pickle: tensors in safetensors, everything else in JSON; the run's log.

``save_state(prefix, ...)`` writes ``prefix.safetensors`` (optimizer tensors, torch RNG) and ``prefix.json``
(epoch, best metric, optimizer param groups and scalar state, scheduler and AMP scaler state).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_state(prefix: str | Path, optimizer, scheduler, scaler, epoch: int, best: float | None) -> None:
    prefix = Path(prefix)
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"epoch": epoch, "best": best, "param_groups": opt["param_groups"], "scalars": scalars,
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
    tmp = prefix.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, prefix.with_suffix(".safetensors"))
    prefix.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def load_state(prefix: str | Path, optimizer, scheduler, scaler) -> tuple[int, float | None]:
    """Restore the state written by ``save_state``; returns (epoch, best)."""
    prefix = Path(prefix)
    try:
        meta = json.loads(prefix.with_suffix(".json").read_text())
        tensors = load_file(str(prefix.with_suffix(".safetensors")))
    except (OSError, ValueError) as err:
        raise ValueError(f"{prefix}: cannot read the training state ({err})") from None
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("state."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["epoch"]), meta["best"]


def open_tensorboard(out: Path, enabled: bool):
    """A TensorBoard writer under ``out/tensorboard``; None when off or TensorBoard is not installed."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def log_row(out: Path, row: dict, fields: tuple[str, ...], writer=None) -> None:
    """One epoch's ``row`` appended to ``out/log.csv`` (header first), printed, and its numbers (all ``fields``
    but the first, the epoch) added to TensorBoard when ``writer`` is one."""
    path = out / "log.csv"
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    if writer is not None:
        for key in fields[1:]:
            if row.get(key) is not None:
                writer.add_scalar(key, row[key], row["epoch"])
