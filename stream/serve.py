"""Engine server: frames in from many captures (ROUTER), batched across streams, poses out (PUB, and the
reliable PUSH channel to a renderer). Socket policy: stream.transport.

Per stream the server keeps the next expected seq. Lossless streams accept only that seq (earlier ones are
duplicates, dropped and re-acknowledged; later ones trigger one resend request), and a frame is
acknowledged only once its poses left on the reliable channel, so a frame lost inside a dying engine or a
blocked renderer is resent by its capture. Live streams accept any newer seq. A stream whose capture is
silent for ``peer_timeout_s`` is freed. Malformed messages are counted by reason and skipped.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import zmq

from engine.batcher import DynamicBatcher
from stream import wire
from stream.metrics import Metrics
from stream.shm import ShmReader
from stream.transport import Policy, deliver_push, frame_router, pose_pub, view_pub

log = logging.getLogger(__name__)


END_RETRY_S = 60.0  # how long a live stream's EndOfStream waits for a renderer to take it


@dataclass
class ServeConfig:
    frames: str                          # bind: captures connect here
    publish: str | None = None           # bind: pose stream (PUB)
    deliver: str | None = None           # bind: reliable channel (PUSH) for a renderer
    publish_frames: str | None = None    # bind: poses with their frames (PUB) for viewers
    policy: Policy = Policy()
    limits: wire.Limits = wire.Limits()
    max_batch: int = 8
    budget_s: float = 0.004
    one_per_stream: bool = False


@dataclass
class _Stream:
    identity: bytes
    last_heard: float
    expected: int | None = None
    asked_resend: int | None = None
    ended: bool = False                 # its EndOfStream went out (else one is sent when the capture goes silent)
    shm_path: str | None = None
    done: int = 0                       # every seq below this is published and delivered


@dataclass
class ServeStats:
    frames: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    undelivered: int = 0
    streams_freed: int = 0
    batches: int = 0
    engine_errors: int = 0
    rejects: Counter = field(default_factory=Counter)


class EngineServer:
    """Hosts ``engine`` (an ``engine.Engine``); ``run(stop)`` serves until ``stop`` is set."""

    def __init__(self, engine, config: ServeConfig, metrics: Metrics | None = None, ctx: zmq.Context | None = None):
        self.engine, self.config = engine, config
        self.metrics = metrics or Metrics()
        self.ctx = ctx or zmq.Context.instance()
        self.instance = int.from_bytes(os.urandom(6), "little")
        self.streams: dict[str, _Stream] = {}
        self.stats = ServeStats()
        self.rejects = wire.RejectCounter("engine server")
        self.batcher = DynamicBatcher(config.max_batch, config.budget_s, one_per_stream=config.one_per_stream)
        self.metrics.watch_server(self.rejects.counts, lambda: len(self.batcher), lambda: len(self.streams),
                                  config.max_batch, config.budget_s)
        self.ready = threading.Event()
        self.shm = ShmReader()
        self.pending_ends: dict[str, tuple[bytes, float]] = {}  # live EndOfStreams the renderer has not taken yet

    # -- control messages ---------------------------------------------------------------------------
    def _to(self, identity: bytes, msg) -> None:
        try:
            self.router.send_multipart([identity, wire.encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # a capture that went away: nothing to tell

    def _ack(self, name: str, state: _Stream, resend: int | None = None) -> None:
        """Acknowledge everything below ``state.done`` (admitted frames still queued are not acknowledged)."""
        self._to(state.identity, wire.Ack(stream=name, next_seq=state.done, instance=self.instance, resend=resend))

    def _beat(self, identity: bytes, stream: str | None) -> None:
        self._to(identity, wire.Heartbeat(sender="engine", role="engine", instance=self.instance,
                                          sent_ns=time.time_ns(), stream=stream))

    def _state(self, identity: bytes, name: str, now: float) -> _Stream:
        state = self.streams.get(name)
        if state is None:
            log.info("stream %s attached", name)
            self.pending_ends.pop(name, None)  # a new run of the stream: an old end must not close it
            state = self.streams[name] = _Stream(identity, now)
            self._beat(identity, name)
        state.identity, state.last_heard = identity, now
        return state

    def _admit(self, name: str, state: _Stream, msg) -> bool:
        """Whether a Frame/EndOfStream is the next one of its stream (acks or asks for a resend otherwise)."""
        if not msg.lossless:
            if state.expected is not None and msg.seq < state.expected:
                self.stats.duplicates += 1
                return False
            if state.expected is not None and msg.seq > state.expected:
                self.metrics.drop(name, "capture", msg.seq - state.expected)  # newest-wins drops upstream
            state.expected = msg.seq + 1
            return True
        if state.expected is None:
            state.expected = state.done = msg.window_start
        if msg.seq < state.expected:
            self.stats.duplicates += 1
            self._ack(name, state)
            return False
        if msg.seq > state.expected:
            self.stats.out_of_order += 1
            if state.asked_resend != state.expected:
                state.asked_resend = state.expected
                self._ack(name, state, resend=state.expected)
            return False
        state.expected += 1
        return True

    def _receive(self, parts: list, now: float) -> None:
        identity, payload = parts[0].bytes, parts[1:]
        packet = self.rejects.try_decode(payload, self.config.limits, self.shm)
        if packet is None:
            return
        msg = packet.msg
        if isinstance(msg, wire.Heartbeat):
            self._state(identity, msg.stream or identity.decode(errors="replace"), now)
        elif isinstance(msg, wire.Frame | wire.EndOfStream):
            state = self._state(identity, msg.stream, now)
            state.shm_path = getattr(msg, "shm_path", None) or state.shm_path
            if self._admit(msg.stream, state, msg):
                packet.engine_ns, packet.state = time.time_ns(), state
                self.batcher.push(msg.stream, packet, now)
        else:
            self.rejects(wire.WireError("unexpected", f"{type(msg).__name__} sent to the engine"))

    # -- batches ------------------------------------------------------------------------------------
    def _deliver(self, parts: list, lossless: bool) -> bool:
        if self.deliver is None:
            return True
        try:
            self.deliver.send_multipart(parts, 0 if lossless else zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def _publish(self, packet: wire.Packet, header: bytes, extra: list) -> bool:
        msg = packet.msg
        if isinstance(msg, wire.EndOfStream) and not msg.lossless:
            self._end_live(msg.stream, header)
            return True
        if self.pub is not None:
            self.pub.send_multipart([msg.stream.encode(), header], zmq.NOBLOCK)
        self._to_viewers(msg.stream, [header, *extra])
        return self._deliver([header, *extra], msg.lossless)

    def _to_viewers(self, name: str, parts: list) -> None:
        """Poses with their frame (or a stream's end) for viewers; a full queue drops, it never waits."""
        if self.view_pub is not None:
            self.view_pub.send_multipart([name.encode(), *parts], zmq.NOBLOCK, copy=False)

    def _end_live(self, name: str, eos: bytes) -> None:
        """Publish a live stream's EndOfStream and deliver it now or, while the renderer cannot take it (not
        connected yet, or its queue full), on each heartbeat tick for up to ``END_RETRY_S``: live frames may be
        dropped, a stream's end never (the renderer would wait for it forever)."""
        if self.pub is not None:
            self.pub.send_multipart([name.encode(), eos], zmq.NOBLOCK)
        self._to_viewers(name, [eos])
        if not self._deliver([eos], False):
            self.pending_ends[name] = (eos, time.monotonic() + END_RETRY_S)

    def _frame_parts(self, packet: wire.Packet) -> list:
        """The frame as the reliable channel carries it: as received, or shared-memory pixels copied out (the
        capture reuses the slot once the frame is acknowledged)."""
        msg = packet.msg
        if msg.encoding != "shm" or (self.deliver is None and self.view_pub is None):
            return packet.parts
        raw = msgspec.structs.replace(msg, encoding="raw", shm_path=None, shm_offset=0)
        return wire.frame_parts(raw, packet.image.copy())

    def _finish(self, job: _Job) -> None:
        """Publish, deliver and acknowledge a batch the worker has run (on the socket thread)."""
        if job.error is not None:
            log.error("engine failed on a batch of %d (%s); its frames are skipped", len(job.packets), job.error)
            self.stats.engine_errors += 1
        self.stats.batches += bool(job.frames)
        by_id = {id(p): r for p, r in zip(job.frames, job.results or [])}
        failed: set[str] = set()
        for packet in job.packets:
            msg = packet.msg
            # the state that admitted the frame, unless the stream was freed (and maybe re-attached) since
            state = packet.state if self.streams.get(msg.stream) is packet.state else None
            if msg.stream in failed or (msg.lossless and state and msg.seq >= state.expected):
                continue  # behind a frame that could not be delivered: it will come again, in order
            if isinstance(msg, wire.Frame) and id(packet) in by_id:
                out = wire.pack_poses(by_id[id(packet)], msg, self.engine.model_id, packet.engine_ns, job.publish_ns)
                ok = self._publish(packet, wire.encode(out), self._frame_parts(packet))
                self.stats.frames += ok
                if ok:
                    self.metrics.frame(msg.stream, (job.publish_ns - msg.capture_ns) / 1e6)
            else:
                ok = isinstance(msg, wire.Frame) or self._publish(packet, packet.parts[0], [])
                if ok and state is not None and isinstance(msg, wire.EndOfStream):
                    state.ended = True
            if state is None:
                continue
            if ok or not msg.lossless:
                if not ok:
                    self.metrics.drop(msg.stream, "deliver")
                state.done = max(state.done, msg.seq + 1)
                self._ack(msg.stream, state)
            else:
                self.stats.undelivered += 1
                failed.add(msg.stream)
                state.expected = min(state.expected, msg.seq)

    def _housekeeping(self, now: float) -> None:
        for name, (eos, give_up_at) in list(self.pending_ends.items()):
            if self._deliver([eos], False):
                del self.pending_ends[name]
            elif now > give_up_at:
                log.warning("stream %s: no renderer took its EndOfStream in %.0f s; dropped", name, END_RETRY_S)
                del self.pending_ends[name]
        for name, state in list(self.streams.items()):
            if now - state.last_heard > self.config.policy.peer_timeout_s:
                log.warning("stream %s: capture silent for %.1f s; freed", name, now - state.last_heard)
                if not state.ended:  # the capture died or was cut off: tell the renderer and subscribers
                    error = f"capture silent for {now - state.last_heard:.1f} s"
                    self._end_live(name, wire.encode(wire.EndOfStream(stream=name, seq=state.expected or 0, error=error)))
                del self.streams[name]
                self.stats.streams_freed += 1
                if state.shm_path:
                    self.shm.forget(state.shm_path)
                self.worker.resets.append(name)  # the worker forgets its state between batches
            else:
                self._beat(state.identity, name)

    def run(self, stop: threading.Event | None = None) -> ServeStats:
        """Serve until ``stop``; the engine runs in a worker thread so heartbeats and intake never wait on it."""
        stop = stop or threading.Event()
        cfg, policy = self.config, self.config.policy
        self.router = frame_router(self.ctx, cfg.frames, policy, cfg.limits)
        self.pub = pose_pub(self.ctx, cfg.publish, policy) if cfg.publish else None
        self.deliver = deliver_push(self.ctx, cfg.deliver, policy) if cfg.deliver else None
        self.view_pub = view_pub(self.ctx, cfg.publish_frames, policy) if cfg.publish_frames else None
        bell_addr = f"inproc://engine-worker-{id(self)}"
        bell = self.ctx.socket(zmq.PULL)
        bell.bind(bell_addr)
        self.worker = _Worker(self.engine, self.ctx, bell_addr)
        self.worker.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(bell, zmq.POLLIN)
        self.ready.set()
        next_beat, busy, busy_since = 0.0, False, 0.0
        try:
            while not stop.is_set() or busy or len(self.batcher):  # on stop: finish what was admitted
                now = time.monotonic()
                wait = None if busy else self.batcher.time_until_deadline()
                wait = next_beat - now if wait is None else min(wait, next_beat - now)
                events = dict(poller.poll(max(0, int(wait * 1000)) if wait > 0.001 else 0))
                if self.router in events and not stop.is_set():
                    for _ in range(256):
                        self._receive(self.router.recv_multipart(copy=False), time.monotonic())
                        if not self.router.poll(0):
                            break
                if bell in events:
                    bell.recv()
                    self.metrics.batch_time(time.monotonic() - busy_since)
                    self._finish(self.worker.done.get())
                    busy = False
                if time.monotonic() >= next_beat:
                    self._housekeeping(time.monotonic())
                    next_beat = time.monotonic() + policy.heartbeat_s
                batch = [] if busy else (self.batcher.pop() if stop.is_set() else self.batcher.pop_ready())
                if batch:
                    busy_since = time.monotonic()
                    self.metrics.batch([busy_since - p.arrival for p in batch])
                    self.worker.jobs.put(batch)
                    busy = True
        finally:
            self.worker.jobs.put(None)
            self.worker.join(30)
            for sock in (self.router, self.pub, self.deliver, self.view_pub, bell):
                if sock is not None:
                    sock.close(linger=int(policy.linger_s * 1000) if sock is self.deliver else 0)
            self.shm.close()
            self.stats.rejects = self.rejects.counts
        return self.stats


def frame_seconds(frame: wire.Frame) -> float:
    """The frame's time for smoothing: its presentation time when the source stamps one (a file, or a stream
    paced at its own rate), else when it was captured."""
    if frame.pts is not None and frame.time_base:
        return frame.pts * frame.time_base[0] / frame.time_base[1]
    return frame.capture_ns / 1e9


@dataclass
class _Job:
    packets: list
    frames: list
    results: list | None = None
    publish_ns: int = 0
    error: Exception | None = None


class _Worker(threading.Thread):
    """Runs ``engine.infer`` on one batch at a time; rings ``bell`` when a result waits in ``done``."""

    def __init__(self, engine, ctx: zmq.Context, bell: str):
        super().__init__(daemon=True, name="engine worker")
        self.engine, self.ctx, self.bell_addr = engine, ctx, bell
        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.resets: list[str] = []

    def run(self) -> None:
        bell = self.ctx.socket(zmq.PUSH)
        bell.connect(self.bell_addr)
        try:
            while (batch := self.jobs.get()) is not None:
                while self.resets:
                    name = self.resets.pop()
                    if hasattr(self.engine, "reset"):
                        self.engine.reset(name)
                packets = [p.item for p in batch]
                job = _Job(packets, [p for p in packets if isinstance(p.msg, wire.Frame)])
                try:
                    if job.frames:
                        job.results = self.engine.infer([p.image for p in job.frames],
                                                        stream_ids=[p.msg.stream for p in job.frames],
                                                        intrinsics=[p.msg.intrinsics for p in job.frames],
                                                        timestamps=[frame_seconds(p.msg) for p in job.frames])
                except Exception as err:  # a failing batch must not take the server down
                    job.error = err
                job.publish_ns = time.time_ns()
                self.done.put(job)
                bell.send(b"")
        finally:
            bell.close(linger=0)
