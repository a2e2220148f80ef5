"""The model zoo's one plain table: factory name -> ``ModelConfig``, and ``build_model``.

Each factory returns the :class:`~models.config.ModelConfig` of a network; ``build_model`` turns a name or
a config into a ``torch.nn.Module`` (random weights; use :func:`models.checkpoint.load_checkpoint` for
trained ones). torch is imported only when a network is built.

Defaults: hourglasses take 256 x 256 crops of one person in the MPII layout (16 joints); SPM networks take
whole frames in the COCO layout (17 joints; the SPM codec's default, because COCO is the multi-person 2D
data we train on; their depth maps are trained where 3D labels exist, e.g. CMU Panoptic with
``layout="panoptic19"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from models.config import ModelConfig

HEATMAP_CODEC = {"sigma": 2.0}


def _hourglass(name: str, stacks: int, width: int = 256) -> ModelConfig:
    return ModelConfig(
        name=name, arch="hourglass", layout="mpii16", input_size=(256, 256), codec=dict(HEATMAP_CODEC),
        arch_args={"width": width, "stacks": stacks, "depth": 4, "blocks": 1, "stem": "newell"},
    )


def hg1() -> ModelConfig:
    """1 stack x 256 features (3.6 M parameters)."""
    return _hourglass("hg1", 1)


def hg2() -> ModelConfig:
    """2 stacks x 256 features (6.7 M parameters)."""
    return _hourglass("hg2", 2)


def hg4() -> ModelConfig:
    """4 stacks x 256 features (13.0 M parameters)."""
    return _hourglass("hg4", 4)


def hg8() -> ModelConfig:
    """8 stacks x 256 features, the paper's network (25.6 M parameters)."""
    return _hourglass("hg8", 8)


def hg1_128() -> ModelConfig:
    """1 stack x 128 features (0.9 M parameters)."""
    return _hourglass("hg1_128", 1, 128)


def hg2_128() -> ModelConfig:
    """2 stacks x 128 features (1.7 M parameters)."""
    return _hourglass("hg2_128", 2, 128)


def hg4_128() -> ModelConfig:
    """4 stacks x 128 features (3.3 M parameters)."""
    return _hourglass("hg4_128", 4, 128)


def hg1_64() -> ModelConfig:
    """1 stack x 64 features (0.23 M parameters): realtime on a few CPU cores."""
    return _hourglass("hg1_64", 1, 64)


def hg2_64() -> ModelConfig:
    """2 stacks x 64 features (0.43 M parameters)."""
    return _hourglass("hg2_64", 2, 64)


def spm_small() -> ModelConfig:
    """SPM for 2 CPU cores: 640 x 480 frames, light stem, 1 stage x 64 features, depth-3 hourglass."""
    return ModelConfig(
        name="spm_small", arch="spm", layout="coco17", input_size=(640, 480),
        arch_args={"width": 64, "stages": 1, "depth": 3, "blocks": 1, "stem": "light"},
    )


def spm_base() -> ModelConfig:
    """SPM for a GPU: 832 x 512 frames (SMAP's input), 2 stages x 256 features, depth-4 hourglasses."""
    return ModelConfig(
        name="spm_base", arch="spm", layout="coco17", input_size=(832, 512),
        arch_args={"width": 256, "stages": 2, "depth": 4, "blocks": 1, "stem": "newell"},
    )


MODELS: dict[str, Callable[[], ModelConfig]] = {
    "hg1": hg1,
    "hg2": hg2,
    "hg4": hg4,
    "hg8": hg8,
    "hg1_128": hg1_128,
    "hg2_128": hg2_128,
    "hg4_128": hg4_128,
    "hg1_64": hg1_64,
    "hg2_64": hg2_64,
    "spm_small": spm_small,
    "spm_base": spm_base,
}


def model_config(name: str, **overrides) -> ModelConfig:
    """The config of factory ``name`` with fields replaced by ``overrides``.

    ``arch_args`` and ``codec`` overrides are merged into the factory's dicts
    (``model_config("hg2", arch_args={"width": 128})`` keeps the other arch args).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    config = MODELS[name]()
    for key in ("arch_args", "codec"):
        if key in overrides:
            overrides[key] = {**getattr(config, key), **overrides[key]}
    try:
        return replace(config, **overrides)
    except TypeError as err:
        raise ValueError(f"model {name!r}: bad override: {err}") from None


def build_model(name: str | ModelConfig, **overrides):
    """A ``torch.nn.Module`` with random weights for factory ``name`` (or a config); ``.config`` is set.

    ``forward(x)`` returns one dict of maps per stack/stage, ``infer(x)`` the last one.
    """
    config = name if isinstance(name, ModelConfig) else model_config(name, **overrides)
    if isinstance(name, ModelConfig) and overrides:
        config = replace(config, **overrides)
    if config.arch == "hourglass":
        from models.hourglass import HourglassNet

        return HourglassNet(config)
    from models.spm_net import SPMNet

    return SPMNet(config)
