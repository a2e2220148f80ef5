"""``python -m tools.bench chaos``: lossless streaming under SIGKILL: 0 frames lost, 0 duplicated?

Runs ``posestream serve``, one ``posestream render --resume`` per stream and one ``posestream capture --lossless``
per stream as separate processes (3 streams of 1280x720 by default, one each with shared memory, raw pixels over
ipc and JPEG... JPEG is lossy in pixels, not in frames or timestamps). While the streams run it SIGKILLs the
engine ``--engine-kills`` times and a random renderer ``--render-kills`` times, at random points of the run, and
starts each again (the engine after 0.5-2 s). Afterwards it checks every stream: the pose file holds each input
frame exactly once, in order, with the input's pts; the annotated video decodes to the input's timestamps; every
capture and renderer exited 0; no partial file is left. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.bench.common import emit, machine
from tools.bench.fuzz import MODEL_CLI

TRANSPORTS = (["--shm"], [], ["--jpeg", "90"])


def make_clip(path: Path, frames: int, size: tuple[int, int], fps: int, seed: int) -> list[int]:
    """A clip of moving squares on noise (so the encoder works as on real footage); returns its pts."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 60, (h, w, 3), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast"}
        for i in range(frames):
            image = np.roll(noise, i * 7, axis=1)
            for k in range(4):
                x, y = (i * (5 + k) + k * 200) % (w - 120), (k * 150 + i * 3) % (h - 120)
                image[y:y + 120, x:x + 120] = (40 + 50 * k, 200 - 30 * k, 250)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(str(path)) as container:
        return [f.pts for f in container.decode(container.streams.video[0])]


def decoded_times(path: Path) -> list:
    import av

    with av.open(str(path)) as container:
        return [f.pts * f.time_base for f in container.decode(container.streams.video[0])]


class Stages:
    """The processes of the run, started and restarted by name."""

    def __init__(self, tmp: Path, streams: list[str], model: list[str]):
        base = [sys.executable, "-m", "stream.cli"]
        eps = {n: f"ipc://{tmp}/{n}" for n in ("frames", "poses", "deliver")}
        self.cmds = {"engine": [*base, "serve", "--frames", eps["frames"], "--publish", eps["poses"],
                                "--deliver", eps["deliver"], *model]}
        for i, name in enumerate(streams):
            self.cmds[f"render {name}"] = [*base, "render", "--deliver", eps["deliver"], "--stream", name, "--resume",
                                           "-o", str(tmp / f"{name}.out.mp4"), "--poses", str(tmp / f"{name}.jsonl")]
            self.cmds[f"capture {name}"] = [*base, "capture", "--source", str(tmp / f"{name}.mp4"), "--engine",
                                            eps["frames"], "--stream", name, "--lossless", "--timeout", "300",
                                            *TRANSPORTS[i % len(TRANSPORTS)]]
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}

    def start(self, name: str) -> None:
        self.starts[name] = self.starts.get(name, 0) + 1
        log = open(self.logs / f"{name.replace(' ', '-')}.{self.starts[name]}.log", "w")  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process: 7 processes share the cores
        self.procs[name] = subprocess.Popen(self.cmds[name], stdout=log, stderr=subprocess.STDOUT, env=env)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def written(tmp: Path, streams: list[str]) -> int:
    from stream.posefile import count_records

    return sum(count_records(str(tmp / f"{name}.jsonl")) or 0 for name in streams)


def check(tmp: Path, name: str, pts: list[int]) -> dict:
    lines = map(json.loads, (tmp / f"{name}.jsonl").read_text().splitlines())
    records = [r for r in lines if r.get("kind") != "header"]  # the pose file's header line (stream.posefile)
    frames = [r["frame"] for r in records]
    out = {"frames": len(frames), "lost": len(set(range(len(pts))) - set(frames)),
           "duplicated": len(frames) - len(set(frames)), "in_order": frames == sorted(frames),
           "pts_identical": [r["pts"] for r in records] == pts}
    video = tmp / f"{name}.out.mp4"
    out["video_times_identical"] = video.exists() and decoded_times(video) == decoded_times(tmp / f"{name}.mp4")
    out["partial_left"] = (tmp / f"{name}.out.partial.mp4").exists()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300, help="frames per stream (default 300)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--engine-kills", type=int, default=10)
    parser.add_argument("--render-kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--keep", help="keep the run's files in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="posestream-chaos-"))
    tmp.mkdir(parents=True, exist_ok=True)
    streams = [f"s{i}" for i in range(args.streams)]
    print(f"tools.bench chaos: making {args.streams} clips of {args.frames} frames at {w}x{h}", file=sys.stderr)
    pts = {name: make_clip(tmp / f"{name}.mp4", args.frames, (w, h), 30, i) for i, name in enumerate(streams)}
    total = args.frames * args.streams
    kills = sorted([(rng.uniform(0.03, 0.95), "engine") for _ in range(args.engine_kills)]
                   + [(rng.uniform(0.03, 0.95), f"render {rng.choice(streams)}") for _ in range(args.render_kills)])
    stages = Stages(tmp, streams, MODEL_CLI)
    t0, done_kills = time.monotonic(), []
    try:
        for name in ["engine"] + [f"render {s}" for s in streams] + [f"capture {s}" for s in streams]:
            stages.start(name)
        for at, victim in kills:
            while written(tmp, streams) < at * total:
                if all(stages.procs[f"capture {s}"].poll() is not None for s in streams):
                    break
                time.sleep(0.05)
            stages.kill(victim)
            done_kills.append((victim, written(tmp, streams)))
            time.sleep(rng.uniform(0.5, 2.0) if victim == "engine" else rng.uniform(0.0, 1.0))
            stages.start(victim)
        codes = {}
        for name in [f"capture {s}" for s in streams] + [f"render {s}" for s in streams]:
            codes[name] = stages.procs[name].wait(600)
        wall = time.monotonic() - t0
    finally:
        stages.stop_all()
    results = {name: check(tmp, name, pts[name]) for name in streams}
    extra = {"machine": machine(), "size": args.size, "streams": args.streams, "frames_per_stream": args.frames,
             "load": open("/proc/loadavg").read().split()[:3], "seed": args.seed}
    emit("chaos", "kills", len(done_kills), "SIGKILLs", at_frames_written=done_kills, **extra)
    emit("chaos", "frames lost", sum(r["lost"] for r in results.values()), "frames", **extra)
    emit("chaos", "frames duplicated", sum(r["duplicated"] for r in results.values()), "frames", **extra)
    emit("chaos", "wall time", wall, "s", **extra)
    emit("chaos", "per stream", 0, "-", results=results, exit_codes=codes, **extra)
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 and r["in_order"] and r["pts_identical"]
             and r["video_times_identical"] and not r["partial_left"] for r in results.values())
    ok = ok and all(code == 0 for code in codes.values())
    print(f"tools.bench chaos: {'PASS' if ok else 'FAIL'}; files in {tmp}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
