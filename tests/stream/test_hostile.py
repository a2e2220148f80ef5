"""Well-formed but hostile input: every value a stage divides by, indexes with or draws is checked at the wire,
JPEG sizes are read from the JPEG header before decoding, shared memory is read only from announced regular
files by pread, and a renderer fed hostile poses by its engine keeps writing."""

import os
import threading

import cv2
import msgspec
import numpy as np
import pytest
import zmq

from stream import wire
from stream.posefile import read_pose_file
from stream.shm import SHM_DIR, ShmReader, ShmRing, sweep_stale
from tests.stream.conftest import wait_for

BIG = 2**64 - 1


def _frame(**kw):
    base = dict(stream="cam", seq=3, capture_ns=1, width=8, height=6)
    base.update(kw)
    return wire.Frame(**base)


def _reject(parts, limits: wire.Limits | None = None) -> wire.WireError:
    with pytest.raises(wire.WireError) as err:
        wire.decode(parts, limits or wire.Limits())
    return err.value


@pytest.mark.parametrize("field", [
    dict(time_base=(1, 0)), dict(time_base=(0, 1)), dict(time_base=(-1, 30)), dict(rate=(1, 0)), dict(rate=(30, 0)),
    dict(rate=(10**9, 1)), dict(rate=(1, 10**9)), dict(pts=BIG), dict(pts=-(2**63)), dict(capture_ns=-1),
    dict(capture_ns=BIG), dict(seq=-1), dict(seq=BIG), dict(window_start=4), dict(intrinsics=(float("nan"), 1, 1, 1)),
    dict(intrinsics=(float("inf"), 1.0, 1.0, 1.0)), dict(intrinsics=(0.0, 1.0, 1.0, 1.0)), dict(stream=""),
    dict(stream="x" * 129), dict(stream="a\nb"), dict(pixel_format="rgb48"), dict(encoding="shm", shm_path=None),
])
def test_frame_header_values_out_of_range_are_rejected_by_name(field):
    err = _reject(wire.frame_parts(_frame(**field), np.zeros((6, 8, 3), np.uint8)))
    assert err.reason == "invalid" and str(err).count(":") >= 2, str(err)


@pytest.mark.parametrize("size", [(0, 6), (8, 0), (16385, 2), (16384, 16384)])
def test_frame_sizes_beyond_the_limits_are_rejected_before_any_pixel_is_read(size):
    w, h = size
    err = _reject([wire.encode(_frame(width=w, height=h)), b""])
    assert err.reason in ("oversized", "invalid"), str(err)


def _poses(**kw) -> wire.Poses:
    n, k = 1, 17
    base = dict(stream="cam", seq=3, capture_ns=1, engine_ns=2, publish_ns=3, model_id="m", layout="coco17", n=n, k=k,
                xy=np.full((n, k, 2), 10, "<f4").tobytes(), score=np.ones((n, k), "<f4").tobytes(),
                person_score=np.ones(n, "<f4").tobytes(), track_id=np.zeros(n, "<i8").tobytes(), width=64, height=48)
    base.update(kw)
    return wire.Poses(**base)


@pytest.mark.parametrize("field", [
    dict(xy=np.full((1, 17, 2), np.nan, "<f4").tobytes()), dict(xy=np.full((1, 17, 2), 5e36, "<f4").tobytes()),
    dict(xy=np.full((1, 17, 2), -1000, "<f4").tobytes()), dict(score=np.full((1, 17), np.inf, "<f4").tobytes()),
    dict(person_score=np.array([np.nan], "<f4").tobytes()), dict(xyz=np.full((1, 17, 3), 1e30, "<f4").tobytes()),
    dict(layout="nope"), dict(k=16, xy=b"\0" * 16 * 8, score=b"\0" * 16 * 4), dict(pts=BIG), dict(time_base=(1, 0)),
    dict(publish_ns=-5), dict(width=10**6),
])
def test_hostile_poses_are_rejected(field):
    assert _reject([wire.encode(_poses(**field))]).reason in ("invalid", "malformed")


def test_the_engine_sends_only_poses_that_pass_even_when_its_model_diverges():
    from engine.results import Poses

    xy = np.full((2, 17, 2), 20, np.float32)
    xy[0, 3] = np.nan
    xy[1, 4] = (5e36, -5e36)
    diverged = Poses("coco17", xy, np.ones((2, 17), np.float32), np.array([1, np.inf], np.float32),
                     np.zeros(2, np.int64), np.full((2, 17, 3), np.inf, np.float32))
    msg = wire.pack_poses(diverged, _frame(width=64, height=48), "m", 1, 2)
    back = wire.unpack_poses(wire.decode([wire.encode(msg)]).msg)
    assert back.score[0, 3] == 0 and back.score[1, 4] == 0 and back.score[0, 2] == 1
    assert np.isfinite(back.xy).all() and np.isfinite(back.xyz).all() and np.isfinite(back.person_score).all()


