"""SPM / SMAP decoding on torch with static shapes (ONNX-exportable, batched, CPU/CUDA).

Steps: 3x3 max-pool NMS + threshold on the root map, top-k with k = ``max_persons``, displacement reads at
each root (averaged over a ``disp_window`` square), chaining along the layout's hierarchy, with joint heatmaps
snapping each joint to its heatmap's maximum near the regressed point (argmax + a log-parabola sub-pixel step),
depth reads and chaining from the anchor, back-projection with the intrinsics. Rows past ``count`` are zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class SPMDecoded(NamedTuple):
    """Decoded persons, padded to P = max_persons.

    Attributes:
        xy: [B,P,K,2] input pixels.
        score: [B,P,K] per-joint score: the joint heatmap's maximum near the joint when the network has
            heatmaps, else the person's root score.
        person_score: [B,P] in [0, 1], 0 for padded rows: the root-map peak (clamped to 1), times the mean
            joint score when the network has heatmaps.
        count: [B] int64 number of valid rows (they come first, by decreasing person_score).
        xyz: [B,P,K,3] camera coordinates in mm, or None without a depth output.
    """

    xy: torch.Tensor
    score: torch.Tensor
    person_score: torch.Tensor
    count: torch.Tensor
    xyz: torch.Tensor | None


def _check_outputs(codec, outputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    (w, h), k = codec.params.map_size, codec.layout.num_joints
    shapes = {"root": 1, "disp": 2 * k, "depth": k, "heatmaps": k}
    for name, channels in shapes.items():
        value = outputs.get(name)
        if value is None and name in ("depth", "heatmaps"):
            continue
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or tuple(value.shape[1:]) != (channels, h, w):
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"outputs[{name!r}] must be a torch tensor [B,{channels},{h},{w}], got {got}")
    return outputs["root"], outputs["disp"], outputs.get("depth")


def _read(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reads of maps [B,K,H,W] at integer (x, y) [B,P,K,N], each joint k from its own map (clamped): [B,P,K,N]."""
    b, k, h, w = maps.shape
    p, n = x.shape[1], x.shape[3]
    idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).permute(0, 2, 1, 3).reshape(b, k, p * n)
    return torch.gather(maps.flatten(2), 2, idx).reshape(b, k, p, n).permute(0, 2, 1, 3)


def _offsets(window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) offsets [window * window] of a ``window`` square centred on 0, row by row."""
    r = window // 2
    steps = torch.arange(-r, r + 1, device=device)
    return steps.repeat(window), steps.repeat_interleave(window)


def refine(xy: torch.Tensor, heatmaps: torch.Tensor, window: int, threshold: float):
    """Snap joints xy [B,P,K,2] (map px) to their heatmap's maximum in a ``window`` square around them.

    The maximum moves to the vertex of the parabola through the log of it and its two neighbours on each axis:
    exact for a Gaussian peak, as the targets are (DARK's log-domain step, without its blur; in place of a
    quarter-pixel step towards the higher neighbour, it raised OKS AP on each validation clip). Joints whose
    maximum is below ``threshold`` (not seen by the heatmaps) keep their regressed position. Two gathers in all.
    Returns (xy [B,P,K,2], score [B,P,K] = the maximum, clamped to [0, 1]).
    """
    h, w = heatmaps.shape[2:]
    ox, oy = _offsets(window, xy.device)
    cx = xy[..., 0].round().clamp(0, w - 1).long()
    cy = xy[..., 1].round().clamp(0, h - 1).long()
    qx = (cx[..., None] + ox).clamp(0, w - 1)  # [B,P,K,W*W]; off-map positions repeat an edge read
    qy = (cy[..., None] + oy).clamp(0, h - 1)
    best, arg = _read(heatmaps, qx, qy).max(dim=-1)
    bx = qx.gather(-1, arg[..., None])
    by = qy.gather(-1, arg[..., None])
    nx = torch.cat([bx + 1, bx - 1, bx, bx], dim=-1)
    ny = torch.cat([by, by, by + 1, by - 1], dim=-1)
    n = _read(heatmaps, nx, ny).clamp_min(1e-6).log()  # right, left, below, above
    c = best.clamp_min(1e-6).log()
    dx, dy = _vertex(n[..., 1], c, n[..., 0]), _vertex(n[..., 3], c, n[..., 2])
    snapped = torch.stack([bx[..., 0].to(xy.dtype) + dx, by[..., 0].to(xy.dtype) + dy], dim=-1)
    keep = (best >= threshold)[..., None]
    return torch.where(keep, snapped, xy), best.clamp(0.0, 1.0)


def _vertex(before: torch.Tensor, at: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, before), (0, at), (1, after); 0 where flat."""
    curve = before + after - 2.0 * at
    step = 0.5 * (before - after) / torch.where(curve < -1e-6, curve, torch.ones_like(curve))
    return torch.where(curve < -1e-6, step, torch.zeros_like(step)).clamp(-0.5, 0.5)


