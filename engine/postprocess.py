"""Device post-processing with static shapes, and one device-to-host copy per batch.

Raw network outputs -> the model's codec decode (hourglass: ``HeatmapCodec.decode(method="dark")``, one
person per input; SPM: ``SPMCodec.decode``: root NMS, threshold, top-k to ``max_persons``, displacement
reads, hierarchy, depths, back-projection; then, when the model has a 3D refiner (``models.refine3d``), its
3D joints refined, every padded row of the batch in one pass) -> points mapped from input pixels to frame pixels by each frame's
inverse transform, on the device -> everything packed into one float32 tensor [B, F] -> one ``.cpu()`` ->
``Poses`` per frame (SPM's padded persons, person_score == 0, dropped on the host; an hourglass always
reports its one person, joint scores clamped to [0, 1], person_score their mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.results import Poses
from models.layouts import get_layout


def frame_intrinsics(frame_size: tuple[int, int], intrinsics: Sequence[float] | None) -> tuple[float, ...]:
    """(fx, fy, cx, cy) in frame pixels; unknown -> f = frame width, c = frame centre (SMAP's default)."""
    if intrinsics is None:
        w, h = frame_size
        return float(w), float(w), (w - 1) / 2.0, (h - 1) / 2.0
    values = tuple(float(v) for v in intrinsics)
    if len(values) != 4 or values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"intrinsics must be (fx, fy, cx, cy) with fx, fy > 0, got {intrinsics!r}")
    return values


def input_intrinsics(matrix: np.ndarray, k: Sequence[float]) -> tuple[float, float, float, float]:
    """Frame-pixel intrinsics (fx, fy, cx, cy) seen through a scale+shift 2x3 ``matrix`` (frame -> input)."""
    m = np.asarray(matrix, np.float64)
    if abs(m[0, 1]) > 1e-9 or abs(m[1, 0]) > 1e-9:
        raise ValueError("3D back-projection needs an axis-aligned transform (letterbox), not a rotated crop")
    fx, fy, cx, cy = k
    return fx * m[0, 0], fy * m[1, 1], m[0, 0] * cx + m[0, 2], m[1, 1] * cy + m[1, 2]


@dataclass
class Decoded:
    """Decoded batch on the device, input pixels: xy [B,P,K,2], score [B,P,K], person_score [B,P], xyz or None."""

    xy: torch.Tensor
    score: torch.Tensor
    person_score: torch.Tensor
    xyz: torch.Tensor | None = None


def _unmirrorable(codec, flip: np.ndarray) -> set[str]:
    """SPM maps whose parent-relative values do not mirror into each other (see ``merge_flipped``)."""
    def symmetric(parents) -> bool:
        return all(parents[flip[j]] == flip[parents[j]] for j in range(len(flip)))

    out = set() if symmetric(codec.disp_parent) else {"disp"}
    if not (symmetric(codec.depth_parent) and flip[codec.anchor] == codec.anchor):
        out.add("depth")
    return out


