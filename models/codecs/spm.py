"""SPM / SMAP codec: root map + root-anchored displacements (+ depths) for single-stage multi-person pose.

Representation (output maps of size ``(w, h) = input_size / stride``; Z = ``disp_norm`` output pixels, by default
sqrt(w^2 + h^2) the map diagonal; a model trained on crops and run on whole frames of another size fixes Z to the
training size's diagonal so that its displacements keep their scale):

* ``root`` [1,H,W]: a Gaussian (``root_sigma`` output pixels, peak 1) at each person's *root point* (the mean
  of the layout's ``root_joints``), merged by element-wise max.
* ``disp`` [2K,H,W]: channel ``2j`` is x and ``2j+1`` is y of joint j. Every pixel q within ``disp_radius`` of
  a root belongs to the nearest root's person and holds, in flat mode, ``(joint_j - q) / Z``; in hierarchical
  mode joints whose layout parent is -1 also hold ``(joint_j - q) / Z`` and the others hold
  ``(joint_j - joint_parent(j)) / Z`` (all read at the root, then chained along ``layout.parents``).
* ``depth`` [K,H,W] (SMAP-style, needs ``xyz``): the *depth anchor* is ``root_joints[0]``; its channel holds
  ``Z_anchor / f_x`` (mm per pixel, ``f_x`` in network-input pixels: SMAP's ``Z / (f * s)`` with ``s`` the resize
  scale folded into ``f_x``); every other joint holds ``(Z_j - Z_parent) / depth_scale`` with the parent of a
  root-level joint being the anchor. Written on the same pixels as ``disp``.
* ``disp_mask`` [2K,H,W] and ``depth_mask`` [K,H,W]: 1 where a label exists (for masked losses); with per-joint
  ``weights`` (a teacher's confidences) the weight of the owning person's joint instead of 1.
* ``heatmaps`` [K,H,W] (only when ``heatmap_sigma > 0``): per joint, a Gaussian (``heatmap_sigma`` output pixels,
  peak 1, cut at 3 sigma) at every person's labelled joint, merged by element-wise max. Displacements say which
  person a joint belongs to; the heatmaps say precisely where it is: decoding snaps each regressed joint to its
  heatmap's maximum within ``refine_window`` (CenterNet / DEKR-style grouping by regression).

Unknown intrinsics mean ``f_x = f_y = input width`` and ``c = input centre`` (``(w / 2 - 0.5, h / 2 - 0.5)`` in the
pixel-centre convention). Decoding lives in :mod:`models.codecs.spm_decode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.codecs._arrays import check_shape, like_input, to_torch
from models.codecs.spm_decode import SPMDecoded, decode_spm
from models.layouts import Layout, get_layout


@dataclass(frozen=True)
class SPMParams:
    """SPM codec parameters (sizes in pixels; radius and sigma in output-map pixels).

    Attributes:
        input_size: (w, h) of the network input; both divisible by ``stride``.
        stride: input pixels per output pixel.
        layout: keypoint layout name (models.layouts).
        root_sigma: standard deviation of the root Gaussians.
        disp_radius: displacement (and depth) labels are written within this radius of each root.
        hierarchical: chain parent -> child displacements (else every joint is relative to the root pixel).
        depth_scale: millimetres per unit of relative-depth target.
        max_persons: fixed person count P of the decoded outputs.
        root_threshold: minimum root-map value of a person (> 0).
        disp_window: odd size of the window around each root whose reads are averaged when decoding.
        heatmap_sigma: > 0: joint heatmaps are encoded (and the network predicts them); 0: none.
        refine_window: odd size of the window around each regressed joint searched for its heatmap maximum.
        refine_threshold: a joint moves to that maximum only when it is at least this high.
        disp_norm: displacement normaliser Z in output pixels; 0: the output map's diagonal.
        person_threshold: persons whose ``person_score`` is below this are dropped (0: keep every root found).
    """

    input_size: tuple[int, int]
    stride: int = 4
    layout: str = "coco17"
    root_sigma: float = 3.0
    disp_radius: float = 6.0
    hierarchical: bool = False
    depth_scale: float = 1000.0
    max_persons: int = 20
    root_threshold: float = 0.5
    disp_window: int = 1
    heatmap_sigma: float = 0.0
    refine_window: int = 5
    refine_threshold: float = 0.1
    disp_norm: float = 0.0
    person_threshold: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        get_layout(self.layout)
        w, h = self.input_size if len(self.input_size) == 2 else (0, 0)
        if w <= 0 or h <= 0 or self.stride <= 0 or w % self.stride or h % self.stride:
            raise ValueError(f"input_size {self.input_size} must be positive and divisible by stride {self.stride}")
        for name in ("root_sigma", "disp_radius", "depth_scale", "root_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_persons < 1 or self.max_persons > (w // self.stride) * (h // self.stride):
            raise ValueError(f"max_persons must be in 1..map pixels, got {self.max_persons}")
        for name in ("disp_window", "refine_window"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be a positive odd integer, got {getattr(self, name)!r}")
        if not 0.0 <= self.person_threshold < 1.0:
            raise ValueError(f"person_threshold must be in [0, 1), got {self.person_threshold!r}")
        for name in ("heatmap_sigma", "refine_threshold", "disp_norm"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def map_size(self) -> tuple[int, int]:
        """(w, h) of the output maps."""
        return self.input_size[0] // self.stride, self.input_size[1] // self.stride

    @property
    def z(self) -> float:
        """Displacement normaliser in output pixels: ``disp_norm``, or the output map's diagonal."""
        if self.disp_norm > 0:
            return float(self.disp_norm)
        w, h = self.map_size
        return math.sqrt(w * w + h * h)


