"""CURVE on every tcp endpoint: with the engine's keys on, a client needs an allowed key to send frames, read
poses or take deliveries; an unauthorised client's handshake fails (ZAP) and nothing of it gets through."""

import logging
import threading
import time

import numpy as np
import pytest
import zmq
import zmq.utils.monitor

from stream import wire
from stream.cli import main as posestream
from stream.render import RenderConfig, Renderer
from stream.security import CurveKeys, secure_client
from stream.serve import EngineServer, ServeConfig
from stream.subscribe import PoseSubscriber
from stream.transport import Policy
from tests.stream.conftest import small_engine, wait_for

FAST = Policy(heartbeat_s=0.1, peer_timeout_s=1.0)


@pytest.fixture
def keys(tmp_path):
    for name in ("engine", "good", "evil"):
        assert posestream(["keys", str(tmp_path / "keys"), "--name", name]) == 0
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "good.key").write_bytes((tmp_path / "keys" / "good.key").read_bytes())
    k = tmp_path / "keys"
    return {"server": CurveKeys(str(k / "engine.key_secret"), clients=str(allowed)),
            "good": CurveKeys(str(k / "good.key_secret"), server=str(k / "engine.key")),
            "evil": CurveKeys(str(k / "evil.key_secret"), server=str(k / "engine.key"))}


def test_keys_are_made_once_and_the_secret_is_private(tmp_path, capsys):
    assert posestream(["keys", str(tmp_path), "--name", "cam"]) == 0
    assert (tmp_path / "cam.key").exists() and (tmp_path / "cam.key_secret").stat().st_mode & 0o077 == 0
    assert posestream(["keys", str(tmp_path), "--name", "cam"]) == 2
    assert "exists; not overwriting" in capsys.readouterr().err


def _dealer(ctx, endpoint, keys):
    """A frame-channel client as ``stream.transport.frame_dealer`` makes it, with a monitor attached before it
    connects (a refused client does not retry, so its one handshake is the one to watch)."""
    sock = ctx.socket(zmq.DEALER)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    secure_client(sock, keys, endpoint)
    sock.connect(endpoint)
    return sock, monitor


def _handshake(monitor) -> str:
    assert monitor.poll(20_000), "no handshake within 20 s"
    event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
    monitor.close(linger=0)
    return "accepted" if event == zmq.EVENT_HANDSHAKE_SUCCEEDED else "refused"


def _send_frames(sock, stream, count) -> int:
    """How many of ``count`` frames the socket takes without waiting (a refused client may queue them while it
    retries; none reaches the engine)."""
    for seq in range(count):
        frame = wire.Frame(stream=stream, seq=seq, capture_ns=time.time_ns(), width=64, height=48)
        try:
            sock.send_multipart(wire.frame_parts(frame, np.zeros((48, 64, 3), np.uint8)), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return seq
    return count


def test_only_clients_with_an_allowed_key_send_frames_read_poses_or_take_deliveries(tmp_path, keys, caplog):
    caplog.set_level(logging.DEBUG, logger="posestream.zap")
    any_port = "tcp://127.0.0.1:*"
    server = EngineServer(small_engine(), ServeConfig(any_port, any_port, any_port, policy=FAST, keys=keys["server"]))
    stop, stop_evil = threading.Event(), threading.Event()
    serving = threading.Thread(target=server.run, args=(stop,), daemon=True)
    serving.start()
    assert server.ready.wait(30)
    ep = server.bound
    ctx = zmq.Context()
    subs = {name: PoseSubscriber(ep["publish"], ctx=ctx, keys=keys.get(name)) for name in ("good", "evil", "plain")}
    renderer = Renderer(RenderConfig(ep["deliver"], poses=str(tmp_path / "good.jsonl"), stream="good", policy=FAST,
                                     keys=keys["good"]), ctx=ctx)
    evil_renderer = Renderer(RenderConfig(ep["deliver"], stream="good", policy=FAST, keys=keys["evil"]), ctx=ctx)
    threads = [threading.Thread(target=renderer.run, daemon=True),
               threading.Thread(target=evil_renderer.run, args=(stop_evil,), daemon=True)]
    dealers = {name: _dealer(ctx, ep["frames"], keys.get(name)) for name in ("good", "evil", "plain")}
    try:
        assert {name: _handshake(mon) for name, (_, mon) in dealers.items()} == \
            {"good": "accepted", "evil": "refused", "plain": "refused"}
        for t in threads:
            t.start()
        wait_for(lambda: sum("DENIED" in r.getMessage() for r in caplog.records) >= 3, 20,
                 "the authenticator refusing the rogue subscriber, dealer and renderer")
        wait_for(lambda: "good" in server.assigned, 20, "the allowed renderer's claim")
        sent = {name: _send_frames(dealers[name][0], name, 5) for name in ("evil", "plain", "good")}
        dealers["good"][0].send(wire.encode(wire.EndOfStream(stream="good", seq=5)))
        got = [subs["good"].receive(20) for _ in range(5)]
        threads[0].join(20)
        assert subs["evil"].receive(0.5) is None and subs["plain"].receive(0.5) is None
    finally:
        stop_evil.set()
        threads[1].join(10)
        stop.set()
        serving.join(10)
        for sock, _ in dealers.values():
            sock.close(linger=0)
        for sub in subs.values():
            sub.close()
        ctx.term()
    assert sent["good"] == 5
    assert [r.frame for r in got] == list(range(5)) and all(r.stream == "good" for r in got)
    assert set(server.streams) <= {"good"} and server.stats.frames == 5, "nothing of the unauthorised ones arrived"
    assert renderer.stats.frames == 5 and renderer.stats.ended and evil_renderer.stats.frames == 0


def test_a_bind_beyond_loopback_without_curve_is_warned_about(caplog):
    from stream.security import secure_server

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    with caplog.at_level(logging.WARNING):
        secure_server(sock, None, "tcp://0.0.0.0:5999")
        secure_server(sock, None, "tcp://127.0.0.1:5999")
        secure_server(sock, None, "ipc:///tmp/x")
    sock.close(linger=0)
    warned = [r.getMessage() for r in caplog.records if "without CURVE" in r.getMessage()]
    assert len(warned) == 1 and "tcp://0.0.0.0:5999" in warned[0]
