"""``python -m tools.bench pipeline [VIDEO]``: end-to-end fps and latency of ``posestream video``.

Runs the real three-process pipeline (capture, engine, renderer over ipc://, lossless) on VIDEO (default:
a 640x480 clip made here with PyAV) and reports, from the pose file it writes: fps between the first and
the last published frame, capture -> publish latency p50/p95/p99, and the wall time of the whole command
(process start-up included).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time

import numpy as np

from tools.bench.common import emit, machine


def make_clip(path: str, frames: int, size: tuple[int, int], fps: int = 30) -> str:
    """A clip with moving shapes (no people: speed does not depend on what the model sees)."""
    import av

    w, h = size
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.full((h, w, 3), 60, np.uint8)
            x = (i * 7) % (w - 80)
            image[h // 3: h // 3 + 160, x: x + 80] = (40, 180, 240)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="input video (default: a generated 640x480 clip)")
    parser.add_argument("--frames", type=int, default=150, help="frames of the generated clip (default 150)")
    parser.add_argument("--size", default="640x480", help="size of the generated clip (default 640x480)")
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--model-args", help="JSON build overrides for random:NAME specs")
    args = parser.parse_args(argv)
    from stream.cli import main as posestream
    from stream.posefile import read_pose_file

    tmp = tempfile.mkdtemp(prefix="posestream-bench-")
    video = args.video
    if video is None:
        w, h = (int(v) for v in args.size.split("x"))
        video = make_clip(os.path.join(tmp, "clip.mp4"), args.frames, (w, h))
    out, poses = os.path.join(tmp, "out.mp4"), os.path.join(tmp, "out.jsonl")
    cmd = ["video", video, "-o", out, "--poses", poses, "--no-progress", "--model", args.model,
           "--backend", args.backend, "--max-batch", str(args.max_batch)]
    cmd += ["--model-args", args.model_args] if args.model_args else []
    t0 = time.perf_counter()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = posestream(cmd)
    wall = time.perf_counter() - t0
    if code != 0:
        print(stderr.getvalue())
        return code
    records = list(read_pose_file(poses))
    publish = np.array([r.capture_ns / 1e6 + r.latency_ms for r in records])
    latency = np.array([r.latency_ms for r in records])
    span_s = (publish.max() - publish.min()) / 1000
    summary = next((json.loads(line.split("posestream: ", 1)[1]) for line in stderr.getvalue().splitlines()
                    if line.startswith("posestream: {")), {})
    extra = {"machine": machine(), "video": os.path.basename(video), "frames": len(records), "model": args.model,
             "backend": args.backend, "omp_threads": os.environ.get("OMP_NUM_THREADS")}
    emit("pipeline", "end-to-end fps", (len(records) - 1) / span_s if span_s > 0 else 0.0, "frames/s", **extra)
    for q in (50, 95, 99):
        emit("pipeline", f"capture->publish latency p{q}", float(np.percentile(latency, q)), "ms", **extra)
    emit("pipeline", "wall time incl. start-up", wall, "s", **extra, summary=summary)
    return 0
