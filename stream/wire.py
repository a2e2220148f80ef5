"""The wire format: every message posestream sends over ZeroMQ, in one module.

A message is a ZeroMQ multipart message whose first part is a msgpack header (a msgspec struct
with ``v`` = :data:`PROTOCOL_VERSION` and ``kind``), followed by binary parts for some kinds:

    Frame        [header, pixels]                      pixels: raw BGR HxWx3 uint8, or JPEG bytes
    Poses        [header]                              pose stream (PUB, topic part in front)
    Poses        [header, frame header, pixels]        reliable channel: poses with their frame
    EndOfStream  [header]
    Heartbeat    [header]
    Ack          [header]

Arrays inside ``Poses`` travel as little-endian float32 / int64 bytes (shapes from ``n`` and ``k``).

Versions: ``v`` is the major version; a receiver rejects any other. Minor steps only add optional fields, which
older receivers ignore (msgspec skips unknown fields) and newer ones default when an older sender left them out.
``Poses.minor`` says which: 0 = 1.0; 1 = 1.1, which adds ``intrinsics`` (what a viewer needs beside the model id,
layout and frame size that 1.0 already carried).
:func:`decode` never raises anything but :class:`WireError` (with a ``reason``); receivers use
:class:`RejectCounter` to count rejects by reason and carry on.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

PROTOCOL_VERSION = 1
PROTOCOL_MINOR = 1
log = logging.getLogger(__name__)


class _Base(msgspec.Struct, tag_field="kind", kw_only=True):
    v: int = PROTOCOL_VERSION


class Frame(_Base, tag="frame"):
    """One captured image. ``seq`` counts from 0 per stream; ``window_start`` is the lowest seq the sender
    has not seen acknowledged (lets a restarted engine resynchronise a lossless stream)."""

    stream: str
    seq: int
    capture_ns: int
    width: int
    height: int
    pts: int | None = None
    time_base: tuple[int, int] | None = None
    rate: tuple[int, int] | None = None
    pixel_format: str = "bgr24"
    encoding: Literal["raw", "jpeg", "shm"] = "raw"
    shm_path: str | None = None        # encoding "shm": the pixels are in this stream.shm ring, at this offset
    shm_offset: int = 0
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy in frame pixels
    lossless: bool = False
    window_start: int = 0


class Poses(_Base, tag="poses"):
    """The people in one frame. Arrays as bytes: xy f32 [n,k,2], score f32 [n,k], person_score f32 [n],
    track_id i64 [n], xyz f32 [n,k,3] millimetres or None. ``width`` x ``height``: the frame's size;
    ``intrinsics`` (1.1): the camera (fx, fy, cx, cy) in frame pixels that the 3D was computed with, or None
    for 2D-only models (and 1.0 senders)."""

    stream: str
    seq: int
    capture_ns: int
    engine_ns: int
    publish_ns: int
    model_id: str
    layout: str
    n: int
    k: int
    xy: bytes
    score: bytes
    person_score: bytes
    track_id: bytes
    xyz: bytes | None = None
    pts: int | None = None
    time_base: tuple[int, int] | None = None
    width: int = 0
    height: int = 0
    minor: int = 0
    intrinsics: tuple[float, float, float, float] | None = None


class EndOfStream(_Base, tag="eos"):
    """The end of a stream: ``seq`` is one past the last frame (the frame count); ``error`` names why it ended
    early (a truncated file, a lost camera) or is None."""

    stream: str
    seq: int
    error: str | None = None
    lossless: bool = False
    window_start: int = 0


class Heartbeat(_Base, tag="hb"):
    """Liveness in both directions. ``instance`` is random per process start (a new one means a restart)."""

    sender: str
    role: str
    instance: int
    sent_ns: int
    stream: str | None = None


class Ack(_Base, tag="ack"):
    """Engine -> capture: every seq below ``next_seq`` is done (published and delivered); ``resend``, when
    set, asks the capture to go back and send again from that seq (the engine missed frames)."""

    stream: str
    next_seq: int
    instance: int
    resend: int | None = None


Message = Frame | Poses | EndOfStream | Heartbeat | Ack
_KINDS = {"frame": Frame, "poses": Poses, "eos": EndOfStream, "hb": Heartbeat, "ack": Ack}


class _Head(msgspec.Struct):
    v: object = None
    kind: object = None


_ENCODER = msgspec.msgpack.Encoder()
_HEAD = msgspec.msgpack.Decoder(_Head)
_DECODERS = {name: msgspec.msgpack.Decoder(cls) for name, cls in _KINDS.items()}


@dataclass(frozen=True)
class Limits:
    """Receiver limits: anything larger is rejected before it is decoded."""

    max_header: int = 1 << 20
    max_pixels: int = 64 << 20
    max_side: int = 16384
    max_persons: int = 1024
    max_joints: int = 256

    @property
    def max_message(self) -> int:
        """Bound for ZMQ_MAXMSGSIZE on receiving sockets."""
        return self.max_pixels + self.max_header


class WireError(ValueError):
    """A rejected message; ``reason`` is a short key for counting (``version``, ``malformed``, ...)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Packet:
    """A decoded message. ``image`` is the frame's BGR pixels [H, W, 3] uint8 for a Frame, or for a Poses that
    carries its frame (``frame`` then holds that frame's header); ``parts`` are the raw parts as received."""

    msg: Message
    image: np.ndarray | None = None
    frame: Frame | None = None
    parts: list = field(default_factory=list)
    engine_ns: int = 0                   # receiver bookkeeping: arrival time at the engine (time.time_ns)
    state: object = None                 # receiver bookkeeping: the engine's per-stream state that admitted it