def find_roots(root: torch.Tensor, max_persons: int, threshold: float):
    """Peaks of root maps [B,1,H,W]: (score [B,P] zero past the peaks, x [B,P], y [B,P] int64)."""
    w = root.shape[3]
    peaks = torch.where((root == F.max_pool2d(root, 3, stride=1, padding=1)) & (root >= threshold),
                        root, torch.zeros_like(root))
    score, idx = peaks.flatten(1).topk(max_persons, dim=1)
    return score, idx % w, torch.div(idx, w, rounding_mode="floor")


def _window_mean(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, window: int, base: torch.Tensor | None,
                 scale: float | None = None):
    """Mean over a window of reads of maps [B,C,H,W] at (x, y) [B,P]: [B,P,C].

    Each read is multiplied by ``scale`` (when given: the same as scaling the maps, without touching the rest of
    them). With ``base`` [C//2] (1 where a channel pair is relative to the read pixel), the pixel (x, y) is then
    added to those channel pairs before averaging, so absolute positions are averaged. One gather for the
    whole window.
    """
    b, c, h, w = maps.shape
    p = x.shape[1]
    ox, oy = _offsets(window, maps.device)
    qx = (x[..., None] + ox).clamp(0, w - 1)  # [B,P,N], N = window * window
    qy = (y[..., None] + oy).clamp(0, h - 1)
    n = qx.shape[-1]
    index = (qy * w + qx).reshape(b, 1, p * n).expand(-1, c, -1)
    read = torch.gather(maps.flatten(2), 2, index).reshape(b, c, p, n).permute(0, 2, 1, 3)  # [B,P,C,N]
    if scale is not None:
        read = read * scale
    if base is not None:
        q = torch.stack([qx, qy], dim=2).to(maps.dtype)  # [B,P,2,N]
        read = read + (base[:, None, None] * q[:, :, None]).reshape(b, p, c, n)
    return read.mean(dim=-1)


def _chain(values: torch.Tensor, parents: tuple[int, ...], levels: tuple[int, ...], skip: tuple[bool, ...]):
    """Add each joint's parent value, parents first: values [B,P,K,D] -> [B,P,K,D] (joints in ``skip`` kept)."""
    parent_index = torch.tensor(parents, device=values.device)
    for level in sorted(set(levels)):
        todo = [lv == level and not s for lv, s in zip(levels, skip)]
        if not any(todo):
            continue
        mask = torch.tensor(todo, device=values.device)[:, None]
        values = torch.where(mask, values[:, :, parent_index] + values, values)
    return values


