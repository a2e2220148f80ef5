"""Lossless delivery end to end, with real sockets and processes: each renderer gets exactly its stream, a frame
is done for its capture only once its renderer wrote it, a renderer killed and restarted with --resume leaves
every frame exactly once, a capture whose renderer is gone fails with a clear error, and one bad frame never
costs another frame anything."""

import signal
import threading
import time

import numpy as np
import zmq

from stream import wire
from stream.capture import Capture, CaptureConfig
from stream.posefile import read_pose_file
from stream.render import RenderConfig, Renderer
from stream.serve import EngineServer, ServeConfig
from stream.sources import open_source
from stream.transport import Policy
from tests.stream.conftest import decoded_times, make_video, small_engine, start_stage, wait_for

FAST = Policy(heartbeat_s=0.1, peer_timeout_s=1.0)


def _server(ipc, engine=None, **kw):
    server = EngineServer(engine or small_engine(), ServeConfig(ipc["frames"], ipc["poses"], ipc["deliver"],
                                                                 policy=FAST, **kw))
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    assert server.ready.wait(30)
    return server, stop, thread


def _start(*stages) -> list[threading.Thread]:
    threads = [threading.Thread(target=stage.run, daemon=True) for stage in stages]
    for t in threads:
        t.start()
    return threads


def test_two_lossless_streams_reach_exactly_their_own_renderers(tmp_path, ipc):
    clips = {name: make_video(tmp_path / f"{name}.mp4", 40, fps=50) for name in ("left", "right")}
    server, stop, serving = _server(ipc)
    seen = {name: [] for name in clips}
    renderers = {name: Renderer(RenderConfig(ipc["deliver"], video=str(tmp_path / f"{name}.out.mp4"),
                                             poses=str(tmp_path / f"{name}.jsonl"), stream=name, policy=FAST),
                                on_frame=lambda record, name=name: seen[name].append((record.stream, record.frame)))
                 for name in clips}
    captures = {name: Capture(open_source(str(tmp_path / f"{name}.mp4")),
                              CaptureConfig(ipc["frames"], name, lossless=True, policy=FAST, shm=name == "left"))
                for name in clips}
    try:
        threads = _start(*renderers.values())
        wait_for(lambda: len(server.assigned) == 2, 20, "both claims")
        threads += _start(*captures.values())
        for t in threads:
            t.join(90)
    finally:
        stop.set()
        serving.join(10)
    for name, pts in clips.items():
        assert seen[name] == [(name, i) for i in range(40)], f"{name}: its own frames, each once, in order"
        assert captures[name].stats.acked == 40 and captures[name].stats.error is None
        assert [r.pts for r in read_pose_file(tmp_path / f"{name}.jsonl")] == pts
        assert decoded_times(tmp_path / f"{name}.out.mp4") == decoded_times(tmp_path / f"{name}.mp4")
        assert renderers[name].stats.duplicates == 0 and renderers[name].stats.gaps == 0
        assert not (tmp_path / f"{name}.out.partial.mp4").exists()


def test_a_renderer_killed_and_resumed_mid_stream_leaves_every_frame_exactly_once(tmp_path, ipc):
    pts = make_video(tmp_path / "in.mp4", 100, fps=50)  # 2 s at its own pace: the kill lands mid-stream
    out, poses = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    server, stop, serving = _server(ipc)
    args = ("--deliver", ipc["deliver"], "-o", str(out), "--poses", str(poses), "--stream", "clip")
    first = start_stage("render", *args)
    capture = Capture(open_source(str(tmp_path / "in.mp4"), realtime=True),
                      CaptureConfig(ipc["frames"], "clip", lossless=True, policy=FAST))
    second = None
    try:
        wait_for(lambda: "clip" in server.assigned, 30, "the renderer's claim")
        (feeding,) = _start(capture)
        wait_for(lambda: poses.exists() and poses.read_text().count("\n") >= 15, 60, "frames rendered")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = poses.read_text().count("\n")
        assert (tmp_path / "out.partial.mp4").exists(), "the video so far, on disk"
        acked_then = capture.stats.acked
        second = start_stage("render", *args, "--resume")
        feeding.join(60)
        assert second.wait(30) == 0
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
        stop.set()
        serving.join(10)
    assert killed_at < 100 and acked_then <= killed_at, "nothing was acknowledged that the files did not hold"
    assert capture.stats.error is None and capture.stats.acked == 100
    assert [r.frame for r in read_pose_file(poses)] == list(range(100))
    assert [r.pts for r in read_pose_file(poses)] == pts
    assert decoded_times(out) == decoded_times(tmp_path / "in.mp4")
    assert not (tmp_path / "out.partial.mp4").exists()


