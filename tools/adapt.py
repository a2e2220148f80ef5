"""``posestream adapt SOURCE --base default --name NAME``: make posestream work on your own camera.

Scene-specific distillation (Mullapudi et al., "Online Model Distillation for Efficient Video Inference",
ICCV 2019): a slow, accurate teacher (BlazePose, run per person by ``posestream label``) labels frames of
your footage, and posestream's realtime multi-person network (``--base``) is fine-tuned on them. Four steps,
each shown with its progress:

1. label: ``posestream label`` on frames [``--start``, ``--stop``) of SOURCE, every ``--every``-th frame,
   into ``WORKDIR/labels.jsonl`` (resumable: a second run continues where the first stopped);
2. fine-tune: ``tools.train`` on those labels (tools.data.footage: the teacher's confidences weigh the loss,
   its ignore regions are neither positives nor negatives), mixed with synthetic people, starting from the
   base model, for what is left of ``--budget-min``; the model runs at the camera's own resolution
   (``--input-size``); the last ``--val-fraction`` of the labelled frames, by time, is held out;
3. evaluate: the adapted and the base model against the teacher on that held-out tail (share of the
   teacher's persons found, PCK@0.2 in torso lengths, false detections: ``tools.evaluate --ref``);
4. save: ``NAME.safetensors`` + its manifest (source, frames used, teacher, time taken, figures) in your model
   folder (engine.loading.user_models_dir(): ``$POSESTREAM_MODELS`` or ~/.local/share/posestream/models),
   where ``--model NAME`` finds it: ``posestream run --source webcam:0 --model NAME``.

Exit codes: 0 done, 2 bad input (source, base model, name, teacher), 3 the source ended before any frame
could be labelled, 130 interrupted (the labels so far are kept; run again to continue).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.loading import resolve_model, user_models_dir, zoo_dir
from stream.label import intrinsics_arg
from tools.cli import frame_size
from tools.train.loop import LOSS_WEIGHTS

EXIT_INPUT, EXIT_EARLY, EXIT_INTERRUPTED = 2, 3, 130
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TRAIN_CROP = (256, 192)  # training crops (w, h): the batch's pixels go to people (tools.data.footage)
THRESHOLDS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posestream adapt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="your footage: a video file (or a camera recording) of the scene to adapt to")
    p.add_argument("--name", required=True, help="name of the adapted model (then: --model NAME)")
    p.add_argument("--base", default="default", help="the multi-person model to start from (default: default)")
    p.add_argument("--budget-min", type=float, default=60.0,
                   help="minutes for the whole job: labelling, fine-tuning (what is left), evaluation (default 60)")
    p.add_argument("--teacher", default="auto", choices=("auto", "heavy", "full"),
                   help="BlazePose landmark model (auto: heavy where its weights are installed, else full)")
    p.add_argument("--teacher-python", help="a teacher environment's Python (default: .venv-teacher, made by "
                                            "posestream teacher setup)")
    p.add_argument("--every", type=int, default=1, help="label every N-th frame (default 1)")
    p.add_argument("--start", type=int, default=0, help="first frame used (default 0)")
    p.add_argument("--stop", type=int, help="frames from --stop on are not used (default: to the end)")
    p.add_argument("--input-size", type=frame_size, help="network input WxH (default: the footage's frame size, "
                                                         "its long side at most 960, rounded to the network's multiple)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="the held-out tail of the labelled frames, by time (default 0.15)")
    p.add_argument("--footage-ratio", type=float, default=0.8,
                   help="share of training images from the footage; the rest synthetic people (default 0.8)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (cosine over the budget; default 3e-4)")
    p.add_argument("--workdir", type=Path, help="labels, decoded frames and the training run (default: "
                                                "USER_MODELS/NAME.work; kept for a rerun)")
    p.add_argument("--intrinsics", type=intrinsics_arg, help="camera fx,fy,cx,cy in frame pixels for the teacher's "
                                                              "3D (default: f = frame width, c = frame centre)")
    p.add_argument("--force", action="store_true", help="replace an adapted model of the same name")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def say(text: str) -> None:
    print(f"posestream adapt: {text}", file=sys.stderr, flush=True)


def check_args(args) -> None:
    """ValueError naming the problem with the name, base model, budget or ranges."""
    if not NAME.match(args.name):
        raise ValueError(f"--name {args.name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    if (zoo_dir() / f"{args.name}.safetensors").is_file():
        raise ValueError(f"--name {args.name!r} is a shipped model's name; choose another")
    target = user_models_dir() / f"{args.name}.safetensors"
    if target.is_file() and not args.force:
        raise ValueError(f"{target} exists (an adapted model of that name); --force replaces it")
    if args.budget_min <= 0 or args.every < 1 or args.start < 0 or (args.stop is not None and args.stop <= args.start):
        raise ValueError("--budget-min must be > 0, --every >= 1, 0 <= --start < --stop")
    if not 0.0 < args.val_fraction < 0.5:
        raise ValueError(f"--val-fraction must be in (0, 0.5), got {args.val_fraction}")
    base = resolve_model(args.base)
    if base.kind != "module" or base.config.arch != "spm":
        raise ValueError(f"--base {args.base!r}: adapt fine-tunes a multi-person SPM checkpoint (e.g. default), "
                         f"got a {base.config.arch} {base.kind}")


def adapted_input(frame: tuple[int, int], multiple: int, cap: int = 960) -> tuple[int, int]:
    """The network input (w, h) for frames of size ``frame``: that size, scaled so its long side is at most
    ``cap``, each side rounded to ``multiple``."""
    scale = min(1.0, cap / max(frame))
    return tuple(max(multiple, int(round(v * scale / multiple)) * multiple) for v in frame)


def train_config(args, base, labels: Path, workdir: Path, frame: tuple[int, int], budget_min: float):
    """The tools.train config of the fine-tuning: the base network at the adapted input size, its
    displacement scale kept (crops train it at the base size), footage mixed with synthetic people."""
    from tools.train.config import TrainConfig

    cfg = base.config
    size = tuple(args.input_size) if args.input_size else adapted_input(frame, cfg.size_multiple)
    if size[0] % cfg.size_multiple or size[1] % cfg.size_multiple:
        raise ValueError(f"--input-size {size[0]}x{size[1]}: both sides must be multiples of {cfg.size_multiple}")
    crop = tuple(min(c, v) for c, v in zip(TRAIN_CROP, size))  # people are small in a fixed camera's frame
    codec = {**cfg.codec, "disp_norm": cfg.spm_codec().params.z}
    overrides = {"layout": cfg.layout, "input_size": size, "codec": codec, "arch_args": dict(cfg.arch_args),
                 "mean": cfg.mean, "std": cfg.std}
    recipe = base.manifest.get("provenance", {}).get("train_config", {})
    weights = {k: recipe[k] for k in LOSS_WEIGHTS if k in recipe}  # the base's balance of its losses
    footage = {"video": str(Path(args.source).resolve()), "labels": str(labels), "start": args.start}
    if args.stop is not None:
        footage["stop"] = args.stop
    return TrainConfig(model=cfg.name, model_overrides=overrides, source="footage", footage=[footage],
                       footage_ratio=args.footage_ratio, val_fraction=args.val_fraction, val_gap=10, train_size=crop,
                       train_samples=512, batch_size=16, workers=1, synth_size=(640, 480), persons=(1, 6),
                       optimizer="adam", lr=args.lr, grad_clip=5.0, epochs=100_000, budget_min=budget_min, amp=False,
                       seed=1, init=str(base.path), out=str(workdir / "train"), tensorboard=False,
                       augment={"occluder_prob": 0.2}, **weights)


def predict_tail(spec: str, source: str, frames: list[int], intrinsics) -> tuple[list, float]:
    """``spec``'s records on the frames ``frames`` of ``source`` (one engine call per frame, as live) and its
    engine's frames per second on them."""
    from engine import Engine
    from stream.posefile import PoseRecord
    from tools.evaluate import _video_subset

    images = list(_video_subset(Path(source), set(frames)))
    with Engine(spec, max_batch=1) as engine:
        engine.infer(images[:1])  # warm-up (and the ONNX export of a checkpoint)
        t0 = time.perf_counter()
        poses = [engine.infer([im], intrinsics=[intrinsics])[0] for im in images]
        fps = len(images) / (time.perf_counter() - t0)
    return [PoseRecord("adapt", n, p.layout, p) for n, p in zip(frames, poses)], fps


