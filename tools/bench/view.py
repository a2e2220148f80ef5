"""``python -m tools.bench view [VIDEO]``: does ``posestream view`` keep up, and does it slow the engine?

Runs the live pipeline twice on the same clip, paced at its frame rate as a camera delivers it
(``posestream run --source VIDEO --realtime --poses``): once alone, once with the viewer (``--view FILE.rrd``:
the viewer process subscribes to the engine's poses-with-frames stream and logs every frame that reaches it to
Rerun, here into a recording). It reports

* ``frames shown / published``: frames the viewer logged over frames the engine published in that run (the
  goal: >= 0.95 at 30 fps x 6 people with the default model on the same cores);
* the engine's published fps and share of frames kept, with and without the viewer (the viewer must not slow
  it: it is a subscriber, at a lower CPU priority, that skips and never back-pressures).

``--replay`` measures the goal where the engine cannot publish 30 fps itself (a slow or busy machine), with
the live viewer as a user watches it (``posestream view --web``: newest frame first, skipping when behind):
the bench publishes the clip's frames with their ground-truth people (6 by default) at exactly ``--fps`` on
the engine's own socket type for viewers, while the default model runs the same clip live on the same cores,
and reports frames shown / published for that stream. ``--browser`` also attaches a headless Chromium (the
machine's ``chromium``) to that web viewer, rendering it on the same CPU cores: a worst case, not a desktop.

"Shown" is "logged to Rerun": drawing is the Rerun Viewer's work, in a browser or a native window, on the
desktop's GPU. The default VIDEO is made here by ``tools.synth``: 640x480 at 30 fps with 6 textured people.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench.common import emit, machine
from tools.cli import count_range, frame_size
from tools.demo import make_sample

SEED = 20261201


def _run(video: str, poses: str, args, view: str | None) -> dict:
    """One live run (``view``: a recording for the viewer to write, or None); returns the closing summary."""
    from stream.cli import main as posestream

    cmd = ["run", "--source", video, "--realtime", "--poses", poses, "--no-progress", "--model", args.model,
           "--backend", args.backend, *(["--model-args", args.model_args] if args.model_args else []),
           *(["--view", view] if view else [])]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = posestream(cmd)
    if code != 0:
        raise RuntimeError(f"posestream {' '.join(cmd)} exited {code}:\n{stderr.getvalue()}")
    return next(json.loads(line.split("posestream: ", 1)[1]) for line in stderr.getvalue().splitlines()
                if line.startswith("posestream: {"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _browser(enabled: bool, url: str, profile: Path):
    """A headless Chromium showing the web viewer at ``url`` while the replay lasts (``--browser``)."""
    if not enabled:
        yield
        return
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise RuntimeError("--browser needs chromium on PATH")
    proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader",
                             f"--user-data-dir={profile}", "--window-size=1600,1000", "--remote-debugging-port=0", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def _decoded(video: str, count: int) -> list:
    import av

    with av.open(video) as container:
        return [f.to_ndarray(format="bgr24") for f, _ in zip(container.decode(video=0), range(count))]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"tools.bench view: {what} did not start")
        time.sleep(0.05)


def _replay(video: str, gt: str, args, tmp: Path) -> dict:
    """Publish ``args.frames`` frames of ``video`` with their ground truth at ``args.fps`` to a viewer while the
    model runs the clip live; returns the figures."""
    import zmq

    from stream import wire
    from stream.posefile import read_pose_file
    from stream.transport import Policy, view_pub

    tmp.mkdir(parents=True, exist_ok=True)
    frames, records = _decoded(video, args.frames), list(read_pose_file(gt))[: args.frames]
    endpoint, ready, summary = f"ipc://{tmp / 'replay'}", tmp / "view.ready", tmp / "view.json"
    engine_poses = tmp / "engine.jsonl"
    engine = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "--source", video, "--realtime",
                               "--poses", str(engine_poses), "--no-progress", "--model", args.model, "--backend",
                               args.backend, *(["--model-args", args.model_args] if args.model_args else [])],
                              stderr=subprocess.PIPE, text=True)
    nice = [] if args.view_nice is None else ["--nice", str(args.view_nice)]
    web, grpc = _free_port(), _free_port()
    viewer = subprocess.Popen([sys.executable, "-m", "stream.cli", "view", endpoint, "--web", "--no-browser", *nice,
                               "--web-port", str(web), "--grpc-port", str(grpc), "--until-end",
                               "--ready-file", str(ready), "--summary-json", str(summary)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{web}/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A{grpc}%2Fproxy"
    sock = view_pub(zmq.Context.instance(), endpoint, Policy())
    try:
        _wait_for(ready, viewer, 60, "the viewer")
        _wait_for(engine_poses, engine, 120, "the engine")  # the renderer writes once the first poses came
        load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else None
        importlib.import_module("engine.postprocess")  # pack_poses imports it (and torch): not in the timed loop
        with _browser(args.browser, url, tmp / "chromium"):
            t0 = time.monotonic()
            for i, (image, record) in enumerate(zip(frames, records)):
                time.sleep(max(0.0, t0 + i / args.fps - time.monotonic()))
                h, w = image.shape[:2]
                k = record.intrinsics
                frame = wire.Frame(stream="replay", seq=i, capture_ns=time.time_ns(), width=w, height=h,
                                   intrinsics=(k["fx"], k["fy"], k["cx"], k["cy"]) if k else None)
                msg = wire.pack_poses(record.poses, frame, "ground truth", time.time_ns(), time.time_ns())
                sock.send_multipart([b"replay", wire.encode(msg), *wire.frame_parts(frame, image)], copy=False)
            span = time.monotonic() - t0
        sock.send_multipart([b"replay", wire.encode(wire.EndOfStream(stream="replay", seq=len(frames)))])
        try:
            viewer.wait(60)
        except subprocess.TimeoutExpired:  # its end was dropped on the way: stop it (it writes its summary)
            viewer.terminate()
            viewer.wait(30)
        engine.wait(300)
    finally:
        sock.close()
        for proc in (viewer, engine):
            if proc.poll() is None:
                proc.kill()
    run = next(json.loads(line.split("posestream: ", 1)[1]) for line in engine.stderr.read().splitlines()
               if line.startswith("posestream: {"))
    return {"published": len(frames), "publish_fps": round((len(frames) - 1) / span, 2), "load": load,
            "view": json.loads(summary.read_text()), "engine_fps": run["fps"], "engine_frames": run["frames"]}


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
    parser.add_argument("--browser", action="store_true", help="with --replay: also render the web viewer in "
                                                               "headless Chromium on the same cores")
    parser.add_argument("--replay", action="store_true", help="publish the clip with its ground truth at --fps to "
                                                              "the viewer while the model runs the clip live")
    parser.add_argument("--fps", type=float, default=30.0, help="with --replay: the rate published (default 30)")
    parser.add_argument("--view-nice", type=int, help="with --replay: posestream view --nice N (default: its own)")
    args = parser.parse_args(argv)
    if args.replay and args.video:
        parser.error("--replay publishes a generated clip's ground truth: give no VIDEO")
    with tempfile.TemporaryDirectory(prefix="posestream-bench-view-") as tmp:
        video = args.video
        if video is None:
            frames = args.frames + (90 if args.replay else 0)  # the model's run outlasts the replay (started later)
            print(f"tools.bench view: making a {frames}-frame clip with {args.persons[0]}-{args.persons[1]} people",
                  file=sys.stderr)
            video, gt = map(str, make_sample(Path(tmp), SEED, frames, args.persons, "panoptic19", args.size))
        clip = os.path.basename(video) if args.video else f"synth seed {SEED}, {args.persons[0]}-{args.persons[1]} people"
        extra = {"machine": machine(), "video": clip, "model": args.model, "backend": args.backend,
                 "browser": args.browser}
        if args.replay:
            for i in range(args.repeat):
                r = _replay(video, gt, args, Path(tmp) / f"replay-{i}")
                emit("view", "replay: frames shown / published", r["view"]["shown"] / r["published"], "fraction",
                     **extra, run=i, load_avg_1m_before=r["load"], published=r["published"],
                     publish_fps=r["publish_fps"], view_summary=r["view"], engine_fps=r["engine_fps"],
                     view_nice=args.view_nice)
            return 0
        for i in range(args.repeat):
            for view in (False, True):
                load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else None
                t0 = time.perf_counter()
                rrd = os.path.join(tmp, f"view-{i}.rrd") if view else None
                summary = _run(video, os.path.join(tmp, f"poses-{i}-{view}.jsonl"), args, rrd)
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
