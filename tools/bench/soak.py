"""``python -m tools.bench soak``: live streams and a subscriber for N minutes; memory growth and files left.

Runs ``posestream serve``, ``--streams`` live captures (``capture --realtime`` of a generated clip, started again
whenever the clip ends, so each stream attaches and detaches every clip length), one ``render --keep-going`` per
stream (pose file only) and a ``posestream subscribe`` as separate processes for ``--minutes``. Samples each
process's resident memory (VmRSS) every ``--every`` seconds and reports, per process, the growth from the first
sample after ``--warmup`` minutes to the last, and (the figure the goal of <= 1% is judged on, since a process's
RSS moves by a few MB either way from one sample to the next) from the median of the first tenth of the counted
samples to the median of the last tenth, and as the slope of a least-squares line over all counted samples times
the run's length. Then stops everything with SIGTERM and lists what is left behind: shared-memory rings under
/dev/shm and private folders of these processes, partial videos.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.bench.chaos import make_clip
from tools.bench.common import emit, machine
from tools.bench.fuzz import MODEL_CLI


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def leftovers(pids: set[int], tmp: Path) -> list[str]:
    """Rings and private folders these processes left, and partial videos in ``tmp``."""
    from stream.shm import SHM_DIR

    left = [str(p) for p in Path(SHM_DIR).glob("posestream-*") if any(f"-{pid}-" in p.name for pid in pids)]
    for folder in Path(tempfile.gettempdir()).glob("posestream-*"):
        try:
            if int((folder / "owner.pid").read_text()) in pids:
                left.append(str(folder))
        except (OSError, ValueError):
            continue
    return left + [str(p) for p in tmp.glob("*.partial.mp4*")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before the first counted sample")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the live clips (default 15)")
    parser.add_argument("--clip-seconds", type=int, default=60)
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="posestream-soak-"))
    make_clip(tmp / "clip.mp4", args.clip_seconds * args.fps, (w, h), args.fps, 0)
    base = [sys.executable, "-m", "stream.cli"]
    eps = {n: f"ipc://{tmp}/{n}" for n in ("frames", "poses", "deliver")}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {"engine": subprocess.Popen([*base, "serve", "--frames", eps["frames"], "--publish", eps["poses"],
                                         "--deliver", eps["deliver"], *MODEL_CLI], env=env)}
    streams = [f"live{i}" for i in range(args.streams)]
    for name in streams:
        procs[f"render {name}"] = subprocess.Popen([*base, "render", "--deliver", eps["deliver"], "--stream", name,
                                                    "--keep-going", "--poses", str(tmp / f"{name}.jsonl")], env=env)
    procs["subscriber"] = subprocess.Popen([*base, "subscribe", eps["poses"]], stdout=subprocess.DEVNULL, env=env)

    def capture(i: int, name: str) -> subprocess.Popen:
        shm = ["--shm"] if i == 0 else []
        return subprocess.Popen([*base, "capture", "--source", str(tmp / "clip.mp4"), "--engine", eps["frames"],
                                 "--stream", name, "--realtime", *shm], env=env, stderr=subprocess.DEVNULL)

    captures = {name: capture(i, name) for i, name in enumerate(streams)}
    pids = {p.pid for p in procs.values()}
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in procs}
    t0 = time.monotonic()
    end, restarts = t0 + args.minutes * 60, 0
    try:
        while time.monotonic() < end:
            for i, (name, proc) in enumerate(captures.items()):
                if proc.poll() is not None:
                    captures[name] = capture(i, name)
                    pids.add(captures[name].pid)
                    restarts += 1
            elapsed = time.monotonic() - t0
            for name, proc in procs.items():
                if (kib := rss_kib(proc.pid)) is not None:
                    samples[name].append((elapsed, kib))
            dead = [name for name, proc in procs.items() if proc.poll() is not None]
            if dead:
                print(f"tools.bench soak: {dead} exited early", file=sys.stderr)
                break
            time.sleep(args.every)
    finally:
        for proc in [*captures.values(), *procs.values()]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*captures.values(), *procs.values()]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    left = leftovers(pids, tmp)
    from stream.posefile import count_records

    records = sum(count_records(str(tmp / f"{s}.jsonl")) or 0 for s in streams)
    extra = {"machine": machine(), "minutes": round((time.monotonic() - t0) / 60, 1), "streams": args.streams,
             "size": args.size, "fps": args.fps, "load": open("/proc/loadavg").read().split()[:3]}
    worst = 0.0
    for name, points in samples.items():
        times = np.array([t for t, _ in points if t >= args.warmup * 60])
        counted = np.array([kib for t, kib in points if t >= args.warmup * 60], np.float64)
        if len(counted) < 10:
            continue
        tenth = max(1, len(counted) // 10)
        growth = 100.0 * (np.median(counted[-tenth:]) - np.median(counted[:tenth])) / np.median(counted[:tenth])
        slope, intercept = np.polyfit(times, counted, 1)
        fitted = 100.0 * slope * (times[-1] - times[0]) / (intercept + slope * times[0])
        worst = max(worst, growth)
        series = [(round(t / 60, 1), kib) for t, kib in points][::max(1, len(points) // 12)]
        emit("soak", f"RSS growth {name}", growth, "%", fitted_line_pct=round(fitted, 3),
             first_to_last_pct=round(100.0 * (counted[-1] - counted[0]) / counted[0], 3), first_kib=int(counted[0]),
             last_kib=int(counted[-1]), peak_kib=int(counted.max()), minutes_kib=series, **extra)
    emit("soak", "frames written by the renderers", records, "frames", capture_restarts=restarts, **extra)
    emit("soak", "files left behind", len(left), "files", paths=left, **extra)
    for path in tmp.glob("*.jsonl"):
        path.unlink()
    return 0 if worst <= 1.0 and not left else 1


if __name__ == "__main__":
    sys.exit(main())
