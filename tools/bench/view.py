"""``python -m tools.bench view [VIDEO]``: does ``posestream view`` keep up, and does it slow the engine?

Runs the live pipeline twice on the same clip, paced at its frame rate as a camera delivers it
(``posestream run --source VIDEO --realtime --poses``): once alone, once with the viewer (``--view web``: the
viewer process subscribes to the engine's poses-with-frames stream and logs every frame it takes to Rerun,
whose gRPC server holds the recording for a browser). It reports

* ``frames shown / published``: frames the viewer logged over frames the engine published in that run (the
  goal: >= 0.95 at 30 fps x 6 people with the default model on the same cores);
* the engine's published fps and share of frames kept, with and without the viewer (the viewer must not slow
  it: it is a subscriber that skips, never back-pressures).

"Shown" is "logged to Rerun": drawing is the Rerun Viewer's work, in a browser or a native window, on the
desktop's GPU. ``--browser`` also attaches a headless Chromium (the machine's ``chromium``) to the web
viewer, rendering it on the CPU cores the pipeline runs on: a worst case, not a desktop.

The default VIDEO is made here by ``tools.synth``: 640x480 at 30 fps with 6 textured people in motion.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench.common import emit, machine
from tools.cli import count_range, frame_size
from tools.demo import make_sample

SEED = 20261201


def _run(video: str, poses: str, args, view: bool) -> dict:
    """One live run; returns the pipeline's closing summary."""
    from stream.cli import main as posestream

    cmd = ["run", "--source", video, "--realtime", "--poses", poses, "--no-progress", "--model", args.model,
           "--backend", args.backend, *(["--model-args", args.model_args] if args.model_args else []),
           *(["--view", "web"] if view else [])]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = posestream(cmd)
    if code != 0:
        raise RuntimeError(f"posestream {' '.join(cmd)} exited {code}:\n{stderr.getvalue()}")
    return next(json.loads(line.split("posestream: ", 1)[1]) for line in stderr.getvalue().splitlines()
                if line.startswith("posestream: {"))


@contextlib.contextmanager
def _browser(enabled: bool, profile: Path):
    """A headless Chromium showing the web viewer while the run lasts (``--browser``)."""
    if not enabled:
        yield
        return
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise RuntimeError("--browser needs chromium on PATH")
    url = "http://127.0.0.1:9090/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A9876%2Fproxy"
    proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader",
                             f"--user-data-dir={profile}", "--window-size=1600,1000", "--remote-debugging-port=0", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench view", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="input video (default: a generated 30 fps clip with 6 people)")
    parser.add_argument("--frames", type=int, default=300, help="frames of the generated clip (default 300: 10 s)")
    parser.add_argument("--size", type=frame_size, default="640x480", help="generated clip size (default 640x480)")
    parser.add_argument("--persons", type=count_range, default="6", help="people in the generated clip (default 6)")
    parser.add_argument("--model", default="default", help="model spec (default: default)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model-args", help="JSON build overrides for random:NAME specs")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind, alternating (default 1)")
    parser.add_argument("--browser", action="store_true", help="also render the web viewer in headless Chromium")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="posestream-bench-view-") as tmp:
        video = args.video
        if video is None:
            print(f"tools.bench view: making a {args.frames}-frame clip with {args.persons[0]}-{args.persons[1]} "
                  "people", file=sys.stderr)
            video = str(make_sample(Path(tmp), SEED, args.frames, args.persons, "panoptic19", args.size)[0])
        clip = os.path.basename(video) if args.video else f"synth seed {SEED}, {args.persons[0]}-{args.persons[1]} people"
        extra = {"machine": machine(), "video": clip, "model": args.model, "backend": args.backend,
                 "browser": args.browser}
        for i in range(args.repeat):
            for view in (False, True):
                load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else None
                t0 = time.perf_counter()
                with _browser(view and args.browser, Path(tmp) / f"chromium-{i}"):
                    summary = _run(video, os.path.join(tmp, f"poses-{i}-{view}.jsonl"), args, view)
                run = {**extra, "run": i, "viewer": view, "load_avg_1m_before": load,
                       "wall_s": round(time.perf_counter() - t0, 1)}
                published, read = summary["frames"], summary["read"]
                emit("view", "engine fps", summary["fps"] or 0.0, "frames/s", **run)
                emit("view", "frames published / read", published / read if read else 0.0, "fraction", read=read, **run)
                if view:
                    shown = summary.get("view", {}).get("shown", 0)
                    emit("view", "frames shown / published", shown / published if published else 0.0, "fraction",
                         published=published, view_summary=summary.get("view"), **run)
    return 0
