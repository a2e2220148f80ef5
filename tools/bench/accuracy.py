"""``python -m tools.bench accuracy``: accuracy of a model on held-out synthetic clips, offline and live.

For each seed, a clip is generated (``tools.demo.make_sample``: 640x480, the model's layout) and scored
against its exact ground truth twice: **offline** (``engine.Engine`` on the decoded frames, the clip's
intrinsics given) and **through the pipeline** (``posestream video --intrinsics ...``: capture, engine and
renderer processes, lossless). Both are pooled over all seeds. Figures: OKS AP, MPJPE (root-relative, mm),
PA-MPJPE (Procrustes-aligned, mm) and 3D PCK@150 mm for 3D models, PCKh@0.5 for layouts with a head segment,
joint F1 (10 px). A model whose manifest names a 3D refiner runs with it (each record's ``refine3d`` names it);
``--no-refine3d`` scores the first stage's own 3D.

``--protocol crops`` (hourglass models) is the MPII protocol instead: each person of single images is cut
out with its ground-truth box (the validation crop of tools.data.augment: square, margin 0.2) and PCKh@0.5
is computed on the network's DARK-decoded keypoints; ``--seeds A-B`` gives a range of image seeds.

Seeds must be held out: training draws its seeds from 10**10 upwards (tools/train/loop.py).

``--ref LABELS --video FILE [--start A --stop B]`` scores against a teacher's labels instead (``posestream label``;
tools.evaluate --ref: share of the teacher's persons found, PCK@0.2 in torso lengths, false detections), each
``--model`` offline and through the pipeline (``posestream video`` on the excerpt [A, B) of FILE, copied without
re-encoding loss), and, with ``--teacher-fps``, times the teacher pipeline itself (``posestream label`` on the
same excerpt) so that the speed ratio comes from one run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from stream.posefile import read_pose_file
from tools.bench.common import emit, machine
from tools.cli import count_range, seed_list
from tools.demo import clip_intrinsics, headline, make_sample
from tools.evaluate import _intrinsics, _video_frames, evaluate, predict


def _renumber(records, offset: int):
    return [replace(r, frame=r.frame + offset) for r in records]


def run(model: str, layout: str, seeds: list[int], frames: int, persons: tuple[int, int], workdir: Path,
        flip_test: bool = False, refine3d: bool = True):
    """(offline summary, pipeline summary) pooled over the seeds' clips; ``refine3d=False`` skips the 3D
    refiner the model's manifest names."""
    gts, offline, live = [], [], []
    for n, seed in enumerate(seeds):
        clip = workdir / str(seed)
        clip.mkdir(parents=True, exist_ok=True)
        video, gt_file = make_sample(clip, seed, frames, persons, layout)
        gt = list(read_pose_file(gt_file))
        offset = n * frames
        gts += _renumber(gt, offset)
        offline += _renumber(predict(model, _video_frames(video), _intrinsics(gt), flip_test=flip_test,
                                     refine3d=refine3d), offset)
        poses = clip / "poses.jsonl"
        cmd = [sys.executable, "-m", "stream.cli", "video", str(video), "-o", str(clip / "out.mp4"), "--poses",
               str(poses), "--model", model, "--no-progress", "--intrinsics", clip_intrinsics(gt_file)]
        cmd += ["--flip-test"] if flip_test else []
        cmd += [] if refine3d else ["--no-refine3d"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        live += _renumber(list(read_pose_file(poses)), offset)
    return evaluate(offline, gts), evaluate(live, gts)


def cut_video(src: Path, dst: Path, start: int, stop: int | None) -> int:
    """Frames [start, stop) of ``src`` (numbered as posestream's capture numbers them) into ``dst``, encoded
    losslessly from the decoded YUV (H.264 qp 0, the source's rate): the excerpt decodes to the same pixels.
    Returns the frame count."""
    import av

    count = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream_in = inp.streams.video[0]
        rate = stream_in.average_rate or stream_in.guessed_rate or 30
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for number, frame in enumerate(inp.decode(stream_in)):
            if stop is not None and number >= stop:
                break
            if number >= start:
                frame = frame.reformat(format="yuv420p")
                frame.pts = None
                for packet in stream.encode(frame):
                    out.mux(packet)
                count += 1
        for packet in stream.encode():
            out.mux(packet)
    return count


def _timed(cmd: list[str]) -> float:
    """Wall seconds of a command that must succeed."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def teacher_run(args, workdir: Path) -> None:
    """Each --model against the teacher's labels, offline and through the pipeline; the teacher's own fps."""
    from tools.data.footage import read_labels
    from tools.evaluate import _video_subset, evaluate_against_teacher

    labels = read_labels(args.ref)
    frames = [f.frame for f in labels.frames if f.frame >= args.start and (args.stop is None or f.frame < args.stop)]
    if not frames:
        raise SystemExit(f"tools.bench accuracy: {args.ref} has no labelled frame in [{args.start}, {args.stop})")
    clip = workdir / "excerpt.mp4"
    count = cut_video(args.video, clip, args.start, args.stop)
    info = dict(video=str(args.video), frames=f"{args.start}-{args.start + count - 1}", teacher=labels.teacher,
                flip_test=args.flip_test, machine=machine())
    for model in args.models:
        info["refine3d"] = refiner_name(model, not args.no_refine3d)
        offline = predict(model, _video_subset(args.video, set(frames)), [labels.intrinsics] * len(frames),
                          flip_test=args.flip_test, refine3d=not args.no_refine3d)
        for record, number in zip(offline, frames):
            record.frame = number
        poses = workdir / f"{Path(model).stem}.jsonl"
        cmd = [sys.executable, "-m", "stream.cli", "video", str(clip), "-o", str(workdir / "out.mp4"), "--poses",
               str(poses), "--model", model, "--no-progress"] + (["--flip-test"] if args.flip_test else []) \
            + (["--no-refine3d"] if args.no_refine3d else [])
        if labels.intrinsics:
            cmd += ["--intrinsics", ",".join(f"{v:g}" for v in labels.intrinsics)]
        seconds = _timed(cmd)
        piped = _renumber(list(read_pose_file(poses)), args.start)
        for where, preds in (("offline", offline), ("pipeline", piped)):
            r = evaluate_against_teacher(preds, labels, preds[0].layout, args.start, args.stop)
            for key in ("found", "pck@0.2", "pck@0.2_all", "false"):
                emit("accuracy", f"{where}_{key}", r[key], "fraction", model=model, people=r["teacher_persons"],
                     predicted=r["predicted_persons"], **info)
        emit("accuracy", "pipeline_fps", count / seconds, "frames/s", model=model,
             note="posestream video wall time, start-up included", **info)
    if args.teacher_fps:
        seconds = _timed([sys.executable, "-m", "stream.cli", "label", str(clip), "-o", str(workdir / "t.jsonl"),
                          "--teacher", labels.teacher.removeprefix("blazepose_"), "--no-progress"])
        emit("accuracy", "teacher_fps", count / seconds, "frames/s", note="posestream label wall time, start-up "
             "included", **info)


def refiner_name(model: str, enabled: bool = True) -> str | None:
    """The file name of the 3D refiner the model runs with (its manifest's), or None."""
    if not enabled:
        return None
    from engine.loading import resolve_model
    from models.refine3d import named_refine3d

    loaded = resolve_model(model)
    path = named_refine3d(loaded.path, loaded.manifest) if loaded.path is not None and loaded.manifest else None
    return None if path is None else path.name


def crops_pckh(model: str, seeds: list[int], persons: tuple[int, int], flip_test: bool = False) -> dict:
    """PCKh@0.5 on GT-box crops: ``mpii`` (without pelvis and thorax, as in MPII tables), ``all`` joints,
    ``visible`` and ``occluded`` joints apart, ``per_joint`` {name: value}, and the number of ``crops``."""
    import numpy as np
    import torch

    from engine.loading import resolve_model
    from engine.postprocess import PostProcessor
    from tools.data.augment import AugmentParams
    from tools.data.dataset import Targets, synthetic_sample
    from tools.metrics import pckh

    module = resolve_model(model).module
    config = module.config
    targets = Targets(config, AugmentParams(input_size=config.input_size, train=False), max_persons=8)
    codec = config.heatmap_codec()
    post = PostProcessor(config)
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    preds, gts, vis, heads = [], [], [], []
    for seed in seeds:
        sample, image = synthetic_sample(seed, config.layout, (640, 480), persons)
        for item in targets(sample, image, np.random.default_rng(seed)):
            x = (item["image"].flip(-1).permute(2, 0, 1)[None].float() - mean) / std
            with torch.inference_mode():
                out = module.infer(x)
                if flip_test:
                    out = post.merge_flipped(out, module.infer(x.flip(-1)))
                xy, _ = codec.decode(out["heatmaps"].float(), method="dark")
            preds.append(xy[0].numpy())
            gts.append(item["keypoints"].numpy())
            vis.append(item["vis"].numpy())
            heads.append(float(item["head_size"]))
    p, g, v, h = np.stack(preds), np.stack(gts), np.stack(vis), np.array(heads)  # v: 2 visible, 1 occluded
    names = targets.layout.names
    keep = [j for j, n in enumerate(names) if n not in ("pelvis", "thorax")]
    per_joint, every = pckh(p, g, v > 0, h)
    return {"mpii": float(pckh(p[:, keep], g[:, keep], v[:, keep] > 0, h)[1]), "all": float(every),
            "visible": float(pckh(p, g, v == 2, h)[1]), "occluded": float(pckh(p, g, v == 1, h)[1]),
            "occluded_share": float((v == 1).sum() / max(1, (v > 0).sum())),
            "per_joint": {n: round(float(x), 4) for n, x in zip(names, per_joint)}, "crops": len(p)}


def _seed_text(seeds: list[int]) -> str:
    """For the records: ``A-B`` for consecutive seeds, else ``A,B,C``."""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="model spec (default: default; repeatable with --ref)")
    p.add_argument("--layout", default="panoptic19", help="ground truth layout: the model's (default panoptic19)")
    p.add_argument("--seeds", type=seed_list, default="31,32,33",
                   help="held-out clip seeds, A,B,C or A-B (default 31,32,33)")
    p.add_argument("--frames", type=int, default=100, help="frames per clip (default 100)")
    p.add_argument("--persons", type=count_range, default="2-5", help="people per clip, N or MIN-MAX (default 2-5)")
    p.add_argument("--protocol", choices=("clips", "crops"), default="clips",
                   help="clips: whole clips offline and through the pipeline; crops: hourglass on GT-box crops")
    p.add_argument("--flip-test", action="store_true", help="test-time flip (Engine flip_test; --flip-test in the pipeline)")
    p.add_argument("--live", action="store_true",
                   help="clips: also run each clip through the live flow (posestream run --realtime: the clip's own "
                        "rate, frames the engine cannot keep up with dropped) and score it with a dropped frame as a "
                        "miss and as holding the last published poses (tools/bench/_live.py); skips the lossless "
                        "pipeline pass (it equals offline)")
    p.add_argument("--per-clip", action="store_true",
                   help="clips: also score each clip apart and report the worst one (offline; with --live, live too)")
    p.add_argument("--ref", type=Path, help="a teacher's labels as the reference (needs --video); --model repeatable")
    p.add_argument("--video", type=Path, help="--ref: the labelled video")
    p.add_argument("--start", type=int, default=0, help="--ref: first frame scored (default 0)")
    p.add_argument("--stop", type=int, help="--ref: frames from here on are not scored")
    p.add_argument("--teacher-fps", action="store_true", help="--ref: also time the teacher pipeline on the excerpt")
    p.add_argument("--no-refine3d", action="store_true",
                   help="without the 3D refiner the model's manifest names (the first stage's own 3D; offline, "
                     "through the pipeline, --live and --ref alike)")
    args = p.parse_args(argv)
    args.models, args.model = args.model or ["default"], (args.model or ["default"])[0]
    if args.ref is not None:
        if args.video is None:
            raise SystemExit("tools.bench accuracy: --ref needs --video")
        with tempfile.TemporaryDirectory(prefix="posestream-acc-") as tmp:
            teacher_run(args, Path(tmp))
        return 0
    if args.protocol == "clips" and (args.live or args.per_clip):
        from tools.bench._live import run_clips

        return run_clips(args)
    seeds, persons = args.seeds, args.persons
    if args.protocol == "crops":
        r = crops_pckh(args.model, seeds, persons, args.flip_test)
        info = dict(model=args.model, seeds=_seed_text(seeds), crops=r["crops"], flip_test=args.flip_test, machine=machine())
        emit("accuracy", "crops_pckh@0.5", r["mpii"], "fraction", **info)
        emit("accuracy", "crops_pckh@0.5_all", r["all"], "fraction", per_joint=r["per_joint"], **info)
        emit("accuracy", "crops_pckh@0.5_visible", r["visible"], "fraction", **info)
        emit("accuracy", "crops_pckh@0.5_occluded", r["occluded"], "fraction", share=round(r["occluded_share"], 4),
             **info)
        return 0
    refine3d = refiner_name(args.model, not args.no_refine3d)
    with tempfile.TemporaryDirectory(prefix="posestream-acc-") as tmp:
        results = run(args.model, args.layout, seeds, args.frames, persons, Path(tmp), args.flip_test,
                      not args.no_refine3d)
    for where, summary in zip(("offline", "pipeline"), results):
        for key, value in headline(summary).items():
            if key not in ("frames", "people"):
                emit("accuracy", f"{where}_{key}", value, "mm" if key.endswith("_mm") else "fraction",
                     model=args.model, layout=args.layout, seeds=seeds, frames=summary["frames"],
                     people=summary["gt_persons"], flip_test=args.flip_test, refine3d=refine3d,
                     machine=machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
