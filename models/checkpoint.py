"""Checkpoints: safetensors weights plus a JSON manifest beside them (``net.safetensors`` + ``net.json``).

The manifest (also written beside exported ONNX files and TensorRT engines) holds::

    {"format": "posestream.model", "format_version": 1, "kind": "checkpoint" | "onnx" | "tensorrt",
     "config": ModelConfig.to_dict(), "layout": "mpii16", "num_joints": 16, "input_size": [w, h],
     "mean": [r, g, b], "std": [r, g, b], "codec": {"type": "HeatmapCodec", ...all codec params},
     "weights": {"file": "net.safetensors", "sha256": ..., "bytes": ..., "dtype": "float32"},
     "provenance": {"data": ..., "epochs": ..., "metrics": {...}, "code_commit": ..., "created": ...}}

Loading never unpickles anything and checks everything: a bad manifest, unknown architecture, layout
mismatch, a weights file whose hash differs from the manifest (corrupted or truncated), missing or extra
tensors and wrong shapes all raise ``ValueError`` naming the file and the field. Weights stored as
float16 are cast to float32 on load.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from models.config import ModelConfig

if TYPE_CHECKING:
    import torch

FORMAT = "posestream.model"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "kind", "config", "layout", "input_size", "mean", "std")


def manifest_path(path: str | os.PathLike) -> Path:
    """The manifest beside ``path``: ``x.safetensors`` -> ``x.json``; ``x.onnx`` -> ``x.onnx.json`` and
    ``x.engine`` -> ``x.engine.json`` (so an ONNX file and the engine built from it keep separate manifests)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".json")
    return path.with_name(path.name + ".json")


def code_commit() -> str | None:
    """``git rev-parse HEAD`` of the source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stamped(provenance: dict | None = None) -> dict:
    """``provenance`` after the code commit and the time it is written (UTC, to the second)."""
    return {"code_commit": code_commit(), "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), **(provenance or {})}


def build_manifest(config: ModelConfig, kind: str, provenance: dict | None = None, **extra) -> dict:
    """A manifest dict for ``config`` (``extra`` adds top-level sections such as ``weights`` or ``export``)."""
    prov = stamped(provenance)
    config = config.resolved()
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "config": config.to_dict(),
        "layout": config.layout, "num_joints": config.num_joints, "input_size": list(config.input_size),
        "mean": list(config.mean), "std": list(config.std), "codec": config.codec_params(),
        "provenance": prov, **extra,
    }


def write_manifest(path: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest`` as JSON beside ``path``; returns the manifest's path."""
    target = manifest_path(path)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, target)
    return target


def read_manifest(path: str | os.PathLike) -> dict:
    """The checked manifest beside ``path`` (or ``path`` itself if it is the .json)."""
    target = manifest_path(path)
    try:
        manifest = json.loads(target.read_text())
    except FileNotFoundError:
        raise ValueError(f"{target}: manifest not found (every model file needs its .json beside it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{target}: manifest is not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{target}: manifest must be a JSON object")
    for key in REQUIRED:
        if key not in manifest:
            raise ValueError(f"{target}: manifest lacks field {key!r}")
    if manifest["format"] != FORMAT:
        raise ValueError(f"{target}: field 'format' is {manifest['format']!r}, expected {FORMAT!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{target}: field 'format_version' {manifest['format_version']!r} is not supported "
                         f"(this code reads {FORMAT_VERSION})")
    config = manifest_config(manifest, target)
    for key, want in (("layout", config.layout), ("input_size", list(config.input_size)),
                      ("mean", list(config.mean)), ("std", list(config.std))):
        if manifest[key] != want:
            raise ValueError(f"{target}: field {key!r} ({manifest[key]!r}) disagrees with config.{key} ({want!r})")
    return manifest


def manifest_config(manifest: dict, source: str | os.PathLike = "manifest") -> ModelConfig:
    """The ``ModelConfig`` recorded in a manifest dict."""
    return ModelConfig.from_dict(manifest["config"], source=str(source))


