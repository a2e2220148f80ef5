import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.results import Poses as ResultPoses
from stream import wire


def _frame(**kw):
    base = dict(stream="cam0", seq=7, capture_ns=123456789, width=5, height=3, pts=3003, time_base=(1, 90000),
                rate=(30000, 1001), intrinsics=(500.0, 501.0, 2.0, 1.5), lossless=True, window_start=5)
    base.update(kw)
    return wire.Frame(**base)


def _result_poses(n=2, k=17, with_3d=True):
    rng = np.random.default_rng(n)
    return ResultPoses(layout="coco17", xy=rng.random((n, k, 2), np.float32) * 100,
                       score=rng.random((n, k), np.float32), person_score=rng.random(n, np.float32),
                       track_id=np.arange(n, dtype=np.int64) + 4,
                       xyz=rng.random((n, k, 3), np.float32) * 3000 if with_3d else None)


def test_frame_round_trip_keeps_header_and_pixels():
    image = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    frame = _frame()
    packet = wire.decode(wire.frame_parts(frame, image))
    assert packet.msg == frame
    assert np.array_equal(packet.image, image)


def test_jpeg_frame_round_trip():
    import cv2

    image = np.full((16, 24, 3), 128, np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    packet = wire.decode(wire.frame_parts(_frame(width=24, height=16, encoding="jpeg"), data))
    assert packet.image.shape == (16, 24, 3) and abs(int(packet.image.mean()) - 128) <= 2


@pytest.mark.parametrize("with_3d", [True, False])
def test_poses_round_trip_with_and_without_frame(with_3d):
    poses = _result_poses(with_3d=with_3d)
    frame = _frame(width=128, height=96)  # the keypoints (0-100 px) lie inside it
    msg = wire.pack_poses(poses, frame, "random:spm_small", engine_ns=1, publish_ns=frame.capture_ns + 2_500_000)
    alone = wire.decode([wire.encode(msg)])
    assert alone.msg == msg and alone.frame is None
    back = wire.unpack_poses(alone.msg)
    for name in ("xy", "score", "person_score", "track_id"):
        assert np.array_equal(getattr(back, name), getattr(poses, name))
    assert (back.xyz is None) == (not with_3d)
    image = np.zeros((96, 128, 3), np.uint8)
    with_frame = wire.decode([wire.encode(msg), *wire.frame_parts(frame, image)])
    assert with_frame.frame == frame and with_frame.image.shape == (96, 128, 3)
    record = wire.to_record(msg)
    assert record.frame == 7 and record.latency_ms == pytest.approx(2.5) and record.pts == 3003
    if with_3d:  # a subscriber can put the 3D back on the image: the camera it was computed with comes along
        fx, fy, cx, cy = msg.intrinsics
        assert record.intrinsics == {"fx": fx, "fy": fy, "cx": cx, "cy": cy} and fx > 0
        assert record.to_json()["intrinsics"] == record.intrinsics
    else:
        assert record.intrinsics is None and "intrinsics" not in record.to_json()


@pytest.mark.parametrize("msg", [
    wire.EndOfStream(stream="a", seq=10, error="a.mkv: truncated", lossless=True, window_start=9),
    wire.Heartbeat(sender="engine", role="engine", instance=99, sent_ns=5, stream="a"),
    wire.Ack(stream="a", next_seq=4, instance=99, resend=2),
])
def test_control_messages_round_trip(msg):
    assert wire.decode([wire.encode(msg)]).msg == msg


def _reason(parts, limits=None):
    with pytest.raises(wire.WireError) as err:
        wire.decode(parts, limits or wire.Limits())
    return err.value.reason


def test_rejects_name_their_reason():
    image = np.zeros((3, 5, 3), np.uint8)
    head, pixels = wire.frame_parts(_frame(), image)
    assert _reason([head, bytes(pixels)[:-1]]) == "truncated"
    assert _reason([head]) == "parts"
    assert _reason([msgspec.msgpack.encode({"v": 2, "kind": "frame"}), pixels]) == "version"
    assert _reason([msgspec.msgpack.encode({"v": 1, "kind": "bogus"})]) == "kind"
    bad = msgspec.msgpack.encode({"v": 1, "kind": "frame", "stream": 5, "seq": "x"})
    assert _reason([bad, pixels]) == "malformed"
    assert _reason([head, pixels], wire.Limits(max_header=8)) == "oversized"
    assert _reason([head, pixels], wire.Limits(max_pixels=10)) == "oversized"
    msg = wire.pack_poses(_result_poses(), _frame(), "m", 0, 0)
    msg.xy = msg.xy[:-4]
    assert _reason([wire.encode(msg)]) == "truncated"
    assert _reason([]) == "parts"


def test_reject_counter_counts_and_carries_on():
    counter = wire.RejectCounter("test")
    assert counter.try_decode([b"\xc1garbage"]) is None
    assert counter.try_decode([msgspec.msgpack.encode({"v": 0, "kind": "hb"})]) is None
    ok = counter.try_decode([wire.encode(wire.Ack(stream="a", next_seq=1, instance=1))])
    assert ok is not None and counter.counts == {"malformed": 1, "version": 1} and counter.total == 2


_valid = [wire.encode(_frame()), wire.encode(wire.Ack(stream="a", next_seq=1, instance=1))]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(st.binary(max_size=200), st.sampled_from(_valid)), min_size=0, max_size=4),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
def test_decoder_fuzz_never_raises_anything_but_wire_error(parts, flips):
    mutated = []
    for part in parts:
        data = bytearray(part)
        for pos, value in flips:
            if data:
                data[pos % len(data)] = value
        mutated.append(bytes(data))
    try:
        packet = wire.decode(mutated)
    except wire.WireError as err:
        assert err.reason in {"parts", "malformed", "version", "kind", "truncated", "oversized", "invalid", "shm"}
    else:
        assert isinstance(packet.msg, (wire.Frame, wire.Poses, wire.EndOfStream, wire.Heartbeat, wire.Ack, wire.Claim))