class SPMCodec:
    """Encode persons to SPM/SMAP targets; decode network outputs to padded per-person poses."""

    def __init__(self, params: SPMParams):
        self.params = params
        self.layout: Layout = get_layout(params.layout)
        lay = self.layout
        self.anchor = int(lay.root_joints[0])
        # Displacement start: the root pixel (True) or the parent joint (False), per joint.
        self.from_root = tuple(p < 0 or not params.hierarchical for p in lay.parents)
        self.disp_parent = tuple(max(p, 0) for p in lay.parents)
        # Depth parent: layout parent, the anchor for root-level joints, the anchor itself for the anchor.
        self.depth_parent = tuple(self.anchor if p < 0 else p for p in lay.parents)

    def default_intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in input pixels used when none are given."""
        w, h = self.params.input_size
        return float(w), float(w), w / 2.0 - 0.5, h / 2.0 - 0.5

    def _grid(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        w, h = self.params.map_size
        return torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                              torch.arange(w, dtype=torch.float64, device=device), indexing="ij")

    def encode(self, keypoints, visibility, xyz=None, intrinsics=None, weights=None) -> dict:
        """Training targets for one image.

        Args:
            keypoints: [N,K,2] input pixels. visibility: [N,K], > 0 where labelled.
            xyz: optional [N,K,3] camera coordinates in mm (only Z is used, for the depth maps).
            intrinsics: optional (fx, fy, cx, cy) in input pixels (only fx is used).
            weights: optional [N,K] loss weights of the labelled joints (e.g. a teacher's confidences): the
                masks carry them instead of 1.
        Returns:
            dict of float32 arrays (numpy in -> numpy out, torch in -> torch out): ``root`` [1,H,W], ``disp`` and
            ``disp_mask`` [2K,H,W], ``depth`` and ``depth_mask`` [K,H,W] (zero without ``xyz``), and with
            ``heatmap_sigma > 0`` ``heatmaps`` [K,H,W] (every labelled joint, including those of persons
            without a root).
            Persons without any labelled root joint are left out.
        """
        device = keypoints.device if isinstance(keypoints, torch.Tensor) else None
        k = self.layout.num_joints
        kp = to_torch("keypoints", keypoints, torch.float64, device)
        check_shape("keypoints", kp, (None, k, 2))
        vis = to_torch("visibility", visibility, torch.float64, device)
        check_shape("visibility", vis, (kp.shape[0], k))
        uv = (kp + 0.5) / self.params.stride - 0.5
        vis = (vis > 0) & torch.isfinite(uv).all(-1)
        rj = list(self.layout.root_joints)
        rvis = vis[:, rj]
        keep = rvis.any(dim=1)
        root = (torch.where(rvis[..., None], uv[:, rj], 0.0)).sum(1) / rvis.sum(1).clamp_min(1)[:, None]
        z = None
        if xyz is not None:
            z = to_torch("xyz", xyz, torch.float64, device)
            check_shape("xyz", z, (kp.shape[0], k, 3))
            z = z[keep, :, 2]
        fx = self.default_intrinsics()[0] if intrinsics is None else float(intrinsics[0])
        if not fx > 0:
            raise ValueError(f"intrinsics fx must be positive, got {fx!r}")
        wt = torch.ones_like(kp[..., 0]) if weights is None else to_torch("weights", weights, torch.float64, device)
        check_shape("weights", wt, (kp.shape[0], k))
        wt = wt * vis
        out = self._encode(uv[keep], vis[keep], root[keep], z, fx, wt[keep])
        if self.params.heatmap_sigma > 0:
            out["heatmaps"] = self._heatmaps(uv, vis)
        return {name: like_input(keypoints, value.to(torch.float32)) for name, value in out.items()}

    def _encode(self, uv, vis, root, z, fx, wt) -> dict[str, torch.Tensor]:
        """uv [N,K,2] map px, vis [N,K] bool, root [N,2] map px, z [N,K] mm or None, wt [N,K] mask weights
        -> target maps."""
        p = self.params
        (w, h), k, n = p.map_size, self.layout.num_joints, uv.shape[0]
        ys, xs = self._grid(uv.device)
        d2 = (xs - root[:, None, None, 0]) ** 2 + (ys - root[:, None, None, 1]) ** 2  # [N,H,W]
        zeros = torch.zeros((k, h, w), dtype=torch.float64, device=uv.device)
        out = {"root": torch.zeros((1, h, w), dtype=torch.float64, device=uv.device),
               "disp": zeros.repeat(2, 1, 1), "disp_mask": zeros.repeat(2, 1, 1),
               "depth": zeros.clone(), "depth_mask": zeros.clone()}
        if n == 0:
            return out
        out["root"] = torch.exp(-d2 / (2.0 * p.root_sigma**2)).amax(dim=0, keepdim=True)
        d2min, owner = d2.min(dim=0)
        region = (d2min <= p.disp_radius**2)[..., None]  # [H,W,1]
        from_root = torch.tensor(self.from_root, device=uv.device)
        start = torch.where(from_root[None, :, None], 0.0, uv[:, list(self.disp_parent)])  # [N,K,2]
        valid = vis & (from_root | vis[:, list(self.disp_parent)])
        pix = torch.stack([xs, ys], dim=-1)[:, :, None, :]  # [H,W,1,2]
        disp = (uv[owner] - start[owner] - pix * from_root[:, None]) / p.z  # [H,W,K,2]
        mask = valid[owner] & region  # [H,W,K]
        out["disp"] = (disp * mask[..., None]).permute(2, 3, 0, 1).reshape(2 * k, h, w)
        weight = torch.where(mask, wt[owner], 0.0)  # [H,W,K]
        out["disp_mask"] = weight[..., None].expand(h, w, k, 2).permute(2, 3, 0, 1).reshape(2 * k, h, w)
        if z is not None:
            dpar = list(self.depth_parent)
            target = (z - z[:, dpar]) / p.depth_scale
            target[:, self.anchor] = z[:, self.anchor] / fx
            dvalid = vis & vis[:, dpar] & torch.isfinite(target)
            dmask = dvalid[owner] & region
            out["depth"] = torch.where(dmask, target[owner], 0.0).permute(2, 0, 1)
            out["depth_mask"] = torch.where(dmask, wt[owner], 0.0).permute(2, 0, 1)
        return out

    def joint_discs(self, keypoints, visibility):
        """[K,H,W] map pixels within 3 ``heatmap_sigma`` of each joint with visibility > 0 (keypoints [N,K,2]
        input pixels): where those joints' heatmap targets would be drawn. numpy in -> numpy out."""
        device = keypoints.device if isinstance(keypoints, torch.Tensor) else None
        kp = to_torch("keypoints", keypoints, torch.float64, device)
        check_shape("keypoints", kp, (None, self.layout.num_joints, 2))
        uv = (kp + 0.5) / self.params.stride - 0.5
        vis = (to_torch("visibility", visibility, torch.float64, device) > 0) & torch.isfinite(uv).all(-1)
        return like_input(keypoints, self._heatmaps(uv, vis) > 0)

    def _heatmaps(self, uv, vis) -> torch.Tensor:
        """uv [N,K,2] map px, vis [N,K] bool -> [K,H,W] max-merged Gaussians cut at 3 sigma."""
        (w, h), k, sigma = self.params.map_size, self.layout.num_joints, self.params.heatmap_sigma
        ys, xs = self._grid(uv.device)
        out = torch.zeros((k, h, w), dtype=torch.float64, device=uv.device)
        person, joint = vis.nonzero(as_tuple=True)  # only the labelled joints: [M] each
        if len(joint) == 0:
            return out
        pts = uv[person, joint]  # [M,2]
        d2 = (xs - pts[:, 0, None, None]) ** 2 + (ys - pts[:, 1, None, None]) ** 2  # [M,H,W]
        g = torch.where(d2 <= 9 * sigma * sigma, torch.exp(-d2 / (2 * sigma * sigma)), 0.0)
        index = joint[:, None].expand(-1, h * w)
        return out.view(k, h * w).scatter_reduce_(0, index, g.view(-1, h * w), "amax").view(k, h, w)

    def decode(self, outputs: dict, intrinsics: torch.Tensor | None = None) -> SPMDecoded:
        """Network outputs -> padded per-person poses; see :func:`models.codecs.spm_decode.decode_spm`."""
        return decode_spm(self, outputs, intrinsics)