def save_checkpoint(model, path: str | os.PathLike, provenance: dict | None = None, dtype: str = "float32") -> Path:
    """Write ``model``'s weights to ``path`` (.safetensors) and the manifest beside it; returns the manifest path.

    ``provenance``: free-form facts (``data``, ``epochs``, ``metrics``...); the code commit and time are added.
    ``dtype``: "float32" or "float16" for the stored floating-point tensors.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoint files end in .safetensors")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"save_checkpoint: dtype must be float32 or float16, got {dtype!r}")
    config = model.config
    store = getattr(torch, dtype)
    tensors = {k: (v.detach().to(store) if v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "posestream": config.name})
    os.replace(tmp, path)
    weights = {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size, "dtype": dtype}
    return write_manifest(path, build_manifest(config, "checkpoint", provenance, weights=weights))


def load_checkpoint(path: str | os.PathLike, expect_layout: str | None = None, device: str = "cpu"):
    """The network stored at ``path`` (eval mode, float32, on ``device``), its config from the manifest.

    ``expect_layout``: raise unless the checkpoint's layout is this one.
    """
    from models.factory import build_model

    path = Path(path)
    manifest = read_manifest(path)
    source = manifest_path(path)
    if manifest["kind"] != "checkpoint":
        raise ValueError(f"{source}: field 'kind' is {manifest['kind']!r}, expected 'checkpoint'")
    if expect_layout is not None and manifest["layout"] != expect_layout:
        raise ValueError(f"{source}: field 'layout' is {manifest['layout']!r}, expected {expect_layout!r}")
    model = build_model(manifest_config(manifest, source))
    model.load_state_dict(_read_tensors(path, manifest, model.state_dict()))
    return model.eval().to(device)


def load_matching(model, path: str | os.PathLike, widen: bool = False) -> list[str]:
    """Copy into ``model`` each tensor of the checkpoint at ``path`` whose name and shape match (fine-tuning,
    or starting a network grown by a head from its smaller self); returns the names of ``model``'s tensors
    that were left as they were. Raises ValueError when nothing matches.

    With ``widen``, a tensor the network has wider than the checkpoint (same name and rank, same kernel,
    more channels) takes the checkpoint's values in its leading slice (:func:`widened`), so a network built
    wider starts where the narrower one stopped. Only for the same architecture at a larger width: a head
    with more joints would take the old joints' weights."""
    path = Path(path)
    manifest = read_manifest(path)
    tensors = _verified_tensors(path, manifest)
    state = model.state_dict()
    same = {n: t.to(state[n].dtype) for n, t in tensors.items()
            if n in state and tuple(t.shape) == tuple(state[n].shape)}
    if widen:
        same.update({n: widened(t, state[n]) for n, t in tensors.items()
                     if n in state and n not in same and _embeds(t.shape, state[n].shape)})
    if not same:
        raise ValueError(f"{path}: no tensor matches the network by name and shape")
    model.load_state_dict(same, strict=False)
    return sorted(set(state) - set(same))


def widened(old: torch.Tensor, built: torch.Tensor) -> torch.Tensor:
    """``built`` (a layer of the wider network, as initialised) with ``old`` in its leading slice.

    Dimension 0 is a layer's outputs and dimension 1 its inputs (convolutions; BatchNorm tensors and
    biases have only outputs). The old outputs read the old inputs through the old weights and the new
    inputs through zeros; the new outputs keep their initial weights, and new BatchNorm channels their
    initial statistics. Applied to every layer, the old channels of every feature map compute what they
    computed in the narrower network (residual sums, pooling and upsampling act channel by channel; a
    network that concatenated widened feature maps or grouped their channels would need more; ours do not), and
    heads that read only through zeros from the new channels give its outputs exactly. The new channels
    are not a dead end: their activations are not zero, so the zeroed weights that read them get gradients.
    """
    out = built.detach().clone()
    if old.dim() >= 2:
        out[: old.shape[0], old.shape[1]:] = 0
    out[tuple(slice(0, s) for s in old.shape)] = old.to(out.dtype)
    return out


def _embeds(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    """Whether a tensor of shape ``small`` fits the leading slice of ``big`` along channels only."""
    return (len(small) == len(big) and tuple(small[2:]) == tuple(big[2:])
            and all(s <= b for s, b in zip(small[:2], big[:2])))


def _verified_tensors(path: Path, manifest: dict) -> dict:
    """Tensors of ``path`` checked against the manifest's hash."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = manifest.get("weights")
    if not isinstance(weights, dict) or "sha256" not in weights:
        raise ValueError(f"{manifest_path(path)}: manifest lacks field 'weights.sha256'")
    if not path.is_file():
        raise ValueError(f"{path}: weights file not found")
    if file_sha256(path) != weights["sha256"]:
        raise ValueError(f"{path}: contents differ from manifest field 'weights.sha256' "
                         f"({path.stat().st_size} bytes, manifest says {weights.get('bytes')}): corrupted or truncated")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors file: {err}") from None
    return tensors


def _read_tensors(path: Path, manifest: dict, expected: dict) -> dict:
    """Tensors of ``path`` checked against the manifest's hash and the model's state dict ``expected``."""
    tensors = _verified_tensors(path, manifest)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: tensors do not match the architecture: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    out = {}
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        if got.is_floating_point() != want.is_floating_point():
            raise ValueError(f"{path}: tensor {name!r} has dtype {got.dtype}, expected {want.dtype}")
        out[name] = got.to(want.dtype)
    return out
