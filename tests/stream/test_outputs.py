"""The renderer's files: what an interrupted run left decides where a resumed one starts, and the finished files
hold every frame once with the input's timestamps (a stopped renderer, a resumed one that writes nothing more, a
partial video with a frame more than the pose file)."""

import threading
from fractions import Fraction

import numpy as np
import zmq

from stream import wire
from stream.outputs import PartialVideo, PoseWriter, VideoWriter, partial_path, read_partial, resume_point
from stream.posefile import read_pose_file
from stream.render import RenderConfig, Renderer
from stream.transport import Policy, deliver_router
from tests.stream.conftest import decoded_times, wait_for


def test_resume_point_is_where_every_kept_file_still_holds_the_frames(tmp_path):
    poses = PoseWriter(str(tmp_path / "p.jsonl"), resume=True)
    poses.records = [{"frame": f} for f in range(5, 12)]
    video = PartialVideo(tmp_path / "v.mp4", "s", 5, 6)          # frames 5..10
    assert resume_point(poses, video, want_video=True) == 11
    assert resume_point(poses, None, want_video=False) == 12
    assert resume_point(poses, None, want_video=True) == 5, "no video left: start again where the files began"
    assert resume_point(None, video, want_video=True) == 11
    assert resume_point(None, None, want_video=True) is None


def test_a_torn_last_line_is_cut_off_on_resume(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"frame": 0}\n{"frame": 1}\n{"fra')
    writer = PoseWriter(str(path), resume=True)
    assert writer.next_seq == 2
    writer.keep_below(None)
    writer.write({"frame": 2})
    writer.close()
    assert [line for line in path.read_text().splitlines()] == ['{"frame":0}', '{"frame":1}', '{"frame":2}']


def test_a_killed_writer_leaves_a_playable_partial_video_of_all_but_its_last_frame(tmp_path):
    out = tmp_path / "o.mp4"
    writer = VideoWriter(str(out), 64, 48, (25, 1), (1, 1000), stream="cam", first_seq=3)
    for i in range(6):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8), 40 * i)
    assert writer.durable == 5
    left = read_partial(out)  # read while it is still open, as after a kill
    assert (left.stream, left.first_seq, left.frames) == ("cam", 3, 5)
    writer.close()
    assert not partial_path(out).exists()
    assert decoded_times(out) == [Fraction(40 * i, 1000) for i in range(6)]


class _Engine:
    """The engine's end of a delivery channel, driven by the test."""

    def __init__(self, endpoint):
        self.sock = deliver_router(zmq.Context.instance(), endpoint, Policy())
        self.identity = None

    def claim(self) -> wire.Claim:
        while True:
            identity, header = self.sock.recv_multipart()
            msg = wire.decode([header]).msg
            if isinstance(msg, wire.Claim):
                self.identity = identity
                return msg

    def frames(self, seqs, lossless=True):
        for seq in seqs:
            frame = wire.Frame(stream="cam", seq=seq, capture_ns=1, width=64, height=48, pts=seq * 40,
                               time_base=(1, 1000), rate=(25, 1), lossless=lossless)
            poses = wire.Poses(stream="cam", seq=seq, capture_ns=1, engine_ns=1, publish_ns=2, model_id="m",
                               layout="coco17", n=0, k=17, xy=b"", score=b"", person_score=b"", track_id=b"",
                               width=64, height=48, pts=seq * 40, time_base=(1, 1000))
            image = np.full((48, 64, 3), seq * 10 % 255, np.uint8)
            self.sock.send_multipart([self.identity, wire.encode(poses), *wire.frame_parts(frame, image)])

    def end(self, seq):
        self.sock.send_multipart([self.identity, wire.encode(wire.EndOfStream(stream="cam", seq=seq, lossless=True))])
        self.sock.send_multipart([self.identity, wire.encode(wire.Ack(stream="cam", next_seq=seq + 1, instance=1))])

    def close(self):
        self.sock.close(linger=0)


def _renderer(tmp_path, ipc, resume=False):
    config = RenderConfig(ipc["deliver"], video=str(tmp_path / "out.mp4"), poses=str(tmp_path / "out.jsonl"),
                          stream="cam", resume=resume, policy=Policy(heartbeat_s=0.1))
    renderer, stop = Renderer(config), threading.Event()
    thread = threading.Thread(target=renderer.run, args=(stop,), daemon=True)
    thread.start()
    return renderer, stop, thread


def test_a_stopped_renderer_resumes_from_its_finished_files_and_one_that_writes_nothing_more_keeps_them(tmp_path, ipc):
    engine = _Engine(ipc["deliver"])
    try:
        renderer, stop, thread = _renderer(tmp_path, ipc)
        assert engine.claim().next_seq is None
        engine.frames(range(8))
        wait_for(lambda: renderer.stats.frames == 8, 20, "8 frames written")
        stop.set()  # SIGTERM: the files are finished
        thread.join(20)
        assert not partial_path(tmp_path / "out.mp4").exists() and len(decoded_times(tmp_path / "out.mp4")) == 8
        renderer, stop, thread = _renderer(tmp_path, ipc, resume=True)
        assert engine.claim().next_seq == 8
        engine.frames(range(6, 12))  # 6, 7 again (duplicates), then new ones
        wait_for(lambda: renderer.stats.frames == 4, 20, "the new frames written")
        stop.set()
        thread.join(20)
        renderer, stop, thread = _renderer(tmp_path, ipc, resume=True)
        assert engine.claim().next_seq == 12
        engine.end(12)  # the end, before any frame of its own
        thread.join(20)
        assert not thread.is_alive() and renderer.stats.ended
    finally:
        stop.set()
        engine.close()
    assert [r.frame for r in read_pose_file(tmp_path / "out.jsonl")] == list(range(12))
    assert decoded_times(tmp_path / "out.mp4") == [Fraction(40 * i, 1000) for i in range(12)]
    assert not partial_path(tmp_path / "out.mp4").exists()
