"""``python -m tools.bench transport``: ZeroMQ frame hops as posestream sends them (wire.Frame header +
pixels over stream.transport's DEALER -> ROUTER sockets, decoded on arrival), between two processes.

Per case (size x ipc/tcp loopback x zero-copy/copy, plus ipc with shared-memory pixels, plus tcp with CURVE
authentication and encryption): one-way hop latency p50/p99 measured ping-pong (one frame in flight, receiver
stamps arrival against the sender's CLOCK_MONOTONIC stamp) and frames/s with the capture's lossless window in
flight. Goal: a 1080p hop over ipc <= 1 ms p50. ``--cases tcp:zero-copy,tcp:curve`` picks cases.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time

import numpy as np

from tools.bench.common import emit, machine

SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080)}
CASES = (("ipc", "zero-copy"), ("ipc", "copy"), ("ipc", "shm"), ("tcp", "zero-copy"), ("tcp", "copy"),
         ("tcp", "curve"))


def _keys(directory: str):
    """(server, client) CurveKeys made in ``directory`` (the client allowed)."""
    from stream.security import CurveKeys, make_keys

    make_keys(directory, "engine")
    make_keys(directory, "client")
    allowed = os.path.join(directory, "allowed")
    os.makedirs(allowed, exist_ok=True)
    with open(os.path.join(directory, "client.key")) as src, open(os.path.join(allowed, "client.key"), "w") as dst:
        dst.write(src.read())
    return (CurveKeys(os.path.join(directory, "engine.key_secret"), clients=allowed),
            CurveKeys(os.path.join(directory, "client.key_secret"), server=os.path.join(directory, "engine.key")))


def _receiver(endpoint: str, copy: bool, count: int, out, keys=None) -> None:
    import functools

    import zmq

    from stream import wire
    from stream.security import start_authenticator
    from stream.shm import ShmReader
    from stream.transport import Policy, frame_router

    ctx = zmq.Context()
    auth = start_authenticator(ctx, keys)
    sock = frame_router(ctx, endpoint, Policy(), wire.Limits(), keys)
    shm = ShmReader()
    out.put("ready")
    latencies = []
    for _ in range(count):
        parts = sock.recv_multipart(copy=copy)
        arrived = time.monotonic_ns()
        peer = parts[0] if copy else parts[0].bytes
        if packet_announce := _announced(parts[1:]):
            shm.announce(peer, *packet_announce)
            parts = sock.recv_multipart(copy=copy)
            arrived = time.monotonic_ns()
        packet = wire.decode(parts[1:], shm=functools.partial(shm.read, peer))
        latencies.append((arrived - packet.msg.capture_ns) / 1e6)
        ack = wire.Ack(stream=packet.msg.stream, next_seq=packet.msg.seq + 1, instance=0)
        sock.send_multipart([parts[0] if copy else parts[0].bytes, wire.encode(ack)])
    out.put(latencies)
    del packet
    shm.close()
    sock.close(linger=1000)
    if auth is not None:
        auth.stop()
    ctx.term()


def _announced(parts) -> tuple[str, int] | None:
    """(path, size) when ``parts`` is a heartbeat announcing a shared-memory ring."""
    from stream import wire

    if len(parts) != 1:
        return None
    msg = wire.decode(parts).msg
    return (msg.shm_path, msg.shm_size) if isinstance(msg, wire.Heartbeat) and msg.shm_path else None


def _case(endpoint: str, size: tuple[int, int], mode: str, pings: int, frames: int, window: int) -> dict:
    """``mode``: "zero-copy", "copy", "shm" (pixels through a stream.shm ring, header over the socket) or "curve"
    (zero-copy over a CURVE-secured connection: authenticated and encrypted)."""
    import zmq

    from stream import wire
    from stream.shm import ShmRing

    copy = mode == "copy"
    keys = _keys(tempfile.mkdtemp(prefix="posestream-bench-keys-")) if mode == "curve" else (None, None)
    results = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_receiver, args=(endpoint, copy, pings + frames, results, keys[0]))
    proc.start()
    status = results.get(timeout=60)
    if status != "ready":
        raise RuntimeError(f"bench transport: the receiver process did not start ({status!r})")
    from stream.transport import Policy, frame_dealer

    ctx = zmq.Context()
    sock = frame_dealer(ctx, endpoint, "bench", Policy(window=window), keys[1])
    w, h = size
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)

    ring = ShmRing("bench", image.nbytes, 2 * window + 4) if mode == "shm" else None
    if ring is not None:  # the engine reads only announced rings
        sock.send(wire.encode(wire.Heartbeat(sender="bench", role="capture", instance=1, sent_ns=1, stream="bench",
                                             shm_path=ring.path, shm_size=ring.size)))

    def send(seq: int) -> None:
        frame = wire.Frame(stream="bench", seq=seq, capture_ns=time.monotonic_ns(), width=w, height=h)
        if ring is not None:  # the copy into the slot is part of the hop, as in the capture
            frame.encoding = "shm"
            frame.shm_path, frame.shm_offset = ring.put(seq, image)
        sock.send_multipart(wire.frame_parts(frame, image), copy=copy)

    for seq in range(pings):
        send(seq)
        sock.recv_multipart()
    t0, sent, acked = time.perf_counter(), 0, 0
    while acked < frames:
        while sent < frames and sent - acked < window:
            send(pings + sent)
            sent += 1
        sock.recv_multipart()
        acked += 1
    elapsed = time.perf_counter() - t0
    latencies = np.asarray(results.get(timeout=60)[:pings])
    proc.join(30)
    sock.close(linger=0)
    ctx.term()
    if ring is not None:
        ring.close()
    return {"fps": frames / elapsed, "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench transport", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=200, help="ping-pong frames for latency (default 200)")
    parser.add_argument("--frames", type=int, default=300, help="frames for throughput (default 300)")
    parser.add_argument("--window", type=int, default=4, help="frames in flight for throughput (default 4)")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--port", type=int, default=5599, help="loopback tcp port (default 5599)")
    parser.add_argument("--cases", help="comma list of TRANSPORT:MODE (default: all of "
                        + ", ".join(f"{t}:{m}" for t, m in CASES) + ")")
    args = parser.parse_args(argv)
    cases = CASES if not args.cases else [tuple(c.split(":")) for c in args.cases.split(",")]
    tmp = tempfile.mkdtemp(prefix="posestream-bench-")
    for name in args.sizes.split(","):
        if name not in SIZES:
            parser.error(f"--sizes: unknown size {name!r}")
        for transport, mode in cases:
            endpoint = (f"ipc://{os.path.join(tmp, f'{name}-{mode}')}" if transport == "ipc"
                        else f"tcp://127.0.0.1:{args.port}")
            r = _case(endpoint, SIZES[name], mode, args.pings, args.frames, args.window)
            case = f"{name} {transport} {mode}"
            extra = {"machine": machine(), "bytes": SIZES[name][0] * SIZES[name][1] * 3}
            emit("transport", f"{case} hop p50", r["p50"], "ms", **extra)
            emit("transport", f"{case} hop p99", r["p99"], "ms", **extra)
            emit("transport", f"{case} throughput", r["fps"], "frames/s", window=args.window, **extra)
    return 0