def test_shared_memory_frames_resolve_through_an_announced_ring_only(tmp_path):
    from functools import partial

    from stream.shm import ShmReader, ShmRing

    ring, reader = ShmRing("cam 0", 5 * 3 * 3, 3), ShmReader()
    try:
        images = [np.full((3, 5, 3), v, np.uint8) for v in (1, 2, 3, 4)]
        headers = []
        for seq, image in enumerate(images):
            path, offset = ring.put(seq, image)
            headers.append(_frame(seq=seq, window_start=0, encoding="shm", shm_path=path, shm_offset=offset))
        read = partial(reader.read, b"peer")
        assert _reason(wire.frame_parts(headers[3], None)) == "shm", "a receiver without shared memory"
        with pytest.raises(wire.WireError, match="not announced"):
            wire.decode(wire.frame_parts(headers[3], None), shm=read)
        reader.announce(b"peer", ring.path, ring.size)
        packet = wire.decode(wire.frame_parts(headers[3], None), shm=read)
        assert np.array_equal(packet.image, images[3]), "slot 0 now holds the 4th frame"
        assert np.array_equal(wire.decode(wire.frame_parts(headers[2], None), shm=read).image, images[2])
        with pytest.raises(wire.WireError, match="not announced"):  # another connection's ring
            wire.decode(wire.frame_parts(headers[2], None), shm=partial(reader.read, b"other"))
        beyond = _frame(seq=0, window_start=0, encoding="shm", shm_path=ring.path, shm_offset=100)
        with pytest.raises(wire.WireError, match="beyond"):
            wire.decode(wire.frame_parts(beyond, None), shm=read)
    finally:
        reader.close()
        ring.close()


def test_frames_are_timed_by_their_pts_else_by_capture():
    from stream.worker import frame_seconds

    stamped = wire.Frame(stream="s", seq=3, capture_ns=5_000_000_000, width=4, height=4, pts=3003,
                         time_base=(1, 30000))
    assert frame_seconds(stamped) == 0.1001
    assert frame_seconds(wire.Frame(stream="s", seq=3, capture_ns=5_250_000_000, width=4, height=4)) == 5.25


class _PosesV10(msgspec.Struct, tag_field="kind", tag="poses", kw_only=True):
    """``Poses`` as protocol 1.0 defined it (what an old subscriber decodes with)."""

    v: int = 1
    stream: str
    seq: int
    capture_ns: int
    engine_ns: int
    publish_ns: int
    model_id: str
    layout: str
    n: int
    k: int
    xy: bytes
    score: bytes
    person_score: bytes
    track_id: bytes
    xyz: bytes | None = None
    pts: int | None = None
    time_base: tuple[int, int] | None = None
    width: int = 0
    height: int = 0


def test_poses_1_1_carries_the_intrinsics_and_stays_readable_by_1_0_subscribers():
    frame = _frame(intrinsics=None, width=640, height=480)
    msg = wire.pack_poses(_result_poses(), frame, "default", engine_ns=1, publish_ns=2)
    assert (msg.minor, msg.intrinsics) == (wire.PROTOCOL_MINOR, (640.0, 640.0, 319.5, 239.5)), "the default camera"
    assert wire.PROTOCOL_MINOR >= 1
    assert wire.pack_poses(_result_poses(with_3d=False), frame, "hg", 1, 2).intrinsics is None, "2D: no camera"
    old = msgspec.msgpack.Decoder(_PosesV10).decode(wire.encode(msg))  # a 1.0 subscriber skips the new fields
    assert (old.stream, old.model_id, old.layout, old.xyz, old.width) == ("cam0", "default", "coco17", msg.xyz, 640)
    from_old = wire.decode([msgspec.msgpack.encode(old)]).msg  # and a 1.0 sender's message still decodes here
    assert (from_old.minor, from_old.intrinsics, from_old.xy) == (0, None, msg.xy)
