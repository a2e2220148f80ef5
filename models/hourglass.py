"""Stacked Hourglass (Newell, Yang and Deng, ECCV 2016), in the style of bearpaw/pytorch-pose.

Blocks: pre-activation bottleneck residuals (BN-ReLU-conv1x1 to C/2, BN-ReLU-conv3x3, BN-ReLU-conv1x1 to C),
a recursive hourglass (residual at this scale + max-pool, inner hourglass, residual, nearest upsample), a
stem that brings the input to 1/4 resolution, and per-stack heads (intermediate supervision) whose features
and heatmaps are projected back into the next stack by 1x1 convolutions.

With width 256, one residual per level and depth 4 this is the published network: 2 stacks have about
6.7 M parameters and 8 stacks about 25.6 M (16 MPII joints).

Shapes: input ``[B, 3, H, W]`` (H, W multiples of 4 * 2**depth); every output ``[B, K, H/4, W/4]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig


class Bottleneck(nn.Module):
    """Pre-activation residual ``[B, cin, h, w] -> [B, cout, h, w]``; a 1x1 conv skip when cin != cout."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3, self.conv3 = nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (x if self.skip is None else self.skip(x))


def residuals(cin: int, cout: int, blocks: int = 1) -> nn.Sequential:
    """``blocks`` bottlenecks in a row, the first one changing ``cin`` to ``cout``."""
    return nn.Sequential(*[Bottleneck(cin if i == 0 else cout, cout) for i in range(blocks)])


