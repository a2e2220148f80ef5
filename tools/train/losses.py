"""Training losses with intermediate supervision (one term per stack / stage, summed).

* heatmaps (pose-facts.md): per stack, mean over pixels of (target - output)^2 x weight, weight =
  ``foreground_weight`` (82) where the target is > 0 and 1 elsewhere; averaged over the batch.
* SPM: weighted mean squared error on the root map (weight ``root_weight`` where the target is > 0.01 and 1
  elsewhere: without it the sparse root Gaussians are drowned by the background and the peaks stay far
  below the decoding threshold) + ``disp_weight`` x masked L1 on displacements + ``depth_weight`` x
  masked L1 on depths (masked means are over labelled pixels only, weighted by the masks; no labels -> 0) + for networks with
  joint heatmaps ``heatmap_weight`` x the same weighted MSE as the root map's on them.

Outputs larger or smaller than the targets (multi-scale stages) are resized to the target size first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _fit(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = pred.float()
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return pred


def heatmap_loss(outputs: list[dict], target: torch.Tensor, foreground_weight: float = 82.0) -> torch.Tensor:
    """Weighted MSE summed over stacks; outputs[i]["heatmaps"] and target [B,K,H,W]."""
    weight = torch.where(target > 0, foreground_weight, 1.0)
    total = target.new_zeros(())
    for out in outputs:
        err = (_fit(out["heatmaps"], target) - target) ** 2 * weight
        total = total + err.mean(dim=(1, 2, 3)).mean()
    return total


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over pixels where mask > 0 (0 when the mask is empty)."""
    return ((_fit(pred, target) - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def _weighted_mse(pred: torch.Tensor, target: torch.Tensor, foreground_weight: float,
                  weight_map: torch.Tensor | None = None) -> torch.Tensor:
    weight = torch.where(target > 0.01, foreground_weight, 1.0)
    if weight_map is not None:
        weight = weight * weight_map
    return ((_fit(pred, target) - target) ** 2 * weight).mean()


def spm_loss(outputs: list[dict], batch: dict, disp_weight: float = 1.0, depth_weight: float = 1.0,
             root_weight: float = 1.0, heatmap_weight: float = 1.0) -> torch.Tensor:
    """Weighted root L2 + masked L1 displacements (+ masked L1 depths, + weighted L2 joint heatmaps, when the
    outputs have them), summed over stages.

    batch: ``root`` [B,1,H,W], ``disp`` / ``disp_mask`` [B,2K,H,W], ``depth`` / ``depth_mask`` and
    ``heatmaps`` [B,K,H,W]; optional loss-weight maps ``root_weight_map`` [B,1,H,W] and ``heatmap_weight_map``
    [B,K,H,W] (labelled footage: 0 where the teacher could not say, see tools.data.footage) multiply the
    root-map and heatmap terms pixel by pixel. Masks may be weights in [0, 1] (a teacher's confidences).
    """
    total = batch["root"].new_zeros(())
    root_map, heat_map = batch.get("root_weight_map"), batch.get("heatmap_weight_map")
    for out in outputs:
        total = total + _weighted_mse(out["root"], batch["root"], root_weight, root_map)
        total = total + disp_weight * masked_l1(out["disp"], batch["disp"], batch["disp_mask"])
        if "depth" in out and "depth" in batch:
            total = total + depth_weight * masked_l1(out["depth"], batch["depth"], batch["depth_mask"])
        if "heatmaps" in out:
            if "heatmaps" not in batch:
                raise ValueError("the network predicts joint heatmaps but the batch has no heatmap targets")
            total = total + heatmap_weight * _weighted_mse(out["heatmaps"], batch["heatmaps"], root_weight, heat_map)
    return total
