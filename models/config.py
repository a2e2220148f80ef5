"""``ModelConfig``: everything needed to rebuild a network and read its inputs and outputs.

A config is plain data (no torch import) so that manifests, the engine and the benchmarks can use it
cheaply. It is written into every checkpoint and export manifest by :meth:`ModelConfig.to_dict` and read
back by :meth:`ModelConfig.from_dict`, which checks every field and raises ``ValueError`` naming it.

Input convention (docs/interfaces.md): the network takes float32 ``[B, 3, H, W]`` RGB, where each pixel is
``(value_0_255 - mean) / std`` per channel; ``input_size`` is ``(width, height)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from models.layouts import get_layout

ARCHS = ("hourglass", "spm")

# ImageNet statistics in 0-255 pixel units, RGB order.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelConfig:
    """One network: architecture, keypoint layout, input geometry, normalisation and codec.

    Attributes:
        name: the factory name it came from (``hg2``, ``spm_small``...), kept for reports.
        arch: ``"hourglass"`` (heatmaps) or ``"spm"`` (root + displacement + depth maps).
        layout: keypoint layout name (``mpii16``, ``coco17``, ``panoptic19``); sets K.
        input_size: network input ``(width, height)`` in pixels; both multiples of :attr:`size_multiple`.
        mean, std: per-channel RGB normalisation in 0-255 pixel units.
        codec: codec parameters other than ``input_size`` and ``layout`` (which come from this config);
            hourglass: ``HeatmapParams`` fields (``sigma``); spm: ``SPMParams`` fields (``stride``...).
        arch_args: constructor arguments of the network (``width``, ``stacks``, ``depth``, ``stem``...).
    """

    name: str
    arch: str
    layout: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    codec: dict = field(default_factory=dict)
    arch_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model config {self.name!r}: unknown arch {self.arch!r}; known: {', '.join(ARCHS)}")
        get_layout(self.layout)
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"model config {self.name!r}: input_size must be (width, height) > 0, got {self.input_size}")
        m = self.size_multiple
        if size[0] % m or size[1] % m:
            raise ValueError(
                f"model config {self.name!r}: input_size {size} must be multiples of {m} "
                f"(stride 4 x 2^depth {self.arch_args.get('depth', 4)})"
            )
        object.__setattr__(self, "input_size", size)
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"model config {self.name!r}: {name} needs 3 values (RGB), got {value}")
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ValueError(f"model config {self.name!r}: std must be > 0, got {self.std}")

    @property
    def num_joints(self) -> int:
        return get_layout(self.layout).num_joints

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this: stride 4 times 2 per hourglass level."""
        return 4 * 2 ** int(self.arch_args.get("depth", 4))

    @property
    def output_size(self) -> tuple[int, int]:
        """Size ``(w, h)`` of every output map (stride 4)."""
        return self.input_size[0] // 4, self.input_size[1] // 4

    def heatmap_codec(self):
        """The ``HeatmapCodec`` that makes this hourglass's targets and decodes its heatmaps."""
        from models.codecs import HeatmapCodec, HeatmapParams

        if self.arch != "hourglass":
            raise ValueError(f"model config {self.name!r}: arch {self.arch!r} has no heatmap codec")
        return HeatmapCodec(HeatmapParams(input_size=self.input_size, heatmap_size=self.output_size, **self.codec))

    def spm_codec(self):
        """The ``SPMCodec`` that makes this SPM network's targets and decodes its maps."""
        from models.codecs import SPMCodec, SPMParams

        if self.arch != "spm":
            raise ValueError(f"model config {self.name!r}: arch {self.arch!r} has no SPM codec")
        return SPMCodec(SPMParams(input_size=self.input_size, layout=self.layout, **self.codec))

    def codec_params(self) -> dict:
        """The resolved codec parameters (all fields, including the derived ones), for manifests."""
        codec = self.heatmap_codec() if self.arch == "hourglass" else self.spm_codec()
        return {"type": type(codec).__name__, **_plain(asdict(codec.params))}

    def resolved(self) -> ModelConfig:
        """This config with every codec parameter spelled out (so later changes of codec defaults cannot
        change what a saved model means)."""
        derived = {"type", "input_size", "heatmap_size", "layout"}
        return replace(self, codec={k: v for k, v in self.codec_params().items() if k not in derived})

    def to_dict(self) -> dict:
        """JSON-ready form (lists for tuples)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> ModelConfig:
        """Inverse of :meth:`to_dict`; ``source`` names the file in errors."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: field 'config' must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: field 'config' has unknown keys {unknown}")
        missing = sorted({"name", "arch", "layout", "input_size"} - set(data))
        if missing:
            raise ValueError(f"{source}: field 'config' lacks {missing}")
        for key in ("codec", "arch_args"):
            if key in data and not isinstance(data[key], dict):
                raise ValueError(f"{source}: field 'config.{key}' must be an object")
        try:
            return cls(**{**data, "input_size": tuple(data["input_size"])})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: field 'config': {err}") from None


def _plain(value):
    """Tuples -> lists, recursively, so that JSON round trips compare equal."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
