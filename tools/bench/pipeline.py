"""``python -m tools.bench pipeline [VIDEO]``: end-to-end fps and latency of ``posestream video``.

Runs the real three-process pipeline (capture, engine, renderer over ipc://, lossless) on VIDEO and reports,
from the pose file it writes: fps between the first and the last published frame, capture -> publish latency
p50/p95/p99, and the wall time of the whole command (process start-up included).

The default VIDEO is the demo's kind of clip, made here by ``tools.synth``: 640x480, 3-5 textured people
in motion (seed 20261123, as ``make demo``). The renderer's encoder and the capture's decoder cost more on
such frames than on flat ones, so this is the honest figure for the product's main job.

``--live`` measures the webcam flow instead: ``posestream run --source VIDEO --realtime`` (frames paced at
the clip's rate as a camera delivers them, newest frame wins) and reports the share of frames published
(the rest dropped to keep latency bounded) and capture -> publish latency, which in this mode is the
time a frame takes through the system rather than time spent queued behind earlier frames. As in the
README's live flow, no video is written unless ``--record`` asks for it (``-o``: the renderer then
encodes every frame too, on the same cores).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.bench.common import emit, machine
from tools.cli import count_range, frame_size
from tools.demo import DEMO_SEED, make_sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="input video (default: a generated clip with people)")
    parser.add_argument("--frames", type=int, default=150, help="frames of the generated clip (default 150)")
    parser.add_argument("--size", type=frame_size, default="640x480", help="size of the generated clip, WxH (default 640x480)")
    parser.add_argument("--persons", type=count_range, default="3-5",
                        help="people in the generated clip, N or MIN-MAX (default 3-5)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"generated clip's seed (default {DEMO_SEED})")
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--model-args", help="JSON build overrides for random:NAME specs")
    parser.add_argument("--live", action="store_true",
                        help="live mode as from a camera: posestream run --realtime (default: posestream video)")
    parser.add_argument("--record", action="store_true", help="with --live: also write the annotated video (-o)")
    parser.add_argument("--smooth", action="store_true", help="posestream --smooth (tracking + One-Euro smoothing)")
    args = parser.parse_args(argv)
    from stream.cli import main as posestream
    from stream.posefile import read_pose_file

    with tempfile.TemporaryDirectory(prefix="posestream-bench-") as tmp:
        video = args.video
        if video is None:
            (w, h), (lo, hi) = args.size, args.persons
            print(f"tools.bench pipeline: making a {args.frames}-frame {w}x{h} clip with {lo}-{hi} people",
                  file=sys.stderr)
            video = str(make_sample(Path(tmp), args.seed, args.frames, args.persons, "panoptic19", args.size)[0])
        out, poses = os.path.join(tmp, "out.mp4"), os.path.join(tmp, "out.jsonl")
        cmd = ["run", "--source", video, "--realtime"] if args.live else ["video", video]
        cmd += ["-o", out] if args.record or not args.live else []
        cmd += ["--poses", poses, "--no-progress", "--model", args.model,
                "--backend", args.backend, "--max-batch", str(args.max_batch)]
        cmd += ["--model-args", args.model_args] if args.model_args else []
        cmd += ["--smooth"] if args.smooth else []
        t0 = time.perf_counter()
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = posestream(cmd)
        wall = time.perf_counter() - t0
        if code != 0:
            print(stderr.getvalue())
            return code
        records = list(read_pose_file(poses))
        if len(records) < 2:
            print(f"tools.bench pipeline: {len(records)} frame(s) published of {video}: too few to time\n"
                  f"{stderr.getvalue()}", file=sys.stderr)
            return 1
        publish = np.array([r.capture_ns / 1e6 + r.latency_ms for r in records])
        latency = np.array([r.latency_ms for r in records])
        span_s = (publish.max() - publish.min()) / 1000
        summary = next((json.loads(line.split("posestream: ", 1)[1]) for line in stderr.getvalue().splitlines()
                        if line.startswith("posestream: {")), {})
        clip = os.path.basename(video) if args.video else f"synth seed {args.seed}, {args.persons[0]}-{args.persons[1]} people"
        extra = {"machine": machine(), "video": clip, "frames": len(records), "model": args.model,
                 "backend": args.backend, "mode": ("live, recording" if args.record else "live") if args.live else "lossless",
                 "smooth": args.smooth, "omp_threads": os.environ.get("OMP_NUM_THREADS")}
        emit("pipeline", "end-to-end fps", (len(records) - 1) / span_s if span_s > 0 else 0.0, "frames/s", **extra)
        if args.live:
            read = summary.get("read") or len(records)
            emit("pipeline", "frames published", len(records) / read, "fraction", read=read, **extra)
        for q in (50, 95, 99):
            emit("pipeline", f"capture->publish latency p{q}", float(np.percentile(latency, q)), "ms", **extra)
        emit("pipeline", "wall time incl. start-up", wall, "s", **extra, summary=summary)
        return 0
