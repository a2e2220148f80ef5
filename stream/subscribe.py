"""The pose stream for other programs: ``stream.PoseSubscriber`` and ``posestream subscribe ENDPOINT``.

    from stream import PoseSubscriber
    for record in PoseSubscriber("tcp://127.0.0.1:5560"):
        print(record.stream, record.frame, record.poses.xy.shape)     # PoseRecord, engine.results.Poses

The stream is lossy by design (PUB/SUB): a subscriber that falls behind loses messages, never the engine.
Over tcp to an engine with CURVE, pass ``keys=CurveKeys(secret="me.key_secret", server="engine.key")``
(``stream.security``); without a key from the engine's allowed folder nothing arrives.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator

import zmq

from stream import wire
from stream.posefile import PoseRecord
from stream.security import CurveKeys, add_client_options, client_keys
from stream.transport import Policy, pose_sub

log = logging.getLogger(__name__)


class PoseSubscriber:
    """Iterates :class:`stream.posefile.PoseRecord` from an engine's pose stream.

    Args:
        endpoint: the engine's ``--publish`` endpoint.
        streams: stream ids to receive (default: all).
        timeout: stop when nothing arrives for this many seconds (default: wait forever).
        until_end: stop once every stream seen so far has sent its EndOfStream.
        keys: CURVE keys (this client's pair and the engine's public key) for a tcp endpoint.
    """

    def __init__(self, endpoint: str, streams: list[str] | None = None, timeout: float | None = None,
                 until_end: bool = False, ctx: zmq.Context | None = None, keys: CurveKeys | None = None):
        self.endpoint, self.timeout, self.until_end = endpoint, timeout, until_end
        self.streams = set(streams) if streams else None  # topics match by prefix: "cam" would also get "cam2"
        self.ctx = ctx or zmq.Context.instance()
        self.sock = pose_sub(self.ctx, endpoint, Policy(), wire.Limits(), topics=streams or ("",), keys=keys)
        self.rejects = wire.RejectCounter(f"subscriber {endpoint}")
        self.open: set[str] = set()
        self.ended: set[str] = set()
        self.errors: dict[str, str] = {}  # why a stream ended early (a lost capture, a truncated file)

    def receive(self, timeout: float | None = None) -> PoseRecord | None:
        """The next record, or None when nothing arrives within ``timeout`` seconds or the stream(s) ended
        (``until_end``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self.until_end and self.open and self.open <= self.ended):
            wait = 100 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(wait):
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            packet = self.rejects.try_decode(self.sock.recv_multipart(copy=False)[1:])
            if packet is None:
                continue
            msg = packet.msg
            if self.streams is not None and getattr(msg, "stream", None) not in self.streams:
                continue
            if isinstance(msg, wire.Poses):
                self.open.add(msg.stream)
                return wire.to_record(msg)
            if isinstance(msg, wire.EndOfStream):
                self.ended.add(msg.stream)
                if msg.error:
                    self.errors[msg.stream] = msg.error
                    log.warning("stream %s ended: %s", msg.stream, msg.error)
        return None

    def __iter__(self) -> Iterator[PoseRecord]:
        try:
            while (record := self.receive(self.timeout)) is not None:
                yield record
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> PoseSubscriber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posestream subscribe",
                                     description="Print each Poses of an engine's pose stream as one JSON line "
                                                 "(the pose-file schema of stream.posefile).")
    parser.add_argument("endpoint", help="the engine's --publish endpoint, e.g. tcp://127.0.0.1:5560")
    parser.add_argument("--stream", action="append", help="only this stream id (repeatable)")
    parser.add_argument("--timeout", type=float, help="exit after this many seconds without a message")
    parser.add_argument("--until-end", action="store_true", help="exit when every stream seen has ended")
    add_client_options(parser)
    args = parser.parse_args(argv)
    keys = client_keys(parser, args)
    try:
        for record in PoseSubscriber(args.endpoint, args.stream, args.timeout, args.until_end, keys=keys):
            sys.stdout.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0
