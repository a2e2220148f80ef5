"""``python -m tools.bench fuzz``: hostile messages against real posestream stages, then a normal stream.

Starts ``posestream serve`` (with Prometheus metrics) and ``posestream render`` as processes on private ipc://
endpoints, sends ``--messages`` hostile messages to the engine's frame and delivery channels (:func:`messages`:
random bytes, truncated and oversized messages, wrong versions and kinds, too many parts, every header field at
or beyond its extremes, non-finite floats, JPEG decompression bombs and size mismatches, shared-memory attacks
(FIFOs, links, unannounced, foreign and wrong-size rings), messages of the wrong kind for the channel), then runs a
normal lossless stream through the same engine and renderer. Prints: messages sent, rejects by reason as
Prometheus reports them, messages taken, whether every stage is alive, whether the normal stream came through
complete, and the time taken.

The test suite runs the same generator (10,000 messages) against in-process stages
(tests/stream/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from stream import wire
from tools.bench.common import emit, machine

BIG = 2**64 - 1
EXTREMES = [0, 1, -1, 2**31, 2**62, 2**63 - 1, -(2**63), BIG]
FLOATS = [float("nan"), float("inf"), float("-inf"), 5e36, -5e36, 0.0, 1e-300]


@dataclass
class Fixtures:
    """Files the shared-memory attacks point at (made by :func:`make_fixtures`, removed by ``cleanup``)."""

    fifo: str
    link: str
    regular: str
    foreign: str | None
    outside: str
    paths: list = field(default_factory=list)

    def cleanup(self) -> None:
        for path in self.paths:
            try:
                os.unlink(path)
            except OSError:
                pass


def make_fixtures(directory: str) -> Fixtures:
    from stream.shm import SHM_DIR

    tag = f"{os.getpid()}-{os.urandom(2).hex()}"
    fifo, link, regular = (os.path.join(SHM_DIR, f"posestream-fuzz{n}-{tag}") for n in ("fifo", "link", "file"))
    os.mkfifo(fifo)
    with open(regular, "wb") as fh:
        fh.write(b"\0" * 4096)
    os.symlink(regular, link)
    outside = os.path.join(directory, "posestream-outside-1-1")
    with open(outside, "wb") as fh:
        fh.write(b"\0" * 4096)
    foreign = None
    if os.geteuid() == 0:
        foreign = os.path.join(SHM_DIR, f"posestream-fuzzforeign-{tag}")
        with open(foreign, "wb") as fh:
            fh.write(b"\0" * 4096)
        os.chown(foreign, 65534, 65534)
    fixtures = Fixtures(fifo, link, regular, foreign, outside)
    fixtures.paths = [p for p in (fifo, link, regular, outside, foreign) if p]
    return fixtures


def _frame_fields(rng: random.Random) -> dict:
    """One header field at a hostile value (or a few at once)."""
    choices = [
        lambda: {"time_base": (rng.choice([0, -1, 1, BIG]), rng.choice([0, -1, BIG]))},
        lambda: {"rate": (rng.choice([0, 1, 10**9, -5]), rng.choice([0, 2**32, -1]))},
        lambda: {"pts": rng.choice([BIG, -(2**63), 2**62, -(2**62) - 1])},
        lambda: {"capture_ns": rng.choice([-1, BIG, 2**62])},
        lambda: {"seq": rng.choice([-1, BIG, 2**62])},
        lambda: {"width": rng.choice([0, -1, 16385, BIG, 100000])},
        lambda: {"height": rng.choice([0, -3, 16385, 2**40])},
        lambda: {"width": 16384, "height": 16384},
        lambda: {"intrinsics": tuple(rng.choice(FLOATS[:5] + [0.0]) for _ in range(4))},
        lambda: {"stream": rng.choice(["", "x" * 200, "a\x00b", "\n", "\u202e" * 3])},
        lambda: {"pixel_format": rng.choice(["rgb48", "", "x" * 100])},
        lambda: {"window_start": rng.choice([-1, 10**6, BIG])},
        lambda: {"shm_offset": rng.choice([-1, 2**40, BIG]), "encoding": "shm", "shm_path": "/dev/shm/posestream-x-1-1"},
    ]
    return rng.choice(choices)()


def _hostile_frame(rng: random.Random) -> list:
    base = {"stream": "fuzz", "seq": rng.randrange(100), "capture_ns": 1, "width": 16, "height": 8}
    base.update(_frame_fields(rng))
    return [msgspec.msgpack.encode({"v": 1, "kind": "frame", **base}), b"\0" * 16 * 8 * 3]


def _jpeg_attack(rng: random.Random) -> list:
    import cv2

    small = cv2.imencode(".jpg", np.full((8, 16, 3), 128, np.uint8))[1].tobytes()
    pos = small.index(b"\xff\xc0")
    w, h = rng.choice([(16384, 16384), (4000, 4000), (65535, 65535), (17, 8)])
    bomb = small[:pos + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + small[pos + 9:]
    if rng.random() < 0.5:
        bomb = bomb[:pos + 20] + os.urandom(rng.randrange(1, 4000))  # garbage after the header: never decoded
    oversized = w * h * 3 > wire.Limits().max_pixels
    # the frame header says the same huge size (over the limit), or another size than the JPEG declares
    header = rng.choice([(w, h), (16, 8)] if oversized else [(16, 8), (4000, 3000), (w + 1, h)])
    frame = wire.Frame(stream="fuzz", seq=0, capture_ns=1, width=header[0], height=header[1], encoding="jpeg")
    return [wire.encode(frame), bomb]


def _shm_attack(rng: random.Random, fx: Fixtures) -> list:
    path = rng.choice([p for p in (fx.fifo, fx.link, fx.regular, fx.foreign, fx.outside, "/etc/passwd",
                                   "/dev/shm/../etc/passwd", "/dev/shm/posestream-nope-1-1") if p])
    if rng.random() < 0.5:  # announce it (a bad announcement) ...
        size = rng.choice([4095, 0, -1, 2**40]) if path == fx.regular else rng.choice([4096, 1, 2**31])
        hb = {"v": 1, "kind": "hb", "sender": "fuzz", "role": "capture", "instance": 1, "sent_ns": 1,
              "stream": "fuzzshm", "shm_path": path, "shm_size": size}
        return [msgspec.msgpack.encode(hb)]
    frame = wire.Frame(stream="fuzzshm", seq=0, capture_ns=1, width=16, height=8, encoding="shm", shm_path=path,
                       shm_offset=rng.choice([0, 4000]))  # ... or use it unannounced
    return [wire.encode(frame), b""]


def _wrong_kind(rng: random.Random) -> list:
    n, k = 1, 17
    poses = wire.Poses(stream="fuzz", seq=0, capture_ns=1, engine_ns=1, publish_ns=1, model_id="m", layout="coco17",
                       n=n, k=k, xy=bytes(n * k * 8), score=bytes(n * k * 4), person_score=bytes(4),
                       track_id=bytes(8))
    return [wire.encode(rng.choice([poses, wire.Ack(stream="fuzz", next_seq=1, instance=1)]))]


def _hostile_control(rng: random.Random) -> list:
    choices = [
        {"v": 1, "kind": "hb", "sender": rng.choice(["", "x" * 500]), "role": "capture", "instance": 1, "sent_ns": 1},
        {"v": 1, "kind": "hb", "sender": "a", "role": "b", "instance": "x", "sent_ns": 1},
        {"v": 1, "kind": "eos", "stream": "fuzz", "seq": rng.choice([-1, BIG])},
        {"v": 1, "kind": "eos", "stream": "fuzz", "seq": 1, "error": "x" * 5000},
        {"v": 1, "kind": "hb", "sender": "a", "role": "b", "instance": 1, "sent_ns": -5},
    ]
    return [msgspec.msgpack.encode(rng.choice(choices))]


def _valid_extreme(rng: random.Random, stream: str) -> list:
    """A frame that is well-formed with values at the edge of what is allowed: taken, not rejected."""
    frame = wire.Frame(stream=stream, seq=rng.randrange(2**62), capture_ns=2**62 - 1, width=rng.choice([1, 16, 33]),
                       height=rng.choice([1, 8, 17]), pts=rng.choice([-(2**62) + 1, 2**62 - 1, 0]),
                       time_base=(rng.choice([1, 2**31 - 1]), 2**31 - 1), rate=(1, 1000),
                       intrinsics=(1e-30, 1e7, -1e7, 1e7))
    frame.window_start = frame.seq
    return wire.frame_parts(frame, np.zeros((frame.height, frame.width, 3), np.uint8))


def messages(rng: random.Random, count: int, fx: Fixtures, valid_share: float = 0.01):
    """``count`` (parts, must_reject) for the engine's frame channel."""
    valid = wire.encode(wire.Heartbeat(sender="f", role="capture", instance=1, sent_ns=1, stream="fuzz"))
    makers = [
        (0.18, lambda: ([os.urandom(rng.randrange(0, 300)) for _ in range(rng.randrange(1, 4))], False)),
        (0.10, lambda: ([valid[:rng.randrange(1, len(valid))]], True)),
        (0.04, lambda: ([msgspec.msgpack.encode({"v": rng.choice([0, 2, -1, "1", None, BIG]), "kind": "hb"})], True)),
        (0.04, lambda: ([msgspec.msgpack.encode({"v": 1, "kind": rng.choice(["bogus", "", 5, None, "x" * 100])})], True)),
        (0.04, lambda: ([valid] * rng.randrange(4, 8), True)),
        (0.30, lambda: (_hostile_frame(rng), True)),
        (0.06, lambda: (_jpeg_attack(rng), True)),
        (0.10, lambda: (_shm_attack(rng, fx), True)),
        (0.06, lambda: (_wrong_kind(rng), True)),
        (0.06, lambda: (_hostile_control(rng), True)),
        (0.001, lambda: ([b"\x81" + b"\xa1" + b"x" * (wire.Limits().max_header + 10)], True)),  # oversized header
    ]
    weights = [w for w, _ in makers]
    for i in range(count):
        if rng.random() < valid_share:
            yield _valid_extreme(rng, f"edge{i % 3}"), False
        else:
            yield rng.choices(makers, weights)[0][1]()