class Hourglass(nn.Module):
    """Recursive hourglass of ``depth`` levels at ``width`` channels: ``[B, C, h, w] -> [B, C, h, w]``."""

    def __init__(self, width: int, depth: int, blocks: int = 1) -> None:
        super().__init__()
        self.up = residuals(width, width, blocks)
        self.down = residuals(width, width, blocks)
        self.inner = Hourglass(width, depth - 1, blocks) if depth > 1 else residuals(width, width, blocks)
        self.after = residuals(width, width, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.after(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.up(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


def make_stem(width: int, kind: str = "newell") -> nn.Sequential:
    """Input ``[B, 3, H, W]`` -> features ``[B, width, H/4, W/4]``.

    ``newell``: conv7x7/2 to width/4, residual to width/2, max-pool, residuals to width (the paper's).
    ``light``: conv3x3/2 to width/4, conv3x3/2 to width/2, one residual to width (about 1/4 of the cost,
    for CPU models with large inputs).
    """
    c4, c2 = max(width // 4, 8), max(width // 2, 8)
    if kind == "newell":
        return nn.Sequential(
            nn.Conv2d(3, c4, 7, stride=2, padding=3), nn.BatchNorm2d(c4), nn.ReLU(inplace=True),
            Bottleneck(c4, c2), nn.MaxPool2d(2), Bottleneck(c2, width), Bottleneck(width, width),
        )
    if kind == "light":
        return nn.Sequential(
            nn.Conv2d(3, c4, 3, stride=2, padding=1), nn.BatchNorm2d(c4), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c2, 3, stride=2, padding=1), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
            Bottleneck(c2, width),
        )
    raise ValueError(f"unknown stem {kind!r}; known: newell, light")


def head_features(width: int, blocks: int = 1) -> nn.Sequential:
    """After each hourglass: residuals, then conv1x1 + BN + ReLU (Newell's 'll' layer)."""
    return nn.Sequential(
        *residuals(width, width, blocks), nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    )


def check_input(x: torch.Tensor, config: ModelConfig) -> None:
    """ValueError unless ``x`` is ``[B, 3, H, W]`` with H and W multiples of the config's size multiple."""
    if torch.jit.is_tracing():
        return
    m = config.size_multiple
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % m or x.shape[3] % m:
        raise ValueError(f"{config.name}: input must be [B, 3, H, W] with H, W multiples of {m}, got {tuple(x.shape)}")


def grow_stacks(net: nn.Module, fresh: list[str], per_stack: tuple[str, ...], back: tuple[str, ...]) -> list[str]:
    """Start a deeper stacked network from a shallower trained one, after a partial load left ``fresh`` as built.

    ``per_stack`` names the ModuleLists with one module per stack (the hourglass first), ``back`` those
    projecting stack i's outputs into stack i+1's input. Each stack the checkpoint lacked becomes a copy of
    the last stack it had, and the projections into the copies start at zero, so the next stack's input is
    the stem's features again and every copy's outputs equal the loaded stack's: the grown network starts
    where the smaller one stopped, and the zeroed projections learn what to pass on. Returns the names
    still fresh; a no-op when no stack was loaded.
    """
    first = getattr(net, per_stack[0])
    fresh_set = set(fresh)
    loaded = [i for i in range(len(first)) if not any(n.startswith(f"{per_stack[0]}.{i}.") for n in fresh_set)]
    if not loaded or len(loaded) == len(first):
        return fresh
    last = max(loaded)
    if loaded != list(range(last + 1)):
        raise ValueError(f"{net.config.name}: loaded stacks {loaded} are not the first ones; cannot grow")
    grown = set()
    for i in range(last + 1, len(first)):
        for name in per_stack:
            getattr(net, name)[i].load_state_dict(getattr(net, name)[last].state_dict())
            grown.add(f"{name}.{i}.")
        for name in back:
            for param in getattr(net, name)[i - 1].parameters():
                nn.init.zeros_(param)
            grown.add(f"{name}.{i - 1}.")
    return sorted(n for n in fresh_set if not n.startswith(tuple(grown)))


class HourglassNet(nn.Module):
    """Stacked hourglass: ``forward(x) -> [{"heatmaps": [B, K, H/4, W/4]}] * stacks`` (one per stack).

    arch_args: ``width`` (256), ``stacks`` (2), ``depth`` (4), ``blocks`` (1 residual per level),
    ``stem`` ("newell").
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        a = {"width": 256, "stacks": 2, "depth": 4, "blocks": 1, "stem": "newell", **config.arch_args}
        unknown = sorted(set(a) - {"width", "stacks", "depth", "blocks", "stem"})
        if unknown:
            raise ValueError(f"{config.name}: unknown hourglass arch_args {unknown}")
        self.config = config
        w, k, n = int(a["width"]), config.num_joints, int(a["stacks"])
        self.stem = make_stem(w, a["stem"])
        self.hourglasses = nn.ModuleList(Hourglass(w, int(a["depth"]), int(a["blocks"])) for _ in range(n))
        self.features = nn.ModuleList(head_features(w, int(a["blocks"])) for _ in range(n))
        self.scores = nn.ModuleList(nn.Conv2d(w, k, 1) for _ in range(n))
        self.features_back = nn.ModuleList(nn.Conv2d(w, w, 1) for _ in range(n - 1))
        self.scores_back = nn.ModuleList(nn.Conv2d(k, w, 1) for _ in range(n - 1))

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Training form: one ``{"heatmaps": [B, K, H/4, W/4]}`` per stack, last stack last."""
        check_input(x, self.config)
        x = self.stem(x)
        outputs = []
        for i, hourglass in enumerate(self.hourglasses):
            y = self.features[i](hourglass(x))
            score = self.scores[i](y)
            outputs.append({"heatmaps": score})
            if i < len(self.features_back):
                x = x + self.features_back[i](y) + self.scores_back[i](score)
        return outputs

    def grow(self, fresh: list[str]) -> list[str]:
        """More stacks than the checkpoint had: see :func:`grow_stacks`."""
        return grow_stacks(self, fresh, ("hourglasses", "features", "scores"), ("features_back", "scores_back"))

    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Last stack's outputs: ``{"heatmaps": [B, K, H/4, W/4]}``."""
        return self.forward(x)[-1]
