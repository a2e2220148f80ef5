"""Numpy <-> torch plumbing shared by the codecs: one torch implementation serves both array types."""

from __future__ import annotations

import numpy as np
import torch


def to_torch(name: str, value, dtype=torch.float32, device=None) -> torch.Tensor:
    """``value`` (numpy, torch or nested sequence) as a torch tensor of ``dtype``; clear error otherwise."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=dtype, device=device if device is not None else value.device)
    try:
        array = np.asarray(value, dtype=np.float64 if dtype.is_floating_point else np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}: {err}") from None
    return torch.from_numpy(array).to(dtype=dtype, device=device)


def check_shape(name: str, tensor: torch.Tensor, shape: tuple) -> None:
    """Raise ValueError unless ``tensor.shape`` matches ``shape`` (None matches any size)."""
    ok = tensor.dim() == len(shape) and all(s is None or s == t for s, t in zip(shape, tensor.shape))
    if not ok:
        want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(tensor.shape)}")


def like_input(reference, tensor: torch.Tensor):
    """``tensor`` as numpy float32 if ``reference`` is not a torch tensor, else unchanged."""
    if isinstance(reference, torch.Tensor):
        return tensor
    return tensor.detach().cpu().numpy()
