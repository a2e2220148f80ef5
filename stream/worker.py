"""The engine server's worker thread: runs ``engine.infer`` on one batch at a time, off the socket thread.

A batch that fails is run again frame by frame, so a frame the model cannot take (its error is recorded in
``Job.failed``) never costs its batch-mates their results.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import zmq

from stream import wire


def frame_seconds(frame: wire.Frame) -> float:
    """The frame's time for smoothing: its presentation time when the source stamps one (a file, or a stream
    paced at its own rate), else when it was captured."""
    if frame.pts is not None and frame.time_base:
        return frame.pts * frame.time_base[0] / frame.time_base[1]
    return frame.capture_ns / 1e9


@dataclass
class Job:
    packets: list                      # wire.Packet of frames and ends of stream, in admission order
    frames: list                       # the frame packets among them
    results: dict = field(default_factory=dict)   # id(packet) -> engine.results.Poses
    failed: dict = field(default_factory=dict)    # id(packet) -> "stream#seq: error"
    empty: object = None               # engine.results.Poses with nobody, for failed frames
    publish_ns: int = 0


class Worker(threading.Thread):
    """Runs ``engine.infer`` on one batch at a time; rings ``bell`` when a result waits in ``done``."""

    def __init__(self, engine, ctx: zmq.Context, bell: str):
        super().__init__(daemon=True, name="engine worker")
        self.engine, self.ctx, self.bell_addr = engine, ctx, bell
        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.resets: list[str] = []

    def _infer(self, packets: list) -> list:
        return self.engine.infer([p.image for p in packets], stream_ids=[p.msg.stream for p in packets],
                                 intrinsics=[p.msg.intrinsics for p in packets],
                                 timestamps=[frame_seconds(p.msg) for p in packets])

    def _run(self, job: Job) -> None:
        try:
            job.results = dict(zip(map(id, job.frames), self._infer(job.frames)))
            return
        except Exception:  # noqa: BLE001 - which frame failed is found below, one at a time
            pass
        for packet in job.frames:
            try:
                job.results[id(packet)] = self._infer([packet])[0]
            except Exception as err:  # noqa: BLE001 - a failing frame must not take the server down
                job.failed[id(packet)] = f"{packet.msg.stream}#{packet.msg.seq}: {type(err).__name__}: {err}"[:300]
        if job.failed:
            from engine.results import Poses

            layout = self.engine.layout
            job.empty = Poses.empty(layout.name, layout.num_joints, with_3d=bool(getattr(self.engine, "has_3d", False)))

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
                job = Job(packets, [p for p in packets if isinstance(p.msg, wire.Frame)])
                if job.frames:
                    self._run(job)
                job.publish_ns = time.time_ns()
                self.done.put(job)
                bell.send(b"")
        finally:
            bell.close(linger=0)
