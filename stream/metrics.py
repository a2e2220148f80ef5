"""Metrics: latency percentiles and fps for summaries, and an optional Prometheus endpoint.

``Metrics(port)`` owns a private CollectorRegistry (no global state); with ``port=None`` it only keeps
the in-process numbers used for the closing summary.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., "p99": ...} of ``values`` (None when empty)."""
    arr = np.asarray(values, np.float64)
    return {f"p{q}": (round(float(np.percentile(arr, q)), 3) if arr.size else None) for q in qs}


class Metrics:
    """Per-stream frames, drops and capture -> publish latency; Prometheus export when ``port`` is given."""

    def __init__(self, port: int | None = None, addr: str = "127.0.0.1", role: str = "engine"):
        self.frames: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.started = time.monotonic()
        self.role = role
        self._prom = None
        if port is not None:
            self._prom = self._serve(port, addr)

    def _serve(self, port: int, addr: str) -> dict:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        registry = CollectorRegistry()
        prom = {
            "frames": Counter("posestream_frames", "frames published", ["stream"], registry=registry),
            "drops": Counter("posestream_drops", "frames dropped", ["stream", "where"], registry=registry),
            "rejects": Counter("posestream_rejects", "messages rejected", ["reason"], registry=registry),
            "latency": Histogram("posestream_latency_seconds", "capture to publish latency", ["stream"],
                                 buckets=(.005, .01, .02, .033, .05, .1, .2, .5, 1, 2, 5), registry=registry),
            "fps": Gauge("posestream_fps", "frames per second since start", ["stream"], registry=registry),
        }
        self.server, _thread = start_http_server(port, addr=addr, registry=registry)
        self.port = self.server.server_port
        return prom

    def frame(self, stream: str, latency_ms: float) -> None:
        self.frames[stream] += 1
        self.latency_ms[stream].append(latency_ms)
        if self._prom:
            self._prom["frames"].labels(stream).inc()
            self._prom["latency"].labels(stream).observe(latency_ms / 1000)
            self._prom["fps"].labels(stream).set(self.fps(stream))

    def drop(self, stream: str, where: str, count: int = 1) -> None:
        self.drops[stream] += count
        if self._prom:
            self._prom["drops"].labels(stream, where).inc(count)

    def reject(self, reason: str) -> None:
        if self._prom:
            self._prom["rejects"].labels(reason).inc()

    def fps(self, stream: str | None = None) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        count = self.frames[stream] if stream else sum(self.frames.values())
        return count / elapsed

    def summary(self) -> dict:
        all_lat = [v for values in self.latency_ms.values() for v in values]
        return {"frames": sum(self.frames.values()), "fps": round(self.fps(), 2),
                "latency_ms": percentiles(all_lat), "drops": sum(self.drops.values()),
                "streams": {s: {"frames": n, "drops": self.drops[s], "fps": round(self.fps(s), 2),
                                "latency_ms": percentiles(self.latency_ms[s])} for s, n in self.frames.items()}}

    def close(self) -> None:
        if self._prom:
            self.server.shutdown()
            self.server.server_close()
