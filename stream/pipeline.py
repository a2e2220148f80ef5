"""``posestream video`` and ``posestream run``: capture, engine and renderer as separate processes wired
over ipc:// (lossless for files, live for ``run``), a progress bar, and a closing summary. ``--view`` adds a
fourth, ``posestream view`` on the engine's poses-with-frames stream; it can fail (no display) without
stopping the others. Closing the ``--show`` window stops the pipeline as Ctrl-C does.

Children run in their own session so a terminal's Ctrl-C reaches only this process, which then stops
them in order: the capture first (it ends the stream), then the renderer (it finishes its files once the
end arrives), then the engine.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from stream.posefile import count_records
from stream.stages import EXIT_FAIL, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_TRUNCATED
from stream.transport import Policy, ipc_endpoints, private_dir

# Once the capture has exited, the renderer ends as soon as the stream's end reaches it: when the engine passes
# the capture's EndOfStream on (a live one is retried until a renderer slow to start takes it), or when the
# engine finds the capture silent (peer_timeout_s) and ends the stream itself. Past this long without a pose,
# the pipeline stops rather than wait forever.
END_GRACE_S = 10 * Policy().peer_timeout_s


def _spawn(stage: str, args: list[str], workdir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stream.cli", stage, *args, "--summary-json", str(workdir / f"{stage}.json"),
           "--exit-with-parent"]
    return subprocess.Popen(cmd, start_new_session=True)


def _read(workdir: Path, stage: str) -> dict:
    try:
        return json.loads((workdir / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return {}


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.stopped_by_us = True  # for the summary: a stage that reports a SIGTERM we did not send was stopped
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            proc.hung_s = timeout  # for the summary: killed by us, not by a crash


def _model_args(args) -> list[str]:
    out = ["--model", args.model, "--backend", args.backend, "--max-batch", str(args.max_batch)]
    if args.tracking:
        out.append("--tracking")
    if args.smooth:
        out.append("--smooth")
    if args.refiner:
        out += ["--refiner", args.refiner]
    if args.flip_test:
        out.append("--flip-test")
    if args.no_refine3d:
        out.append("--no-refine3d")
    if args.model_args:
        out += ["--model-args", json.dumps(args.model_args)]
    if args.metrics_port is not None:
        out += ["--metrics-port", str(args.metrics_port), "--metrics-bind", args.metrics_bind]
    out += ["--batch-budget-ms", str(args.batch_budget_ms)]
    return out


def _progress(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total or None, unit="frame", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


class _Interrupt:
    """SIGINT/SIGTERM -> an event (the pipeline winds down instead of dying mid-write)."""

    def __init__(self):
        self.event = threading.Event()
        self.old = {s: signal.signal(s, lambda *_: self.event.set()) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def run_pipeline(source: str, lossless: bool, args, total: int | None = None) -> int:
    """Start the three processes and supervise them; returns the exit code (see ``posestream --help``)."""
    from stream.subscribe import PoseSubscriber

    workdir = Path(private_dir())  # sockets and the stages' summaries; removed at the end (or, after a crash,
    eps = ipc_endpoints(str(workdir))  # by the next run)
    publish = getattr(args, "publish", None) or eps["poses"]
    ready = workdir / "render.ready"
    render_args = ["--deliver", eps["deliver"], "--ready-file", str(ready)]
    for flag, value in (("-o", args.output), ("--poses", args.poses), ("--coco", getattr(args, "coco", None))):
        if value:
            render_args += [flag, value]
    render_args += ["--show"] if getattr(args, "show", False) else []
    capture_args = ["--source", source, "--engine", eps["frames"], "--shm"] + (["--lossless"] if lossless else [])
    capture_args += ["--realtime"] if getattr(args, "realtime", False) else []
    capture_args += ["--intrinsics", args.intrinsics] if getattr(args, "intrinsics", None) else []
    capture_args += ["--reconnect", str(args.reconnect)] if hasattr(args, "reconnect") else []
    view = getattr(args, "view", None)
    view_ep, view_ready = f"ipc://{workdir / 'view'}", workdir / "view.ready"
    interrupt = _Interrupt()
    procs = {"engine": _spawn("serve", ["--frames", eps["frames"], "--publish", publish, "--deliver",
                                        eps["deliver"], *(["--publish-frames", view_ep] if view else []),
                                        *_model_args(args)], workdir)}
    procs["render"] = _spawn("render", render_args, workdir)
    if view:
        procs["view"] = _spawn("view", [view_ep, "--until-end", "--ready-file", str(view_ready),
                                        *{"window": [], "web": ["--web", "--no-browser"]}.get(view, ["--save", view])],
                              workdir)
    # live frames that reach the engine before the renderer (and viewer) is connected to it would be dropped: start
    # the capture once they say the channel is up (or a stage already failed, which the loop below reports)
    while not ((ready.exists() and (not view or view_ready.exists() or procs["view"].poll() is not None))
               or interrupt.event.wait(0.05) or not _running(procs)):
        pass
    procs["capture"] = _spawn("capture", capture_args, workdir)
    subscriber = PoseSubscriber(publish)
    bar, first, last, quiet_since = _progress(total, not args.no_progress), None, None, None
    try:
        while not interrupt.event.is_set() and _running(procs):
            if subscriber.receive(0.2) is not None:
                first, last, quiet_since = first or time.monotonic(), time.monotonic(), None
                bar.update(1)
            elif procs["capture"].poll() is not None:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > END_GRACE_S:
                    print(f"posestream {'video' if lossless else 'run'}: the capture finished but the end of the "
                          f"stream did not reach the renderer within {END_GRACE_S:.0f} s; stopping", file=sys.stderr)
                    break
    finally:
        bar.close()
        subscriber.close()
        # the renderer exits 130 when the user closed its --show window: stop as on Ctrl-C
        code = _wind_down(procs, interrupt.event.is_set() or procs["render"].poll() == EXIT_INTERRUPTED)
        interrupt.restore()
    summary = _summary(workdir, (last - first) if first and last else 0.0, procs, args.poses)
    shutil.rmtree(workdir, ignore_errors=True)
    print("posestream: " + json.dumps(summary), file=sys.stderr)
    return code


def _running(procs: dict) -> bool:
    """Until the renderer or the engine exits, or the capture could not open its source."""
    capture = procs.get("capture")  # started last
    return (procs["render"].poll() is None and procs["engine"].poll() is None
            and (capture is None or capture.poll() != EXIT_INPUT))


def _wait(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def _wind_down(procs: dict, interrupted: bool) -> int:
    """Stop the children in order; the exit code from theirs (see ``posestream --help``)."""
    capture, render, engine = procs["capture"], procs["render"], procs["engine"]
    if interrupted:
        _stop(capture, 10)
        _wait(render, 15)
    engine_code = engine.poll()
    failed = engine_code is not None or capture.poll() == EXIT_INPUT
    _wait(capture, 2 if failed else 10)
    _stop(render, 10)
    _stop(capture, 5)
    if "view" in procs:  # it exits by itself once the stream's end reached it (and its recording is written)
        _wait(procs["view"], 5)
        _stop(procs["view"], 10)
    _stop(engine, 10)
    if interrupted:
        return EXIT_INTERRUPTED
    if EXIT_INPUT in (capture.returncode, engine_code):
        return EXIT_INPUT
    if engine_code is not None or render.returncode != EXIT_OK:
        return EXIT_FAIL
    return {EXIT_OK: EXIT_OK, EXIT_TRUNCATED: EXIT_TRUNCATED}.get(capture.returncode, EXIT_FAIL)


def _summary(workdir: Path, wall_s: float, procs: dict, poses: str | None = None) -> dict:
    """The closing summary from the stages' own (each writes one on exit, the renderer every second too; a stage
    that crashed wrote none at the end). Frames are counted in the pose file when there is one: it is what was
    written, also when the renderer died."""
    capture, render, engine, view = (_read(workdir, s) for s in ("capture", "render", "serve", "view"))
    frames, read = count_records(poses) or render.get("frames", 0), capture.get("read")
    crashed = {name: f"did not stop within {p.hung_s:g} s of SIGTERM; killed" if hasattr(p, "hung_s")
               else f"killed by signal {-p.returncode}"
               for name, p in procs.items() if p.returncode is not None and p.returncode < 0}
    stopped = {name: summary["stopped"] for name, summary in (("capture", capture), ("render", render),
                                                              ("engine", engine))
               if summary.get("stopped") and not getattr(procs.get(name), "stopped_by_us", False)}
    return {"frames": frames, "fps": round((frames - 1) / wall_s, 2) if wall_s > 0 else None,
            "engine_fps": engine.get("fps"), "latency_ms": render.get("latency_ms"),
            # every frame read but not published, wherever it went: the capture's newest-wins replacements and
            # losses reach the engine as sequence gaps it counts too, so the two counts must not be added
            "read": read, "drops": None if read is None else max(0, read - frames),
            # why the stream ended early: as the capture saw it, else as the engine told the renderer
            "errors": {"source": capture.get("error") or render.get("error"), "crashed": crashed, "stopped": stopped,
                       "corrupt_frames": capture.get("corrupt", 0), "rejected_messages": engine.get("rejects", {}),
                       "rejected": engine.get("rejected", []), "engine_failed_frames": engine.get("failed_frames", []),
                       "render_gaps": render.get("gaps", 0)},
            "resent": capture.get("resent", 0), "duplicates_dropped": render.get("duplicates", 0),
            **({"view": view} if "view" in procs else {})}
