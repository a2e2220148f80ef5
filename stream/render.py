"""Renderer: claims one stream on the engine's delivery channel, draws skeletons onto its frames and writes
annotated video (PyAV), a JSON Lines pose file (stream.posefile), COCO results on request, and a live window
with ``--show`` (stream.window; closing it stops the renderer as Ctrl-C does).

Each frame is acknowledged to the engine once it is on disk (stream.outputs), and only then does the engine
acknowledge it to the capture: a renderer killed at any moment loses nothing, and one started again with
``resume`` claims the stream from where its files end, so the output has every frame exactly once. A lossless
stream is written strictly in order (a gap asks the engine for the missing frames); the output video keeps
the input's frame rate and timestamps. Files are finished on EndOfStream and on ``stop`` (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import zmq

from models.layouts import COCO17, convert, get_layout
from stream import wire
from stream.metrics import LatencyHistogram, percentiles
from stream.outputs import PoseWriter, VideoWriter, finish_kept, partial_path, read_partial, resume_point
from stream.posefile import PoseRecord, make_header
from stream.security import CurveKeys
from stream.transport import Policy, deliver_dealer

log = logging.getLogger(__name__)
TRACK_COLORS = ((75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245), (180, 30, 145),
                (240, 240, 70), (230, 50, 240), (60, 245, 210), (128, 128, 0), (255, 190, 220), (40, 110, 170))
END_LINGER_S = 30.0       # after a lossless end: wait this long at most for the capture to confirm it (see _closed)


def _point(xy: np.ndarray, bound: int) -> tuple[int, int]:
    return tuple(int(round(v)) for v in np.clip(xy, -bound, bound))


def _pen(xy: np.ndarray, drawn: np.ndarray, thick: int) -> tuple[int, int]:
    """(bone width, joint dot radius) in px for a person whose drawn joints span ``xy[drawn]``: the frame's
    ``thick`` for people of about 160 px and more, thinner for smaller ones (a few px at 60 px), so that the
    skeletons of people far away do not hide them."""
    extent = float(np.ptp(xy[drawn], axis=0).max()) if drawn.sum() > 1 else 0.0
    return int(np.clip(round(extent / 60), 1, thick + 1)), int(np.clip(round(extent / 40), 2, thick + 2))


def draw_poses(image: np.ndarray, poses, min_score: float = 0.05, faint_below: float = 0.3) -> np.ndarray:
    """Draw ``poses`` (engine.results.Poses, frame pixels) on ``image`` (BGR [H, W, 3] uint8, in place).
    Bones use the layout's colours, or one colour per track id when tracking; low scores are drawn faint; bones
    and joint dots are thinner on small people (:func:`_pen`). Joints that are not finite are skipped; points far
    outside the image are clipped before drawing."""
    layout = get_layout(poses.layout)
    if len(poses) == 0:
        return image
    faint, faint_mask = image.copy(), np.zeros(image.shape[:2], np.uint8)
    thick = max(1, round(max(image.shape[:2]) / 400))
    bound = 4 * max(image.shape[:2])
    for i in range(len(poses)):
        xy, score, track = poses.xy[i], poses.score[i], int(poses.track_id[i])
        width, radius = _pen(xy, (score >= min_score) & np.isfinite(xy).all(-1), thick)
        for (a, b), color in zip(layout.bones, layout.bone_colors):
            s = min(score[a], score[b])
            if not s >= min_score or not np.isfinite(xy[[a, b]]).all():
                continue
            color = TRACK_COLORS[track % len(TRACK_COLORS)] if track >= 0 else color
            pa, pb = _point(xy[a], bound), _point(xy[b], bound)
            cv2.line(faint if s < faint_below else image, pa, pb, color, width, cv2.LINE_AA)
            if s < faint_below:
                cv2.line(faint_mask, pa, pb, 255, width)
        for j in range(layout.num_joints):
            if score[j] >= min_score and np.isfinite(xy[j]).all():
                centre = _point(xy[j], bound)
                low = score[j] < faint_below
                cv2.circle(faint if low else image, centre, radius, (255, 255, 255), -1, cv2.LINE_AA)
                if low:
                    cv2.circle(faint_mask, centre, radius, 255, -1)
    mask = faint_mask > 0
    image[mask] = (0.35 * faint[mask] + 0.65 * image[mask]).astype(np.uint8)
    return image


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
    deliver: str                          # the engine's delivery channel (connect)
    video: str | None = None
    poses: str | None = None
    coco: str | None = None
    show: bool = False
    stream: str | None = None             # render this stream (default: the first one without a renderer)
    exit_at_end: bool = True              # stop after its EndOfStream
    ready_file: str | None = None         # created once the engine answered its claim (a pipeline starts its capture then)
    resume: bool = False                  # continue the files an interrupted renderer left (else start them afresh)
    summary: str | None = None            # write the stats here every second and at the end (JSON)
    policy: Policy = Policy()
    limits: wire.Limits = wire.Limits()
    keys: CurveKeys | None = None         # CURVE for a tcp engine (stream.security)


@dataclass
class RenderStats:
    frames: int = 0                       # frames this process wrote
    duplicates: int = 0
    gaps: int = 0                         # frames missing from the output (live drops; lossless frames gone)
    resumed_from: int | None = None       # --resume: the seq the files ended at
    ended: bool = False
    error: str | None = None
    rejected: int = 0
    latency_ms: LatencyHistogram = field(default_factory=LatencyHistogram)  # bounded, however long the run

    def to_json(self) -> dict:
        return {"frames": self.frames, "duplicates": self.duplicates, "gaps": self.gaps, "ended": self.ended,
                "resumed_from": self.resumed_from, "error": self.error, "rejected": self.rejected,
                "latency_ms": percentiles(self.latency_ms)}


class Renderer:
    """Consumes one stream of the delivery channel; ``run(stop)`` returns :class:`RenderStats` once its stream
    ended or ``stop`` is set, with every output file finished."""

    def __init__(self, config: RenderConfig, ctx: zmq.Context | None = None, on_frame=None):
        if config.resume and config.coco and not config.poses:
            raise ValueError("--resume with --coco needs --poses (the COCO results are rebuilt from the pose file)")
        self.config, self.ctx, self.on_frame = config, ctx or zmq.Context.instance(), on_frame
        self.stats = RenderStats()
        self.rejects = wire.RejectCounter("renderer")
        self.instance = int.from_bytes(os.urandom(6), "little")
        self.stream = config.stream
        self.next_seq: int | None = None      # the next seq to write
        self.asked_resend: int | None = None
        self.writer: VideoWriter | None = None
        self.keep = None                      # (PartialVideo, frames) to copy into the video when it opens
        self.first_seq: int | None = None
        self.runs = 0                         # ends seen (a later run of the stream writes OUT.2.mp4, ...)
        self.coco: list[dict] = []
        self.poses: PoseWriter | None = None
        self.engine_instance: int | None = None
        self.last_engine = time.monotonic()
        self.window = self._window() if config.show else None
        self.closed = False  # the user closed the window: stop as on Ctrl-C
        self.ended_at: float | None = None     # a lossless end, not yet confirmed closed by its capture
        self._open_outputs()

    @staticmethod
    def _window():
        from stream.window import Window, display_problem

        problem = display_problem()
        if problem:
            log.warning("--show: %s; not showing a window", problem)
            return None
        return Window()

    # -- files --------------------------------------------------------------------------------------
    def _open_outputs(self) -> None:
        cfg = self.config
        if not cfg.resume:
            if cfg.video and partial_path(cfg.video).exists():
                log.warning("%s: removing the partial video of an interrupted run (--resume would continue it)",
                            partial_path(cfg.video))
                partial_path(cfg.video).unlink()
            self.poses = PoseWriter(cfg.poses) if cfg.poses else None
            return
        self.poses = PoseWriter(cfg.poses, resume=True) if cfg.poses else None
        video = read_partial(cfg.video) if cfg.video else None
        found = video.stream if video else (self.poses.records[0].get("stream") if self.poses and self.poses.records
                                            else None)
        if found and self.stream and found != self.stream:
            raise ValueError(f"--resume: the files hold stream {found!r}, not {self.stream!r}")
        self.stream = self.stream or found
        start = resume_point(self.poses, video, bool(cfg.video))
        records = self.poses.keep_below(start) if self.poses else []
        if video is not None and start is not None and start > video.first_seq:
            self.keep, self.first_seq = (video, start - video.first_seq), video.first_seq
        self.next_seq = self.stats.resumed_from = start
        if cfg.coco:
            self.coco = [c for r in records for c in coco_results(PoseRecord.from_json(r))]
        log.info("resuming stream %s at seq %s", self.stream, start)

    def _video_path(self) -> str:
        if not self.runs:
            return self.config.video
        path = Path(self.config.video)
        return str(path.with_name(f"{path.stem}.{self.runs + 1}{path.suffix}"))

    def _write(self, packet: wire.Packet) -> None:
        msg, frame, cfg = packet.msg, packet.frame, self.config
        record = wire.to_record(msg)
        self.stats.latency_ms.append(record.latency_ms)
        image = draw_poses(packet.image.copy(), record.poses)
        if cfg.video:
            if self.writer is None:
                first = msg.seq if self.first_seq is None else self.first_seq
                self.writer = VideoWriter(self._video_path(), frame.width, frame.height, frame.rate, frame.time_base,
                                          stream=msg.stream, first_seq=first, keep=self.keep)
                self.keep = None
            self.writer.write(image, frame.pts)
        if self.poses:
            self.poses.header(make_header(stream=msg.stream, model_id=msg.model_id, layout=msg.layout,
                                          width=frame.width, height=frame.height, intrinsics=msg.intrinsics))
            self.poses.write(record.to_json())
        if cfg.coco:
            self.coco.extend(coco_results(record))
        if self.window is not None and not self.window.show(image, msg.capture_ns):
            self.window, self.closed = None, True
        self.stats.frames += 1
        if self.on_frame:
            self.on_frame(record)

    def _finish_files(self) -> None:
        """Finish the video (remuxed from its partial file) and the COCO results."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        elif self.keep is not None:  # resumed, then ended before a frame of its own: finish what was kept
            finish_kept(self._video_path(), *self.keep)
        self.keep, self.first_seq = None, None
        if self.config.coco:
            with open(self.config.coco, "w") as fh:
                json.dump(self.coco, fh)

    def _close(self) -> None:
        if self.window is not None:
            self.window.close()
        self._finish_files()
        if self.poses:
            self.poses.close()
        self._write_summary()

    def _write_summary(self) -> None:
        if self.config.summary:
            tmp = Path(self.config.summary).with_name(f".{Path(self.config.summary).name}.tmp")
            tmp.write_text(json.dumps({**self.stats.to_json(), "stream": self.stream}))
            os.replace(tmp, self.config.summary)

    # -- protocol -----------------------------------------------------------------------------------
    def _done(self) -> int:
        """Every seq below this is on disk (the video's last frame muxed is not, until the next one comes)."""
        pending = self.writer.muxed - self.writer.durable if self.writer is not None else 0
        return max(0, (self.next_seq or 0) - pending)

    def _send(self, msg) -> None:
        try:
            self.sock.send(wire.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the engine is away: the next claim says it all again

    def _claim(self) -> None:
        self._send(wire.Claim(instance=self.instance, stream=self.stream, next_seq=self.next_seq, done=self._done()))

    def _ack(self, resend: int | None = None) -> None:
        if self.stream is not None:
            self._send(wire.Ack(stream=self.stream, next_seq=self._done(), instance=self.instance, resend=resend))

    def _mine(self, name: str) -> bool:
        if self.stream is None:
            self.stream = name
        if name != self.stream:
            self.rejects(wire.WireError("unexpected", f"a delivery of stream {name!r} to the renderer of {self.stream!r}"))
        return name == self.stream

    def _in_order(self, seq: int, lossless: bool) -> bool:
        """Whether ``seq`` is the one to write now: earlier ones are duplicates (acknowledged again), later ones
        of a lossless stream a gap (the engine is asked for the missing ones once)."""
        if self.next_seq is None:
            return True
        if seq < self.next_seq:
            self.stats.duplicates += 1
            self._ack()
            return False
        if seq > self.next_seq:
            if lossless:
                if self.asked_resend != self.next_seq:
                    self.asked_resend = self.next_seq
                    self._ack(resend=self.next_seq)
                return False
            self.stats.gaps += seq - self.next_seq
        return True

    def _frame(self, packet: wire.Packet) -> None:
        msg = packet.msg
        if not self._mine(msg.stream) or not self._in_order(msg.seq, packet.frame.lossless):
            return
        if self.stats.ended:  # frames after the stream's end: a new run of it (with --keep-going)
            self.stats.ended, self.runs = False, self.runs + 1
        self._write(packet)
        self.next_seq = msg.seq + 1
        self._ack()

    def _end(self, msg: wire.EndOfStream) -> None:
        if not self._mine(msg.stream) or not self._in_order(msg.seq, msg.lossless):
            return
        self._finish_files()
        self.stats.ended, self.stats.error = True, msg.error
        self.ended_at = time.monotonic() if msg.lossless else None
        self.next_seq = msg.seq + 1
        self._ack()
        if not msg.lossless:
            self.next_seq = None  # a later run of the stream (--keep-going) starts wherever it starts

    def _skip(self, msg: wire.Ack) -> None:
        """The engine says frames below ``msg.next_seq`` are gone (an earlier renderer took them), or, after the
        end, that the capture has closed the stream."""
        if self._mine(msg.stream) and self.stats.ended and self.next_seq is not None and msg.next_seq >= self.next_seq:
            self.ended_at, self.next_seq = None, None  # closed: a later run (--keep-going) starts afresh
        elif self._mine(msg.stream) and self.next_seq is not None and msg.next_seq > self.next_seq:
            log.error("stream %s: frames %d-%d were acknowledged to an earlier renderer and are gone from the "
                      "capture; they are missing from these files", msg.stream, self.next_seq, msg.next_seq - 1)
            self.stats.gaps += msg.next_seq - self.next_seq
            self.next_seq = msg.next_seq

    def _engine(self, msg: wire.Heartbeat) -> None:
        if self.engine_instance is not None and msg.instance != self.engine_instance:
            log.warning("renderer: the engine restarted; claiming stream %s again from seq %s", self.stream,
                        self.next_seq)
            self._claim()
        if self.engine_instance is None and self.config.ready_file:
            Path(self.config.ready_file).touch()  # the engine has registered the claim
        self.engine_instance = msg.instance

    def _receive(self, parts: list) -> None:
        packet = self.rejects.try_decode(parts, self.config.limits)
        self.stats.rejected = self.rejects.total
        if packet is None:
            return
        msg = packet.msg
        self.last_engine = time.monotonic()
        if isinstance(msg, wire.Poses) and packet.frame is not None:
            self._frame(packet)
        elif isinstance(msg, wire.EndOfStream):
            self._end(msg)
        elif isinstance(msg, wire.Heartbeat):
            self._engine(msg)
        elif isinstance(msg, wire.Ack):
            self._skip(msg)
        else:
            self.rejects(wire.WireError("unexpected", f"{type(msg).__name__} on the delivery channel"))

    def _through(self, cfg: RenderConfig) -> bool:
        """Whether the run is over: the stream ended and, when lossless, its capture confirmed it got the end's
        acknowledgement (or did not within END_LINGER_S)."""
        if not (self.stats.ended and cfg.exit_at_end):
            return False
        return self.ended_at is None or time.monotonic() - self.ended_at > END_LINGER_S

    def run(self, stop: threading.Event | None = None) -> RenderStats:
        stop = stop or threading.Event()
        cfg, policy = self.config, self.config.policy
        self.sock = deliver_dealer(self.ctx, cfg.deliver, policy, cfg.limits, cfg.keys)
        next_beat, silent = 0.0, False
        try:
            while not stop.is_set() and not self.closed and not self._through(cfg):
                now = time.monotonic()
                if now >= next_beat:
                    self._claim()
                    self._write_summary()
                    next_beat = now + policy.heartbeat_s
                    if now - self.last_engine > policy.peer_timeout_s and not silent:
                        log.warning("renderer: the engine at %s is silent; waiting for it", cfg.deliver)
                    silent = now - self.last_engine > policy.peer_timeout_s
                if not self.sock.poll(max(1, int((next_beat - now) * 1000))):
                    if self.window is not None and not self.window.poll():
                        self.window, self.closed = None, True
                    continue
                for _ in range(64):
                    self._receive(self.sock.recv_multipart(copy=False))
                    if not self.sock.poll(0) or self._through(cfg):
                        break
        finally:
            self._close()
            self.sock.close(linger=int(policy.linger_s * 1000))  # the last acknowledgement still goes out
        return self.stats
