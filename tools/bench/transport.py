"""``python -m tools.bench transport``: ZeroMQ frame hops as posestream sends them (wire.Frame header +
pixels over stream.transport's DEALER -> ROUTER sockets, decoded on arrival), between two processes.

Per case (size x ipc/tcp loopback x zero-copy/copy, plus ipc with shared-memory pixels): one-way hop latency p50/p99 measured ping-pong (one
frame in flight, receiver stamps arrival against the sender's CLOCK_MONOTONIC stamp) and frames/s with the
capture's lossless window in flight. Goal: a 1080p hop over ipc <= 1 ms p50.
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
CASES = (("ipc", "zero-copy"), ("ipc", "copy"), ("ipc", "shm"), ("tcp", "zero-copy"), ("tcp", "copy"))


def _receiver(endpoint: str, copy: bool, count: int, out) -> None:
    import zmq

    from stream import wire
    from stream.shm import ShmReader
    from stream.transport import Policy, frame_router

    ctx = zmq.Context()
    sock = frame_router(ctx, endpoint, Policy(), wire.Limits())
    shm = ShmReader()
    out.put("ready")
    latencies = []
    for _ in range(count):
        parts = sock.recv_multipart(copy=copy)
        arrived = time.monotonic_ns()
        packet = wire.decode(parts[1:], shm=shm)
        latencies.append((arrived - packet.msg.capture_ns) / 1e6)
        ack = wire.Ack(stream=packet.msg.stream, next_seq=packet.msg.seq + 1, instance=0)
        sock.send_multipart([parts[0] if copy else parts[0].bytes, wire.encode(ack)])
    out.put(latencies)
    del packet
    shm.close()
    sock.close(linger=1000)
    ctx.term()


def _case(endpoint: str, size: tuple[int, int], mode: str, pings: int, frames: int, window: int) -> dict:
    """``mode``: "zero-copy", "copy" or "shm" (pixels through a stream.shm ring, header over the socket)."""
    import zmq

    from stream import wire
    from stream.shm import ShmRing

    copy = mode == "copy"
    results = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_receiver, args=(endpoint, copy, pings + frames, results))
    proc.start()
    status = results.get(timeout=60)
    if status != "ready":
        raise RuntimeError(f"bench transport: the receiver process did not start ({status!r})")
    from stream.transport import Policy, frame_dealer

    ctx = zmq.Context()
    sock = frame_dealer(ctx, endpoint, "bench", Policy(window=window))
    w, h = size
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)

    ring = ShmRing("bench", image.nbytes, 2 * window + 4) if mode == "shm" else None

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
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="posestream-bench-")
    for name in args.sizes.split(","):
        if name not in SIZES:
            parser.error(f"--sizes: unknown size {name!r}")
        for transport, mode in CASES:
            endpoint = (f"ipc://{os.path.join(tmp, f'{name}-{mode}')}" if transport == "ipc"
                        else f"tcp://127.0.0.1:{args.port}")
            r = _case(endpoint, SIZES[name], mode, args.pings, args.frames, args.window)
            case = f"{name} {transport} {mode}"
            extra = {"machine": machine(), "bytes": SIZES[name][0] * SIZES[name][1] * 3}
            emit("transport", f"{case} hop p50", r["p50"], "ms", **extra)
            emit("transport", f"{case} hop p99", r["p99"], "ms", **extra)
            emit("transport", f"{case} throughput", r["fps"], "frames/s", window=args.window, **extra)
    return 0