def _jpeg(width, height) -> bytes:
    return cv2.imencode(".jpg", np.full((height, width, 3), 90, np.uint8))[1].tobytes()


def _declare(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) claiming ``width`` x ``height``."""
    pos = data.index(b"\xff\xc0")
    return data[:pos + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[pos + 9:]


def test_jpeg_sizes_come_from_the_jpeg_header_before_any_decoding():
    small = _jpeg(64, 48)
    assert wire.jpeg_size(small) == (64, 48)
    bomb = _declare(small, 16384, 16384)  # a few KB declaring 805 MB of pixels
    assert wire.jpeg_size(bomb) == (16384, 16384)
    header = _frame(width=16384, height=16384, encoding="jpeg")
    assert _reject([wire.encode(header), bomb]).reason == "oversized"
    within = _frame(width=4000, height=4000, encoding="jpeg")  # 48 MB: within the default limit
    err = _reject([wire.encode(within), bomb])
    assert err.reason == "invalid" and "JPEG declares 16384x16384" in str(err)
    garbage = _declare(small, 4000, 3000)[:200] + os.urandom(4_000_000)  # would fail to decode, if decoded
    err = _reject([wire.encode(_frame(width=640, height=480, encoding="jpeg")), garbage])
    assert err.reason == "invalid" and "declares 4000x3000" in str(err), "rejected on the header, not by decoding"
    assert _reject([wire.encode(_frame(width=64, height=48, encoding="jpeg")), b"GIF89a"]).reason == "invalid"
    packet = wire.decode([wire.encode(_frame(width=64, height=48, encoding="jpeg")), small])
    assert packet.image.shape == (48, 64, 3)


def _shm_file(name: str, size: int) -> str:
    path = os.path.join(SHM_DIR, f"posestream-{name}-{os.getpid()}-{os.urandom(2).hex()}")
    with open(path, "wb") as fh:
        fh.write(b"\0" * size)
    return path


def test_shared_memory_is_read_only_from_announced_regular_files_of_this_user(tmp_path):
    reader = ShmReader(max_size=1 << 20)
    made = []
    try:
        fifo = os.path.join(SHM_DIR, f"posestream-fifo-{os.getpid()}-0000")
        os.mkfifo(fifo)
        made.append(fifo)
        with pytest.raises(ValueError, match="not a regular file"):
            reader.announce(b"p", fifo, 100)  # opening it must not block
        target = _shm_file("target", 100)
        link = os.path.join(SHM_DIR, f"posestream-link-{os.getpid()}-0000")
        os.symlink(target, link)
        made += [target, link]
        with pytest.raises(ValueError, match="ring"):
            reader.announce(b"p", link, 100)  # O_NOFOLLOW
        with pytest.raises(ValueError, match="announced 99"):
            reader.announce(b"p", target, 99)
        with pytest.raises(ValueError, match="not a posestream ring"):
            reader.announce(b"p", str(tmp_path / "posestream-x-1-1"), 100)
        with pytest.raises(ValueError, match="not a posestream ring"):
            reader.announce(b"p", os.path.join(SHM_DIR, "posestream-x", "..", "other"), 100)
        with pytest.raises(ValueError, match="limit"):
            reader.announce(b"p", target, 2 << 20)
        if os.geteuid() == 0:  # root can make a file that belongs to someone else
            foreign = _shm_file("foreign", 100)
            made.append(foreign)
            os.chown(foreign, 65534, 65534)
            with pytest.raises(ValueError, match="belongs to uid 65534"):
                reader.announce(b"p", foreign, 100)
        assert not reader.rings
    finally:
        reader.close()
        for path in made:
            os.unlink(path)


def test_a_ring_that_shrinks_under_the_reader_costs_frames_not_the_process():
    ring, reader = ShmRing("shrink", 4096, 4), ShmReader()
    try:
        reader.announce(b"p", ring.path, ring.size)
        ring.put(3, np.full(4096, 7, np.uint8))
        assert reader.read(b"p", ring.path, 3 * 4096, 4096).max() == 7
        os.truncate(ring.path, 4096)  # under a mapping, reading slot 3 would be SIGBUS
        with pytest.raises(ValueError, match="shrank"):
            reader.read(b"p", ring.path, 3 * 4096, 4096)
        assert reader.read(b"p", ring.path, 0, 4096).shape == (4096,)
    finally:
        reader.close()
        ring.close()


def test_rings_and_folders_of_dead_processes_are_swept(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from stream import transport

    code = ("import os, tempfile; from stream.shm import ShmRing; from stream.transport import private_dir; "
            "r = ShmRing('dead', 64, 2); d = private_dir(); print(r.path); print(d); os._exit(9)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    ring_path, folder = out
    assert os.path.exists(ring_path) and os.path.isdir(folder), "a killed process leaves both behind"
    live = ShmRing("alive", 64, 2)
    try:
        assert ring_path in sweep_stale() and not os.path.exists(ring_path)
        assert os.path.exists(live.path), "a living process's ring stays"
    finally:
        live.close()
    assert folder in transport.sweep_stale_dirs() and not os.path.exists(folder)
    assert tempfile.gettempdir() == os.path.dirname(folder)


def test_the_engine_survives_shared_memory_attacks_and_keeps_serving(ipc):
    from stream.serve import EngineServer, ServeConfig
    from stream.transport import Policy
    from tests.stream.conftest import small_engine

    fast = Policy(heartbeat_s=0.1, peer_timeout_s=2.0)
    server = EngineServer(small_engine(), ServeConfig(ipc["frames"], ipc["poses"], policy=fast))
    stop = threading.Event()
    serving = threading.Thread(target=server.run, args=(stop,), daemon=True)
    serving.start()
    server.ready.wait(30)
    fifo = os.path.join(SHM_DIR, f"posestream-fifo-{os.getpid()}-0001")
    os.mkfifo(fifo)
    ring = ShmRing("victim", 8 * 6 * 3, 4)
    rogue = zmq.Context.instance().socket(zmq.DEALER)
    rogue.setsockopt(zmq.IDENTITY, b"rogue")
    try:
        rogue.connect(ipc["frames"])

        def beat(path, size):
            hb = wire.Heartbeat(sender="rogue", role="capture", instance=1, sent_ns=1, stream="rogue", shm_path=path,
                                shm_size=size)
            rogue.send(wire.encode(hb))

        def frame(seq, path, offset=0):
            f = _frame(stream="rogue", seq=seq, encoding="shm", shm_path=path, shm_offset=offset)
            rogue.send_multipart(wire.frame_parts(f, None))

        beat(fifo, 4096)                       # a FIFO: would block an open() without O_NONBLOCK
        frame(0, fifo)                         # never announced
        frame(1, ring.path)                    # someone else's ring, not announced by this connection
        beat(ring.path, ring.size)             # announce it (same user: allowed)
        frame(2, ring.path)
        wait_for(lambda: server.stats.frames == 1, 10, "the one announced, intact frame served")
        os.truncate(ring.path, 0)              # then it shrinks under the engine
        frame(3, ring.path, 3 * 8 * 6 * 3)
        wait_for(lambda: server.rejects.counts["shm"] >= 4, 10, "the attacks counted")
        assert serving.is_alive()
    finally:
        rogue.close(linger=0)
        stop.set()
        serving.join(10)
        os.unlink(fifo)
        ring.close()
    assert server.rejects.counts["shm"] == 4


def test_a_renderer_fed_hostile_poses_keeps_writing(tmp_path, ipc):
    from stream.render import RenderConfig, Renderer
    from stream.transport import Policy, deliver_router

    engine_side = deliver_router(zmq.Context.instance(), ipc["deliver"], Policy())
    renderer = Renderer(RenderConfig(ipc["deliver"], video=str(tmp_path / "o.mp4"), poses=str(tmp_path / "o.jsonl"),
                                     coco=str(tmp_path / "c.json"), policy=Policy(heartbeat_s=0.1)))
    stop = threading.Event()
    rendering = threading.Thread(target=renderer.run, args=(stop,), daemon=True)
    rendering.start()
    try:
        identity, claim = engine_side.recv_multipart()
        assert isinstance(wire.decode([claim]).msg, wire.Claim)
        image = np.zeros((48, 64, 3), np.uint8)

        def send(poses_fields=None, frame_fields=None, raw=None):
            head = raw or wire.encode(_poses(seq=seq, **(poses_fields or {})))
            fhead = wire.encode(_frame(**{"seq": seq, "width": 64, "height": 48, **(frame_fields or {})}))
            engine_side.send_multipart([identity, head, fhead, memoryview(image).cast("B")])

        hostile = [dict(xy=np.full((1, 17, 2), 5e36, "<f4").tobytes()), dict(layout="bogus"), dict(pts=BIG),
                   dict(xy=np.full((1, 17, 2), np.nan, "<f4").tobytes()), dict(time_base=(1, 0))]
        frames = [dict(rate=(1, 0)), dict(pts=BIG), dict(time_base=(0, 0)), dict(width=10**6)]
        seq = 0
        for fields in hostile:
            send(poses_fields=fields)
        for fields in frames:
            send(frame_fields=fields)
        send(raw=msgspec.msgpack.encode({"v": 1, "kind": "poses", "n": -1}))
        for seq in range(3):
            stamp = dict(pts=seq * 100, time_base=(1, 1000))
            send(poses_fields=dict(xy=np.full((1, 17, 2), 30, "<f4").tobytes(), **stamp),
                 frame_fields=dict(rate=(10, 1), **stamp))
        wait_for(lambda: renderer.stats.frames == 3, 20, "the well-formed frames written")
    finally:
        stop.set()
        rendering.join(20)
        engine_side.close(linger=0)
    assert not rendering.is_alive() and renderer.rejects.total == len(hostile) + len(frames) + 1
    assert [r.frame for r in read_pose_file(tmp_path / "o.jsonl")] == [0, 1, 2]
