"""Transport policy: which ZeroMQ socket carries what, and the limits every socket gets.

    capture  --DEALER--> ROUTER  engine      frames in (many captures, attach/detach at will); acks and
                                             heartbeats come back on the same connection
    engine   --PUB-----> SUB     anyone      pose stream (lossy edge: a slow subscriber loses messages at
                                             its high-water mark, the engine never waits for it)
    renderer --DEALER--> ROUTER  engine      delivery channel: each renderer claims a stream and gets exactly
                                             that stream's poses + frames, addressed by its identity; its
                                             acknowledgements (records durably written) are what the engine
                                             passes on to the capture (docs/interfaces.md)
    engine   --PUB-----> SUB     viewers     optional (serve --publish-frames): poses + their frame, lossy
                                             like the pose stream but with a short queue (each message is a frame)

Every socket has a high-water mark, LINGER, send/receive timeouts, ZMTP heartbeats (dead TCP peers are
noticed) and a maximum message size on the receiving side. Binds go to loopback unless told otherwise;
tcp endpoints use CURVE when given keys (stream.security).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import zmq

from stream.security import CurveKeys, secure_client, secure_server
from stream.shm import pid_alive
from stream.wire import Limits

OWNER = "owner.pid"  # in a private endpoint folder: the process that made it (stale folders are swept)


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
    deliver_hwm: int = 16           # delivery channel, per renderer
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


def frame_router(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits,
                 keys: CurveKeys | None = None) -> zmq.Socket:
    """Engine side of the frame channel (binds)."""
    sock = _common(ctx.socket(zmq.ROUTER), policy)
    sock.setsockopt(zmq.RCVHWM, policy.frames_hwm)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.RCVBUF, policy.socket_buffer)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message)
    secure_server(sock, keys, endpoint)
    sock.bind(endpoint)
    return sock


def frame_dealer(ctx: zmq.Context, endpoint: str, identity: str, policy: Policy,
                 keys: CurveKeys | None = None) -> zmq.Socket:
    """Capture side of the frame channel (connects); ``identity`` is the stream id."""
    sock = _common(ctx.socket(zmq.DEALER), policy)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.SNDHWM, policy.window + 8)
    sock.setsockopt(zmq.SNDBUF, policy.socket_buffer)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # only control messages come back
    secure_client(sock, keys, endpoint)
    sock.connect(endpoint)
    return sock


def _pub(ctx: zmq.Context, endpoint: str, policy: Policy, hwm: int, keys: CurveKeys | None) -> zmq.Socket:
    """A bound PUB socket that never waits: past ``hwm`` queued messages per subscriber it drops."""
    sock = _common(ctx.socket(zmq.PUB), policy)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    secure_server(sock, keys, endpoint)
    sock.bind(endpoint)
    return sock


def pose_pub(ctx: zmq.Context, endpoint: str, policy: Policy, keys: CurveKeys | None = None) -> zmq.Socket:
    return _pub(ctx, endpoint, policy, policy.pub_hwm, keys)


def pose_sub(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits, topics=("",),
             keys: CurveKeys | None = None) -> zmq.Socket:
    sock = _common(ctx.socket(zmq.SUB), policy)
    sock.setsockopt(zmq.RCVHWM, policy.pub_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_header * 2)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    secure_client(sock, keys, endpoint)
    sock.connect(endpoint)
    return sock


def view_pub(ctx: zmq.Context, endpoint: str, policy: Policy, keys: CurveKeys | None = None) -> zmq.Socket:
    """Engine side of the poses-with-frames stream for viewers (binds): never waits, drops past ``view_hwm``."""
    return _pub(ctx, endpoint, policy, policy.view_hwm, keys)


def view_sub(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits, topics=("",),
             record: bool = False, keys: CurveKeys | None = None) -> zmq.Socket:
    """Viewer side (connects) of either pose stream, the plain one or the one with frames; ``record``: a longer
    queue, for a viewer that logs every frame rather than the newest."""
    sock = _common(ctx.socket(zmq.SUB), policy)
    sock.setsockopt(zmq.RCVHWM, policy.record_hwm if record else policy.view_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message * 2)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    secure_client(sock, keys, endpoint)
    sock.connect(endpoint)
    return sock


def deliver_router(ctx: zmq.Context, endpoint: str, policy: Policy, keys: CurveKeys | None = None) -> zmq.Socket:
    """Engine side of the delivery channel (binds). ROUTER_MANDATORY: a send to a renderer that is gone or
    whose queue is full fails (EHOSTUNREACH / EAGAIN) instead of vanishing, so the engine knows."""
    sock = _common(ctx.socket(zmq.ROUTER), policy)
    sock.setsockopt(zmq.SNDHWM, policy.deliver_hwm)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # only claims, acks and heartbeats come in
    secure_server(sock, keys, endpoint)
    sock.bind(endpoint)
    return sock


def deliver_dealer(ctx: zmq.Context, endpoint: str, policy: Policy, limits: Limits,
                   keys: CurveKeys | None = None) -> zmq.Socket:
    """Renderer side of the delivery channel (connects)."""
    sock = _common(ctx.socket(zmq.DEALER), policy)
    sock.setsockopt(zmq.RCVHWM, policy.deliver_hwm)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message * 2)
    secure_client(sock, keys, endpoint)
    sock.connect(endpoint)
    return sock


def private_dir(prefix: str = "posestream-") -> str:
    """A fresh folder under the temp dir holding an ``owner.pid`` marker; folders whose owner died are
    removed first (:func:`sweep_stale_dirs`)."""
    sweep_stale_dirs(prefix)
    directory = tempfile.mkdtemp(prefix=prefix)
    with open(os.path.join(directory, OWNER), "w") as fh:
        fh.write(str(os.getpid()))
    return directory


def sweep_stale_dirs(prefix: str = "posestream-") -> list[str]:
    """Remove this user's private folders (with an ``owner.pid``) whose owning process is gone."""
    removed, root = [], tempfile.gettempdir()
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if not name.startswith(prefix):
            continue
        try:
            if os.lstat(path).st_uid != os.geteuid() or not os.path.isdir(path) or os.path.islink(path):
                continue
            with open(os.path.join(path, OWNER)) as fh:
                pid = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid > 0 and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def ipc_endpoints(directory: str | None = None) -> dict[str, str]:
    """Fresh ipc:// endpoints (frames, poses, deliver) in ``directory`` (default: a new private folder)."""
    directory = directory or private_dir()
    os.makedirs(directory, exist_ok=True)
    return {name: f"ipc://{os.path.join(directory, name)}" for name in ("frames", "poses", "deliver")}
