"""The fuzzer of tools/bench/fuzz.py, bounded for the suite: 10,000 hostile messages at a real engine (and 1,000 at
its delivery channel), 2,000 hostile deliveries at a real renderer; no stage dies, every message is either
rejected and counted (in Prometheus too) or taken, and a normal lossless stream afterwards is complete."""

import random
import threading
import urllib.request

import numpy as np
import pytest
import zmq

from stream import wire
from stream.capture import Capture, CaptureConfig
from stream.metrics import Metrics
from stream.posefile import read_pose_file
from stream.render import RenderConfig, Renderer
from stream.serve import EngineServer, ServeConfig
from stream.sources import open_source
from stream.transport import Policy, deliver_router
from tests.stream.conftest import make_video, small_engine, wait_for
from tools.bench.fuzz import delivery_messages, make_fixtures, messages, poses_messages

FAST = Policy(heartbeat_s=0.1, peer_timeout_s=2.0)


def _prometheus_rejects(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("posestream_rejects_total{"))


@pytest.mark.timeout(180)
def test_ten_thousand_hostile_messages_crash_nothing_are_all_counted_and_a_normal_stream_then_completes(tmp_path, ipc):
    make_video(tmp_path / "normal.mp4", 40)
    metrics = Metrics(port=0)
    server = EngineServer(small_engine(), ServeConfig(ipc["frames"], ipc["poses"], ipc["deliver"], policy=FAST),
                          metrics)
    stop = threading.Event()
    serving = threading.Thread(target=server.run, args=(stop,), daemon=True)
    serving.start()
    assert server.ready.wait(30)
    renderer = Renderer(RenderConfig(ipc["deliver"], poses=str(tmp_path / "normal.jsonl"),
                                     video=str(tmp_path / "out.mp4"), stream="normal", policy=FAST))
    rendering = threading.Thread(target=renderer.run, daemon=True)
    rendering.start()
    fx = make_fixtures(str(tmp_path))
    ctx = zmq.Context.instance()
    frames, deliver = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    rng = random.Random(19)
    sent = must = 0
    try:
        wait_for(lambda: "normal" in server.assigned, 20, "the renderer's claim")
        frames.connect(ipc["frames"])
        deliver.connect(ipc["deliver"])
        for parts, reject in messages(rng, 10_000, fx):
            frames.send_multipart(parts)
            sent, must = sent + 1, must + reject
        for parts, reject in delivery_messages(rng, 1_000):
            deliver.send_multipart(parts)
            sent, must = sent + 1, must + reject
        # the last message on each connection: once both are in, everything before them was handled
        frames.send(wire.encode(wire.Heartbeat(sender="s", role="capture", instance=1, sent_ns=1, stream="sentinel")))
        deliver.send(wire.encode(wire.Claim(instance=99, stream="sentinel-r")))
        wait_for(lambda: "sentinel" in server.streams and "sentinel-r" in server.assigned, 60, "the sentinels")
        # taken: what the fuzzer sent that was well-formed (claims aside: the renderer's own come every 100 ms, and
        # every claim the fuzzer sends is invalid), less the sentinel heartbeat
        taken = sum(n for kind, n in server.stats.messages.items() if kind != "Claim") - 1
        assert server.rejects.total + taken == sent, "every message rejected and counted, or taken"
        assert server.rejects.total >= must and taken < sent - must
        wait_for(lambda: _prometheus_rejects(metrics.port) == server.rejects.total, 10, "Prometheus's count")
        capture = Capture(open_source(str(tmp_path / "normal.mp4")),
                          CaptureConfig(ipc["frames"], "normal", lossless=True, policy=FAST, shm=True))
        stats = capture.run()
        rendering.join(60)
    finally:
        frames.close(linger=0)
        deliver.close(linger=0)
        stop.set()
        serving.join(30)
        metrics.close()
        fx.cleanup()
    assert not serving.is_alive() and stats.error is None and stats.acked == 40
    assert [r.frame for r in read_pose_file(tmp_path / "normal.jsonl")] == list(range(40))
    reasons = set(server.rejects.counts)
    assert {"malformed", "version", "kind", "parts", "invalid", "oversized", "shm", "unexpected"} <= reasons, reasons


def test_two_thousand_hostile_deliveries_leave_a_renderer_writing(tmp_path, ipc):
    engine_side = deliver_router(zmq.Context.instance(), ipc["deliver"], Policy())
    renderer = Renderer(RenderConfig(ipc["deliver"], video=str(tmp_path / "o.mp4"), poses=str(tmp_path / "o.jsonl"),
                                     coco=str(tmp_path / "c.json"), show=False, policy=Policy(heartbeat_s=0.1)))
    stop = threading.Event()
    rendering = threading.Thread(target=renderer.run, args=(stop,), daemon=True)
    rendering.start()
    rng = random.Random(7)
    try:
        identity, _ = engine_side.recv_multipart()
        count = 0
        for parts in poses_messages(rng, 2_000):
            engine_side.send_multipart([identity, *parts])
            count += 1
        image = np.zeros((8, 16, 3), np.uint8)
        for seq in range(3):
            frame = wire.Frame(stream="fuzz", seq=seq, capture_ns=1, width=16, height=8, pts=seq, time_base=(1, 10))
            poses = wire.Poses(stream="fuzz", seq=seq, capture_ns=1, engine_ns=1, publish_ns=2, model_id="m",
                               layout="coco17", n=1, k=17, xy=np.full((1, 17, 2), 4, "<f4").tobytes(),
                               score=np.ones((1, 17), "<f4").tobytes(), person_score=np.ones(1, "<f4").tobytes(),
                               track_id=bytes(8), width=16, height=8)
            engine_side.send_multipart([identity, wire.encode(poses), *wire.frame_parts(frame, image)])
        wait_for(lambda: renderer.stats.frames == 3, 60, "the well-formed frames after the hostile ones")
    finally:
        stop.set()
        rendering.join(30)
        engine_side.close(linger=0)
    assert not rendering.is_alive() and renderer.rejects.total == count
    assert [r.frame for r in read_pose_file(tmp_path / "o.jsonl")] == [0, 1, 2]
