"""Renderer: draws skeletons onto the frames of the reliable channel and writes annotated video (PyAV),
a JSON Lines pose file (stream.posefile), COCO results on request, and a live window with ``--show``
(stream.window; closing it stops the renderer as Ctrl-C does).

The output video keeps the input's frame rate and timestamps; in lossless mode it has the input's frame
count (duplicates resent after an engine restart are dropped by seq). Files are finished on EndOfStream
and on ``stop`` (Ctrl-C / SIGTERM), so an interrupted run still leaves a playable mp4.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import zmq

from models.layouts import COCO17, convert, get_layout
from stream import wire
from stream.metrics import LatencyHistogram, percentiles
from stream.posefile import make_header, write_header, write_record
from stream.transport import Policy, deliver_pull

log = logging.getLogger(__name__)
TRACK_COLORS = ((75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245), (180, 30, 145),
                (240, 240, 70), (230, 50, 240), (60, 245, 210), (128, 128, 0), (255, 190, 220), (40, 110, 170))


def draw_poses(image: np.ndarray, poses, min_score: float = 0.05, faint_below: float = 0.3) -> np.ndarray:
    """Draw ``poses`` (engine.results.Poses, frame pixels) on ``image`` (BGR [H, W, 3] uint8, in place).
    Bones use the layout's colours, or one colour per track id when tracking; low scores are drawn faint."""
    layout = get_layout(poses.layout)
    if len(poses) == 0:
        return image
    faint, faint_mask = image.copy(), np.zeros(image.shape[:2], np.uint8)
    thick = max(1, round(max(image.shape[:2]) / 400))
    for i in range(len(poses)):
        xy, score, track = poses.xy[i], poses.score[i], int(poses.track_id[i])
        for (a, b), color in zip(layout.bones, layout.bone_colors):
            s = min(score[a], score[b])
            if s < min_score or not np.isfinite(xy[[a, b]]).all():
                continue
            color = TRACK_COLORS[track % len(TRACK_COLORS)] if track >= 0 else color
            pa, pb = (tuple(int(round(v)) for v in xy[j]) for j in (a, b))
            cv2.line(faint if s < faint_below else image, pa, pb, color, thick + 1, cv2.LINE_AA)
            if s < faint_below:
                cv2.line(faint_mask, pa, pb, 255, thick + 1)
        for j in range(layout.num_joints):
            if score[j] >= min_score and np.isfinite(xy[j]).all():
                centre = (int(round(xy[j, 0])), int(round(xy[j, 1])))
                low = score[j] < faint_below
                cv2.circle(faint if low else image, centre, thick + 2, (255, 255, 255), -1, cv2.LINE_AA)
                if low:
                    cv2.circle(faint_mask, centre, thick + 2, 255, -1)
    mask = faint_mask > 0
    image[mask] = (0.35 * faint[mask] + 0.65 * image[mask]).astype(np.uint8)
    return image


