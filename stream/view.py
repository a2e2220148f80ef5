"""``posestream view ENDPOINT``: a live 2D + 3D viewer of a pose stream, on Rerun (stream.view_rerun).

ENDPOINT is an engine's pose stream: its ``--publish`` (poses only: skeletons on the frame's canvas) or its
``--publish-frames`` (poses with their frames). ``posestream run/video --view`` start one on their own engine.

The viewer is a subscriber: it never holds the engine back, and it runs at a lower CPU priority (``--nice``).
A live viewer that falls behind logs only the newest frame of each stream and counts the rest as skipped; a recording (``--save``) logs every frame that reaches it
(the engine still drops, past its queue, what a stalled viewer does not take). It outlives publisher restarts
(ZeroMQ reconnects; Rerun's event log notes the restart) and stream ends (noted too), until Ctrl-C or, with
``--until-end``, until every stream it saw has ended.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from stream import wire
from stream.security import CurveKeys, add_client_options, client_keys
from stream.stages import EXIT_INPUT, EXIT_OK, add_common, stop_on_signals, write_summary
from stream.transport import Policy, view_sub

log = logging.getLogger(__name__)
DRAIN = 64  # messages taken off the socket at once before the newest of each stream is logged
NICE = 5    # the viewer yields CPU to the engine (10 starved it under load: docs/benchmarks.md)


@dataclass
class ViewConfig:
    endpoint: str
    streams: list[str] | None = None     # stream ids to show (default: all)
    keep_all: bool = False               # log every frame received (a recording), not only the newest
    until_end: bool = False              # stop once every stream seen has ended
    ready_file: str | None = None        # created once connected to the publisher
    policy: Policy = Policy()
    limits: wire.Limits = wire.Limits()
    keys: CurveKeys | None = None        # CURVE for a tcp engine (stream.security)


@dataclass
class ViewStats:
    received: int = 0                    # Poses messages received
    shown: int = 0                       # of those, logged to Rerun
    skipped: int = 0                     # superseded by a newer frame of their stream before they were logged
    restarts: int = 0                    # a stream's seq went back (its publisher or capture restarted)
    cpu_s: float = 0.0                   # CPU time of this process (all its threads, Rerun's included) while running
    ended: list = field(default_factory=list)
    rejects: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"received": self.received, "shown": self.shown, "skipped": self.skipped, "restarts": self.restarts,
                "ended": self.ended, "rejects": self.rejects, "cpu_s": round(self.cpu_s, 3)}


class PoseViewer:
    """Subscribes to ``config.endpoint`` and hands each message to ``sink`` (a ``view_rerun.RerunLog``)."""

    def __init__(self, config: ViewConfig, sink, ctx: zmq.Context | None = None):
        self.config, self.sink, self.ctx = config, sink, ctx or zmq.Context.instance()
        self.stats = ViewStats()
        self.rejects = wire.RejectCounter(f"viewer {config.endpoint}")
        self.open: set[str] = set()
        self.last_seq: dict[str, int] = {}

    def _drain(self, sock: zmq.Socket) -> list[wire.Packet]:
        packets = []
        for _ in range(DRAIN):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            packet = self.rejects.try_decode(parts[1:], self.config.limits)
            if packet is not None:
                packets.append(packet)
        return packets

    def _pick(self, packets: list[wire.Packet]) -> list[wire.Packet]:
        """What to log of a drained batch, in order: everything when recording, else each stream's newest frame
        (and every stream end)."""
        frames = [p for p in packets if isinstance(p.msg, wire.Poses)]
        self.stats.received += len(frames)
        if self.config.keep_all:
            return packets
        newest = {p.msg.stream: id(p) for p in frames}
        picked = [p for p in packets if not isinstance(p.msg, wire.Poses) or newest[p.msg.stream] == id(p)]
        self.stats.skipped += len(packets) - len(picked)
        return picked

    def _log(self, packet: wire.Packet) -> None:
        msg = packet.msg
        if isinstance(msg, wire.Poses):
            if msg.seq < self.last_seq.get(msg.stream, -1):
                self.stats.restarts += 1
            self.last_seq[msg.stream] = msg.seq
            self.open.add(msg.stream)
            self.sink.poses(msg, packet.image, time.time_ns())
            self.stats.shown += 1
        elif isinstance(msg, wire.EndOfStream):
            self.sink.end(msg)
            self.open.discard(msg.stream)
            self.stats.ended.append(msg.stream)

    def _done(self) -> bool:
        return self.config.until_end and bool(self.stats.ended) and not self.open

    def run(self, stop: threading.Event | None = None) -> ViewStats:
        stop = stop or threading.Event()
        cfg, cpu0 = self.config, time.process_time()
        sock = view_sub(self.ctx, cfg.endpoint, cfg.policy, cfg.limits, cfg.streams or ("",), record=cfg.keep_all,
                        keys=cfg.keys)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED) if cfg.ready_file else None
        try:
            while not stop.is_set() and not self._done():
                if monitor is not None and monitor.poll(0):  # connected: a pipeline may start its capture now
                    Path(cfg.ready_file).touch()
                    sock.disable_monitor()
                    monitor.close(linger=0)
                    monitor = None
                if not sock.poll(100):
                    continue
                for packet in self._pick(self._drain(sock)):
                    self._log(packet)
        finally:
            if monitor is not None:
                monitor.close(linger=0)
            sock.close(linger=0)
            self.stats.rejects = dict(self.rejects.counts)
            self.stats.cpu_s = time.process_time() - cpu0
        return self.stats


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posestream view", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("endpoint", help="an engine's --publish or --publish-frames endpoint, e.g. tcp://127.0.0.1:5560")
    p.add_argument("--stream", action="append", help="only this stream id (repeatable)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--save", metavar="FILE.rrd", help="record to a Rerun file instead of displaying "
                                                          "(open it later with `rerun FILE.rrd`)")
    where.add_argument("--web", action="store_true", help="serve a web viewer (for a machine without a display, "
                                                          "viewed from a browser) instead of opening a window")
    where.add_argument("--connect", metavar="URL", help="send to a Rerun Viewer already running, e.g. "
                                                        "rerun+http://127.0.0.1:9876/proxy")
    p.add_argument("--web-port", type=int, default=9090, help="with --web: the page's port (default 9090)")
    p.add_argument("--grpc-port", type=int, default=9876, help="with --web: the data's port (default 9876)")
    p.add_argument("--no-browser", action="store_true", help="with --web: do not open a browser")
    p.add_argument("--image-quality", type=int, default=80, metavar="Q",
                   help="JPEG quality of the frames logged (default 80; 0 logs raw pixels, ~30x larger)")
    p.add_argument("--memory-limit", default="25%", help="the viewer's memory for history (default 25%% of RAM; "
                                                         "older data is dropped past it)")
    p.add_argument("--nice", type=int, default=NICE, help=f"lower this process's CPU priority by this much "
                   f"(default {NICE}: on a busy machine the viewer, not the engine, falls behind and skips frames)")
    p.add_argument("--until-end", action="store_true", help="exit when every stream seen has ended")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    add_client_options(p)
    add_common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    keys = client_keys(parser, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not (args.save or args.web or args.connect):
        from stream.window import x_display_problem

        problem = x_display_problem(wayland_ok=True)
        if problem:
            print(f"posestream view: cannot open a viewer window: {problem}; use --web (then a browser) or "
                  f"--save FILE.rrd", file=sys.stderr)
            return EXIT_INPUT
    if args.save and not Path(args.save).resolve().parent.is_dir():
        print(f"posestream view: cannot write {args.save}: no such folder", file=sys.stderr)
        return EXIT_INPUT
    from stream.view_rerun import RerunLog, open_recording

    if args.nice and hasattr(os, "nice"):
        os.nice(args.nice)  # before Rerun starts its threads and viewer process, which inherit it
    stop = stop_on_signals(args.exit_with_parent)
    try:
        rec = open_recording(save=args.save, web=args.web, web_port=args.web_port, grpc_port=args.grpc_port,
                             connect=args.connect, memory_limit=args.memory_limit, open_browser=not args.no_browser)
    except (RuntimeError, OSError) as err:
        print(f"posestream view: {err}", file=sys.stderr)
        return EXIT_INPUT
    config = ViewConfig(args.endpoint, args.stream, keep_all=bool(args.save), until_end=args.until_end,
                        ready_file=args.ready_file, keys=keys)
    try:
        stats = PoseViewer(config, RerunLog(rec, image_quality=args.image_quality)).run(stop)
    finally:
        rec.flush()
        if args.web and not stop.is_set() and not args.exit_with_parent:
            print("posestream view: the streams ended; the web viewer stays up until Ctrl-C", file=sys.stderr)
            stop.wait()
        rec.disconnect()
    write_summary(args.summary_json, stats.to_json())
    return EXIT_OK