def _intrinsics(codec, intrinsics: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    b = like.shape[0]
    if intrinsics is None:
        return torch.tensor(codec.default_intrinsics(), dtype=like.dtype, device=like.device).expand(b, 4)
    if not isinstance(intrinsics, torch.Tensor) or intrinsics.dim() != 2 or intrinsics.shape[1] != 4:
        got = list(intrinsics.shape) if isinstance(intrinsics, torch.Tensor) else type(intrinsics).__name__
        raise ValueError(f"intrinsics must be a torch tensor [B,4] (fx, fy, cx, cy), got {got}")
    return intrinsics.to(like.dtype)


def decode_spm(codec, outputs: dict, intrinsics: torch.Tensor | None = None) -> SPMDecoded:
    """Decode SPM outputs.

    Args:
        codec: the SPMCodec that made the targets.
        outputs: {"root" [B,1,H,W], "disp" [B,2K,H,W], optional "depth" and "heatmaps" [B,K,H,W]}.
        intrinsics: [B,4] (fx, fy, cx, cy) in input pixels, or None for the codec's defaults.
    Returns:
        SPMDecoded with static shapes (P = max_persons).
    """
    p, lay = codec.params, codec.layout
    root, disp, depth = _check_outputs(codec, outputs)
    b, k = root.shape[0], lay.num_joints
    pscore, x, y = find_roots(root, p.max_persons, p.root_threshold)
    valid = (pscore > 0).to(root.dtype)  # [B,P]
    from_root = torch.tensor(codec.from_root, dtype=disp.dtype, device=disp.device)
    est = _window_mean(disp, x, y, p.disp_window, from_root, p.z).reshape(b, -1, k, 2)  # map px
    xy = _chain(est, codec.disp_parent, lay.levels, codec.from_root)
    person_score = pscore.clamp(max=1.0) * valid  # a peak of the network's map may overshoot 1 a little
    heatmaps = outputs.get("heatmaps")
    if heatmaps is None:
        score = person_score[:, :, None].expand(-1, -1, k)
    else:
        xy, score = refine(xy, heatmaps, p.refine_window, p.refine_threshold)
        score = score * valid[:, :, None]
        # a person's confidence: its root peak times the mean of its joints' heatmap peaks (as DEKR scores a
        # pose), so a root with no body behind it ranks low; kept above 0 for the rows that hold a person
        person_score = (person_score * score.mean(dim=-1)).clamp(min=1e-6) * valid
    if p.person_threshold > 0:  # rows stay ordered: find_roots' and the re-ordering below are by score
        valid = valid * (person_score >= p.person_threshold).to(valid.dtype)
        person_score, score = person_score * valid, score * valid[:, :, None]
    xy = ((xy + 0.5) * p.stride - 0.5) * valid[:, :, None, None]
    xyz = None
    if depth is not None:
        cam = _intrinsics(codec, intrinsics, depth)
        fx, fy, cx, cy = (cam[:, i, None, None] for i in range(4))
        rel = _window_mean(depth, x, y, p.disp_window, None)  # [B,P,K]
        anchor = torch.tensor([j == codec.anchor for j in range(k)], device=depth.device)
        zs = torch.where(anchor, rel * fx, rel * p.depth_scale)[..., None]
        skip = tuple(j == codec.anchor for j in range(k))
        zs = _chain(zs, codec.depth_parent, _depth_levels(codec), skip)[..., 0]
        xyz = torch.stack([(xy[..., 0] - cx) * zs / fx, (xy[..., 1] - cy) * zs / fy, zs], dim=-1)
        xyz = xyz * valid[:, :, None, None]
    if heatmaps is not None:  # rows by decreasing person score (padded rows, at 0, stay last)
        order = _descending(person_score)
        xy, score, person_score = _rows(xy, order), _rows(score, order), person_score.gather(1, order)
        xyz = None if xyz is None else _rows(xyz, order)
    return SPMDecoded(xy=xy, score=score, person_score=person_score, count=(valid > 0).sum(dim=1), xyz=xyz)


def _descending(score: torch.Tensor) -> torch.Tensor:
    """Row order [B,P] by decreasing score [B,P], ties in their given order: the same in PyTorch and ONNX
    (the exporter has no stable sort, and TopK breaks ties its own way), so it ranks by comparison."""
    i = torch.arange(score.shape[1], device=score.device)
    ahead = (score[:, None, :] > score[:, :, None]) | ((score[:, None, :] == score[:, :, None]) & (i < i[:, None]))
    rank = ahead.sum(dim=-1)  # [B,P]: how many rows go before each; all distinct
    return torch.zeros_like(rank).scatter(1, rank, i.expand_as(rank).contiguous())


def _rows(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """values [B,P,...] with its rows taken in ``order`` [B,P]."""
    index = order.reshape(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, index)


def _depth_levels(codec) -> tuple[int, ...]:
    """Depth-chain levels: the anchor first (1), then the layout's levels (root-level joints hang on the anchor)."""
    return tuple(1 if j == codec.anchor else lv for j, lv in enumerate(codec.layout.levels))