def pick_codec() -> str:
    """H.264 where PyAV's FFmpeg has an encoder for it, else MPEG-4 part 2."""
    import av

    for name in ("libx264", "h264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # not built into this FFmpeg
            continue
    raise RuntimeError("PyAV's FFmpeg has neither an H.264 nor an MPEG-4 encoder")


class VideoWriter:
    """Encodes BGR frames [H, W, 3] with their timestamps; sizes are padded to even numbers for yuv420p."""

    def __init__(self, path: str, width: int, height: int, rate: tuple[int, int] | None,
                 time_base: tuple[int, int] | None, codec: str | None = None):
        import av

        self.path, self.size = path, (width + width % 2, height + height % 2)
        self.container = av.open(path, "w")
        rate = Fraction(*rate) if rate else Fraction(30)
        self.stream = self.container.add_stream(codec or pick_codec(), rate=rate)
        if self.stream.codec_context.name == "libx264":  # half the CPU of the default "medium", no larger a file
            self.stream.codec_context.options = {"preset": "veryfast"}
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.time_base = Fraction(*time_base) if time_base else 1 / rate
        self.stream.codec_context.time_base = self.time_base
        self.stream.time_base = self.time_base
        self.last_pts, self.frames = None, 0

    def write(self, image: np.ndarray, pts: int | None) -> None:
        import av

        h, w = image.shape[:2]
        if (w, h) != self.size:
            image = cv2.copyMakeBorder(image, 0, self.size[1] - h, 0, self.size[0] - w, cv2.BORDER_REPLICATE) \
                if w <= self.size[0] and h <= self.size[1] else cv2.resize(image, self.size)
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            pts = 0 if self.last_pts is None else self.last_pts + 1
        frame.pts, frame.time_base, self.last_pts = pts, self.time_base, pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def coco_results(record, image_id: int | None = None) -> list[dict]:
    """COCO keypoint results (category 1, person) of a pose record, converted to COCO's 17 joints."""
    poses, out = record.poses, []
    xy, score = convert(poses.xy, poses.score, get_layout(poses.layout), COCO17)
    for i in range(len(poses)):
        kps = np.concatenate([xy[i], score[i][:, None]], axis=1)
        out.append({"image_id": record.frame if image_id is None else image_id, "category_id": 1,
                    "keypoints": np.round(kps, 2).reshape(-1).tolist(), "score": float(poses.person_score[i])})
    return out


@dataclass
class RenderConfig:
    deliver: str                          # the engine's reliable channel (connect)
    video: str | None = None
    poses: str | None = None
    coco: str | None = None
    show: bool = False
    stream: str | None = None             # render this stream (default: the first one seen)
    exit_at_end: bool = True              # stop after its EndOfStream
    ready_file: str | None = None         # created once connected to the engine (a pipeline starts its capture then)
    policy: Policy = Policy()
    limits: wire.Limits = wire.Limits()


@dataclass
class RenderStats:
    frames: int = 0
    duplicates: int = 0
    gaps: int = 0
    ended: bool = False
    error: str | None = None
    latency_ms: LatencyHistogram = field(default_factory=LatencyHistogram)  # bounded, however long the run

    def to_json(self) -> dict:
        return {"frames": self.frames, "duplicates": self.duplicates, "gaps": self.gaps, "ended": self.ended,
                "error": self.error, "latency_ms": percentiles(self.latency_ms)}


class Renderer:
    """Consumes the reliable channel; ``run(stop)`` returns :class:`RenderStats` once its stream ended or
    ``stop`` is set, with every output file finished."""

    def __init__(self, config: RenderConfig, ctx: zmq.Context | None = None, on_frame=None):
        self.config, self.ctx, self.on_frame = config, ctx or zmq.Context.instance(), on_frame
        self.stats = RenderStats()
        self.rejects = wire.RejectCounter("renderer")
        self.writer: VideoWriter | None = None
        self.pose_fh = open(config.poses, "w") if config.poses else None  # noqa: SIM115 (closed in _close)
        self.coco: list[dict] = []
        self.next_seq: dict[str, int] = {}
        self.window = self._window() if config.show else None
        self.closed = False  # the user closed the window: stop as on Ctrl-C

    @staticmethod
    def _window():
        from stream.window import Window, display_problem

        problem = display_problem()
        if problem:
            log.warning("--show: %s; not showing a window", problem)
            return None
        return Window()

    def _frame(self, packet: wire.Packet) -> None:
        msg, frame = packet.msg, packet.frame
        if self.config.stream is None:
            self.config.stream = msg.stream
        if msg.stream != self.config.stream:
            return
        expected = self.next_seq.get(msg.stream)
        if expected is not None and msg.seq < expected:
            self.stats.duplicates += 1
            return
        if expected is not None and msg.seq > expected and frame.lossless:
            self.stats.gaps += msg.seq - expected
        self.next_seq[msg.stream] = msg.seq + 1
        record = wire.to_record(msg)
        self.stats.latency_ms.append(record.latency_ms)
        image = draw_poses(packet.image.copy(), record.poses)
        if self.config.video:
            if self.writer is None:
                self.writer = VideoWriter(self.config.video, frame.width, frame.height, frame.rate, frame.time_base)
            self.writer.write(image, frame.pts)
        if self.pose_fh:
            if self.pose_fh.tell() == 0:
                write_header(self.pose_fh, make_header(stream=msg.stream, model_id=msg.model_id, layout=msg.layout,
                                                       width=frame.width, height=frame.height,
                                                       intrinsics=msg.intrinsics))
            write_record(self.pose_fh, record)
        if self.config.coco:
            self.coco.extend(coco_results(record))
        if self.window is not None and not self.window.show(image, msg.capture_ns):
            self.window, self.closed = None, True
        self.stats.frames += 1
        if self.on_frame:
            self.on_frame(record)

    def _close(self) -> None:
        if self.window is not None:
            self.window.close()
        if self.writer is not None:
            self.writer.close()
        if self.pose_fh:
            self.pose_fh.close()
        if self.config.coco:
            with open(self.config.coco, "w") as fh:
                json.dump(self.coco, fh)

    def run(self, stop: threading.Event | None = None) -> RenderStats:
        stop = stop or threading.Event()
        sock = deliver_pull(self.ctx, self.config.deliver, self.config.policy, self.config.limits)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED) if self.config.ready_file else None
        try:
            while not stop.is_set() and not self.closed and not (self.stats.ended and self.config.exit_at_end):
                if monitor is not None and monitor.poll(0):  # the engine's end of the channel is up
                    Path(self.config.ready_file).touch()
                    sock.disable_monitor()
                    monitor.close(linger=0)
                    monitor = None
                if not sock.poll(100):
                    if self.window is not None and not self.window.poll():
                        self.window, self.closed = None, True
                    continue
                packet = self.rejects.try_decode(sock.recv_multipart(copy=False), self.config.limits)
                if packet is None:
                    continue
                msg = packet.msg
                if isinstance(msg, wire.Poses) and packet.frame is not None:
                    self._frame(packet)
                elif isinstance(msg, wire.EndOfStream) and msg.stream == (self.config.stream or msg.stream):
                    self.config.stream = msg.stream
                    self.stats.ended, self.stats.error = True, msg.error
        finally:
            if monitor is not None:
                monitor.close(linger=0)
            sock.close(linger=0)
            self._close()
        return self.stats
