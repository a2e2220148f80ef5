"""The Rerun viewer (`posestream view`, `--view`): what its recording holds, and that it outlives publishers."""

import threading
from collections import defaultdict

import numpy as np
import pytest
import zmq

from stream import wire
from stream.cli import main
from stream.posefile import read_header, read_pose_file
from stream.view import PoseViewer, ViewConfig
from stream.view_rerun import RerunLog
from tests.stream.conftest import wait_for

rr = pytest.importorskip("rerun")


def read_rrd(path) -> dict[str, list[tuple[int, dict]]]:
    """entity path -> rows (frame on the ``frame`` timeline, or -1 for static rows; {component: value}) of a
    Rerun recording, in the order they were logged."""
    out: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for chunk in rr.chunk.RrdReader(path).stream():
        batch = chunk.to_record_batch()
        names = batch.schema.names
        frames = batch.column("frame").to_pylist() if "frame" in names else [-1] * batch.num_rows
        for row, frame in enumerate(frames):
            values = {name.split(":", 1)[1]: batch.column(name)[row].as_py() for name in names if ":" in name}
            out[chunk.entity_path].append((frame, values))
    return out


def by_frame(rows: list[tuple[int, dict]]) -> dict[int, dict]:
    """One entity's rows by frame; fails on two rows for one frame."""
    out = dict(rows)
    assert len(out) == len(rows), "one entry per frame"
    return out


@pytest.mark.slow
def test_recording_of_a_generated_clip_holds_every_frame_with_the_pose_files_people(tmp_path, capfd):
    from tools.demo import make_sample

    clip, _ = make_sample(tmp_path, seed=5, frames=12, persons=(2, 3), layout="panoptic19", size=(320, 240))
    poses, rrd = tmp_path / "out.jsonl", tmp_path / "out.rrd"
    code = main(["video", str(clip), "-o", str(tmp_path / "out.mp4"), "--poses", str(poses), "--view", str(rrd),
                 "--no-progress", "--model", "default"])
    assert code == 0, capfd.readouterr().err
    records = list(read_pose_file(poses))
    header = read_header(poses)
    assert [r.frame for r in records] == list(range(12))
    assert header["model_id"] == "default" and header["layout"] == "panoptic19" and len(header["joints"]) == 19
    assert (header["width"], header["height"]) == (320, 240) and header["intrinsics"]["fx"] == 320.0
    assert sum(len(r.poses) for r in records) > 0, "the default model finds the generated people"

    data = read_rrd(rrd)
    stream = records[0].stream
    joints3d, joints2d, people = (by_frame(data[f"/{stream}/{e}"]) for e in ("joints", "camera/joints", "camera/people"))
    assert sorted(joints3d) == sorted(joints2d) == sorted(people) == list(range(12))
    for r in records:
        n, k = r.poses.score.shape
        assert k == 19
        xyz = np.asarray(joints3d[r.frame]["positions"], np.float32).reshape(-1, 3)
        assert xyz.shape == (n * k, 3)
        np.testing.assert_allclose(xyz, r.poses.xyz.reshape(-1, 3), atol=0.006)  # the file rounds to 0.01 mm
        xy = np.asarray(joints2d[r.frame]["positions"], np.float32).reshape(-1, 2)
        np.testing.assert_allclose(xy, r.poses.xy.reshape(-1, 2) + 0.5, atol=0.001)  # Rerun: pixel centres at +.5
        assert len(people[r.frame].get("half_sizes") or []) == n
    ((_, camera),) = data[f"/{stream}/camera"]
    k = header["intrinsics"]
    np.testing.assert_allclose(np.asarray(camera["image_from_camera"]).reshape(3, 3).T,
                               [[k["fx"], 0, k["cx"] + 0.5], [0, k["fy"], k["cy"] + 0.5], [0, 0, 1]], atol=1e-4)
    assert len(data[f"/{stream}/camera/image"]) == 12, "the frames came with the poses"


