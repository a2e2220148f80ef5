"""Training configuration: ``TrainConfig`` and its TOML file form.

``python -m tools.train --config FILE.toml [flags]`` trains an hourglass or SPM network.

Data: synthetic people generated on the fly (default), shard files (``tools.data.shards``), or labelled footage
(``source = "footage"``: videos with a teacher's labels from ``posestream label``, mixed with synthetic people;
see ``tools.data.footage``). Losses: the
weighted MSE of pose-facts.md for heatmaps (weight ``foreground_weight`` = 82 where the target is > 0, 1
elsewhere; per stack, summed over stacks, averaged over the batch: intermediate supervision); SPM: L2 on the
root map + masked L1 on displacements + masked L1 on depths, at every stage. Adam or RMSprop; plateau or
step schedules on the validation metric; AMP on CUDA; gradient clipping; a checkpoint every epoch
(``last.safetensors``) and the best by the validation metric (``best.safetensors``; PCKh@0.5 for layouts
with a head segment, else the validation loss), each with its manifest; ``--resume`` continues from
``last`` (optimizer and schedule kept in ``last_state.safetensors`` + ``last_state.json``: no pickle); a tqdm bar with
loss and samples/s; ``log.csv`` (and TensorBoard when installed). Under ``torchrun`` it trains with DDP.

Config file sections (every key optional; flags override): [model] name, input_size, layout, arch_args, codec;
[data] source ("synth"|"shards"), train_samples, val_samples, synth_size, persons, shards, val_shards,
batch_size, workers, shuffle_buffer, val_seed (the synthetic validation images' seed, default: seed; keep it
while changing seed to train on fresh images against the same validation set); for footage: footage (an array
of tables {video, labels, start, stop}: frames [start, stop) of each video), footage_ratio (share of training
items taken from the footage, the rest synthetic; default 0.75), val_fraction (the held-out tail of each
video's labelled frames, by time; default 0.15), val_gap (frames left out between training and that tail;
default 10), train_size ([w, h] training crops; default the input size), footage_side (frame pixels per input
pixel at which the model sees the footage; 0: as the engine letterboxes the frame into the input size),
min_conf (teacher confidence from which a joint is labelled; default 0.5); [augment] AugmentParams fields;
[optim] optimizer, lr, weight_decay, momentum, schedule, factor, patience, step_size, epochs, grad_clip, amp, seed,
foreground_weight, root_weight, disp_weight, depth_weight, heatmap_weight, max_steps, budget_min (> 0: train for
this many minutes of wall time, the learning rate falling from lr to 0 on a cosine of the time spent, then
stop; the schedule setting is then unused), init (a checkpoint whose
matching tensors start the run: fine-tuning, a grown head, or a network grown by stacks:
models.hourglass.grow_stacks), widen (with init: a network built wider than the checkpoint starts as the narrower
one: models.checkpoint.widened); [output] dir, tensorboard; [refine3d] (its presence trains the 3D refiner of
models/refine3d.py instead of an image network, on the first stage's predictions: tools/train/refine3d.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

SECTIONS = {
    "model": {"name": "model", "input_size": None, "layout": None, "arch_args": None, "codec": None},
    "data": ("source", "train_samples", "val_samples", "synth_size", "persons", "shards", "val_shards",
             "batch_size", "workers", "shuffle_buffer", "val_seed", "footage", "footage_ratio", "val_fraction",
             "val_gap", "train_size", "footage_side", "min_conf"),
    "optim": ("optimizer", "lr", "weight_decay", "momentum", "schedule", "factor", "patience", "step_size",
              "epochs", "grad_clip", "amp", "seed", "foreground_weight", "root_weight", "disp_weight", "depth_weight",
              "heatmap_weight", "max_steps", "budget_min", "init", "widen"),
    "output": {"dir": "out", "tensorboard": "tensorboard"},
}


@dataclass
class TrainConfig:
    """Everything a training run needs (see the module docstring for the TOML layout)."""

    model: str = "hg1"
    model_overrides: dict = field(default_factory=dict)
    source: str = "synth"
    train_samples: int = 2000
    val_samples: int = 200
    synth_size: tuple[int, int] = (320, 240)
    persons: tuple[int, int] = (1, 3)
    shards: list = field(default_factory=list)
    val_shards: list = field(default_factory=list)
    batch_size: int = 16
    workers: int = 2
    shuffle_buffer: int = 256
    val_seed: int | None = None
    footage: list = field(default_factory=list)
    footage_ratio: float = 0.75
    val_fraction: float = 0.15
    val_gap: int = 10
    train_size: tuple[int, int] | None = None
    footage_side: float = 0.0
    min_conf: float = 0.5
    augment: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 7e-4
    weight_decay: float = 0.0
    momentum: float = 0.0
    schedule: str = "plateau"
    factor: float = 0.1
    patience: int = 10
    step_size: int = 30
    epochs: int = 50
    grad_clip: float = 0.0
    amp: bool = True
    seed: int = 0
    foreground_weight: float = 82.0
    root_weight: float = 10.0
    disp_weight: float = 1.0
    depth_weight: float = 1.0
    heatmap_weight: float = 1.0
    max_steps: int = 0
    budget_min: float = 0.0
    init: str = ""
    widen: bool = False
    out: str = "runs/train"
    tensorboard: bool = True
    refine3d: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {"source": ("synth", "shards", "footage"), "optimizer": ("adam", "rmsprop"),
                  "schedule": ("plateau", "step")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"train config: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.source == "shards" and not (self.shards and self.val_shards):
            raise ValueError("train config: source 'shards' needs data.shards and data.val_shards")
        if self.source == "footage":
            if not self.footage:
                raise ValueError("train config: source 'footage' needs data.footage (tables with video and labels)")
            for i, item in enumerate(self.footage):
                unknown = set(item) - {"video", "labels", "start", "stop"}
                if not isinstance(item, dict) or not {"video", "labels"} <= set(item) or unknown:
                    raise ValueError(f"train config: data.footage[{i}] must have video and labels (and optionally "
                                     f"start, stop), got {item!r}")
            if not 0.0 <= self.footage_ratio <= 1.0:
                raise ValueError(f"train config: footage_ratio must be in [0, 1], got {self.footage_ratio}")
        if self.budget_min < 0:
            raise ValueError(f"train config: budget_min must be >= 0, got {self.budget_min}")
        if self.widen and not self.init:
            raise ValueError("train config: widen needs init (the narrower checkpoint)")
        for name in ("batch_size", "epochs", "train_samples", "val_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"train config: {name} must be >= 1, got {getattr(self, name)}")


def load_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a TOML file; unknown sections or keys raise ValueError naming them."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None
    values: dict = {"model_overrides": {}}
    for section, table in data.items():
        if section in ("augment", "refine3d"):
            values[section] = dict(table)
            continue
        if section not in SECTIONS or not isinstance(table, dict):
            raise ValueError(f"{path}: unknown section [{section}]; known: "
                             f"{', '.join([*SECTIONS, 'augment', 'refine3d'])}")
        keys = SECTIONS[section]
        for key, value in table.items():
            if key not in keys:
                raise ValueError(f"{path}: unknown key {key!r} in [{section}]")
            target = keys[key] if isinstance(keys, dict) else key
            if target is None:
                values["model_overrides"][key] = tuple(value) if key == "input_size" else value
            else:
                values[target] = tuple(value) if target in ("synth_size", "persons", "train_size") else value
    return TrainConfig(**values)


def config_fields() -> list[str]:
    """Names of the TrainConfig fields (for documentation and tests)."""
    return [f.name for f in fields(TrainConfig)]