def above(records: list, threshold: float) -> list:
    """The records with only the persons whose person_score is >= ``threshold``."""
    out = []
    for r in records:
        keep = r.poses.person_score >= threshold
        p = r.poses
        poses = type(p)(layout=p.layout, xy=p.xy[keep], score=p.score[keep], person_score=p.person_score[keep],
                        track_id=p.track_id[keep], xyz=None if p.xyz is None else p.xyz[keep])
        out.append(replace(r, poses=poses))
    return out


def calibrate(records: list, labels, frames: list[int], grid=THRESHOLDS) -> tuple[float, dict]:
    """The person_score threshold of ``grid`` with the best quality on the labelled ``frames``, and its figures.

    Quality is panoptic quality's product (Kirillov et al., CVPR 2019: recognition x segmentation quality) with
    PCK for the second: F1 of persons (found against 1 - false) times PCK@0.2 of the found ones. F1 alone keeps
    the doubtful, poorly placed persons whenever they are a little more often right than wrong."""
    from tools.evaluate import evaluate_against_teacher

    best = None
    for t in grid:
        r = evaluate_against_teacher(above(records, t), labels, records[0].layout, frames[0], frames[-1] + 1)
        precision, recall = 1.0 - r["false"], r["found"]
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        quality = f1 * (r["pck@0.2"] if r["pck@0.2"] == r["pck@0.2"] else 0.0)  # NaN when nobody was found
        if best is None or quality > best[0]:
            best = (quality, t, r)
    return best[1], best[2]