def _poses(stream: str, seq: int, n: int = 2, k: int = 16) -> wire.Poses:
    rng = np.random.default_rng(seq)
    return wire.Poses(stream=stream, seq=seq, capture_ns=10**18 + seq * 33_000_000, engine_ns=0,
                      publish_ns=10**18 + seq * 33_000_000 + 5_000_000, model_id="test", layout="mpii16", n=n, k=k,
                      xy=(rng.random((n, k, 2), np.float32) * 100).tobytes(), score=np.ones((n, k), np.float32).tobytes(),
                      person_score=np.ones(n, np.float32).tobytes(), track_id=np.arange(n, dtype=np.int64).tobytes(),
                      xyz=(rng.random((n, k, 3), np.float32) * 1000 + 3000).tobytes(), width=160, height=120,
                      minor=wire.PROTOCOL_MINOR, intrinsics=(160.0, 160.0, 79.5, 59.5))


class _Publisher:
    """A real PUB-side socket (XPUB, so the test sees a viewer's subscription arrive) speaking the wire format."""

    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.bind(endpoint)
        assert self.sock.poll(20000), "the viewer subscribed"
        self.sock.recv()

    def send(self, msg) -> None:
        self.sock.send_multipart([msg.stream.encode(), wire.encode(msg)])

    def close(self) -> None:
        self.sock.close()


def test_viewer_outlives_a_stream_end_and_a_publisher_restart(tmp_path):
    ctx = zmq.Context.instance()
    endpoint, rrd = f"ipc://{tmp_path / 'poses'}", tmp_path / "view.rrd"
    rec = rr.RecordingStream("posestream-test")
    rec.save(rrd)
    viewer = PoseViewer(ViewConfig(endpoint, keep_all=True), RerunLog(rec), ctx)
    stop = threading.Event()
    running = threading.Thread(target=viewer.run, args=(stop,), daemon=True)
    running.start()
    try:
        first = _Publisher(ctx, endpoint)
        for seq in range(5):
            first.send(_poses("cam", seq))
        first.send(wire.EndOfStream(stream="cam", seq=5))
        wait_for(lambda: viewer.stats.ended == ["cam"], what="the first run's end")
        first.close()                               # the publisher goes away ...
        second = _Publisher(ctx, endpoint)          # ... and a new one binds the same endpoint: the viewer rejoins
        for seq in range(3):
            second.send(_poses("cam", seq, n=1))
        second.send(wire.EndOfStream(stream="cam", seq=3, error="capture silent for 3.0 s"))
        wait_for(lambda: len(viewer.stats.ended) == 2, what="the second run's end")
        second.close()
        assert running.is_alive(), "still viewing after two ends and a restart"
    finally:
        stop.set()
        running.join(10)
        rec.flush()
        rec.disconnect()
    assert (viewer.stats.received, viewer.stats.shown, viewer.stats.restarts) == (8, 8, 1)
    texts = " | ".join(str(values["text"]) for _, values in read_rrd(rrd)["/cam/events"])
    assert "stream ended after 5 frames" in texts and "restarted at frame 0" in texts
    assert "capture silent for 3.0 s" in texts


def test_a_live_viewer_behind_logs_the_newest_frame_of_each_stream():
    viewer = PoseViewer(ViewConfig("ipc://unused"), sink=None)
    batch = [wire.Packet(m) for m in (_poses("a", 1), _poses("b", 1), _poses("a", 2), wire.EndOfStream(stream="b", seq=2),
                                      _poses("a", 3))]
    picked = viewer._pick(batch)
    assert [(type(p.msg).__name__, p.msg.stream, p.msg.seq) for p in picked] == [
        ("Poses", "b", 1), ("EndOfStream", "b", 2), ("Poses", "a", 3)]
    assert (viewer.stats.received, viewer.stats.skipped) == (4, 2)


def test_view_without_a_display_or_a_writable_file_says_why(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", "ipc://unused"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("posestream view: cannot open a viewer window: no display") and "--save" in err
    assert main(["view", "ipc://unused", "--save", str(tmp_path / "no" / "x.rrd")]) == 2
    assert "no such folder" in capfd.readouterr().err
