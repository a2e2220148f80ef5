"""Streaming pipeline: wire format, capture, engine server, renderer, pose stream and the ``posestream`` CLI."""

from __future__ import annotations


def __getattr__(name: str):
    # PoseSubscriber is imported lazily so that `import stream` stays free of ZeroMQ set-up work.
    if name == "PoseSubscriber":
        from stream.subscribe import PoseSubscriber

        return PoseSubscriber
    raise AttributeError(f"module 'stream' has no attribute {name!r}")


__all__ = ["PoseSubscriber"]
