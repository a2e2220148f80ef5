"""The 3D refiner: each person's decoded 2D + 3D joints -> corrected root-relative 3D (SMAP's refine stage).

SMAP ends with a refinement net trained on the first stage's own predictions; its form here is the fully
connected lifting network of Martinez et al. ("A simple yet effective baseline for 3D human pose estimation",
ICCV 2017): a linear layer to ``width`` features, ``blocks`` residual blocks of two (linear, batch norm, ReLU,
dropout) layers, and a linear output. It is a residual on the first stage: the output layer starts at zero, so
an untrained refiner returns its input.

Input per person, all derived from the first stage's decoded camera-space joints ``xyz`` [K,3] (mm) and joint
scores [K] (K joints of ``layout``; ``S = unit_mm``):

* ``valid`` [K]: score >= ``min_score``, depth >= ``MIN_DEPTH_MM`` and finite: a joint the heatmaps did not see
  (occluded, outside the frame) or that decoded out of range is flagged invalid, its values zeroed, and the
  refiner fills it in;
* the 2D joints normalised by the intrinsics and the person's scale: each joint's ray ``(x/z, y/z)`` (that is
  ``((u - cx) / fx, (v - cy) / fy)`` of its pixel), minus the root's ray, times the root depth, / S;
* the decoded root-relative 3D ``(xyz - root) / S``;
* with ``scores``, the joint scores themselves (zero where invalid): how sure the heatmaps were;
* the root's ray (2) and ``log(root depth / ROOT_DEPTH_MM)`` (1): where the person stands.

Output: root-relative 3D (the root point exactly 0), added to the root to give camera mm again; with
``root_depth`` also a log-factor on the root's depth (the root moves along its ray; its pixel stays).
Leading dimensions are free: ``Refine3D(xyz [..., K, 3], score [..., K]) -> xyz [..., K, 3]``, so the engine
runs it on every (padded) person row of a batch at once; rows whose root has no depth (padding) pass through.

Files: ``NAME.safetensors`` + ``NAME.json`` (``{"format": "posestream.refine3d", "format_version": 1,
"config": Refine3DConfig fields, "weights": {"file", "sha256", "bytes", "dtype"}, "provenance": {...}}``); a
model's manifest names its refiner as ``"refine3d": {"file": "default.refine3d.safetensors", "sha256": ...}``
(a file beside the model; :func:`attach`), and the engine runs it only then.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import file_sha256, manifest_path, stamped, write_manifest
from models.layouts import get_layout

FORMAT = "posestream.refine3d"
FORMAT_VERSION = 1
MIN_DEPTH_MM = 100.0
ROOT_DEPTH_MM = 5000.0
MANIFEST_KEY = "refine3d"


@dataclass(frozen=True)
class Refine3DConfig:
    """The refiner's shape and input convention.

    Attributes:
        layout: keypoint layout of the first stage (K joints).
        width: features of the hidden layers (Martinez: 1024).
        blocks: residual blocks of two hidden layers each (Martinez: 2).
        dropout: dropout after each hidden layer while training.
        min_score: joints scoring below this are invalid (the SPM decoder keeps a regressed joint where its
            heatmap peak is below its ``refine_threshold``, 0.1: the heatmaps did not see it).
        root_depth: also predict a correction of the root's depth.
        scores: the joint scores are inputs too (else only the validity flags they give).
        unit_mm: millimetres per unit of the network's inputs and outputs.
    """

    layout: str = "panoptic19"
    width: int = 512
    blocks: int = 2
    dropout: float = 0.25
    min_score: float = 0.1
    root_depth: bool = False
    scores: bool = True
    unit_mm: float = 1000.0

    def __post_init__(self) -> None:
        get_layout(self.layout)
        if self.width < 1 or self.blocks < 0:
            raise ValueError(f"refine3d config: width must be >= 1 and blocks >= 0, got {self.width}, {self.blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"refine3d config: dropout must be in [0, 1), got {self.dropout}")
        if not self.unit_mm > 0:
            raise ValueError(f"refine3d config: unit_mm must be > 0, got {self.unit_mm}")

    @property
    def num_joints(self) -> int:
        return get_layout(self.layout).num_joints

    @property
    def num_inputs(self) -> int:
        return (7 if self.scores else 6) * self.num_joints + 3

    @classmethod
    def from_dict(cls, data: dict, source: str = "refine3d config") -> Refine3DConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: field 'config' must be an object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{source}: field 'config' has unknown keys {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: field 'config': {err}") from None


def _layer(i: int, o: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU(inplace=True), nn.Dropout(dropout)]


def _fold(seq: nn.Sequential) -> nn.Sequential:
    """(linear, batch norm, ReLU, dropout) groups -> (linear with the batch norm folded in, ReLU), eval mode."""
    layers: list[nn.Module] = []
    for i in range(0, len(seq), 4):
        linear, norm = seq[i], seq[i + 1]
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            linear.weight.mul_(scale[:, None])
            linear.bias.copy_((linear.bias - norm.running_mean) * scale + norm.bias)
        layers += [linear, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Block(nn.Module):
    """Two (linear, batch norm, ReLU, dropout) layers plus the identity."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(*_layer(width, width, dropout), *_layer(width, width, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class Refine3D(nn.Module):
    """``forward(xyz [..., K, 3] camera mm, score [..., K]) -> refined xyz [..., K, 3] camera mm``."""

    def __init__(self, config: Refine3DConfig) -> None:
        super().__init__()
        self.config = config
        lay = get_layout(config.layout)
        k = lay.num_joints
        self.register_buffer("root_index", torch.tensor([int(j) for j in lay.root_joints]), persistent=False)
        self.stem = nn.Sequential(*_layer(config.num_inputs, config.width, config.dropout))
        self.blocks = nn.Sequential(*(Block(config.width, config.dropout) for _ in range(config.blocks)))
        self.head = nn.Linear(config.width, 3 * k + (1 if config.root_depth else 0))
        nn.init.zeros_(self.head.weight)  # starts as the identity: a residual on the first stage
        nn.init.zeros_(self.head.bias)

    def root(self, xyz: torch.Tensor) -> torch.Tensor:
        """Root point [..., 3] of joints [..., K, 3] (the mean of the layout's root joints)."""
        return xyz.index_select(-2, self.root_index).mean(dim=-2)

    def valid(self, xyz: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Joints [..., K] bool that count as seen: score >= min_score, depth >= MIN_DEPTH_MM, finite."""
        return (score >= self.config.min_score) & (xyz[..., 2] >= MIN_DEPTH_MM) & torch.isfinite(xyz).all(-1)

    def features(self, xyz: torch.Tensor, score: torch.Tensor, valid: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs [N, num_inputs], relative 3D [N,K,3] in units (zero where invalid), root [N,3] mm) of rows
        xyz [N,K,3], score and valid [N,K]."""
        s = self.config.unit_mm
        root = self.root(xyz)
        z_root = root[:, 2:3].clamp_min(MIN_DEPTH_MM)  # [N,1]
        v = valid[..., None].to(xyz.dtype)
        xyz_safe = torch.where(valid[..., None], xyz, root[:, None].expand_as(xyz))
        ray = xyz_safe[..., :2] / xyz_safe[..., 2:3].clamp_min(MIN_DEPTH_MM)
        ray_root = root[:, :2] / z_root
        flat = (ray - ray_root[:, None]) * z_root[:, None] / s * v
        rel = (xyz_safe - root[:, None]) / s * v
        person = torch.cat([ray_root, torch.log(z_root / ROOT_DEPTH_MM)], dim=-1)
        parts = [flat.flatten(1), rel.flatten(1), v.flatten(1)]
        if self.config.scores:
            parts.append(score.clamp(0.0, 1.0) * v[..., 0])
        return torch.cat([*parts, person], dim=-1), rel, root

    def refine(self, xyz: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(root-relative 3D [N,K,3] mm, root [N,3] camera mm) of rows xyz [N,K,3], score [N,K] (float32)."""
        k = self.config.num_joints
        x, rel, root = self.features(xyz, score, self.valid(xyz, score))
        out = self.head(self.blocks(self.stem(x)))
        refined = rel + out[:, : 3 * k].reshape(-1, k, 3)
        refined = (refined - self.root(refined)[:, None]) * self.config.unit_mm
        if self.config.root_depth:
            root = root * torch.exp(out[:, 3 * k:])
        return refined, root

    def fused(self) -> Refine3D:
        """An inference copy with each batch norm folded into the linear layer before it and the dropouts left
        out (the same function in eval mode, in fewer ops: what the engine runs)."""
        import copy

        out = copy.deepcopy(self).eval()
        out.stem = _fold(out.stem)
        for block in out.blocks:
            block.layers = _fold(block.layers)
        return out

    def forward(self, xyz: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        k = self.config.num_joints
        if xyz.shape[-2:] != (k, 3) or score.shape != xyz.shape[:-1]:
            raise ValueError(f"Refine3D: xyz must be [..., {k}, 3] and score [..., {k}], got "
                             f"{list(xyz.shape)} and {list(score.shape)}")
        rows = xyz.reshape(-1, k, 3).float()
        rel, root = self.refine(rows, score.reshape(-1, k).float())
        keep = (self.root(rows)[:, 2] >= MIN_DEPTH_MM)[:, None, None]  # padded rows (no person: zeros) pass through
        return torch.where(keep, rel + root[:, None], rows).reshape(xyz.shape).to(xyz.dtype)


# --- files ---------------------------------------------------------------------------------------------------


def save_refine3d(module: Refine3D, path: str | os.PathLike, provenance: dict | None = None,
                  dtype: str = "float32") -> Path:
    """Write the refiner's weights to ``path`` (.safetensors) and its manifest beside it; returns the manifest."""

    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: refiner files end in .safetensors")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"save_refine3d: dtype must be float32 or float16, got {dtype!r}")
    store = getattr(torch, dtype)
    tensors = {k: (v.detach().to(store) if v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in module.state_dict().items()}
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, path)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "refine3d",
                "config": asdict(module.config), "weights": {"file": path.name, "sha256": file_sha256(path),
                                                            "bytes": path.stat().st_size, "dtype": dtype},
                "provenance": stamped(provenance)}
    return write_manifest(path, manifest)


def read_refine3d_manifest(path: str | os.PathLike) -> dict:
    """The checked manifest beside a refiner's ``path``."""
    target = manifest_path(path)
    try:
        manifest = json.loads(target.read_text())
    except FileNotFoundError:
        raise ValueError(f"{target}: refiner manifest not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{target}: refiner manifest is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{target}: field 'format' must be {FORMAT!r} (not a 3D refiner's manifest)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{target}: field 'format_version' {manifest.get('format_version')!r} is not supported "
                         f"(this code reads {FORMAT_VERSION})")
    for key in ("config", "weights"):
        if not isinstance(manifest.get(key), dict):
            raise ValueError(f"{target}: manifest lacks field {key!r}")
    return manifest


def load_refine3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> Refine3D:
    """The refiner stored at ``path`` (eval mode, float32), checked against its manifest (hash, tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_refine3d_manifest(path)
    config = Refine3DConfig.from_dict(manifest["config"], str(manifest_path(path)))
    if not path.is_file():
        raise ValueError(f"{path}: refiner weights not found")
    want = manifest["weights"].get("sha256")
    if file_sha256(path) != want:
        raise ValueError(f"{path}: contents differ from manifest field 'weights.sha256': corrupted or truncated")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors file: {err}") from None
    module = Refine3D(config)
    expected = module.state_dict()
    if set(tensors) != set(expected):
        raise ValueError(f"{path}: tensors do not match the refiner's config: missing "
                         f"{sorted(set(expected) - set(tensors))[:5]}, unexpected {sorted(set(tensors) - set(expected))[:5]}")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(expected[name].shape)}")
    module.load_state_dict({n: t.to(expected[n].dtype) for n, t in tensors.items()})
    return module.eval().to(device)


def named_refine3d(model_path: str | os.PathLike, manifest: dict) -> Path | None:
    """The refiner file a model's manifest names (beside the model), checked against the pinned hash; None when
    the manifest names none."""
    entry = manifest.get(MANIFEST_KEY)
    if entry is None:
        return None
    source = manifest_path(model_path)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ValueError(f"{source}: field {MANIFEST_KEY!r} must be an object with a 'file'")
    path = Path(model_path).parent / entry["file"]
    if Path(entry["file"]).name != entry["file"]:
        raise ValueError(f"{source}: field '{MANIFEST_KEY}.file' must name a file beside the model, got {entry['file']!r}")
    if not path.is_file():
        raise ValueError(f"{source}: the refiner {path} named by field '{MANIFEST_KEY}.file' is missing")
    weights = read_refine3d_manifest(path)["weights"]
    if entry.get("sha256") is not None and entry["sha256"] != weights.get("sha256"):
        raise ValueError(f"{source}: field '{MANIFEST_KEY}.sha256' differs from {manifest_path(path)}'s: "
                         "not the refiner this model was shipped with (attach it again)")
    return path


def place_beside(refiner: str | os.PathLike | Refine3D, model_path: str | os.PathLike, provenance: dict | None = None,
                 dtype: str | None = None) -> dict:
    """Write a refiner beside the model file ``model_path`` as ``MODEL.refine3d.safetensors`` + ``.json``; returns
    the manifest entry that names it. ``refiner``: a refiner's path (its provenance kept, ``provenance`` added;
    ``dtype`` default: as stored) or a ``Refine3D`` module (``dtype`` default float32)."""
    model_path = Path(model_path)
    target = model_path.with_name(f"{model_path.stem}.{MANIFEST_KEY}.safetensors")
    if isinstance(refiner, Refine3D):
        module, prov, stored = refiner, {}, "float32"
    else:
        module = load_refine3d(refiner)
        info = read_refine3d_manifest(refiner)
        prov, stored = dict(info.get("provenance") or {}), info["weights"].get("dtype", "float32")
        if Path(refiner).resolve() == target.resolve() and not provenance and dtype in (None, stored):
            return {"file": target.name, "sha256": file_sha256(target)}
    save_refine3d(module, target, {**prov, **(provenance or {})}, dtype or stored)
    return {"file": target.name, "sha256": file_sha256(target)}


def attach(model_path: str | os.PathLike, refiner: str | os.PathLike | Refine3D, provenance: dict | None = None,
           dtype: str | None = None) -> Path:
    """Make the model at ``model_path`` (a checkpoint, ONNX file or TensorRT plan with its manifest) name a
    refiner: it is written beside the model (:func:`place_beside`) and the model's manifest gains the
    ``refine3d`` entry; the model's weights are untouched. Returns the refiner's path beside the model.

    This is how a refiner follows a model made from another (a fine-tuned or adapted checkpoint with the same
    3D head): ``attach("adapted.safetensors", "models/zoo/default.refine3d.safetensors")``."""
    from models.checkpoint import read_manifest, write_manifest

    manifest = read_manifest(model_path)
    layout = (refiner.config if isinstance(refiner, Refine3D) else load_refine3d(refiner).config).layout
    if layout != manifest["layout"]:
        raise ValueError(f"{refiner}: refiner layout {layout!r} differs from the model's {manifest['layout']!r}")
    manifest[MANIFEST_KEY] = place_beside(refiner, model_path, provenance, dtype)
    write_manifest(model_path, manifest)
    return Path(model_path).parent / manifest[MANIFEST_KEY]["file"]


def carry(source_model: str | os.PathLike, source_manifest: dict, target_model: str | os.PathLike) -> dict | None:
    """The refiner the source model's manifest names, written beside ``target_model`` (an export of it); returns
    the entry for the target's manifest, or None when the source names none."""
    path = named_refine3d(source_model, source_manifest)
    return None if path is None else place_beside(path, target_model)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
