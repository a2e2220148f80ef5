"""Engine server: frames in from many captures (ROUTER), batched across streams, poses out (PUB, and the
delivery channel: a ROUTER to which renderers connect and claim one stream each). Socket policy:
stream.transport; the acknowledgement protocol: docs/interfaces.md ("Delivery and acknowledgement").

Per stream the server keeps the next expected seq. Lossless streams accept only that seq (earlier ones are
duplicates, dropped and re-acknowledged; later ones trigger one resend request). With a delivery channel a
lossless frame is acknowledged to its capture only once the stream's renderer says it wrote it durably, so any
one process can die at any moment without losing or duplicating a frame; a stream no renderer has claimed
waits (its capture is told why). Live streams accept any newer seq and are acknowledged at publication. A
stream whose capture is silent for ``peer_timeout_s`` is freed, a renderer silent as long loses its stream.
Malformed messages are counted by reason and skipped; a frame the model fails on is sent on with no people
and named in the summary, never taking its batch-mates with it.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import zmq

from engine.batcher import DynamicBatcher
from stream import wire
from stream.metrics import Metrics
from stream.security import CurveKeys, start_authenticator
from stream.shm import ShmReader, sweep_stale
from stream.transport import Policy, deliver_router, frame_router, pose_pub, view_pub
from stream.worker import Job, Worker

log = logging.getLogger(__name__)


END_RETRY_S = 60.0  # how long a live stream's EndOfStream waits for a renderer to take it


@dataclass
class ServeConfig:
    frames: str                          # bind: captures connect here
    publish: str | None = None           # bind: pose stream (PUB)
    deliver: str | None = None           # bind: delivery channel (ROUTER) for renderers
    publish_frames: str | None = None    # bind: poses with their frames (PUB) for viewers
    policy: Policy = Policy()
    limits: wire.Limits = wire.Limits()
    max_batch: int = 8
    budget_s: float = 0.004
    one_per_stream: bool = False
    keys: CurveKeys | None = None        # CURVE for tcp binds (stream.security)
    max_streams: int = 256               # streams (and renderers) at once: a peer inventing names cannot exhaust memory


@dataclass
class _Stream:
    identity: bytes
    last_heard: float
    expected: int | None = None
    asked_resend: int | None = None
    ended: bool = False                 # its EndOfStream went out (else one is sent when the capture goes silent)
    done: int = 0                       # every seq below this is acknowledged to the capture
    lossless: bool = False
    published: int = 0                  # next seq for the pose stream (frames sent again are not published twice)


@dataclass
class _Renderer:
    identity: bytes
    instance: int
    want: str | None                    # the stream it claimed (None: any one)
    next_seq: int | None                # where it asked to start
    last_heard: float
    stream: str | None = None           # the stream it renders
    displaced: bool = False             # another renderer took its stream over: it gets none again


@dataclass
class ServeStats:
    frames: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    undelivered: int = 0
    streams_freed: int = 0
    renderers_lost: int = 0
    batches: int = 0
    messages: Counter = field(default_factory=Counter)   # messages taken (not rejected), by kind
    engine_errors: int = 0
    failed_frames: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))
    rejects: Counter = field(default_factory=Counter)


class EngineServer:
    """Hosts ``engine`` (an ``engine.Engine``); ``run(stop)`` serves until ``stop`` is set."""

    def __init__(self, engine, config: ServeConfig, metrics: Metrics | None = None, ctx: zmq.Context | None = None):
        self.engine, self.config = engine, config
        self.metrics = metrics or Metrics()
        # CURVE's authenticator serves a whole context: a private one unless the caller brings its own
        self.ctx = ctx or (zmq.Context() if config.keys else zmq.Context.instance())
        self.instance = int.from_bytes(os.urandom(6), "little")
        self.streams: dict[str, _Stream] = {}
        self.renderers: dict[bytes, _Renderer] = {}
        self.assigned: dict[str, _Renderer] = {}
        self.stats = ServeStats()
        self.rejects = wire.RejectCounter("engine server")  # Prometheus reads its counts (watch_server)
        self.batcher = DynamicBatcher(config.max_batch, config.budget_s, one_per_stream=config.one_per_stream)
        self.metrics.watch_server(self.rejects.counts, lambda: len(self.batcher), lambda: len(self.streams),
                                  config.max_batch, config.budget_s)
        self.ready = threading.Event()
        self.shm = ShmReader(config.limits.max_shm)
        self.pending_ends: dict[str, tuple[bytes, float]] = {}  # live EndOfStreams no renderer has taken yet
        self.deliver = self.pub = self.view_pub = None
        self.bound: dict[str, str] = {}     # the endpoints bound (with the ports picked for "tcp://host:*")

    # -- captures -----------------------------------------------------------------------------------
    def _to(self, identity: bytes, msg) -> None:
        try:
            self.router.send_multipart([identity, wire.encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # a capture that went away: nothing to tell

    def _ack(self, name: str, state: _Stream, resend: int | None = None) -> None:
        """Acknowledge everything below ``state.done`` (admitted frames still queued are not acknowledged)."""
        self._to(state.identity, wire.Ack(stream=name, next_seq=state.done, instance=self.instance, resend=resend))

    def _waiting(self, name: str, state: _Stream) -> str | None:
        if state.lossless and self.deliver is not None and name not in self.assigned:
            return f"no renderer has claimed stream {name!r} on the engine's delivery channel"
        return None

    def _beat(self, identity: bytes, stream: str | None, waiting: str | None = None) -> None:
        self._to(identity, wire.Heartbeat(sender="engine", role="engine", instance=self.instance,
                                          sent_ns=time.time_ns(), stream=stream, waiting=waiting))

    def _state(self, identity: bytes, name: str, now: float) -> _Stream | None:
        state = self.streams.get(name)
        if state is None and len(self.streams) >= self.config.max_streams:
            self.rejects(wire.WireError("streams", f"stream {name[:40]!r}: already {len(self.streams)} streams"))
            return None
        if state is None:
            log.info("stream %s attached", name)
            self.pending_ends.pop(name, None)  # a new run of the stream: an old end must not close it
            state = self.streams[name] = _Stream(identity, now)
            self._beat(identity, name)
            self._assign_waiting_renderers()
        if state.identity != identity:
            self.shm.forget(state.identity)
        state.identity, state.last_heard = identity, now
        return state

    def _start_lossless(self, name: str, state: _Stream, window_start: int) -> None:
        """First frame of a lossless stream seen by this engine: start at the capture's window, or where the
        stream's renderer already is (it wrote more than the capture knows after an engine restart)."""
        state.lossless, state.expected = True, window_start
        state.done = state.published = window_start
        renderer = self.assigned.get(name)
        if renderer is not None:
            self._rewind(name, state, renderer, renderer.next_seq)

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
        if state.expected is None or not state.lossless:
            self._start_lossless(name, state, msg.window_start)
        if msg.seq < state.expected:
            self.stats.duplicates += 1
            self._ack(name, state)
            return False
        if self.deliver is not None and name not in self.assigned:
            return False  # nobody to deliver to: the claim of a renderer asks the capture to resend
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
        packet = self.rejects.try_decode(payload, self.config.limits, functools.partial(self.shm.read, identity))
        if packet is None:
            return
        msg = packet.msg
        if isinstance(msg, wire.Heartbeat):
            if self._state(identity, msg.stream or identity.decode(errors="replace")[:wire.MAX_NAME] or "?", now) is None:
                return
            if msg.shm_path is not None:
                try:
                    self.shm.announce(identity, msg.shm_path, msg.shm_size)
                except ValueError as err:
                    self.rejects(wire.WireError("shm", str(err)))
                    return
        elif isinstance(msg, wire.Frame | wire.EndOfStream):
            state = self._state(identity, msg.stream, now)
            if state is None:
                return
            if self._admit(msg.stream, state, msg):
                packet.engine_ns, packet.state = time.time_ns(), state
                self.batcher.push(msg.stream, packet, now)
        elif isinstance(msg, wire.Ack) and self._closed(identity, msg):
            pass
        else:
            self.rejects(wire.WireError("unexpected", f"{type(msg).__name__} sent to the engine's frame channel"))
            return
        self.stats.messages[type(msg).__name__] += 1

    def _closed(self, identity: bytes, msg: wire.Ack) -> bool:
        """A capture's last word: its stream ended and every frame was acknowledged. Free the stream at once and
        tell its renderer, which may then go (it waits for this, so that an engine restarting in between still
        finds it to acknowledge the end to the capture)."""
        state = self.streams.get(msg.stream)
        if state is None or state.identity != identity or (state.lossless and msg.next_seq < state.done):
            return False
        log.info("stream %s closed by its capture", msg.stream)
        if not state.ended:  # a live end that was written off on its way: end the stream for the renderer here
            self._end_live(msg.stream, wire.encode(wire.EndOfStream(stream=msg.stream, seq=state.expected or 0)))
        renderer = self.assigned.get(msg.stream)
        if renderer is not None:
            self._to_renderer(renderer, wire.Ack(stream=msg.stream, next_seq=msg.next_seq, instance=self.instance))
            del self.assigned[msg.stream]
            renderer.stream = None  # a renderer that keeps going claims the stream's next run by name
        del self.streams[msg.stream]
        self.shm.forget(identity)
        self.worker.resets.append(msg.stream)
        return True

    # -- renderers ----------------------------------------------------------------------------------
    def _to_renderer(self, renderer: _Renderer, msg) -> None:
        try:
            self.deliver.send_multipart([renderer.identity, wire.encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # gone or full: its own silence or the next delivery tells

    def _unrendered(self) -> str | None:
        """The first stream (or pending live end) that no renderer has claimed."""
        for name, state in self.streams.items():
            if name not in self.assigned and not state.ended:
                return name
        return next((name for name in self.pending_ends if name not in self.assigned), None)

    def _assign_waiting_renderers(self) -> None:
        for renderer in self.renderers.values():
            if renderer.stream is None and renderer.want is None and not renderer.displaced \
                    and (name := self._unrendered()) is not None:
                self._assign(renderer, name)

    def _assign(self, renderer: _Renderer, name: str) -> None:
        old = self.assigned.get(name)
        if old is not None and old is not renderer:
            log.warning("stream %s: a new renderer took it over from the one before", name)
            old.stream, old.displaced = None, True
        self.assigned[name], renderer.stream = renderer, name
        log.info("stream %s: renderer attached (from seq %s)", name, renderer.next_seq)
        state = self.streams.get(name)
        if state is not None and state.lossless:
            self._rewind(name, state, renderer, renderer.next_seq)

    def _rewind(self, name: str, state: _Stream, renderer: _Renderer, start: int | None) -> None:
        """Deliver a lossless stream again from ``start`` (a renderer's first wish, or its gap); what the capture
        no longer holds (below ``done``) is skipped and the renderer told so."""
        start = state.done if start is None else start
        if start < state.done:
            self._to_renderer(renderer, wire.Ack(stream=name, next_seq=state.done, instance=self.instance))
            start = state.done
        state.expected, state.asked_resend = start, None
        self._ack(name, state, resend=start)

    def _claim(self, identity: bytes, msg: wire.Claim, now: float) -> bool:
        renderer = self.renderers.get(identity)
        if renderer is None and len(self.renderers) >= self.config.max_streams:
            self.rejects(wire.WireError("streams", f"a claim beyond {len(self.renderers)} renderers"))
            return False
        if renderer is None or renderer.instance != msg.instance:  # a renderer (re)started on this connection
            if renderer is not None:
                self._drop_renderer(renderer, "restarted")
            renderer = self.renderers[identity] = _Renderer(identity, msg.instance, msg.stream, msg.next_seq, now)
        renderer.last_heard, renderer.next_seq = now, msg.next_seq
        if renderer.displaced:
            return True
        if renderer.stream is None and (name := msg.stream or self._unrendered()) is not None:
            self._assign(renderer, name)
        if renderer.stream is not None:
            self._renderer_done(renderer.stream, msg.done)
        self._to_renderer(renderer, wire.Heartbeat(sender="engine", role="engine", instance=self.instance,
                                                   sent_ns=time.time_ns(), stream=renderer.stream))
        return True

    def _renderer_done(self, name: str, done: int) -> None:
        state = self.streams.get(name)
        if state is not None and state.lossless and self.deliver is not None and state.done < done <= (state.expected or 0):
            state.done = done
            self._ack(name, state)

    def _renderer_ack(self, identity: bytes, msg: wire.Ack, now: float) -> bool:
        renderer = self.renderers.get(identity)
        if renderer is None:
            self.rejects(wire.WireError("unexpected", f"ack for stream {msg.stream[:40]!r} from no renderer"))
            return False
        renderer.last_heard = now
        if renderer.stream != msg.stream:
            return True  # its stream was closed or taken over a moment ago: nothing to pass on
        self._renderer_done(msg.stream, msg.next_seq)
        state = self.streams.get(msg.stream)
        if msg.resend is not None and state is not None and state.lossless and msg.resend < (state.expected or 0):
            self._rewind(msg.stream, state, renderer, msg.resend)
        return True

    def _drop_renderer(self, renderer: _Renderer, why: str) -> None:
        self.renderers.pop(renderer.identity, None)
        if renderer.stream is None or self.assigned.get(renderer.stream) is not renderer:
            return
        log.warning("stream %s: its renderer %s; the stream waits for another", renderer.stream, why)
        self.stats.renderers_lost += 1
        del self.assigned[renderer.stream]
        state = self.streams.get(renderer.stream)
        if state is not None and state.lossless:
            state.expected = state.done  # what it had beyond its acknowledgement is gone with it: skipped below

    def _on_delivery_channel(self, parts: list, now: float) -> None:
        identity = parts[0].bytes
        packet = self.rejects.try_decode(parts[1:], self.config.limits)
        if packet is None:
            return
        msg = packet.msg
        if isinstance(msg, wire.Claim):
            taken = self._claim(identity, msg, now)
        elif isinstance(msg, wire.Ack):
            taken = self._renderer_ack(identity, msg, now)
        else:
            self.rejects(wire.WireError("unexpected", f"{type(msg).__name__} sent to the engine's delivery channel"))
            taken = False
        self.stats.messages[type(msg).__name__] += taken

    # -- batches ------------------------------------------------------------------------------------
    def _deliver(self, name: str, parts: list) -> bool:
        """Send to the stream's renderer; False when there is none or its queue is full."""
        if self.deliver is None:
            return True
        renderer = self.assigned.get(name)
        if renderer is None:
            return False
        try:
            self.deliver.send_multipart([renderer.identity, *parts], zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as err:  # EHOSTUNREACH: its connection is gone
            self._drop_renderer(renderer, f"disconnected ({err.strerror})")
            return False

    def _publish(self, packet: wire.Packet, header: bytes, extra: list, state: _Stream | None) -> bool:
        msg = packet.msg
        if isinstance(msg, wire.EndOfStream) and not msg.lossless:
            self._end_live(msg.stream, header)
            return True
        if self.pub is not None and (state is None or msg.seq >= state.published):
            self.pub.send_multipart([msg.stream.encode(), header], zmq.NOBLOCK)
            if state is not None:
                state.published = msg.seq + 1
        self._to_viewers(msg.stream, [header, *extra])
        return self._deliver(msg.stream, [header, *extra])

    def _to_viewers(self, name: str, parts: list) -> None:
        """Poses with their frame (or a stream's end) for viewers; a full queue drops, it never waits."""
        if self.view_pub is not None:
            self.view_pub.send_multipart([name.encode(), *parts], zmq.NOBLOCK, copy=False)

    def _end_live(self, name: str, eos: bytes) -> None:
        """Publish a live stream's EndOfStream and deliver it now or, while no renderer can take it (none claimed
        it yet, or its queue is full), on each heartbeat tick for up to ``END_RETRY_S``: live frames may be
        dropped, a stream's end never (the renderer would wait for it forever)."""
        if self.pub is not None:
            self.pub.send_multipart([name.encode(), eos], zmq.NOBLOCK)
        self._to_viewers(name, [eos])
        if not self._deliver(name, [eos]):
            self.pending_ends[name] = (eos, time.monotonic() + END_RETRY_S)

    def _frame_parts(self, packet: wire.Packet) -> list:
        """The frame as the delivery channel carries it: as received, or shared-memory pixels (already copied
        out of the ring) as raw pixels."""
        msg = packet.msg
        if msg.encoding != "shm" or (self.deliver is None and self.view_pub is None):
            return packet.parts
        raw = msgspec.structs.replace(msg, encoding="raw", shm_path=None, shm_offset=0)
        return wire.frame_parts(raw, packet.image)

    def _send_frame(self, packet: wire.Packet, job: Job, state: _Stream | None) -> bool:
        msg = packet.msg
        poses = job.results.get(id(packet))
        if poses is None:
            poses = job.empty
        out = wire.pack_poses(poses, msg, self.engine.model_id, packet.engine_ns, job.publish_ns)
        ok = self._publish(packet, wire.encode(out), self._frame_parts(packet), state)
        self.stats.frames += ok
        if ok:
            self.metrics.frame(msg.stream, (job.publish_ns - msg.capture_ns) / 1e6)
        return ok

    def _finish(self, job: Job) -> None:
        """Publish, deliver and acknowledge a batch the worker has run (on the socket thread)."""
        if job.failed:
            self.stats.engine_errors += len(job.failed)
            for text in job.failed.values():
                self.stats.failed_frames.append(text)
            log.error("engine failed on %d frame(s) (%s); sent on without people", len(job.failed),
                      next(iter(job.failed.values())))
        self.stats.batches += bool(job.frames)
        failed: set[str] = set()
        for packet in job.packets:
            msg = packet.msg
            # the state that admitted the frame, unless the stream was freed (and maybe re-attached) since
            state = packet.state if self.streams.get(msg.stream) is packet.state else None
            if msg.stream in failed or (msg.lossless and state and msg.seq >= state.expected):
                continue  # behind a frame that could not be delivered, or rewound: it will come again, in order
            if isinstance(msg, wire.Frame):
                ok = self._send_frame(packet, job, state)
            else:
                ok = self._publish(packet, packet.parts[0], [], state)
                if ok and state is not None:
                    state.ended = True
            if state is None:
                continue
            if not msg.lossless or (ok and self.deliver is None):
                if not ok:
                    self.metrics.drop(msg.stream, "deliver")
                state.done = max(state.done, msg.seq + 1)
                self._ack(msg.stream, state)
            elif not ok:  # lossless: the renderer's acknowledgement moves ``done``; without one, go back
                self.stats.undelivered += 1
                failed.add(msg.stream)
                state.expected = min(state.expected, msg.seq)

    def _housekeeping(self, now: float) -> None:
        for name, (eos, give_up_at) in list(self.pending_ends.items()):
            if self._deliver(name, [eos]):
                del self.pending_ends[name]
            elif now > give_up_at:
                log.warning("stream %s: no renderer took its EndOfStream in %.0f s; dropped", name, END_RETRY_S)
                del self.pending_ends[name]
        timeout = self.config.policy.peer_timeout_s
        for renderer in list(self.renderers.values()):
            if now - renderer.last_heard > timeout:
                self._drop_renderer(renderer, f"was silent for {now - renderer.last_heard:.1f} s")
            else:
                self._to_renderer(renderer, wire.Heartbeat(sender="engine", role="engine", instance=self.instance,
                                                           sent_ns=time.time_ns(), stream=renderer.stream))
        self._assign_waiting_renderers()
        for name, state in list(self.streams.items()):
            if now - state.last_heard > timeout:
                self._free(name, state, now)
            else:
                self._beat(state.identity, name, self._waiting(name, state))

    def _free(self, name: str, state: _Stream, now: float) -> None:
        log.warning("stream %s: capture silent for %.1f s; freed", name, now - state.last_heard)
        if not state.ended:  # the capture died or was cut off: tell the renderer and subscribers
            error = f"capture silent for {now - state.last_heard:.1f} s"
            self._end_live(name, wire.encode(wire.EndOfStream(stream=name, seq=state.expected or 0, error=error)))
        del self.streams[name]
        self.stats.streams_freed += 1
        self.shm.forget(state.identity)
        sweep_stale()  # its ring, if the capture died without removing it
        self.worker.resets.append(name)  # the worker forgets its state between batches

    def _open(self, cfg: ServeConfig):
        self.auth = start_authenticator(self.ctx, cfg.keys)
        self.router = frame_router(self.ctx, cfg.frames, cfg.policy, cfg.limits, cfg.keys)
        self.pub = pose_pub(self.ctx, cfg.publish, cfg.policy, cfg.keys) if cfg.publish else None
        self.deliver = deliver_router(self.ctx, cfg.deliver, cfg.policy, cfg.keys) if cfg.deliver else None
        self.view_pub = view_pub(self.ctx, cfg.publish_frames, cfg.policy, cfg.keys) if cfg.publish_frames else None
        self.bound = {name: sock.getsockopt_string(zmq.LAST_ENDPOINT)  # "tcp://host:*" binds a free port
                      for name, sock in (("frames", self.router), ("publish", self.pub), ("deliver", self.deliver),
                                         ("publish_frames", self.view_pub))
                      if sock is not None}
        sweep_stale()

    def run(self, stop: threading.Event | None = None) -> ServeStats:
        """Serve until ``stop``; the engine runs in a worker thread so heartbeats and intake never wait on it."""
        stop = stop or threading.Event()
        cfg, policy = self.config, self.config.policy
        self._open(cfg)
        bell_addr = f"inproc://engine-worker-{id(self)}"
        bell = self.ctx.socket(zmq.PULL)
        bell.bind(bell_addr)
        self.worker = Worker(self.engine, self.ctx, bell_addr)
        self.worker.start()
        poller = zmq.Poller()
        for sock in (self.router, bell, self.deliver):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
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
                if self.deliver is not None and self.deliver in events:
                    while self.deliver.poll(0):
                        self._on_delivery_channel(self.deliver.recv_multipart(copy=False), time.monotonic())
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
            self._close(bell)
        return self.stats

    def _close(self, bell) -> None:
        self.worker.jobs.put(None)
        self.worker.join(30)
        linger = int(self.config.policy.linger_s * 1000)
        for sock in (self.router, self.pub, self.deliver, self.view_pub, bell):
            if sock is not None:
                sock.close(linger=linger if sock is self.deliver else 0)
        if self.auth is not None:
            self.auth.stop()
        self.shm.close()
        self.stats.rejects = self.rejects.counts