class PostProcessor:
    """Decodes raw outputs of one model (its ``ModelConfig``) into ``Poses`` in frame pixels."""

    def __init__(self, config, refine3d=None) -> None:
        self.config = config
        self.refine3d = refine3d  # models.refine3d.Refine3D run on the decoded 3D of every row, or None
        self.layout = config.layout
        self.num_joints = config.num_joints
        self.codec = config.heatmap_codec() if config.arch == "hourglass" else config.spm_codec()
        self.single = config.arch == "hourglass"  # one person per input, always reported
        self.has_3d = config.arch == "spm"  # SPM networks have depth maps (meaningful once trained with 3D labels)
        self.flip_index = get_layout(self.layout).flip_index  # the flip test's left/right swap
        self._unmirrorable = set() if self.single else _unmirrorable(self.codec, self.flip_index)

    def merge_flipped(self, outputs: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        """Flip test: the mean of ``outputs`` and the outputs of the mirrored inputs, mirrored back.

        Mirroring back flips each map horizontally and swaps left and right joints (``Layout.flip_index``);
        SPM x displacements change sign (a mirrored left arm is a right arm pointing the other way), depths
        and root maps do not. Parent-relative displacements and depths mirror so only where the hierarchy is
        mirror-symmetric (a joint's mirror has its parent's mirror as parent; for depths, a central anchor
        too: panoptic19 and mpii16, not coco17, whose anchor is the left hip): otherwise that map is the
        plain pass's alone.
        """
        index = torch.as_tensor(self.flip_index, device=next(iter(outputs.values())).device)
        merged = {}
        for name, value in outputs.items():
            if name in self._unmirrorable:
                merged[name] = value.float()
                continue
            back = mirrored[name].flip(-1)
            if name == "disp":
                b, _, h, w = back.shape
                back = back.reshape(b, -1, 2, h, w)[:, index]
                back = torch.stack((-back[:, :, 0], back[:, :, 1]), 2).reshape(b, -1, h, w)
            elif name in ("heatmaps", "depth"):
                back = back[:, index]
            elif name != "root":
                raise ValueError(f"flip test: no mirror rule for output {name!r}")
            merged[name] = (value.float() + back.float()) * 0.5
        return merged

    def decode(self, outputs: dict[str, torch.Tensor], intrinsics: torch.Tensor | None = None) -> Decoded:
        """Codec decode of raw outputs (float32), in input pixels; intrinsics [B,4] in input pixels for 3D."""
        if self.config.arch == "hourglass":
            if "heatmaps" not in outputs:
                raise ValueError(f"hourglass outputs need 'heatmaps', got {sorted(outputs)}")
            xy, score = self.codec.decode(outputs["heatmaps"].float(), method="dark")
            score = score.clamp(0.0, 1.0)
            return Decoded(xy[:, None], score[:, None], score.mean(-1, keepdim=True))
        maps = {k: v.float() for k, v in outputs.items() if k in ("root", "disp", "depth", "heatmaps")}
        if not {"root", "disp"} <= set(maps):
            raise ValueError(f"SPM outputs need 'root' and 'disp', got {sorted(outputs)}")
        if not self.has_3d:
            maps.pop("depth", None)
        d = self.codec.decode(maps, intrinsics if "depth" in maps else None)
        xyz = d.xyz if "depth" in maps else None
        if xyz is not None and self.refine3d is not None:
            xyz = self.refine(xyz, d.score, d.person_score)
        return Decoded(d.xy, d.score, d.person_score, xyz)

    def refine(self, xyz: torch.Tensor, score: torch.Tensor, person_score: torch.Tensor) -> torch.Tensor:
        """The 3D refiner on every person of the batch at once, on the device: xyz [B,P,K,3], score [B,P,K].

        On a GPU it runs on all B x P rows (padded ones pass through: static shapes, no sync); on the CPU, where
        its matmuls cost by the row, on the rows that hold a person (person_score > 0) only."""
        if xyz.device.type != "cpu":
            return self.refine3d(xyz, score)
        k = xyz.shape[2]
        rows = (person_score > 0).flatten()
        if not bool(rows.any()):
            return xyz
        out = xyz.reshape(-1, k, 3).clone()
        out[rows] = self.refine3d(out[rows], score.reshape(-1, k)[rows])
        return out.reshape(xyz.shape)

    def to_frames(self, decoded: Decoded, inverse: torch.Tensor) -> Decoded:
        """Map xy [B,P,K,2] from input to frame pixels by ``inverse`` [B,2,3] (input -> frame), on the device."""
        inv = inverse.to(decoded.xy.device, decoded.xy.dtype)
        xy = torch.einsum("bij,bpkj->bpki", inv[:, :, :2], decoded.xy) + inv[:, None, None, :, 2]
        return Decoded(xy, decoded.score, decoded.person_score, decoded.xyz)

    def pack(self, d: Decoded) -> torch.Tensor:
        """One float32 tensor [B, F] holding xy, score, person_score (and xyz) of every row."""
        parts = [d.xy.flatten(1), d.score.flatten(1), d.person_score.flatten(1)]
        if d.xyz is not None:
            parts.append(d.xyz.flatten(1))
        return torch.cat([p.float() for p in parts], dim=1)

    def unpack(self, host: np.ndarray, persons: int, with_3d: bool) -> list[Poses]:
        """``Poses`` per row of the packed host array [B, F]; SPM rows with person_score <= 0 dropped."""
        k, b = self.num_joints, host.shape[0]
        sizes = [persons * k * 2, persons * k, persons] + ([persons * k * 3] if with_3d else [])
        pieces = np.split(host, np.cumsum(sizes)[:-1], axis=1)
        xy = pieces[0].reshape(b, persons, k, 2)
        score = pieces[1].reshape(b, persons, k)
        pscore = pieces[2]
        xyz = pieces[3].reshape(b, persons, k, 3) if with_3d else None
        out = []
        for i in range(b):
            keep = np.ones(persons, bool) if self.single else pscore[i] > 0
            out.append(Poses(self.layout, xy[i, keep], score[i, keep], pscore[i, keep],
                             np.full(int(keep.sum()), -1, np.int64), None if xyz is None else xyz[i, keep]))
        return out

    def __call__(self, outputs: dict[str, torch.Tensor], inverse: torch.Tensor,
                 intrinsics: torch.Tensor | None = None) -> list[Poses]:
        """Raw outputs + inverse transforms [B,2,3] (+ input-pixel intrinsics [B,4]) -> ``Poses`` per frame."""
        d = self.to_frames(self.decode(outputs, intrinsics), inverse)
        host = self.pack(d).cpu().numpy()  # the one device -> host copy of the batch
        return self.unpack(host, d.xy.shape[1], d.xyz is not None)
