"""Network sources over a real HTTP server: reconnects with back-off and a limit, file URLs never replayed."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from stream.sources import NetworkStream, SourceError, open_source
from tests.stream.conftest import MODEL_CLI, decoded_pts, small_engine, start_stage


def noisy_video(path: Path, frames: int = 60, size=(160, 120), fps: int = 25) -> list[int]:
    """A clip of noise (about 12 KB a frame, so a cut connection loses real data), a keyframe every 10 frames."""
    w, h = size
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        for _ in range(frames):
            image = av.VideoFrame.from_ndarray(rng.integers(0, 255, (h, w, 3), np.uint8), format="bgr24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return decoded_pts(path)


class Server:
    """A real HTTP server in a thread serving ``folder``. ``script`` is a list of actions taken by the next
    requests in turn (then plain answers): ("cut", n) sends only the first n bytes of the answer and closes,
    ("status", code) answers an error, ("down",) sends nothing and shuts the server down (later connections are
    refused). ``ranges``: honour Range requests (206) or not (200, always the whole file, as http.server does).
    ``length``: send Content-Length (without it the end of the file is the end of the connection)."""

    def __init__(self, folder: Path, ranges: bool = True, length: bool = True, script=()):
        self.folder, self.ranges, self.length, self.script = folder, ranges, length, list(script)
        self.requests: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def handle(self, req) -> None:
        self.requests.append(req.headers.get("Range"))
        action = self.script.pop(0) if self.script else ("ok",)
        if action[0] == "down":
            threading.Thread(target=self.close, daemon=True).start()
            return
        if action[0] == "status":
            req.send_error(action[1])
            return
        data = (self.folder / req.path.lstrip("/")).read_bytes()
        start, end = 0, len(data) - 1
        m = re.match(r"bytes=(\d+)-(\d*)", req.headers.get("Range") or "")
        if m and self.ranges:
            start, end = int(m.group(1)), int(m.group(2) or end)
            req.send_response(206)
            req.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            req.send_response(200)
        if self.ranges:
            req.send_header("Accept-Ranges", "bytes")
        if self.length:
            req.send_header("Content-Length", str(end - start + 1))
        req.end_headers()
        body = data[start:end + 1]
        try:
            req.wfile.write(body[:action[1]] if action[0] == "cut" else body)
        except OSError:
            pass  # the client went away

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    servers = []

    def make(**kw) -> Server:
        servers.append(Server(tmp_path, **kw))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


# opening an mp4 whose index is at its end takes two requests (its start, then the index) before the frames'
@pytest.mark.parametrize("name, opening", [("clip.mkv", 0), ("clip.mp4", 2)])
def test_a_file_url_cut_mid_way_resumes_where_it_stopped_without_replaying(tmp_path, served, name, opening):
    pts = noisy_video(tmp_path / name)
    size = (tmp_path / name).stat().st_size
    # the frames' answer stops at 40%; ffmpeg's own retry and our first reconnect meet a 503; then it is served
    server = served(ranges=True, script=[("ok",)] * opening + [("cut", size * 4 // 10), ("status", 503),
                                                                ("status", 503)])
    source = NetworkStream(server.url(name), reconnect=3, backoff_s=0.01)
    got = [f.pts for f in source.frames()]
    source.close()
    assert got == pts, "every frame once, in order: nothing replayed, nothing lost"
    assert source.error is None and not source.gave_up and source.reconnects >= 1
    assert any(r not in (None, "bytes=0-") for r in server.requests[1:]), "resumed with a range request"


def test_a_file_url_that_cannot_resume_ends_with_the_frames_it_had_and_no_replay(tmp_path, served):
    pts = noisy_video(tmp_path / "clip.mkv")
    size = (tmp_path / "clip.mkv").stat().st_size
    server = served(ranges=False, script=[("cut", size * 4 // 10)])
    source = NetworkStream(server.url("clip.mkv"), reconnect=3, backoff_s=0.01)
    got = [f.pts for f in source.frames()]
    source.close()
    assert 0 < len(got) < len(pts) and got == pts[:len(got)], "a prefix of the file, each frame once"
    assert not source.gave_up and "without replaying" in source.error and server.url("clip.mkv") in source.error


def test_a_file_read_to_its_end_is_not_an_error_when_the_server_closes_without_a_length(tmp_path, served):
    pts = noisy_video(tmp_path / "clip.mkv")
    server = served(ranges=False, length=False)
    source = NetworkStream(server.url("clip.mkv"), reconnect=3, backoff_s=0.01)
    assert [f.pts for f in source.frames()] == pts and source.error is None and source.reconnects == 0
    source.close()


def test_an_mp4_indexed_at_its_end_on_a_server_without_ranges_gives_up_instead_of_looping(tmp_path):
    """The case of the report: Python's own http.server (no range support) and an mp4 whose index (moov) is
    at its end used to loop on "reconnecting" forever."""
    import functools

    noisy_video(tmp_path / "clip.mp4")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/clip.mp4"
        source = NetworkStream(url, reconnect=2, backoff_s=0.01)
        assert list(source.frames()) == []
        source.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert source.gave_up and "gave up after 2 reconnects" in source.error and "range requests" in source.error


def test_a_live_stream_reconnects_then_gives_up_after_n_tries(tmp_path, served):
    pts = noisy_video(tmp_path / "live.ts")  # MPEG-TS without a length: no duration, a live stream
    server = served(ranges=False, length=False, script=[("ok",), ("ok",), ("down",)])
    source = NetworkStream(server.url("live.ts"), reconnect=2, backoff_s=0.01)
    assert not source.finite
    got = [f.pts for f in source.frames()]
    source.close()
    assert len(got) == 2 * len(pts), "the stream went on after the reconnect with what the server sent"
    assert source.gave_up and source.reconnects == 1 and "gave up after 2 reconnects" in source.error


def test_a_url_that_cannot_be_opened_is_a_clear_error_at_once(served):
    server = served(script=[("status", 404)])
    with pytest.raises(SourceError, match="cannot open stream"):
        open_source(server.url("missing.mkv"))
    assert len(server.requests) == 1, "a 404 will not change: no retry"


def test_a_server_still_starting_is_waited_for_at_the_first_connection(tmp_path, served):
    pts = noisy_video(tmp_path / "clip.mkv")
    server = served(script=[("status", 503), ("status", 503)])
    source = NetworkStream(server.url("clip.mkv"), reconnect=2, backoff_s=0.01)
    got = [f.pts for f in source.frames()]
    source.close()
    assert got == pts and source.error is None


def test_a_server_that_stays_unavailable_fails_after_the_tries_with_the_reason(served):
    server = served(script=[("status", 503)] * 3)
    with pytest.raises(SourceError, match="cannot open stream .*, 3 tries"):
        NetworkStream(server.url("clip.mkv"), reconnect=2, backoff_s=0.01)
    assert len(server.requests) == 3


def _capture(url: str, ipc, *extra: str):
    """``posestream capture`` of ``url`` into a real engine server (in this process); (exit code, stderr)."""
    from stream.serve import EngineServer, ServeConfig
    from stream.transport import Policy

    server = EngineServer(small_engine(), ServeConfig(ipc["frames"], policy=Policy(heartbeat_s=0.1)))
    stop = threading.Event()
    serving = threading.Thread(target=server.run, args=(stop,), daemon=True)
    serving.start()
    try:
        assert server.ready.wait(30)
        proc = start_stage("capture", "--source", url, "--engine", ipc["frames"], "--lossless", *extra)
        _, err = proc.communicate(timeout=120)
    finally:
        stop.set()
        serving.join(10)
    return proc.returncode, err, server.stats.frames


def test_capture_exits_2_with_the_reason_once_the_server_stays_away(tmp_path, served, ipc):
    noisy_video(tmp_path / "clip.mkv")
    size = (tmp_path / "clip.mkv").stat().st_size
    server = served(ranges=True, script=[("cut", size // 2), ("down",)])
    code, err, frames = _capture(server.url("clip.mkv"), ipc, "--reconnect", "2")
    assert code == 2, err
    assert "gave up after 2 reconnects" in err and server.url("clip.mkv") in err and 0 < frames < 60


def test_capture_exits_3_when_a_file_url_cannot_resume(tmp_path, served, ipc):
    noisy_video(tmp_path / "clip.mkv")
    size = (tmp_path / "clip.mkv").stat().st_size
    server = served(ranges=False, script=[("cut", size // 2)])
    code, err, frames = _capture(server.url("clip.mkv"), ipc)
    assert code == 3, err
    assert "without replaying" in err and 0 < frames < 60


def test_run_passes_reconnect_to_its_capture_and_exits_2_with_the_reason(tmp_path, served, capfd):
    from stream.cli import main

    noisy_video(tmp_path / "clip.mkv")
    size = (tmp_path / "clip.mkv").stat().st_size
    server = served(ranges=True, script=[("ok",), ("cut", size // 2), ("down",)])  # "ok": run's probe of the source
    code = main(["run", "--source", server.url("clip.mkv"), "--reconnect", "1", "--no-progress", *MODEL_CLI])
    err = capfd.readouterr().err
    assert code == 2, err
    assert "gave up after 1 reconnects" in err and '"frames": 0' not in err
