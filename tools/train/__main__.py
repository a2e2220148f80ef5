"""``python -m tools.train``: see :mod:`tools.train.config` for the config file and :mod:`tools.train.loop`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from tools.train.config import TrainConfig, load_config
from tools.train.config import __doc__ as CONFIG_DOC


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.train", description=CONFIG_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="TOML config file (configs/*.toml)")
    p.add_argument("--model", help="model factory name (hg1, hg2_128, spm_small, ...)")
    p.add_argument("--input-size", help="network input WxH, e.g. 128x128")
    p.add_argument("--width", type=int, help="network width (arch_args.width)")
    p.add_argument("--layout", help="keypoint layout (mpii16, coco17, panoptic19)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=("adam", "rmsprop"))
    p.add_argument("--schedule", choices=("plateau", "step"))
    p.add_argument("--train-samples", type=int, help="synthetic images per epoch")
    p.add_argument("--val-samples", type=int, help="synthetic validation images")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (0: in the main process)")
    p.add_argument("--max-steps", type=int, help="cap on optimiser steps per epoch (0: none)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--out", help="output folder for checkpoints and logs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--init", help="start from the tensors of this checkpoint that match by name and shape "
                                  "(fine-tuning; new heads start fresh; a hourglass or SPM with more stacks than the "
                                  "checkpoint starts with copies of its last stack)")
    p.add_argument("--widen", action="store_true", help="with --init: a network built wider than the checkpoint "
                                                        "(a larger --width) starts as the narrower one "
                                                        "(models.checkpoint.widened)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = load_config(args.config) if args.config else TrainConfig()
    flat = {"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "optimizer": args.optimizer, "schedule": args.schedule, "train_samples": args.train_samples,
            "val_samples": args.val_samples, "workers": args.workers, "max_steps": args.max_steps,
            "seed": args.seed, "out": args.out, "init": args.init, "widen": args.widen or None}
    cfg = replace(cfg, **{k: v for k, v in flat.items() if v is not None})
    overrides = dict(cfg.model_overrides)
    if args.input_size:
        w, _, h = args.input_size.lower().partition("x")
        overrides["input_size"] = (int(w), int(h or w))
    if args.width:
        overrides["arch_args"] = {**overrides.get("arch_args", {}), "width": args.width}
    if args.layout:
        overrides["layout"] = args.layout
    cfg = replace(cfg, model_overrides=overrides)
    return replace(cfg, amp=False) if args.no_amp else cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if cfg.refine3d:  # the 3D refiner (models/refine3d.py) instead of an image network
            from tools.train.refine3d import Refine3DTrainer as Trainer
        else:
            from tools.train.loop import Trainer

        Trainer(cfg, device=args.device).fit(resume=args.resume)
    except (ValueError, FileNotFoundError) as err:
        print(f"tools.train: {err}", file=sys.stderr)
        return 2
    return 0



if __name__ == "__main__":
    sys.exit(main())
