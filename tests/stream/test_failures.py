"""Failure behaviour with real sockets and processes: engine killed and restarted, captures vanishing,
malformed input."""

import threading

import pytest
import zmq

from stream import wire
from stream.capture import Capture, CaptureConfig
from stream.posefile import read_pose_file
from stream.render import RenderConfig, Renderer
from stream.serve import EngineServer, ServeConfig
from stream.sources import open_source
from stream.transport import Policy
from tests.stream.conftest import MODEL_CLI, decoded_times, make_video, small_engine, start_stage, wait_for

FAST = Policy(heartbeat_s=0.1, peer_timeout_s=1.0)


def _engine(ipc):
    return start_stage("serve", "--frames", ipc["frames"], "--publish", ipc["poses"], "--deliver", ipc["deliver"],
                       *MODEL_CLI)


def test_engine_killed_and_restarted_mid_file_loses_and_duplicates_nothing(tmp_path, ipc):
    make_video(tmp_path / "in.mp4", 80, fps=50)
    out, poses = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    rendered = []
    renderer = Renderer(RenderConfig(ipc["deliver"], video=str(out), poses=str(poses), policy=FAST),
                        on_frame=lambda record: rendered.append(record.frame))
    capture = Capture(open_source(str(tmp_path / "in.mp4"), realtime=True),
                      CaptureConfig(ipc["frames"], "clip", lossless=True, policy=FAST, shm=True))
    threads = [threading.Thread(target=stage.run, daemon=True) for stage in (renderer, capture)]
    first = _engine(ipc)
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(rendered) >= 10, 60, "frames through the first engine")
        first.kill()
        first.wait()
        killed_at = len(rendered)
        second = _engine(ipc)
        try:
            for t in threads:
                t.join(60)
        finally:
            second.terminate()
            second.wait(10)
    finally:
        first.kill()
    assert killed_at < 80, "the engine died mid-file"
    assert capture.stats.error is None and renderer.stats.ended
    assert [r.frame for r in read_pose_file(poses)] == list(range(80))
    assert rendered == list(range(80)) and renderer.stats.gaps == 0
    assert decoded_times(out) == decoded_times(tmp_path / "in.mp4")


def _server(ipc, deliver=None):
    server = EngineServer(small_engine(), ServeConfig(ipc["frames"], ipc["poses"], deliver, policy=FAST))
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    server.ready.wait(30)
    return server, stop, thread


def test_server_frees_a_vanished_capture_and_survives_malformed_input(ipc):
    import numpy as np

    server, stop, thread = _server(ipc)
    ctx = zmq.Context.instance()
    try:
        rogue = ctx.socket(zmq.DEALER)
        rogue.connect(ipc["frames"])
        rogue.send_multipart([b"\x92garbage"])
        rogue.send(wire.encode(wire.Heartbeat(sender="x", role="capture", instance=1, sent_ns=0, stream="x"))[:-3])
        frame = wire.Frame(stream="ghost", seq=0, capture_ns=0, width=4, height=2)
        rogue.send_multipart(wire.frame_parts(frame, np.zeros((2, 4, 3), np.uint8)), copy=False)
        rogue.send_multipart([wire.encode(frame), b"short"])
        wait_for(lambda: "ghost" in server.streams and server.rejects.total >= 3, 10, "the rogue's messages")
        rogue.close(linger=0)
        wait_for(lambda: server.stats.streams_freed == 1 and not server.streams, 10, "the vanished stream freed")
        assert server.rejects.counts["malformed"] >= 2 and server.rejects.counts["truncated"] == 1
        assert thread.is_alive() and server.stats.frames == 1
    finally:
        stop.set()
        thread.join(10)


def test_sigterm_to_the_renderer_mid_stream_leaves_complete_files(tmp_path, ipc):
    import signal

    from tests.stream.conftest import decoded_pts

    make_video(tmp_path / "in.mp4", 200, fps=50)
    out, poses = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    render = start_stage("render", "--deliver", ipc["deliver"], "-o", str(out), "--poses", str(poses))
    server, stop, thread = _server(ipc, deliver=ipc["deliver"])
    capture = Capture(open_source(str(tmp_path / "in.mp4"), realtime=True),
                      CaptureConfig(ipc["frames"], "clip", lossless=True, policy=FAST))
    stop_capture = threading.Event()
    feeding = threading.Thread(target=capture.run, args=(stop_capture,), daemon=True)
    feeding.start()
    try:
        wait_for(lambda: poses.exists() and poses.read_text().count("\n") >= 11, 60, "frames rendered")
        render.send_signal(signal.SIGTERM)
        assert render.wait(20) == 130
    finally:
        render.kill()
        stop_capture.set()
        feeding.join(10)
        stop.set()
        thread.join(10)
    written = [r.frame for r in read_pose_file(poses)]
    assert 10 <= len(written) < 200 and written == list(range(len(written)))
    assert len(decoded_pts(out)) == len(written), "the mp4 is finished and holds every rendered frame"


