"""``python -m tools.ship_zoo RUN/best.safetensors --name NAME``: copy a trained checkpoint into the model zoo.

Writes ``models/zoo/NAME.safetensors`` (float16 by default: half the bytes, and the engine computes in float32)
and its manifest, keeping the run's provenance and adding ``--note`` facts (config file, seeds, time taken,
held-out accuracy). ``--codec KEY=VALUE`` changes a decoding parameter (e.g. ``root_threshold=0.3``) chosen
on validation clips, never on the held-out test clips; ``heatmap_sigma=0`` ships an SPM without its joint
heatmap head (decoding by displacements alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from models.checkpoint import load_checkpoint, load_matching, read_manifest, save_checkpoint
from models.factory import build_model
from tools.cli import key_value

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.ship_zoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a trained .safetensors checkpoint with its manifest")
    p.add_argument("--name", required=True, help="zoo name (default = the pipeline's default model)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--codec", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override a codec parameter (JSON value), e.g. root_threshold=0.3")
    p.add_argument("--note", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help='provenance fact (JSON value), e.g. \'training="configs/zoo_default.toml, 52 min"\'')
    args = p.parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint)
        provenance = dict(read_manifest(args.checkpoint).get("provenance", {}))
    except ValueError as err:
        print(f"tools.ship_zoo: {err}", file=sys.stderr)
        return 2
    if args.codec:  # rebuilt from the new config: heatmap_sigma=0 drops an SPM's heatmap head, for instance
        config = dataclasses.replace(model.config, codec={**model.config.codec, **dict(args.codec)})
        try:
            model = build_model(config).eval()
            fresh = load_matching(model, args.checkpoint)
        except ValueError as err:
            print(f"tools.ship_zoo: --codec: {err}", file=sys.stderr)
            return 2
        if fresh:
            print(f"tools.ship_zoo: --codec: the checkpoint lacks tensors the new config needs: {fresh}", file=sys.stderr)
            return 2
    provenance.update(dict(args.note))
    provenance["source_checkpoint"] = Path(args.checkpoint).as_posix()
    ZOO.mkdir(parents=True, exist_ok=True)
    target = ZOO / f"{args.name}.safetensors"
    manifest = save_checkpoint(model, target, provenance, dtype=args.dtype)
    load_checkpoint(target)  # the shipped files load back
    print(f"tools.ship_zoo: wrote {target} ({target.stat().st_size} bytes) and {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
