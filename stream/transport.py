"""Transport policy: which ZeroMQ socket carries what, and the limits every socket gets.

    capture  --DEALER--> ROUTER  engine      frames in (many captures, attach/detach at will); acks and
                                             heartbeats come back on the same connection
    engine   --PUB-----> SUB     anyone      pose stream (lossy edge: a slow subscriber loses messages at
                                             its high-water mark, the engine never waits for it)
    engine   --PUSH----> PULL    renderer    reliable channel: poses + their frame; a full queue blocks the
                                             engine for lossless streams (back-pressure reaches the capture
                                             through withheld acks) and drops (counted) for live streams
    engine   --PUB-----> SUB     viewers     optional (serve --publish-frames): poses + their frame, lossy
                                             like the pose stream but with a short queue (each message is a frame)

Every socket has a high-water mark, LINGER, send/receive timeouts, ZMTP heartbeats (dead TCP peers are
noticed) and a maximum message size on the receiving side. Binds go to loopback unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import zmq

from stream.wire import Limits


@dataclass(frozen=True)
class Policy:
    """Timeouts in seconds, queue bounds in messages."""

    heartbeat_s: float = 0.5        # application heartbeats, both ways
    peer_timeout_s: float = 3.0     # no message for this long -> the peer is gone
    send_timeout_s: float = 1.0     # a blocking send gives up after this long
    window: int = 4                 # lossless: frames a capture may have in flight unacknowledged
    live_window: int = 2            # live: the same, kept small so frames never age in queues
    frames_hwm: int = 64            # engine's inbound queue (all captures together)
    pub_hwm: int = 256              # pose stream, per subscriber
    deliver_hwm: int = 8            # reliable channel to the renderer
    view_hwm: int = 4               # poses + frames for viewers, per viewer (a slow one skips frames)
    record_hwm: int = 64            # a viewer recording every frame (view --save) queues ~2 s on its side
    linger_s: float = 1.0           # how long close() may flush queued messages
    socket_buffer: int = 4 << 20    # kernel buffer of frame sockets: a 1080p frame in few system calls


def _common(sock: zmq.Socket, policy: Policy) -> zmq.Socket:
    sock.setsockopt(zmq.LINGER, int(policy.linger_s * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(policy.send_timeout_s * 1000))
    sock.setsockopt(zmq.RCVTIMEO, int(policy.peer_timeout_s * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, int(policy.heartbeat_s * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(policy.peer_timeout_s * 1000))
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    return sock


def frame_router(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits) -> zmq.Socket:
    """Engine side of the frame channel (binds)."""
    sock = _common(ctx.socket(zmq.ROUTER), policy)
    sock.setsockopt(zmq.RCVHWM, policy.frames_hwm)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.RCVBUF, policy.socket_buffer)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message)
    sock.bind(endpoint)
    return sock


def frame_dealer(ctx: zmq.Context, endpoint: str, identity: str, policy: Policy) -> zmq.Socket:
    """Capture side of the frame channel (connects); ``identity`` is the stream id."""
    sock = _common(ctx.socket(zmq.DEALER), policy)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.SNDHWM, policy.window + 8)
    sock.setsockopt(zmq.SNDBUF, policy.socket_buffer)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.connect(endpoint)
    return sock


def pose_pub(ctx: zmq.Context, endpoint: str, policy: Policy) -> zmq.Socket:
    sock = _common(ctx.socket(zmq.PUB), policy)
    sock.setsockopt(zmq.SNDHWM, policy.pub_hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    return sock


def pose_sub(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits, topics=("",)) -> zmq.Socket:
    sock = _common(ctx.socket(zmq.SUB), policy)
    sock.setsockopt(zmq.RCVHWM, policy.pub_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_header * 2)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(endpoint)
    return sock


def view_pub(ctx: zmq.Context, endpoint: str, policy: Policy) -> zmq.Socket:
    """Engine side of the poses-with-frames stream for viewers (binds): never waits, drops past ``view_hwm``."""
    sock = _common(ctx.socket(zmq.PUB), policy)
    sock.setsockopt(zmq.SNDHWM, policy.view_hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    return sock


def view_sub(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits, topics=("",),
             record: bool = False) -> zmq.Socket:
    """Viewer side (connects) of either pose stream, the plain one or the one with frames; ``record``: a longer
    queue, for a viewer that logs every frame rather than the newest."""
    sock = _common(ctx.socket(zmq.SUB), policy)
    sock.setsockopt(zmq.RCVHWM, policy.record_hwm if record else policy.view_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message * 2)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(endpoint)
    return sock


def deliver_push(ctx: zmq.Context, endpoint: str, policy: Policy) -> zmq.Socket:
    sock = _common(ctx.socket(zmq.PUSH), policy)
    sock.setsockopt(zmq.SNDHWM, policy.deliver_hwm)
    sock.bind(endpoint)
    return sock


def deliver_pull(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits) -> zmq.Socket:
    sock = _common(ctx.socket(zmq.PULL), policy)
    sock.setsockopt(zmq.RCVHWM, policy.deliver_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message * 2)
    sock.connect(endpoint)
    return sock


def ipc_endpoints(directory: str | None = None) -> dict[str, str]:
    """Fresh ipc:// endpoints (frames, poses, deliver) in a private directory."""
    directory = directory or tempfile.mkdtemp(prefix="posestream-")
    os.makedirs(directory, exist_ok=True)
    return {name: f"ipc://{os.path.join(directory, name)}" for name in ("frames", "poses", "deliver")}