def _send_live_frames(sock, stream: str, count: int) -> None:
    """Send ``count`` black 64x48 live frames (seq 0, 1, ...) of ``stream`` as a capture would."""
    import time

    import numpy as np

    for seq in range(count):
        frame = wire.Frame(stream=stream, seq=seq, capture_ns=time.time_ns(), width=64, height=48)
        sock.send_multipart(wire.frame_parts(frame, np.zeros((48, 64, 3), np.uint8)), copy=False)


def test_a_capture_that_dies_mid_stream_ends_its_stream_for_the_renderer_and_subscribers(tmp_path, ipc):
    from stream.subscribe import PoseSubscriber

    server, stop, thread = _server(ipc, deliver=ipc["deliver"])
    rendered = []
    renderer = Renderer(RenderConfig(ipc["deliver"], poses=str(tmp_path / "out.jsonl"), policy=FAST),
                        on_frame=lambda record: rendered.append(record.frame))
    rendering = threading.Thread(target=renderer.run, daemon=True)
    subscriber = PoseSubscriber(ipc["poses"], until_end=True, timeout=30)
    listening = threading.Thread(target=lambda: list(subscriber), daemon=True)
    ctx = zmq.Context.instance()
    capture = ctx.socket(zmq.DEALER)
    try:
        rendering.start()
        listening.start()
        capture.connect(ipc["frames"])
        _send_live_frames(capture, "cam", 3)
        wait_for(lambda: len(rendered) == 3, 30, "the frames sent before the capture died")
        capture.close(linger=0)  # gone without an EndOfStream
        rendering.join(20)
        listening.join(20)
    finally:
        capture.close(linger=0)
        stop.set()
        thread.join(10)
    assert not rendering.is_alive() and renderer.stats.ended, "the renderer learnt that the stream ended"
    assert "capture silent" in renderer.stats.error and len(list(read_pose_file(tmp_path / "out.jsonl"))) == 3
    assert not listening.is_alive() and "capture silent" in subscriber.errors["cam"]
    assert server.stats.streams_freed == 1


def test_a_live_streams_end_reaches_a_renderer_that_connects_after_it(tmp_path, ipc):
    server, stop, thread = _server(ipc, deliver=ipc["deliver"])
    capture = zmq.Context.instance().socket(zmq.DEALER)
    renderer = Renderer(RenderConfig(ipc["deliver"], poses=str(tmp_path / "out.jsonl"), policy=FAST))
    rendering = threading.Thread(target=renderer.run, daemon=True)
    try:
        capture.connect(ipc["frames"])
        _send_live_frames(capture, "cam", 2)  # nobody on the reliable channel yet: dropped, as live frames may be
        capture.send(wire.encode(wire.EndOfStream(stream="cam", seq=2)))
        wait_for(lambda: "cam" in server.pending_ends, 30, "the end waiting for a renderer")
        rendering.start()  # a renderer slow to start
        rendering.join(20)
    finally:
        capture.close(linger=0)
        stop.set()
        thread.join(10)
    assert not rendering.is_alive() and renderer.stats.ended and renderer.stats.error is None
    assert not server.pending_ends and server.metrics.drops["cam"] == 2  # the two frames, counted as dropped