def test_a_lossless_capture_whose_renderer_is_gone_stops_with_an_error_naming_why(tmp_path, ipc):
    make_video(tmp_path / "in.mp4", 30)
    server, stop, serving = _server(ipc)
    capture = Capture(open_source(str(tmp_path / "in.mp4")),
                      CaptureConfig(ipc["frames"], "orphan", lossless=True, policy=FAST, give_up_s=3.0))
    started = time.monotonic()
    try:
        stats = capture.run()
    finally:
        stop.set()
        serving.join(10)
    assert time.monotonic() - started < 20
    assert stats.acked == 0 and "no renderer has claimed stream 'orphan'" in stats.error


class _FailsOnPoison:
    """A real engine with a fault injected: any frame of stream "poison" makes ``infer`` raise."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def infer(self, frames, stream_ids=None, **kw):
        if "poison" in (stream_ids or []):
            raise ZeroDivisionError("injected failure")
        return self.engine.infer(frames, stream_ids=stream_ids, **kw)


def _send_frames(sock, stream, count, lossless=False, **header):
    for seq in range(count):
        frame = wire.Frame(stream=stream, seq=seq, capture_ns=time.time_ns(), width=64, height=48,
                           lossless=lossless, **header)
        sock.send_multipart(wire.frame_parts(frame, np.full((48, 64, 3), seq, np.uint8)), copy=False)


def test_a_frame_the_model_fails_on_costs_its_batch_mates_nothing(tmp_path, ipc):
    server, stop, serving = _server(ipc, engine=_FailsOnPoison(small_engine()), budget_s=0.2)
    good = Renderer(RenderConfig(ipc["deliver"], poses=str(tmp_path / "good.jsonl"), stream="good", policy=FAST))
    bad = Renderer(RenderConfig(ipc["deliver"], poses=str(tmp_path / "bad.jsonl"), stream="poison", policy=FAST))
    ctx = zmq.Context.instance()
    socks = [ctx.socket(zmq.DEALER) for _ in range(2)]
    try:
        threads = _start(good, bad)
        wait_for(lambda: len(server.assigned) == 2, 20, "both claims")
        for sock in socks:
            sock.connect(ipc["frames"])
        _send_frames(socks[0], "good", 6)
        _send_frames(socks[1], "poison", 3)  # in the same batches (200 ms budget) as good frames
        for sock, name, count in ((socks[0], "good", 6), (socks[1], "poison", 3)):
            sock.send(wire.encode(wire.EndOfStream(stream=name, seq=count)))
        for t in threads:
            t.join(30)
    finally:
        for sock in socks:
            sock.close(linger=0)
        stop.set()
        serving.join(10)
    good_records = list(read_pose_file(tmp_path / "good.jsonl"))
    bad_records = list(read_pose_file(tmp_path / "bad.jsonl"))
    assert [r.frame for r in good_records] == list(range(6)) and all(len(r.poses) == 1 for r in good_records)
    assert [r.frame for r in bad_records] == [0, 1, 2] and all(len(r.poses) == 0 for r in bad_records)
    assert server.stats.engine_errors == 3 and "poison#0: ZeroDivisionError" in server.stats.failed_frames[0]


def test_hostile_header_values_are_rejected_alone_and_a_lossless_stream_beside_them_is_complete(tmp_path, ipc):
    make_video(tmp_path / "in.mp4", 30)
    server, stop, serving = _server(ipc)
    renderer = Renderer(RenderConfig(ipc["deliver"], poses=str(tmp_path / "out.jsonl"), stream="clip", policy=FAST))
    capture = Capture(open_source(str(tmp_path / "in.mp4")),
                      CaptureConfig(ipc["frames"], "clip", lossless=True, policy=FAST))
    rogue = zmq.Context.instance().socket(zmq.DEALER)
    hostile = [dict(time_base=(1, 0)), dict(rate=(1, 0)), dict(pts=2**64 - 1), dict(intrinsics=(float("nan"),) * 4),
               dict(rate=(10**9, 1)), dict(pts=-(2**63))]
    try:
        threads = _start(renderer)
        wait_for(lambda: "clip" in server.assigned, 20, "the claim")
        rogue.connect(ipc["frames"])
        threads += _start(capture)
        for header in hostile:
            _send_frames(rogue, "rogue", 2, lossless=True, **header)
        for t in threads:
            t.join(60)
        wait_for(lambda: server.rejects.counts["invalid"] >= 2 * len(hostile), 10, "every hostile frame counted")
    finally:
        rogue.close(linger=0)
        stop.set()
        serving.join(10)
    assert [r.frame for r in read_pose_file(tmp_path / "out.jsonl")] == list(range(30))
    assert capture.stats.acked == 30 and renderer.stats.ended
    assert server.rejects.counts["invalid"] == 2 * len(hostile) and "rogue" not in server.streams
