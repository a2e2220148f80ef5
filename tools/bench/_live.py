"""``python -m tools.bench accuracy --live / --per-clip``: accuracy clip by clip, offline and in the live flow.

Each held-out clip (``tools.demo.make_sample``) is scored offline (``engine.Engine`` on every frame, as the
lossless ``posestream video`` flow does: the two agree, docs/benchmarks.md) and, with ``--live``, through the
live flow a user runs: ``posestream run --source CLIP --realtime`` paces the clip at its own rate (30 fps) as a
camera would deliver it, and frames the engine cannot keep up with are dropped. The live records are scored
two ways:

* ``live_miss``: a dropped frame is a frame without poses (every person in it missed);
* ``live_hold``: a dropped frame shows the last published poses, as a subscriber of the live stream holds them
  (their own latency aside).

Figures are pooled over the clips, with each clip's own value, their mean, and the worst clip (PCKh@0.5 where
the layout has a head segment, else OKS AP).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from stream.posefile import PoseRecord, read_pose_file
from tools.bench.accuracy import _seed_text, refiner_name
from tools.bench.common import emit, machine
from tools.demo import clip_intrinsics, headline, make_sample
from tools.evaluate import _intrinsics, _video_frames, evaluate, predict


def hold_last(records: list[PoseRecord], frames: int) -> list[PoseRecord]:
    """One record per frame 0..frames-1: a frame without its own (dropped) gets the latest earlier record's poses;
    frames before the first record get none."""
    by_frame = {r.frame: r for r in records}
    out, last = [], None
    for f in range(frames):
        last = by_frame.get(f, last)
        if last is not None:
            out.append(last if last.frame == f else replace(last, frame=f))
    return out


def run_live(model: str, video: Path, gt_file: Path, workdir: Path, flip_test: bool = False,
             refine3d: bool = True) -> tuple[list, dict]:
    """The clip through ``posestream run --realtime``: (its pose records, the run's closing summary)."""
    poses = workdir / "live.jsonl"
    cmd = [sys.executable, "-m", "stream.cli", "run", "--source", str(video), "--realtime", "--poses", str(poses),
           "--model", model, "--no-progress", "--intrinsics", clip_intrinsics(gt_file)]
    cmd += (["--flip-test"] if flip_test else []) + ([] if refine3d else ["--no-refine3d"])
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"posestream run on {video} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    summary = json.loads(proc.stderr.rsplit("posestream: ", 1)[-1])
    return list(read_pose_file(poses)), summary


def _renumber(records, offset: int):
    return [replace(r, frame=r.frame + offset) for r in records]


def _key_metric(summary: dict) -> tuple[str, float]:
    """The figure a clip is ranked by: PCKh@0.5 where the layout has a head segment, else OKS AP."""
    line = headline(summary)
    return ("pckh@0.5", line["pckh@0.5"]) if "pckh@0.5" in line else ("oks_ap", line["oks_ap"])


def score_clips(model: str, layout: str, seeds: list[int], frames: int, persons: tuple[int, int], workdir: Path,
                live: bool, flip_test: bool = False, log=None, refine3d: bool = True) -> dict:
    """{mode: {"pooled": summary, "clips": {seed: summary}}} for offline and, with ``live``, live_miss / live_hold;
    plus "published": {seed: share of frames the live flow published}."""
    modes = ("offline", "live_miss", "live_hold") if live else ("offline",)
    gts, pooled = [], {m: [] for m in modes}
    out: dict = {m: {"clips": {}} for m in modes}
    out["published"] = {}
    for n, seed in enumerate(seeds):
        clip = workdir / str(seed)
        clip.mkdir(parents=True, exist_ok=True)
        video, gt_file = make_sample(clip, seed, frames, persons, layout)
        gt = list(read_pose_file(gt_file))
        got = {"offline": predict(model, _video_frames(video), _intrinsics(gt), flip_test=flip_test,
                                  refine3d=refine3d)}
        if live:
            records, _summary = run_live(model, video, gt_file, clip, flip_test, refine3d)
            got["live_miss"], got["live_hold"] = records, hold_last(records, len(gt))
            out["published"][seed] = len({r.frame for r in records}) / len(gt)
        gts += _renumber(gt, n * frames)
        for mode in modes:
            out[mode]["clips"][seed] = evaluate(got[mode], gt)
            pooled[mode] += _renumber(got[mode], n * frames)
        if log:
            log(f"clip {seed}: " + ", ".join(f"{m} {_key_metric(out[m]['clips'][seed])[1]:.3f}" for m in modes)
                + (f", live published {out['published'][seed]:.0%}" if live else ""))
    for mode in modes:
        out[mode]["pooled"] = evaluate(pooled[mode], gts)
    return out


def report(results: dict, info: dict) -> None:
    """One JSON line per mode and figure (pooled), with each clip's value, their mean and the worst clip."""
    for mode, result in results.items():
        if mode == "published":
            continue
        pooled, clips = result["pooled"], result["clips"]
        per_clip = {seed: headline(s) for seed, s in clips.items()}
        key = _key_metric(pooled)[0]
        worst = min(clips, key=lambda seed: _key_metric(clips[seed])[1])
        for name, value in headline(pooled).items():
            if name in ("frames", "people"):
                continue
            values = {seed: line[name] for seed, line in per_clip.items() if name in line}
            extra = {"clip_mean": round(sum(values.values()) / len(values), 4), "per_clip": values}
            if name == key:
                extra.update(worst_clip=worst, worst_value=values[worst])
            emit("accuracy", f"{mode}_{name}", value, "mm" if name.endswith("_mm") else "fraction",
                 frames=pooled["frames"], people=pooled["gt_persons"], **extra, **info)
    if results.get("published"):
        shares = results["published"]
        emit("accuracy", "live_published", sum(shares.values()) / len(shares), "fraction",
             per_clip={s: round(v, 4) for s, v in shares.items()}, **info)


def run_clips(args) -> int:
    """The ``--live`` / ``--per-clip`` path of ``tools.bench accuracy`` (its parsed arguments)."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="posestream-acc-") as tmp:
        results = score_clips(args.model, args.layout, args.seeds, args.frames, args.persons, Path(tmp), args.live,
                              args.flip_test, log=lambda text: print(text, file=sys.stderr, flush=True),
                              refine3d=not args.no_refine3d)
    info = dict(model=args.model, layout=args.layout, seeds=_seed_text(args.seeds), flip_test=args.flip_test,
                refine3d=refiner_name(args.model, not args.no_refine3d), machine=machine(),
                load_avg=[round(x, 2) for x in (*load_before[:1], *os.getloadavg()[:1])])
    report(results, info)
    return 0