def delivery_messages(rng: random.Random, count: int):
    """``count`` (parts, must_reject) for the engine's delivery channel (claims, acks, junk)."""
    for _ in range(count):
        r = rng.random()
        if r < 0.3:
            yield [os.urandom(rng.randrange(0, 100))], False
        elif r < 0.5:
            claim = {"v": 1, "kind": "claim", "instance": 7, "stream": rng.choice(["", "x" * 300]),
                     "next_seq": rng.choice([-1, BIG]), "done": rng.choice([-1, BIG])}
            yield [msgspec.msgpack.encode(claim)], True
        elif r < 0.7:
            yield [wire.encode(wire.Ack(stream=f"nostream{rng.randrange(5)}", next_seq=rng.randrange(2**62),
                                        instance=1))], True  # from a renderer that renders no such stream
        elif r < 0.85:
            yield [wire.encode(wire.Heartbeat(sender="r", role="renderer", instance=1, sent_ns=1))], True
        else:
            yield [msgspec.msgpack.encode({"v": 1, "kind": "ack", "stream": "s", "next_seq": -5, "instance": 1})], True


def poses_messages(rng: random.Random, count: int):
    """``count`` hostile deliveries for a renderer (an engine gone rogue): Poses with a frame, every one of which
    must be rejected."""
    k, image = 17, np.zeros((8, 16, 3), np.uint8)
    good = {"v": 1, "kind": "poses", "stream": "fuzz", "seq": 0, "capture_ns": 1, "engine_ns": 1, "publish_ns": 1,
            "model_id": "m", "layout": "coco17", "n": 1, "k": k, "xy": np.full((1, k, 2), 4, "<f4").tobytes(),
            "score": np.ones((1, k), "<f4").tobytes(), "person_score": np.ones(1, "<f4").tobytes(),
            "track_id": bytes(8), "width": 16, "height": 8}
    bad_poses = [
        lambda: {"xy": np.full((1, k, 2), rng.choice(FLOATS[:5]), "<f4").tobytes()},
        lambda: {"score": np.full((1, k), rng.choice(FLOATS[:3]), "<f4").tobytes()},
        lambda: {"xyz": np.full((1, k, 3), rng.choice(FLOATS[:5]), "<f4").tobytes()},
        lambda: {"layout": rng.choice(["", "nope", "coco17" * 30])},
        lambda: {"n": rng.choice([-1, 2000, BIG])},
        lambda: {"k": rng.choice([0, 16, 300])},
        lambda: {"pts": rng.choice([BIG, -(2**63)])},
        lambda: {"time_base": (rng.choice([0, 1]), 0)},
        lambda: {"xy": b"\0" * rng.randrange(0, 100)},
        lambda: {"width": rng.choice([-1, 10**6])},
    ]
    bad_frames = [lambda: {"rate": (1, 0)}, lambda: {"pts": BIG}, lambda: {"time_base": (0, 0)},
                  lambda: {"width": 10**6}, lambda: {"seq": 5}, lambda: {"stream": "other"}]
    frame = {"v": 1, "kind": "frame", "stream": "fuzz", "seq": 0, "capture_ns": 1, "width": 16, "height": 8}
    for _ in range(count):
        r = rng.random()
        poses, head = dict(good), dict(frame)
        if r < 0.6:
            poses.update(rng.choice(bad_poses)())
        elif r < 0.9:
            head.update(rng.choice(bad_frames)())
        else:
            yield [os.urandom(rng.randrange(1, 200)), msgspec.msgpack.encode(head), memoryview(image).cast("B")]
            continue
        yield [msgspec.msgpack.encode(poses), msgspec.msgpack.encode(head), memoryview(image).cast("B")]