def _pid_of(*words: str, parent: int | None = None) -> int | None:
    """The pid of a running process whose command line holds every one of ``words`` (and whose parent is
    ``parent``, when given), else None."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if proc.name.isdigit() and all(w.encode() in argv for w in words) and parent in (None, ppid):
            return int(proc.name)
    return None


def test_a_killed_capture_process_ends_the_live_pipeline_with_a_clear_error(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys

    make_video(tmp_path / "in.mp4", 600, fps=25)  # 24 s at its own pace: still running when killed
    poses = tmp_path / "out.jsonl"
    run = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "--source", str(tmp_path / "in.mp4"),
                            "--realtime", "--poses", str(poses), "--no-progress", *MODEL_CLI],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: poses.exists() and poses.read_text().count("\n") >= 6, 60, "frames through the pipeline")
        os.kill(wait_for(lambda: _pid_of("capture", str(tmp_path / "in.mp4")), 10, "the capture"), signal.SIGKILL)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    summary = json.loads(err.split("posestream: ")[-1])
    assert run.returncode == 1
    assert summary["errors"]["crashed"] == {"capture": "killed by signal 9"}
    assert "capture silent" in summary["errors"]["source"] and summary["read"] is None
    assert summary["frames"] == len(list(read_pose_file(poses))) >= 5


def test_summary_tells_a_stage_killed_for_hanging_from_one_that_crashed(tmp_path):
    import signal
    import subprocess
    import sys

    from stream.pipeline import _stop, _summary

    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    hung = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    crashed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert hung.stdout.readline() == "up\n"  # SIGTERM is ignored from here on
    crashed.send_signal(signal.SIGSEGV)
    crashed.wait(10)
    _stop(hung, 0.5)
    summary = _summary(tmp_path, 0.0, {"engine": hung, "capture": crashed})
    assert summary["errors"]["crashed"] == {"engine": "did not stop within 0.5 s of SIGTERM; killed",
                                            "capture": "killed by signal 11"}


@pytest.mark.timeout(120)  # without the last resort it would wait forever
def test_a_frozen_engine_stops_the_pipeline_after_the_grace_period(tmp_path, monkeypatch, capsys):
    """The supervisor's last resort: the capture finished, yet no end reaches the renderer (the engine is frozen,
    not dead, so nothing else notices); the run stops after END_GRACE_S with exit 1 and keeps what it wrote."""
    import json
    import os
    import signal

    from stream import pipeline
    from stream.cli import main as posestream

    monkeypatch.setattr(pipeline, "END_GRACE_S", 2.0)
    make_video(tmp_path / "in.mp4", 100, fps=25)  # 4 s at its own pace
    poses = tmp_path / "out.jsonl"
    frozen = []

    def freeze_engine():
        wait_for(lambda: poses.exists() and poses.read_text().count("\n") >= 4, 60, "frames through the pipeline")
        frozen.append(wait_for(lambda: _pid_of("serve", parent=os.getpid()), 10, "the engine"))
        os.kill(frozen[0], signal.SIGSTOP)

    freezer = threading.Thread(target=freeze_engine, daemon=True)
    freezer.start()
    code = posestream(["run", "--source", str(tmp_path / "in.mp4"), "--realtime", "--poses", str(poses),
                       "--no-progress", *MODEL_CLI])
    freezer.join(1)
    err = capsys.readouterr().err
    summary = json.loads(err.split("posestream: ")[-1])
    assert frozen, "the pipeline ended before the engine was frozen"
    assert code == 1
    assert "did not reach the renderer within 2 s; stopping" in err
    assert summary["errors"]["crashed"] == {"engine": "did not stop within 10 s of SIGTERM; killed"}
    assert summary["frames"] == len(list(read_pose_file(poses))) >= 3


@pytest.mark.parametrize("stage, sig, expect", [
    ("render", "SIGKILL", {"crashed": {"render": "killed by signal 9"}, "stopped": {}}),
    ("serve", "SIGTERM", {"crashed": {}, "stopped": {"engine": "stopped by SIGTERM"}}),
])
def test_a_stage_killed_or_stopped_by_someone_else_is_named_and_the_frames_written_are_counted(tmp_path, stage, sig,
                                                                                                expect):
    import json
    import os
    import signal
    import subprocess
    import sys

    make_video(tmp_path / "in.mp4", 600, fps=25)  # 24 s at its own pace: still running when stopped
    poses = tmp_path / "out.jsonl"
    run = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "--source", str(tmp_path / "in.mp4"),
                            "--realtime", "--poses", str(poses), "--no-progress", *MODEL_CLI],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: poses.exists() and poses.read_text().count("\n") >= 6, 60, "frames through the pipeline")
        os.kill(wait_for(lambda: _pid_of(stage, parent=run.pid), 10, f"the {stage} stage"), getattr(signal, sig))
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    summary = json.loads(err.split("posestream: ")[-1])
    assert run.returncode == 1
    assert {k: summary["errors"][k] for k in ("crashed", "stopped")} == expect
    assert summary["frames"] == len(list(read_pose_file(poses))) >= 5, "what the renderer wrote, also when it died"


def test_the_summary_names_frames_the_model_failed_on_and_recent_rejects(tmp_path):
    """The engine's summary (written by serve_main from EngineServer's stats) reaches the closing summary."""
    import json

    from stream.pipeline import _summary
    from stream.stages import write_summary

    write_summary(str(tmp_path / "serve.json"), {"engine_errors": 2, "failed_frames": ["clip#4: RuntimeError: x"],
                                                 "rejects": {"invalid": 1}, "rejected": ["invalid: frame 'c'#1"]})
    summary = _summary(tmp_path, 0.0, {})
    assert summary["errors"]["engine_failed_frames"] == ["clip#4: RuntimeError: x"]
    assert summary["errors"]["rejected"] == ["invalid: frame 'c'#1"]
    assert json.loads((tmp_path / "serve.json").read_text())["engine_errors"] == 2