def save(best: Path, name: str, provenance: dict, codec: dict, base=None) -> Path:
    """The adapted checkpoint as ``user_models_dir()/NAME`` (float16 weights, manifest with provenance), its
    decoding parameters updated with ``codec`` (e.g. the calibrated person_threshold). Where the ``base`` model
    (engine.loading.resolve_model's) names a 3D refiner, the adapted model gets a copy beside it: fine-tuning
    keeps the base's 3D head, so its refiner still applies."""
    from models.checkpoint import load_checkpoint, read_manifest, save_checkpoint
    from models.refine3d import attach, named_refine3d

    model = load_checkpoint(best)
    model.config = replace(model.config, codec={**model.config.codec, **codec})
    prov = {**read_manifest(best).get("provenance", {}), **provenance}
    folder = user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.safetensors"
    save_checkpoint(model, target, prov, dtype="float16")
    refiner = named_refine3d(base.path, base.manifest) if base is not None and base.path and base.manifest else None
    if refiner is not None:
        attach(target, refiner, {"adapted_model": name})
    load_checkpoint(target)  # it loads back
    return target


def run(args) -> int:
    t0 = time.monotonic()
    from stream.label import LabelConfig, LabelError, label_video

    base = resolve_model(args.base)
    workdir = args.workdir or user_models_dir() / f"{args.name}.work"
    workdir.mkdir(parents=True, exist_ok=True)
    labels = workdir / "labels.jsonl"
    say(f"1/4 labelling {args.source} frames {args.start}-{args.stop if args.stop is not None else 'end'} with the "
        f"teacher into {labels}")
    config = LabelConfig(teacher=args.teacher, every=args.every, start=args.start, stop=args.stop,
                         intrinsics=args.intrinsics, python=args.teacher_python, progress=not args.no_progress)
    try:
        summary = label_video(args.source, labels, config)
    except LabelError as err:
        raise ValueError(str(err)) from None
    if summary.exit_code not in (0, EXIT_EARLY):
        say(f"labelling stopped ({summary.error or 'interrupted'}); the labels so far are kept in {labels}")
        return summary.exit_code
    say(f"labelled {summary.labelled} frames ({summary.resumed} already done), {summary.persons} persons, "
        f"{summary.seconds / 60:.1f} min")
    label_min = (time.monotonic() - t0) / 60.0
    from tools.data.footage import read_labels, split_tail

    refs = read_labels(labels)
    frame = tuple(refs.header.get("frame_size") or ())
    used = [f.frame for f in refs.frames if f.frame >= args.start and (args.stop is None or f.frame < args.stop)]
    _, tail = split_tail(used, args.val_fraction, 10)
    reserve = 0.5 + 0.02 * len(tail)  # minutes for the evaluation and the save
    train_min = args.budget_min - label_min - reserve
    if train_min < 0.5:
        raise ValueError(f"labelling took {label_min:.1f} of the {args.budget_min:g} budget minutes: no time "
                         "left to fine-tune (raise --budget-min, or label fewer frames with --every / --stop)")
    cfg = train_config(args, base, labels, workdir, frame, train_min)
    say(f"2/4 fine-tuning {args.base} at {cfg.model_overrides['input_size'][0]}x{cfg.model_overrides['input_size'][1]} "
        f"on {len(used) - len(tail)} labelled frames (+ synthetic people) for {train_min:.1f} min")
    from tools.train.loop import Trainer

    shutil.rmtree(workdir / "train", ignore_errors=True)
    trainer = Trainer(cfg, device="cpu")
    rows = trainer.fit()
    best = workdir / "train" / "best.safetensors"
    say(f"3/4 evaluating against the teacher on the held-out tail: frames {tail[0]}-{tail[-1]} ({len(tail)})")
    from tools.evaluate import evaluate_against_teacher

    adapted, fps = predict_tail(str(best), args.source, tail, refs.intrinsics)
    threshold, adapted_figures = calibrate(adapted, refs, tail)
    base_records, base_fps = predict_tail(args.base, args.source, tail, refs.intrinsics)
    figures = {"adapted": {**adapted_figures, "person_threshold": threshold, "engine_fps": round(fps, 2)},
               "base": {**evaluate_against_teacher(base_records, refs, base.config.layout, tail[0], tail[-1] + 1),
                        "engine_fps": round(base_fps, 2)}}
    minutes = (time.monotonic() - t0) / 60.0
    provenance = {"data": "footage", "adapt": {
        "source": str(Path(args.source).resolve()), "base": args.base, "teacher": refs.teacher,
        "frames": {"range": [args.start, args.stop], "labelled": len(used), "trained_on": len(used) - len(tail),
                   "held_out": [tail[0], tail[-1]], "every": args.every},
        "labelled_persons": int(sum(len(f.xy) for f in refs.frames)), "epochs": len(rows),
        "minutes": {"labelling": round(label_min, 2), "fine_tuning": round(sum(r["seconds"] for r in rows) / 60, 2),
                    "total": round(minutes, 2), "budget": args.budget_min},
        "held_out_vs_teacher": figures}}
    target = save(best, args.name, provenance, {"person_threshold": threshold}, base)
    say(f"4/4 saved {target} in {minutes:.1f} min; run it with: posestream run --source webcam:0 --model {args.name}")
    print(json.dumps({"model": args.name, "path": str(target), "minutes": round(minutes, 2), **figures},
                     default=_json))
    return 0


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        return run(args)
    except ValueError as err:
        say(str(err))
        return EXIT_INPUT
    except KeyboardInterrupt:
        say("interrupted; the labels so far are kept: run the same command again to continue")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