def make_clip(path, frames: int, size=(96, 64), fps: int = 25) -> None:
    """A small H.264 clip of a moving square."""
    import av

    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.full((h, w, 3), 40, np.uint8)
            image[20:36, (i * 3) % (w - 16):(i * 3) % (w - 16) + 16] = (30, 200, 250)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


MODEL_CLI = ["--model", "random:hg1_64", "--model-args", '{"input_size": [64, 64]}', "--backend", "torch"]


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("posestream_rejects_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="hostile messages (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=9477, help="Prometheus port of the engine (default 9477)")
    args = parser.parse_args(argv)
    import zmq

    from stream.transport import ipc_endpoints

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="posestream-fuzz-") as tmp:
        eps = ipc_endpoints(os.path.join(tmp, "sock"))
        fx = make_fixtures(tmp)
        make_clip(Path(tmp) / "normal.mp4", 60)
        base = [sys.executable, "-m", "stream.cli"]
        serve = subprocess.Popen([*base, "serve", "--frames", eps["frames"], "--publish", eps["poses"], "--deliver",
                                  eps["deliver"], "--metrics-port", str(args.port), *MODEL_CLI,
                                  "--summary-json", f"{tmp}/serve.json"], stderr=subprocess.DEVNULL)
        render = subprocess.Popen([*base, "render", "--deliver", eps["deliver"], "--stream", "normal", "--poses",
                                   f"{tmp}/normal.jsonl", "-o", f"{tmp}/normal.mp4.out.mp4"], stderr=subprocess.DEVNULL)
        ctx = zmq.Context()
        frames, deliver = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
        try:
            frames.connect(eps["frames"])
            deliver.connect(eps["deliver"])
            t0, sent, must = time.perf_counter(), 0, 0
            for parts, reject in messages(rng, args.messages, fx):
                frames.send_multipart(parts)
                sent, must = sent + 1, must + reject
            for parts, reject in delivery_messages(rng, args.messages // 10):
                deliver.send_multipart(parts)
                sent, must = sent + 1, must + reject
            fuzz_s = time.perf_counter() - t0
            capture = subprocess.run([*base, "capture", "--source", f"{tmp}/normal.mp4", "--engine", eps["frames"],
                                      "--stream", "normal", "--lossless", "--shm", "--timeout", "120"],
                                     capture_output=True, text=True, timeout=600)
            render.wait(120)
            rejects = _scrape(args.port)
            alive = serve.poll() is None
            records = Path(f"{tmp}/normal.jsonl").read_text().count("\n")
        finally:
            frames.close(linger=0)
            deliver.close(linger=0)
            ctx.term()
            serve.terminate()
            serve.wait(30)
            render.kill()
            fx.cleanup()
        extra = {"machine": machine(), "seed": args.seed, "load": open("/proc/loadavg").read().split()[:3]}
        emit("fuzz", "messages sent", sent, "messages", must_reject=must, **extra)
        emit("fuzz", "rejected (Prometheus)", sum(rejects.values()), "messages", by_reason=rejects, **extra)
        emit("fuzz", "fuzzing time", fuzz_s, "s", **extra)
        emit("fuzz", "engine alive after fuzzing", alive, "bool", **extra)
        emit("fuzz", "renderer exit code", render.returncode, "code", **extra)
        emit("fuzz", "normal stream after fuzzing", records, "frames of 60", capture_exit=capture.returncode, **extra)
        ok = alive and render.returncode == 0 and capture.returncode == 0 and records == 60 and \
            sum(rejects.values()) >= must
        return 0 if ok else 1