def encode(msg: Message) -> bytes:
    """The msgpack header of ``msg``."""
    return _ENCODER.encode(msg)


def frame_parts(frame: Frame, image: np.ndarray | bytes) -> list:
    """Multipart for a frame: [header, pixels]. ``image`` is BGR [H, W, 3] uint8 (raw) or JPEG bytes.
    The pixel part is the array's own buffer, so ``send_multipart(..., copy=False)`` does not copy it."""
    if frame.encoding == "shm":
        return [encode(frame), b""]
    if frame.encoding == "raw":
        image = np.ascontiguousarray(image)
        if image.shape != (frame.height, frame.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame {frame.stream}#{frame.seq}: image {image.shape} {image.dtype} does not match "
                             f"header {frame.width}x{frame.height} bgr24")
        return [encode(frame), memoryview(image).cast("B")]
    return [encode(frame), image]


def _buf(part) -> memoryview:
    return part.buffer if hasattr(part, "buffer") else memoryview(part)


def _header(part, limits: Limits) -> Message:
    data = _buf(part)
    if len(data) > limits.max_header:
        raise WireError("oversized", f"header of {len(data)} bytes > {limits.max_header}")
    try:
        head = _HEAD.decode(data)
    except Exception as err:  # msgspec raises DecodeError, ValidationError, UnicodeDecodeError, ...
        raise WireError("malformed", f"not a msgpack header ({err})") from None
    if head.v != PROTOCOL_VERSION:
        raise WireError("version", f"protocol version {head.v!r}, this receiver speaks {PROTOCOL_VERSION}")
    if head.kind not in _DECODERS:
        raise WireError("kind", f"unknown message kind {head.kind!r}")
    try:
        return _DECODERS[head.kind].decode(data)
    except Exception as err:  # as above: anything the decoder raises is a malformed message
        raise WireError("malformed", f"{head.kind}: {err}") from None


def _image(frame: Frame, part, limits: Limits, shm=None) -> np.ndarray:
    w, h = frame.width, frame.height
    if not (0 < w <= limits.max_side and 0 < h <= limits.max_side) or frame.seq < 0:
        raise WireError("malformed", f"frame {frame.stream}#{frame.seq}: size {w}x{h} or seq out of range")
    if frame.encoding == "shm":
        if shm is None or frame.shm_path is None:
            raise WireError("shm", f"frame {frame.stream}#{frame.seq}: shared-memory pixels on a receiver without")
        try:
            return shm.view(frame.shm_path, frame.shm_offset, w * h * 3).reshape(h, w, 3)
        except ValueError as err:
            raise WireError("malformed", f"frame {frame.stream}#{frame.seq}: {err}") from None
    data = _buf(part)
    if len(data) > limits.max_pixels:
        raise WireError("oversized", f"frame {frame.stream}#{frame.seq}: {len(data)} pixel bytes > {limits.max_pixels}")
    if frame.encoding == "jpeg":
        import cv2

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.shape[:2] != (h, w):
            raise WireError("malformed", f"frame {frame.stream}#{frame.seq}: JPEG does not decode to {w}x{h}")
        return image
    if frame.pixel_format != "bgr24":
        raise WireError("malformed", f"frame {frame.stream}#{frame.seq}: pixel format {frame.pixel_format!r}")
    if len(data) != w * h * 3:
        raise WireError("truncated", f"frame {frame.stream}#{frame.seq}: {len(data)} pixel bytes, expected {w * h * 3}")
    return np.frombuffer(data, np.uint8).reshape(h, w, 3)


