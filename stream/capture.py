"""Capture: reads a source in one thread and sends its frames to the engine over a DEALER socket.

Modes (see stream.transport for the socket policy):

* **live**: the reader keeps only the newest ``queue`` frames (older ones are dropped and counted); at most
  ``policy.window`` frames are in flight; frames the engine never acknowledges are written off after
  ``policy.peer_timeout_s`` so a dead engine never stalls the camera.
* **lossless**: the reader blocks when ``policy.window`` frames wait (back-pressure reaches the decoder);
  every frame stays buffered until acknowledged; after an engine restart (new heartbeat instance), a
  resend request, or no progress for ``peer_timeout_s``, the sender goes back to the oldest unacknowledged
  frame (go-back-N; the engine drops duplicates by seq). A frame counts as acknowledged only once the
  stream's renderer wrote it (the engine passes its acknowledgements on); when nothing is acknowledged for
  ``give_up_s`` (the renderer is gone, and the engine says so) the capture stops with an error naming why.
  The stream ends with an acknowledged EndOfStream.

With ``shm`` the capture announces its shared-memory ring in its heartbeats (sent before the first frame that
uses it); the engine reads no other file.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np
import zmq

from stream import wire
from stream.security import CurveKeys
from stream.shm import ShmRing, sweep_stale
from stream.sources import Source, SourceFrame
from stream.transport import Policy, frame_dealer

log = logging.getLogger(__name__)
_END = object()


@dataclass
class CaptureConfig:
    endpoint: str
    stream: str = "cam0"
    lossless: bool = False
    policy: Policy = Policy()
    queue: int = 1                       # live mode: frames kept for the sender (newest wins)
    jpeg_quality: int | None = None      # send JPEG instead of raw pixels (slow links)
    shm: bool = False                    # pixels through shared memory (engine on this machine, ipc://)
    intrinsics: tuple[float, float, float, float] | None = None
    give_up_s: float = 60.0              # lossless: no engine contact or no acknowledgement for this long -> fail
    keys: CurveKeys | None = None        # CURVE for a tcp engine (stream.security)


@dataclass
class CaptureStats:
    read: int = 0
    sent: int = 0
    acked: int = 0
    dropped: int = 0                     # live: frames replaced by newer ones before sending
    lost: int = 0                        # live: frames sent but never acknowledged (engine gone)
    resent: int = 0
    corrupt: int = 0
    error: str | None = None
    engine_lost: bool = False

    def to_json(self) -> dict:
        return asdict(self)


class _Reader(threading.Thread):
    """Reads the source; items are (seq, SourceFrame, capture_ns) and finally _END. ``stop`` ends reading
    early (the stream still ends with _END); ``done`` tells a blocked reader that nobody will take items."""

    def __init__(self, source: Source, lossless: bool, depth: int, doorbell: tuple, stop: threading.Event):
        super().__init__(daemon=True, name=f"read {source.name}")
        self.source, self.lossless, self.stop, self.bell_at = source, lossless, stop, doorbell
        self.doorbell = None
        self.items: queue.Queue | deque = queue.Queue(maxsize=depth) if lossless else deque()
        self.depth = depth
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.read = self.dropped = 0

    def _put(self, item) -> None:
        if self.lossless:
            while not self.done.is_set():
                try:
                    self.items.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
        else:
            with self.lock:
                if item is not _END and len(self.items) >= self.depth:
                    self.items.popleft()  # newest frame wins
                    self.dropped += 1
                self.items.append(item)
        try:
            self.doorbell.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def take(self):
        """The next item or None."""
        if self.lossless:
            try:
                return self.items.get_nowait()
            except queue.Empty:
                return None
        with self.lock:
            return self.items.popleft() if self.items else None

    def run(self) -> None:
        ctx, address = self.bell_at
        self.doorbell = ctx.socket(zmq.PUSH)
        self.doorbell.setsockopt(zmq.SNDHWM, 1)
        self.doorbell.connect(address)
        try:
            for frame in self.source.frames():
                if self.stop.is_set() or self.done.is_set():
                    break
                self.read += 1
                self._put((self.read - 1, frame, time.time_ns()))
        except Exception as err:  # a source failing mid-stream ends the stream with its error
            self.source.error = self.source.error or f"{self.source.name}: {err}"
        finally:
            self._put(_END)
            self.doorbell.close(linger=0)


class Capture:
    """Sends one source's frames to the engine; ``run(stop)`` returns :class:`CaptureStats`."""

    def __init__(self, source: Source, config: CaptureConfig, ctx: zmq.Context | None = None):
        self.source, self.config = source, config
        self.ctx = ctx or zmq.Context.instance()
        self.stats = CaptureStats()
        self.instance = int.from_bytes(os.urandom(6), "little")
        self.unacked: dict[int, tuple[wire.Frame | wire.EndOfStream, object]] = {}
        self.base = 0                   # lowest unacknowledged seq
        self.send_ptr = 0               # next seq to (re)send (lossless)
        self.engine_instance: int | None = None
        self.rewound: tuple[int, int] | None = None
        self.last_heard = self.last_progress = self.last_advance = time.monotonic()
        self.waiting: str | None = None  # the engine's word on why the stream does not progress
        self.eos_seq: int | None = None
        self.rejects = wire.RejectCounter(f"capture {config.stream}")
        self.ring: ShmRing | None = None
        self.announced = False          # the ring went out in a heartbeat before its first frame
        self.slot = 0

    # -- messages -----------------------------------------------------------------------------------
    def _header(self, seq: int, item: SourceFrame, capture_ns: int) -> tuple[wire.Frame, object]:
        h, w = item.image.shape[:2]
        frame = wire.Frame(stream=self.config.stream, seq=seq, capture_ns=capture_ns, width=w, height=h,
                           pts=item.pts, time_base=item.time_base, rate=self.source.rate,
                           intrinsics=self.config.intrinsics, lossless=self.config.lossless)
        if self.config.shm:
            return self._shm_frame(frame, item.image)
        if self.config.jpeg_quality:
            import cv2

            ok, data = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
            frame.encoding = "jpeg"
            return frame, data.tobytes()
        return frame, item.image

    def _shm_frame(self, frame: wire.Frame, image) -> tuple[wire.Frame, object]:
        """Copy ``image`` into the next ring slot (a ring of 2 windows + 4 slots, sized by the first frame)."""
        if self.ring is None:
            policy = self.config.policy
            self.ring = ShmRing(self.config.stream, image.nbytes, 2 * max(policy.window, policy.live_window) + 4)
        if not self.ring.fits(image):
            return frame, image  # larger than the ring's slots: raw pixels
        frame.encoding = "shm"
        frame.shm_path, frame.shm_offset = self.ring.put(self.slot, np.ascontiguousarray(image))
        self.slot += 1
        return frame, b""

    def _send(self, sock: zmq.Socket, msg, payload) -> bool:
        """Send without blocking; False when the outgoing queue is full (the engine is away)."""
        if getattr(msg, "encoding", None) == "shm" and not self.announced:
            self._beat(sock)
            self.announced = True
        msg.window_start = self.base
        parts = wire.frame_parts(msg, payload) if isinstance(msg, wire.Frame) else [wire.encode(msg)]
        try:
            sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def _on_message(self, packet: wire.Packet) -> None:
        msg, now = packet.msg, time.monotonic()
        self.last_heard = now
        if isinstance(msg, wire.Ack | wire.Heartbeat):
            if self.engine_instance is not None and msg.instance != self.engine_instance:
                log.warning("capture %s: engine restarted; resending from seq %d", self.config.stream, self.base)
                self.announced = False
                self._rewind(self.base)
            self.engine_instance = msg.instance
        if isinstance(msg, wire.Heartbeat) and msg.stream == self.config.stream:
            self.waiting = msg.waiting
        if isinstance(msg, wire.Ack) and msg.stream == self.config.stream:
            if msg.next_seq > self.base:
                for seq in [s for s in self.unacked if s < msg.next_seq]:
                    self.stats.acked += isinstance(self.unacked.pop(seq)[0], wire.Frame)
                self.base, self.last_progress, self.last_advance = msg.next_seq, now, now
                self.send_ptr = max(self.send_ptr, self.base)
            if msg.resend is not None and self.rewound != (msg.instance, msg.resend):
                self.rewound = (msg.instance, msg.resend)
                self._rewind(msg.resend)

    def _rewind(self, seq: int) -> None:
        if self.config.lossless:
            self.send_ptr = max(self.base, min(seq, self.send_ptr))
        else:
            self.stats.lost += sum(isinstance(m, wire.Frame) for m, _ in self.unacked.values())
            self.unacked.clear()
        self.last_progress = time.monotonic()

    # -- sending ------------------------------------------------------------------------------------
    def _fill(self, sock: zmq.Socket, reader: _Reader) -> None:
        policy = self.config.policy
        window = policy.window if self.config.lossless else policy.live_window
        while True:
            in_flight = (self.send_ptr - self.base) if self.config.lossless else len(self.unacked)
            if in_flight >= window:
                return
            if self.config.lossless and self.send_ptr in self.unacked:
                msg, payload = self.unacked[self.send_ptr]
                if not self._send(sock, msg, payload):
                    return
                self.send_ptr += 1
                self.stats.resent += 1
                continue
            if self.eos_seq is not None:
                return
            item = reader.take()
            if item is None:
                return
            if item is _END:
                self.eos_seq = reader.read
                msg, payload = wire.EndOfStream(stream=self.config.stream, seq=self.eos_seq, error=self.source.error,
                                                lossless=self.config.lossless), None
            else:
                msg, payload = self._header(*item)
                self.stats.sent += 1
            self.unacked[msg.seq] = (msg, payload)
            if not self.config.lossless:
                self.base = min(self.unacked)
            if len(self.unacked) == 1:
                self.last_progress = self.last_advance = time.monotonic()
            if not self._send(sock, msg, payload) and self.config.lossless:
                self.send_ptr = msg.seq
                return
            self.send_ptr = msg.seq + 1

    def _check_timeouts(self, now: float) -> None:
        policy = self.config.policy
        if self.unacked and now - self.last_progress > policy.peer_timeout_s:
            if self.config.lossless:
                self._rewind(self.base)
            else:
                self.stats.lost += sum(isinstance(m, wire.Frame) for m, _ in self.unacked.values())
                self.unacked.clear()
                self.last_progress = now
        if self.engine_instance is None:
            return
        if now - self.last_heard > policy.peer_timeout_s and not self.stats.engine_lost:
            self.stats.engine_lost = True
            log.warning("capture %s: engine at %s silent for %.1f s", self.config.stream, self.config.endpoint,
                        now - self.last_heard)
        elif now - self.last_heard <= policy.peer_timeout_s:
            self.stats.engine_lost = False

    def _stalled(self, now: float) -> str | None:
        """Why a lossless capture gives up, or None: the engine silent, or nothing acknowledged, for give_up_s."""
        cfg = self.config
        if now - self.last_heard > cfg.give_up_s:
            return f"engine at {cfg.endpoint} not answering for {cfg.give_up_s:.0f} s"
        if self.unacked and self.engine_instance is not None and now - self.last_advance > cfg.give_up_s:
            why = self.waiting or "the engine holds the frames: its renderer is gone or stuck"
            return f"no frame of stream {cfg.stream!r} acknowledged for {cfg.give_up_s:.0f} s ({why})"
        return None

    def _finished(self) -> bool:
        return self.eos_seq is not None and (self.base > self.eos_seq or not self.unacked)

    def run(self, stop: threading.Event | None = None) -> CaptureStats:
        """Send until the source ends and the EndOfStream is acknowledged (live: or written off), or, once
        ``stop`` is set, at most ``peer_timeout_s`` longer; then return the stats."""
        stop = stop or threading.Event()
        policy, cfg = self.config.policy, self.config
        sweep_stale()  # rings left by captures that were killed
        sock = frame_dealer(self.ctx, cfg.endpoint, cfg.stream, policy, cfg.keys)
        bell_addr = f"inproc://capture-{id(self)}"
        bell = self.ctx.socket(zmq.PULL)
        bell.bind(bell_addr)
        reader = _Reader(self.source, cfg.lossless, cfg.queue if not cfg.lossless else policy.window,
                         (self.ctx, bell_addr), stop)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(bell, zmq.POLLIN)
        next_beat, stopped_at = 0.0, None
        try:
            while not self._finished():
                now = time.monotonic()
                if stop.is_set():  # finish the stream unless there is no engine to finish it with
                    stopped_at = stopped_at or now
                    if self.engine_instance is None or self.stats.engine_lost or now - stopped_at > policy.peer_timeout_s:
                        break
                if cfg.lossless and (error := self._stalled(now)):
                    self.stats.error = error
                    break
                if now >= next_beat:
                    self._beat(sock)
                    next_beat = now + policy.heartbeat_s
                if reader.ident is None and self.engine_instance is not None and not stop.is_set():
                    reader.start()  # read only once the engine answers: no frames age in a queue meanwhile
                    self.last_progress = self.last_advance = now
                self._fill(sock, reader)
                events = dict(poller.poll(timeout=max(1, int((next_beat - time.monotonic()) * 1000))))
                if bell in events:
                    while bell.poll(0):
                        bell.recv()
                while sock.poll(0):
                    packet = self.rejects.try_decode(sock.recv_multipart(copy=False))
                    if packet is not None:
                        self._on_message(packet)
                self._check_timeouts(time.monotonic())
        finally:
            reader.done.set()
            if reader.ident is not None:
                reader.join(timeout=2.0)
            self.stats.read, self.stats.corrupt = reader.read, self.source.corrupt
            self.stats.dropped += reader.dropped
            self.stats.error = self.stats.error or self.source.error
            self.source.close()
            if self._finished():  # tell the engine the stream is closed: it frees it now, and lets its renderer go
                self._send_control(sock, wire.Ack(stream=cfg.stream, next_seq=self.base, instance=self.instance))
            sock.close(linger=int(policy.linger_s * 1000) if self._finished() else 0)
            if self.ring is not None:
                self.ring.close()
            bell.close(linger=0)
        return self.stats

    def _send_control(self, sock: zmq.Socket, msg) -> None:
        try:
            sock.send(wire.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _beat(self, sock: zmq.Socket) -> None:
        ring = self.ring
        hb = wire.Heartbeat(sender=self.config.stream, role="capture", instance=self.instance,
                            sent_ns=time.time_ns(), stream=self.config.stream,
                            shm_path=ring.path if ring else None, shm_size=ring.size if ring else 0)
        try:
            sock.send(wire.encode(hb), zmq.NOBLOCK)
        except zmq.Again:
            pass
