"""The wire format: every message posestream sends over ZeroMQ, in one module.

A message is a ZeroMQ multipart message whose first part is a msgpack header (a msgspec struct
with ``v`` = :data:`PROTOCOL_VERSION` and ``kind``), followed by binary parts for some kinds:

    Frame        [header, pixels]                      pixels: raw BGR HxWx3 uint8, JPEG bytes, or b"" (shm)
    Poses        [header]                              pose stream (PUB, topic part in front)
    Poses        [header, frame header, pixels]        delivery channel: poses with their frame
    EndOfStream  [header]
    Heartbeat    [header]
    Ack          [header]
    Claim        [header]                              renderer -> engine: the stream it renders

Arrays inside ``Poses`` travel as little-endian float32 / int64 bytes (shapes from ``n`` and ``k``).

Versions: ``v`` is the major version; a receiver rejects any other. Minor steps only add optional fields, which
older receivers ignore (msgspec skips unknown fields) and newer ones default when an older sender left them out,
or message kinds on a channel that only peers of that minor use. ``Poses.minor`` says which: 0 = 1.0; 1 = 1.1,
which adds ``intrinsics`` (what a viewer needs beside the model id, layout and frame size that 1.0 already
carried); 2 = 1.2, which adds ``Heartbeat.shm_path``/``shm_size`` (a capture announces its shared-memory ring:
a 1.1 capture's shared-memory frames are rejected by a 1.2 engine, its raw and JPEG frames are not),
``Heartbeat.waiting`` and the ``Claim`` kind of the delivery channel (now ROUTER/DEALER with acknowledgements
from the renderer: a 1.1 renderer cannot take a 1.2 engine's deliveries; the pose stream is unchanged).

:func:`decode` never raises anything but :class:`WireError` (with a ``reason``). Besides the format it checks
every value a later stage divides by, indexes with or draws: rates and time bases > 0, seq, pts and times in
range, sizes within :class:`Limits` (a JPEG's size read from its own header before anything is decoded),
keypoints finite and near their frame, known layouts. A message that passes cannot crash a receiver.
Receivers count rejects by reason with :class:`RejectCounter` and carry on. The acknowledgement protocol these
messages carry is in docs/interfaces.md ("Delivery and acknowledgement").
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

PROTOCOL_VERSION = 1
PROTOCOL_MINOR = 2
log = logging.getLogger(__name__)

MAX_SEQ = 1 << 62              # seq, window_start, next_seq
MAX_TIME = 1 << 62             # |pts|, capture_ns and the other *_ns stamps (int64 with room to add)
MAX_RATIO = (1 << 31) - 1      # numerator and denominator of a rate or time base
MAX_FPS = 1000.0               # rates within [1 / MAX_FPS, MAX_FPS] frames per second
MAX_NAME = 128                 # stream ids, senders, roles, model ids: characters
MAX_MM = 1e7                   # |xyz| in millimetres (10 km)


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
    shm_path: str | None = None        # encoding "shm": the pixels are in this ring (announced by a Heartbeat)
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
    """Liveness in both directions. ``instance`` is random per process start (a new one means a restart).
    A capture's heartbeat announces its shared-memory ring (``shm_path``, ``shm_size`` bytes): the engine
    reads only rings announced on the same connection. An engine's heartbeat to a capture says in
    ``waiting`` why the stream is not progressing (no renderer has claimed it), else None."""

    sender: str
    role: str
    instance: int
    sent_ns: int
    stream: str | None = None
    shm_path: str | None = None
    shm_size: int = 0
    waiting: str | None = None


class Ack(_Base, tag="ack"):
    """Cumulative acknowledgement: every seq below ``next_seq`` is done. Engine -> capture: done means
    durably written by the stream's renderer (lossless streams with a delivery channel; otherwise published);
    ``resend`` asks the capture to go back and send again from that seq. Renderer -> engine: done means
    written to its files; ``resend`` asks for the frames from that seq again (it saw a gap). Engine ->
    renderer: the capture no longer holds anything below ``next_seq`` (an earlier renderer took it)."""

    stream: str
    next_seq: int
    instance: int
    resend: int | None = None


class Claim(_Base, tag="claim"):
    """Renderer -> engine, on connecting and with every heartbeat: deliver ``stream`` to me (None: any one
    stream that has no renderer) starting at ``next_seq`` (None: wherever the stream is); every seq below
    ``done`` is durably written. A new ``instance`` is a new renderer process (the engine rewinds the
    stream to its ``next_seq``)."""

    instance: int
    stream: str | None = None
    next_seq: int | None = None
    done: int = 0


Message = Frame | Poses | EndOfStream | Heartbeat | Ack | Claim
_KINDS = {"frame": Frame, "poses": Poses, "eos": EndOfStream, "hb": Heartbeat, "ack": Ack, "claim": Claim}


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
    max_pixels: int = 64 << 20          # bytes of one frame's decoded pixels (w * h * 3)
    max_side: int = 16384
    max_persons: int = 1024
    max_joints: int = 256
    max_shm: int = 1 << 30              # bytes of one capture's shared-memory ring

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
        raise WireError("kind", f"unknown message kind {str(head.kind)[:40]!r}")
    try:
        msg = _DECODERS[head.kind].decode(data)
    except Exception as err:  # as above: anything the decoder raises is a malformed message
        raise WireError("malformed", f"{head.kind}: {err}") from None
    _CHECKS[type(msg)](msg, limits)
    return msg


# -- values ---------------------------------------------------------------------------------------------

def _invalid(what: str, detail: str) -> WireError:
    return WireError("invalid", f"{what}: {detail}")


def _name(value: str | None, field_name: str, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not value or len(value) > MAX_NAME or not value.isprintable():
        shown = value if value is None else repr(value[:40])
        raise _invalid(what, f"{field_name} {shown} is not 1-{MAX_NAME} printable characters")


def _seq(value: int, field_name: str, what: str) -> None:
    if not 0 <= value < MAX_SEQ:
        raise _invalid(what, f"{field_name} {value} out of range [0, 2**62)")


def _ratio(value: tuple[int, int] | None, field_name: str, what: str, fps: bool = False) -> None:
    if value is None:
        return
    num, den = value
    if not (0 < num <= MAX_RATIO and 0 < den <= MAX_RATIO):
        raise _invalid(what, f"{field_name} {num}/{den}: both terms must be in 1..2**31-1")
    if fps and not 1 / MAX_FPS <= num / den <= MAX_FPS:
        raise _invalid(what, f"{field_name} {num}/{den} frames/s outside [1/{MAX_FPS:g}, {MAX_FPS:g}]")


def _time(value: int | None, field_name: str, what: str, signed: bool = False) -> None:
    if value is not None and not (-MAX_TIME if signed else 0) <= value < MAX_TIME:
        raise _invalid(what, f"{field_name} {value} out of range")


def _check_frame(msg: Frame, limits: Limits) -> None:
    what = f"frame {msg.stream[:40]!r}#{msg.seq}"
    _name(msg.stream, "stream", what)
    _seq(msg.seq, "seq", what)
    if not 0 <= msg.window_start <= msg.seq:
        raise _invalid(what, f"window_start {msg.window_start} not in [0, seq]")
    _time(msg.capture_ns, "capture_ns", what)
    _time(msg.pts, "pts", what, signed=True)
    _ratio(msg.time_base, "time_base", what)
    _ratio(msg.rate, "rate", what, fps=True)
    w, h = msg.width, msg.height
    if not (0 < w <= limits.max_side and 0 < h <= limits.max_side) or w * h * 3 > limits.max_pixels:
        raise WireError("oversized", f"{what}: size {w}x{h} beyond the limits ({limits.max_side} a side, "
                                     f"{limits.max_pixels} bytes)")
    if msg.pixel_format != "bgr24":
        raise _invalid(what, f"pixel format {msg.pixel_format[:20]!r} (only bgr24)")
    if msg.intrinsics is not None:
        k = np.asarray(msg.intrinsics, np.float64)
        if not (np.isfinite(k).all() and k[0] > 0 and k[1] > 0 and np.abs(k).max() <= 1e7):
            raise _invalid(what, f"intrinsics {msg.intrinsics} (need finite, fx, fy > 0)")
    if msg.encoding == "shm" and (msg.shm_path is None or not 0 <= msg.shm_offset < limits.max_shm):
        raise _invalid(what, "shared-memory frame without a ring path, or its offset out of range")


def _check_eos(msg: EndOfStream, limits: Limits) -> None:
    what = f"end of stream {msg.stream[:40]!r}"
    _name(msg.stream, "stream", what)
    _seq(msg.seq, "seq", what)
    if not 0 <= msg.window_start <= msg.seq:
        raise _invalid(what, f"window_start {msg.window_start} not in [0, seq]")
    if msg.error is not None and len(msg.error) > 4096:
        raise _invalid(what, f"error of {len(msg.error)} characters")


def _check_heartbeat(msg: Heartbeat, limits: Limits) -> None:
    _name(msg.sender, "sender", "heartbeat")
    _name(msg.role, "role", "heartbeat")
    _name(msg.stream, "stream", "heartbeat", optional=True)
    _time(msg.sent_ns, "sent_ns", "heartbeat")
    if msg.shm_path is not None and (len(msg.shm_path) > 4096 or not 0 < msg.shm_size <= limits.max_shm):
        raise _invalid("heartbeat", f"shared-memory ring of {msg.shm_size} bytes (limit {limits.max_shm})")
    if msg.waiting is not None and len(msg.waiting) > 4096:
        raise _invalid("heartbeat", "waiting reason too long")


def _check_ack(msg: Ack, limits: Limits) -> None:
    what = f"ack of {msg.stream[:40]!r}"
    _name(msg.stream, "stream", what)
    _seq(msg.next_seq, "next_seq", what)
    if msg.resend is not None:
        _seq(msg.resend, "resend", what)


def _check_claim(msg: Claim, limits: Limits) -> None:
    _name(msg.stream, "stream", "claim", optional=True)
    _seq(msg.done, "done", "claim")
    if msg.next_seq is not None:
        _seq(msg.next_seq, "next_seq", "claim")


def _arrays(msg: Poses) -> dict[str, np.ndarray]:
    n, k = msg.n, msg.k
    out = {"xy": np.frombuffer(msg.xy, "<f4").reshape(n, k, 2), "score": np.frombuffer(msg.score, "<f4"),
           "person_score": np.frombuffer(msg.person_score, "<f4")}
    if msg.xyz is not None:
        out["xyz"] = np.frombuffer(msg.xyz, "<f4")
    return out


def _check_poses(msg: Poses, limits: Limits) -> None:
    from models.layouts import LAYOUTS

    what = f"poses {msg.stream[:40]!r}#{msg.seq}"
    _name(msg.stream, "stream", what)
    _name(msg.model_id, "model_id", what)
    _seq(msg.seq, "seq", what)
    for name in ("capture_ns", "engine_ns", "publish_ns"):
        _time(getattr(msg, name), name, what)
    _time(msg.pts, "pts", what, signed=True)
    _ratio(msg.time_base, "time_base", what)
    n, k, w, h = msg.n, msg.k, msg.width, msg.height
    if not (0 <= n <= limits.max_persons and 0 < k <= limits.max_joints):
        raise WireError("malformed", f"{what}: n={n} k={k} out of range")
    if not (0 <= w <= limits.max_side and 0 <= h <= limits.max_side):
        raise _invalid(what, f"frame size {w}x{h}")
    layout = LAYOUTS.get(msg.layout)
    if layout is None or layout.num_joints != k:
        raise _invalid(what, f"layout {msg.layout[:20]!r} with {k} joints is not a known keypoint layout")
    sizes = {"xy": n * k * 8, "score": n * k * 4, "person_score": n * 4, "track_id": n * 8}
    if msg.xyz is not None:
        sizes["xyz"] = n * k * 12
    for name, size in sizes.items():
        if len(getattr(msg, name)) != size:
            raise WireError("truncated", f"{what}: {name} has {len(getattr(msg, name))} bytes, expected {size}")
    arrays = _arrays(msg)
    for name, values in arrays.items():
        if not np.isfinite(values).all():
            raise _invalid(what, f"{name} holds non-finite values")
    xy = arrays["xy"]
    lo, hi = (-np.array([w, h]), 2 * np.array([w, h])) if w and h else (-2 * limits.max_side, 3 * limits.max_side)
    if n and ((xy < lo).any() or (xy > hi).any()):
        raise _invalid(what, f"keypoints beyond one frame size of the {w}x{h} frame")
    if "xyz" in arrays and n and np.abs(arrays["xyz"]).max() > MAX_MM:
        raise _invalid(what, f"3D keypoints beyond {MAX_MM:g} mm")
    if msg.intrinsics is not None:
        cam = np.asarray(msg.intrinsics, np.float64)
        if not (np.isfinite(cam).all() and cam[0] > 0 and cam[1] > 0 and np.abs(cam).max() <= 1e7):
            raise _invalid(what, f"intrinsics {msg.intrinsics} (need finite, fx, fy > 0)")


_CHECKS = {Frame: _check_frame, Poses: _check_poses, EndOfStream: _check_eos, Heartbeat: _check_heartbeat,
           Ack: _check_ack, Claim: _check_claim}


# -- pixels ---------------------------------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data) -> tuple[int, int] | None:
    """(width, height) a JPEG declares in its frame header (SOFn), read without decoding; None when ``data``
    is not a JPEG or ends before its frame header."""
    data = bytes(data[:1 << 20]) if len(data) > 1 << 20 else bytes(data)  # the headers sit at the front
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:                      # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF:
            if length < 8 or pos + 9 > len(data):
                return None
            return int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _jpeg(frame: Frame, data, what: str) -> np.ndarray:
    import cv2

    declared = jpeg_size(data)
    if declared != (frame.width, frame.height):
        raise _invalid(what, f"JPEG declares {declared[0]}x{declared[1]}, header says {frame.width}x{frame.height}"
                       if declared else "not a JPEG (no frame header before its image data)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape != (frame.height, frame.width, 3):
        raise WireError("malformed", f"{what}: JPEG does not decode to {frame.width}x{frame.height}")
    return image


def _image(frame: Frame, part, limits: Limits, shm=None) -> np.ndarray:
    w, h = frame.width, frame.height
    what = f"frame {frame.stream}#{frame.seq}"
    if frame.encoding == "shm":
        if shm is None:
            raise WireError("shm", f"{what}: shared-memory pixels on a receiver without shared memory")
        try:
            return shm(frame.shm_path, frame.shm_offset, w * h * 3).reshape(h, w, 3)
        except ValueError as err:
            raise WireError("shm", f"{what}: {err}") from None
    data = _buf(part)
    if len(data) > limits.max_pixels:
        raise WireError("oversized", f"{what}: {len(data)} pixel bytes > {limits.max_pixels}")
    if frame.encoding == "jpeg":
        return _jpeg(frame, data, what)
    if len(data) != w * h * 3:
        raise WireError("truncated", f"{what}: {len(data)} pixel bytes, expected {w * h * 3}")
    return np.frombuffer(data, np.uint8).reshape(h, w, 3)


def decode(parts: list, limits: Limits = Limits(), shm=None) -> Packet:
    """Decode a multipart message (bytes or zmq.Frame parts); raises :class:`WireError` and nothing else.
    ``shm(path, offset, nbytes) -> uint8 array`` resolves frames whose pixels travel in shared memory
    (``stream.shm.ShmReader.read`` bound to the sender; raises ValueError for anything not allowed)."""
    if not parts or len(parts) > 3:
        raise WireError("parts", f"{len(parts)} message parts")
    msg = _header(parts[0], limits)
    packet = Packet(msg, parts=list(parts))
    if isinstance(msg, Frame):
        if len(parts) != 2:
            raise WireError("parts", f"frame {msg.stream}#{msg.seq} with {len(parts)} parts, expected 2")
        packet.image = _image(msg, parts[1], limits, shm)
    elif isinstance(msg, Poses):
        if len(parts) == 3:
            frame = _header(parts[1], limits)
            if not isinstance(frame, Frame) or (frame.stream, frame.seq) != (msg.stream, msg.seq):
                raise WireError("malformed", "poses followed by a header that is not their frame's")
            packet.frame, packet.image = frame, _image(frame, parts[2], limits)
        elif len(parts) != 1:
            raise WireError("parts", f"poses with {len(parts)} parts")
    elif len(parts) != 1:
        raise WireError("parts", f"{type(msg).__name__} with {len(parts)} parts")
    return packet


class RejectCounter:
    """Counts rejected messages by reason (and reports each to ``on_reject(reason)``, e.g.
    ``stream.metrics.Metrics.reject``); logs the first of each reason and keeps the last few for summaries."""

    def __init__(self, where: str, on_reject=None, keep: int = 20):
        self.where, self.on_reject = where, on_reject
        self.counts: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[str] = collections.deque(maxlen=keep)

    def __call__(self, err: WireError) -> None:
        if not self.counts[err.reason]:
            log.warning("%s: rejected a message (%s); counting further rejects", self.where, err)
        self.counts[err.reason] += 1
        self.recent.append(str(err)[:300])
        if self.on_reject is not None:
            self.on_reject(err.reason)

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
    """Wire form of ``engine.results.Poses`` found in ``frame`` (on the engine's side). Joints that are not finite
    or lie more than a frame size outside the frame (a diverging model) are sent as score 0 at the nearest bound,
    so that every Poses the engine sends passes :func:`decode`."""
    from engine.postprocess import frame_intrinsics

    n, k = poses.score.shape
    xy, score, xyz = sane_keypoints(poses, frame.width, frame.height)
    intrinsics = None if xyz is None else frame_intrinsics((frame.width, frame.height), frame.intrinsics)
    return Poses(
        stream=frame.stream, seq=frame.seq, capture_ns=frame.capture_ns, engine_ns=engine_ns, publish_ns=publish_ns,
        model_id=model_id, layout=poses.layout, n=n, k=k,
        xy=np.ascontiguousarray(xy, "<f4").tobytes(), score=np.ascontiguousarray(score, "<f4").tobytes(),
        person_score=np.nan_to_num(np.ascontiguousarray(poses.person_score, "<f4")).tobytes(),
        track_id=np.ascontiguousarray(poses.track_id, "<i8").tobytes(),
        xyz=None if xyz is None else np.ascontiguousarray(xyz, "<f4").tobytes(),
        pts=frame.pts, time_base=frame.time_base, width=frame.width, height=frame.height,
        minor=PROTOCOL_MINOR, intrinsics=intrinsics,
    )


def sane_keypoints(poses, width: int, height: int):
    """(xy, score, xyz) of ``poses`` with joints outside [-size, 2 size] or not finite set to score 0 and
    clipped into that range, non-finite scores and 3D points zeroed."""
    size = np.array([width, height], np.float32)
    xy = np.asarray(poses.xy, np.float32)
    bad = ~np.isfinite(xy).all(-1) | (xy < -size).any(-1) | (xy > 2 * size).any(-1)
    score = np.nan_to_num(np.asarray(poses.score, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    xyz = None if poses.xyz is None else np.asarray(poses.xyz, np.float32)
    if bad.any():
        xy = np.clip(np.nan_to_num(xy, nan=0.0), -size, 2 * size)
        score = np.where(bad, 0.0, score).astype(np.float32)
    if xyz is not None and not (np.isfinite(xyz).all() and np.abs(xyz).max(initial=0) <= MAX_MM):
        xyz = np.where(np.isfinite(xyz) & (np.abs(xyz) <= MAX_MM), xyz, 0.0).astype(np.float32)
    return xy, score, xyz


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
    """The pose-file record (``stream.posefile.PoseRecord``) of a wire ``Poses``; latency is capture -> publish;
    the camera the 3D was computed with (1.1) comes along as the record's ``intrinsics``."""
    from stream.posefile import PoseRecord, camera_json

    return PoseRecord(stream=msg.stream, frame=msg.seq, layout=msg.layout, poses=unpack_poses(msg), pts=msg.pts,
                      capture_ns=msg.capture_ns, latency_ms=(msg.publish_ns - msg.capture_ns) / 1e6,
                      intrinsics=camera_json(msg.intrinsics))