def _check_poses(msg: Poses, limits: Limits) -> None:
    n, k = msg.n, msg.k
    if not (0 <= n <= limits.max_persons and 0 < k <= limits.max_joints):
        raise WireError("malformed", f"poses {msg.stream}#{msg.seq}: n={n} k={k} out of range")
    sizes = {"xy": n * k * 8, "score": n * k * 4, "person_score": n * 4, "track_id": n * 8}
    if msg.xyz is not None:
        sizes["xyz"] = n * k * 12
    for name, size in sizes.items():
        if len(getattr(msg, name)) != size:
            raise WireError("truncated", f"poses {msg.stream}#{msg.seq}: {name} has {len(getattr(msg, name))} "
                                         f"bytes, expected {size}")


def decode(parts: list, limits: Limits = Limits(), shm=None) -> Packet:
    """Decode a multipart message (bytes or zmq.Frame parts); raises :class:`WireError` and nothing else.
    ``shm`` (a ``stream.shm.ShmReader``) resolves frames whose pixels travel in shared memory."""
    if not parts or len(parts) > 3:
        raise WireError("parts", f"{len(parts)} message parts")
    msg = _header(parts[0], limits)
    packet = Packet(msg, parts=list(parts))
    if isinstance(msg, Frame):
        if len(parts) != 2:
            raise WireError("parts", f"frame {msg.stream}#{msg.seq} with {len(parts)} parts, expected 2")
        packet.image = _image(msg, parts[1], limits, shm)
    elif isinstance(msg, Poses):
        _check_poses(msg, limits)
        if len(parts) == 3:
            frame = _header(parts[1], limits)
            if not isinstance(frame, Frame):
                raise WireError("malformed", "poses followed by a non-frame header")
            packet.frame, packet.image = frame, _image(frame, parts[2], limits)
        elif len(parts) != 1:
            raise WireError("parts", f"poses with {len(parts)} parts")
    elif len(parts) != 1:
        raise WireError("parts", f"{type(msg).__name__} with {len(parts)} parts")
    return packet


class RejectCounter:
    """Counts rejected messages by reason; logs the first of each reason."""

    def __init__(self, where: str):
        self.where = where
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, err: WireError) -> None:
        if not self.counts[err.reason]:
            log.warning("%s: rejected a message (%s); counting further rejects", self.where, err)
        self.counts[err.reason] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def try_decode(self, parts: list, limits: Limits = Limits(), shm=None) -> Packet | None:
        """``decode(parts)`` or None (counted) when rejected."""
        try:
            return decode(parts, limits, shm)
        except WireError as err:
            self(err)
            return None


def pack_poses(poses, frame: Frame, model_id: str, engine_ns: int, publish_ns: int) -> Poses:
    """Wire form of ``engine.results.Poses`` found in ``frame`` (on the engine's side)."""
    from engine.postprocess import frame_intrinsics

    n, k = poses.score.shape
    intrinsics = None if poses.xyz is None else frame_intrinsics((frame.width, frame.height), frame.intrinsics)
    return Poses(
        stream=frame.stream, seq=frame.seq, capture_ns=frame.capture_ns, engine_ns=engine_ns, publish_ns=publish_ns,
        model_id=model_id, layout=poses.layout, n=n, k=k,
        xy=np.ascontiguousarray(poses.xy, "<f4").tobytes(), score=np.ascontiguousarray(poses.score, "<f4").tobytes(),
        person_score=np.ascontiguousarray(poses.person_score, "<f4").tobytes(),
        track_id=np.ascontiguousarray(poses.track_id, "<i8").tobytes(),
        xyz=None if poses.xyz is None else np.ascontiguousarray(poses.xyz, "<f4").tobytes(),
        pts=frame.pts, time_base=frame.time_base, width=frame.width, height=frame.height,
        minor=PROTOCOL_MINOR, intrinsics=intrinsics,
    )


def unpack_poses(msg: Poses):
    """``engine.results.Poses`` of a (checked) wire ``Poses``."""
    from engine.results import Poses as ResultPoses

    n, k = msg.n, msg.k
    return ResultPoses(
        layout=msg.layout, xy=np.frombuffer(msg.xy, "<f4").reshape(n, k, 2),
        score=np.frombuffer(msg.score, "<f4").reshape(n, k),
        person_score=np.frombuffer(msg.person_score, "<f4").reshape(n),
        track_id=np.frombuffer(msg.track_id, "<i8").reshape(n),
        xyz=None if msg.xyz is None else np.frombuffer(msg.xyz, "<f4").reshape(n, k, 3),
    )


def to_record(msg: Poses):
    """The pose-file record (``stream.posefile.PoseRecord``) of a wire ``Poses``; latency is capture -> publish."""
    from stream.posefile import PoseRecord

    return PoseRecord(stream=msg.stream, frame=msg.seq, layout=msg.layout, poses=unpack_poses(msg), pts=msg.pts,
                      capture_ns=msg.capture_ns, latency_ms=(msg.publish_ns - msg.capture_ns) / 1e6)
