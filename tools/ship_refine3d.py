"""``python -m tools.ship_refine3d RUN/best.safetensors --model default``: give a model its 3D refiner.

The refiner (trained by ``python -m tools.train --config configs/refine3d_default.toml``) is written beside the
model as ``MODEL.refine3d.safetensors`` + ``.json`` (float16 by default: half the bytes; the engine computes in
float32), keeping its training provenance and adding ``--note`` facts, and the model's manifest names it (field
``refine3d``: file and sha256). The model's own weights are not touched. ``--model`` is a zoo name or a
checkpoint / ONNX / TensorRT file with its manifest: a model fine-tuned from the default (``posestream
adapt``) keeps the default's 3D head, so the default's refiner carries over with::

    python -m tools.ship_refine3d models/zoo/default.refine3d.safetensors --model PATH/adapted.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.checkpoint import manifest_path
from tools.cli import key_value


def model_file(spec: str) -> Path:
    """A zoo name or a model file -> the model file (its manifest beside it)."""
    from engine.loading import zoo_dir

    path = Path(spec)
    if path.suffix.lower() in (".safetensors", ".onnx", ".engine", ".plan"):
        return path
    return zoo_dir() / f"{spec}.safetensors"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.ship_refine3d", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("refiner", help="a trained refiner .safetensors with its manifest")
    p.add_argument("--model", required=True, help="zoo name or model file (.safetensors, .onnx, .engine)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--note", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="provenance fact (JSON value), e.g. 'recipe=\"configs/refine3d_default.toml\"'")
    args = p.parse_args(argv)
    from models.checkpoint import read_manifest
    from models.refine3d import attach, load_refine3d, named_refine3d

    target = model_file(args.model)
    try:
        if not target.is_file():
            raise ValueError(f"model {args.model!r}: {target} not found")
        notes = {**dict(args.note), "source_checkpoint": Path(args.refiner).as_posix()}
        path = attach(target, args.refiner, notes, args.dtype)
        named = named_refine3d(target, read_manifest(target))  # the model names it, and it loads back
        load_refine3d(named)
    except ValueError as err:
        print(f"tools.ship_refine3d: {err}", file=sys.stderr)
        return 2
    print(f"tools.ship_refine3d: wrote {path} ({path.stat().st_size} bytes) and {manifest_path(path)}; "
          f"{manifest_path(target)} names it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
