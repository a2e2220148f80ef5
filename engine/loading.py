"""Model specs -> a loaded model description, and ``make_backend`` choosing the backend.

Specs (docs/interfaces.md): ``NAME`` (zoo model ``models/zoo/NAME.safetensors`` + ``.json``, else a user's model
``user_models_dir()/NAME.safetensors``, e.g. one made by ``posestream adapt``),
``PATH.safetensors`` (checkpoint + manifest beside it), ``PATH.onnx`` (manifest ``PATH.onnx.json`` beside it),
``PATH.engine`` (TensorRT plan + manifest), ``random:NAME`` (``models.build_model(NAME)``, random weights
drawn from ``RANDOM_SEED``, so every process builds the same network: warns), or a ``torch.nn.Module`` with ``.config`` (a ``ModelConfig``) for code that built its own.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import models
from engine.backends import OnnxRuntimeBackend, TensorRTBackend, TorchBackend
from models.checkpoint import load_checkpoint, manifest_config, read_manifest
from models.config import ModelConfig

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")

RANDOM_SEED = 0  # random:NAME weights: one network everywhere (tests compare processes and runs)


@dataclass
class LoadedModel:
    """What a spec resolved to: ``kind`` is "module" (torch weights in ``module``), "onnx" or "tensorrt"."""

    model_id: str
    config: ModelConfig
    kind: str
    module: nn.Module | None = None
    path: Path | None = None
    manifest: dict = field(default_factory=dict)


def refine3d_for(loaded: LoadedModel, choice, device: torch.device):
    """The 3D refiner (models.refine3d) to run after ``loaded``'s decoding, on ``device``, or None.

    ``choice``: True: the one the model's manifest names (none if it names none); False or None: none; a path
    to a refiner's .safetensors, or a ``Refine3D`` module: that one. A refiner must match the model's layout,
    and only a 3D model (SPM) can take one.
    """
    from models.refine3d import Refine3D, load_refine3d, named_refine3d

    if choice is None or choice is False:
        return None
    if choice is True:
        path = named_refine3d(loaded.path, loaded.manifest) if loaded.path is not None and loaded.manifest else None
        if path is None:
            return None
        module = load_refine3d(path)
    elif isinstance(choice, Refine3D):
        module = choice.eval()
    elif isinstance(choice, (str, os.PathLike)):
        module = load_refine3d(choice)
    else:
        raise ValueError(f"refine3d: expected True, False, a refiner path or a Refine3D module, got {choice!r}")
    if loaded.config.arch != "spm":
        raise ValueError(f"model {loaded.model_id}: a 3D refiner needs a 3D (SPM) model, not {loaded.config.arch}")
    if module.config.layout != loaded.config.layout:
        raise ValueError(f"model {loaded.model_id}: the 3D refiner's layout {module.config.layout!r} differs from "
                         f"the model's {loaded.config.layout!r}")
    return module.fused().to(device)  # batch norms folded into the linear layers


def zoo_dir() -> Path:
    return Path(models.__file__).resolve().parent / "zoo"


def user_models_dir() -> Path:
    """Where a user's own models live (``posestream adapt`` saves there; ``--model NAME`` finds them):
    ``$POSESTREAM_MODELS``, else ``$XDG_DATA_HOME/posestream/models`` (``~/.local/share/posestream/models``)."""
    if os.environ.get("POSESTREAM_MODELS"):
        return Path(os.environ["POSESTREAM_MODELS"])
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "posestream" / "models"


def _named(spec: str) -> Path:
    """The checkpoint of model NAME: the zoo's, else the user's; a clear error naming both places."""
    for folder in (zoo_dir(), user_models_dir()):
        if (folder / f"{spec}.safetensors").is_file():
            return folder / f"{spec}.safetensors"
    known = sorted({p.stem for folder in (zoo_dir(), user_models_dir()) if folder.is_dir()
                    for p in folder.glob("*.safetensors")})
    raise ValueError(f"model {spec!r}: not a zoo model nor one of yours in {user_models_dir()} (known: "
                     f"{', '.join(known) or 'none'}), nor a .safetensors/.onnx/.engine path, nor random:NAME")


def resolve_model(spec: str | nn.Module, **overrides) -> LoadedModel:
    """Load ``spec``; ``overrides`` (``random:`` only) go to ``models.build_model``."""
    if isinstance(spec, nn.Module):
        config = getattr(spec, "config", None)
        if not isinstance(config, ModelConfig):
            raise ValueError("model: a torch module given as the model needs a .config (ModelConfig)")
        return LoadedModel(f"module:{config.name}", config, "module", module=spec.eval())
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model: expected a model spec string, got {spec!r}")
    if overrides and not spec.startswith("random:"):
        raise ValueError(f"model {spec!r}: overrides only apply to random:NAME specs")
    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        warnings.warn(f"model {spec}: random weights (for plumbing and benchmarks only)", stacklevel=3)
        with torch.random.fork_rng(devices=[]):  # the same network in every process, the caller's RNG untouched
            torch.manual_seed(RANDOM_SEED)
            module = models.build_model(name, **overrides).eval()
        return LoadedModel(spec, module.config, "module", module=module)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".engine", ".plan"):
        if not path.is_file():
            raise ValueError(f"model {spec!r}: file not found")
        manifest = read_manifest(path)
        kind = "onnx" if suffix == ".onnx" else "tensorrt"
        return LoadedModel(f"{path.stem}", manifest_config(manifest, path), kind, path=path, manifest=manifest)
    if suffix != ".safetensors":
        path = _named(spec)
    if not path.is_file():
        raise ValueError(f"model {spec!r}: file not found")
    module = load_checkpoint(path).eval()
    return LoadedModel(path.stem, module.config, "module", module=module, path=path, manifest=read_manifest(path))


class _Outputs(nn.Module):
    """Export wrapper: ``infer`` dict -> tuple in a fixed key order."""

    def __init__(self, model: nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.infer(x)
        return tuple(out[k] for k in self.keys)


def weights_digest(module: nn.Module) -> str:
    """Short sha256 of the module's config and weights (ONNX cache key)."""
    h = hashlib.sha256(repr(module.config).encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_export(graph: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                opset: int = 17) -> Path:
    """Write ``graph(*args)`` to ``path`` as ONNX (atomically), with a dynamic batch on every input and output.

    The TorchScript exporter: fast, and its graphs run on ONNX Runtime and TensorRT alike (torch 2.5+ also
    has the dynamo one, which needs onnxscript). Trace-time shape checks become constants, and the traced
    batch is specialised away by ``dynamic_axes``, so callers trace with a batch of 2 (exporters specialise
    a dimension of size 1) and check another size.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"input_names": list(inputs), "output_names": list(outputs), "opset_version": opset,
              "dynamic_axes": {name: {0: "batch"} for name in (*inputs, *outputs)}, "do_constant_folding": True}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: deprecated, supported
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, args, str(tmp), **kwargs)
    graph.eval()  # the exporter restores the graph's training flag on its modules; keep them in eval
    os.replace(tmp, path)
    return path


def export_onnx(module: nn.Module, path: Path) -> Path:
    """Export ``module.infer`` (float32, dynamic batch, opset 17) to ``path``; outputs named by infer's keys."""
    module = module.eval().float().cpu()
    w, h = module.config.input_size
    x = torch.zeros(2, 3, h, w)
    with torch.inference_mode():
        keys = tuple(module.infer(x))
    return onnx_export(_Outputs(module, keys).eval(), (x,), path, ["input"], list(keys))


def default_cache_dir() -> Path:
    return Path(os.environ.get("POSESTREAM_CACHE", Path.home() / ".cache" / "posestream"))


def onnx_for(loaded: LoadedModel, cache_dir: Path | None) -> Path:
    """The ONNX file of ``loaded``: its own, or an export cached under ``cache_dir/onnx``."""
    if loaded.kind == "onnx":
        return loaded.path
    if loaded.module is None:
        raise ValueError(f"model {loaded.model_id}: a TensorRT plan cannot run on onnxruntime")
    path = Path(cache_dir or default_cache_dir()) / "onnx" / f"{loaded.config.name}-{weights_digest(loaded.module)}.onnx"
    return path if path.is_file() else export_onnx(loaded.module, path)


def _tensorrt_usable() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def make_backend(loaded: LoadedModel, backend: str = "auto", device: str | torch.device | None = None, *,
                 max_batch: int = 8, cache_dir: Path | None = None, **torch_options):
    """The backend for ``loaded``.

    ``auto``: a TensorRT plan when given and usable, else torch on CUDA, else ONNX Runtime on CPU (the given
    .onnx, or an export in ``cache_dir``). ``device``: None picks CUDA when available; torch_options go to
    ``TorchBackend`` (fp16, cuda_graphs, compile).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if backend == "auto":
        if loaded.kind == "tensorrt":
            backend = "tensorrt"
        elif loaded.module is not None and dev.type == "cuda":
            backend = "torch"
        else:
            backend = "onnxruntime"
    if backend == "tensorrt":
        if loaded.kind != "tensorrt":
            raise ValueError(f"model {loaded.model_id}: backend tensorrt needs a .engine plan with its manifest")
        if not _tensorrt_usable():
            raise ValueError("backend tensorrt: needs the tensorrt package (pip install posestream[trt]) and CUDA")
        return TensorRTBackend(loaded.path, loaded.manifest, dev)
    if backend == "torch":
        if loaded.module is None:
            raise ValueError(f"model {loaded.model_id}: backend torch needs torch weights, not a {loaded.kind} file")
        return TorchBackend(loaded.module, dev, max_batch=max_batch, **torch_options)
    return OnnxRuntimeBackend(onnx_for(loaded, cache_dir), dev)
