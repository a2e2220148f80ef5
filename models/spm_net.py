"""SPM network: single-stage multi-person 2D/3D pose maps (Nie et al. 2019, Zhen et al. 2020) on hourglass blocks.

A stem to 1/4 resolution, then ``stages`` hourglasses (models/hourglass.py blocks); every stage emits, at
stride 4, the maps of the SPM codec (models/codecs):

* ``root``  ``[B, 1, H/4, W/4]``: person-centre confidence (linear output, trained with L2 towards a
  Gaussian in [0, 1]);
* ``disp``  ``[B, 2K, H/4, W/4]``: per-joint (dx, dy) displacements, normalised as the codec says;
* ``depth`` ``[B, K, H/4, W/4]``: root depth and relative depths, normalised as the codec says;
* ``heatmaps`` ``[B, K, H/4, W/4]`` (only when the codec's ``heatmap_sigma`` > 0): joint heatmaps, used by the
  decoder to place each regressed joint precisely.

Like the stacked hourglass, each stage's features and its maps are projected back (1x1 convolutions) into
the next stage: intermediate supervision at every stage.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ModelConfig
from models.hourglass import Hourglass, check_input, grow_stacks, head_features, make_stem

ARGS = ("width", "stages", "depth", "blocks", "stem")


def output_channels(config: ModelConfig) -> dict[str, int]:
    """The SPM network's maps and their channel counts, in output order (``infer``'s keys)."""
    k = config.num_joints
    channels = {"root": 1, "disp": 2 * k, "depth": k}
    if config.spm_codec().params.heatmap_sigma > 0:
        channels["heatmaps"] = k
    return channels


class SPMNet(nn.Module):
    """``forward(x [B, 3, H, W]) -> [{"root", "disp", "depth"}] * stages`` (shapes in the module docstring).

    arch_args: ``width`` (128), ``stages`` (2), ``depth`` (4 hourglass levels; inputs are multiples of
    4 * 2**depth), ``blocks`` (1 residual per level), ``stem`` ("newell" or "light").
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        a = {"width": 128, "stages": 2, "depth": 4, "blocks": 1, "stem": "newell", **config.arch_args}
        unknown = sorted(set(a) - set(ARGS))
        if unknown:
            raise ValueError(f"{config.name}: unknown spm arch_args {unknown}")
        self.config = config
        w, n, blocks = int(a["width"]), int(a["stages"]), int(a["blocks"])
        self.channels = output_channels(config)
        self.stem = make_stem(w, a["stem"])
        self.hourglasses = nn.ModuleList(Hourglass(w, int(a["depth"]), blocks) for _ in range(n))
        self.features = nn.ModuleList(head_features(w, blocks) for _ in range(n))
        self.heads = nn.ModuleList(
            nn.ModuleDict({name: nn.Conv2d(w, c, 1) for name, c in self.channels.items()}) for _ in range(n)
        )
        self.features_back = nn.ModuleList(nn.Conv2d(w, w, 1) for _ in range(n - 1))
        self.maps_back = nn.ModuleList(nn.Conv2d(sum(self.channels.values()), w, 1) for _ in range(n - 1))

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Training form: one dict of maps per stage, the last stage last."""
        check_input(x, self.config)
        x = self.stem(x)
        outputs = []
        for i, hourglass in enumerate(self.hourglasses):
            y = self.features[i](hourglass(x))
            maps = {name: head(y) for name, head in self.heads[i].items()}
            outputs.append(maps)
            if i < len(self.features_back):
                x = x + self.features_back[i](y) + self.maps_back[i](torch.cat(list(maps.values()), dim=1))
        return outputs

    def grow(self, fresh: list[str]) -> list[str]:
        """More stages than the checkpoint had: see :func:`models.hourglass.grow_stacks`."""
        return grow_stacks(self, fresh, ("hourglasses", "features", "heads"), ("features_back", "maps_back"))

    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Last stage's maps ``{"root", "disp", "depth"}`` (and ``"heatmaps"``)."""
        return self.forward(x)[-1]
