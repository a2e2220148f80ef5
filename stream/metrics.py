"""Metrics: frames, drops, rejects, latency, fps and batching, for the closing summary and for Prometheus.

``Metrics(port)`` owns a private CollectorRegistry (no global state) served on ``addr:port`` (loopback by
default; ``port=None``: no endpoint, only the in-process numbers of the closing summary). Everything is bounded
for a server that runs for days:

* latency: per stream a :class:`LatencyHistogram` (log-spaced bins 2% wide from 0.01 ms to 1000 s: 932 counters,
  7.3 KiB), so summary percentiles are within 1% of the exact ones however long the run;
* fps: per stream a :class:`RateWindow` (20 counters over the last ``fps_window_s`` seconds), so a stream that
  attached late or stalled shows its current rate, not an average since the server started;
* streams: at most ``max_streams`` are kept apart (256 by default: ~2 MiB with the exporter's own series);
  frames of further streams are counted under the stream name ``_other``.

Metric names and meanings for dashboards: ``METRICS`` below and docs/interfaces.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

import numpy as np

OTHER = "_other"

METRICS = {  # name as scraped: (type, labels, meaning)
    "posestream_frames_total": ("counter", "stream", "frames published (poses sent) per stream"),
    "posestream_drops_total": ("counter", "stream, where",
                               "frames not published: where=capture (newest-wins replacements seen as sequence gaps), "
                               "deliver (the renderer's channel was full)"),
    "posestream_rejects_total": ("counter", "reason",
                                 "messages rejected at the wire, by reason (malformed, oversized, version, ...)"),
    "posestream_latency_seconds": ("histogram", "stream", "capture -> publish latency of each published frame"),
    "posestream_fps": ("gauge", "stream", "frames published per second over the last fps window (5 s)"),
    "posestream_batch_size": ("histogram", "", "frames per batch sent to the engine"),
    "posestream_batch_wait_seconds": ("histogram", "",
                                      "time each frame waited in the batcher, from admission to its batch's start"),
    "posestream_batch_seconds": ("histogram", "", "engine time per batch (inference, decoding, tracking)"),
    "posestream_queue_depth": ("gauge", "", "frames admitted and waiting for a batch"),
    "posestream_streams": ("gauge", "", "streams attached to the engine"),
    "posestream_batch_budget_seconds": ("gauge", "", "the batcher's latency budget (--batch-budget-ms)"),
    "posestream_max_batch": ("gauge", "", "the largest batch (--max-batch)"),
}


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., "p99": ...} of ``values`` (None when empty): a sequence or a LatencyHistogram."""
    if isinstance(values, LatencyHistogram):
        return values.percentiles(qs)
    arr = np.asarray(values, np.float64)
    return {f"p{q}": (round(float(np.percentile(arr, q)), 3) if arr.size else None) for q in qs}


class LatencyHistogram:
    """Counts of values (ms) in log-spaced bins: bounded memory, percentiles within half a bin (1%).

    Bin i holds [lo * ratio**i, lo * ratio**(i+1)); values below ``lo`` fall in bin 0, above ``hi`` in the last.
    """

    def __init__(self, lo_ms: float = 0.01, hi_ms: float = 1e6, ratio: float = 1.02):
        self.lo, self.log_ratio = lo_ms, math.log(ratio)
        self.bins = int(math.ceil(math.log(hi_ms / lo_ms) / self.log_ratio))
        self.counts = np.zeros(self.bins, np.int64)

    def add(self, ms: float) -> None:
        if not math.isfinite(ms):
            return
        i = int(math.log(max(ms, self.lo) / self.lo) / self.log_ratio)
        self.counts[min(max(i, 0), self.bins - 1)] += 1

    append = add  # a drop-in for the list it replaces

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        self.counts += other.counts
        return self

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def percentiles(self, qs=(50, 95, 99)) -> dict[str, float | None]:
        """As :func:`percentiles`, each the geometric middle of the bin holding it."""
        total = self.count
        if not total:
            return {f"p{q}": None for q in qs}
        cumulative = np.cumsum(self.counts)
        out = {}
        for q in qs:
            i = int(np.searchsorted(cumulative, max(1, math.ceil(q / 100 * total))))
            out[f"p{q}"] = round(self.lo * math.exp((i + 0.5) * self.log_ratio), 3)
        return out


class RateWindow:
    """Events per second over the last ``window_s`` seconds, in ``buckets`` counters (bounded memory)."""

    def __init__(self, window_s: float = 5.0, buckets: int = 20):
        self.window_s, self.width = window_s, window_s / buckets
        self.counts = np.zeros(buckets, np.int64)
        self.index = np.full(buckets, -1, np.int64)  # the bucket number each slot holds
        self.first: float | None = None

    def add(self, now: float, n: int = 1) -> None:
        b = int(now // self.width)
        slot = b % len(self.counts)
        if self.index[slot] != b:
            self.index[slot], self.counts[slot] = b, 0
        self.counts[slot] += n
        self.first = now if self.first is None else self.first

    def rate(self, now: float) -> float:
        if self.first is None:
            return 0.0
        b = int(now // self.width)
        live = self.index > b - len(self.counts)
        start = max((b - len(self.counts) + 1) * self.width, self.first)
        return float(self.counts[live].sum()) / max(now - start, self.width)


class _Stream:
    def __init__(self, window_s: float):
        self.frames, self.drops = 0, 0
        self.latency = LatencyHistogram()
        self.rate = RateWindow(window_s)
        self.first: float | None = None
        self.last: float | None = None


class Metrics:
    """Per-stream frames, drops, latency and fps; rejects by reason; batches. Prometheus when ``port`` is given.

    Args:
        port: serve ``/metrics`` on this port (0: any free port, see ``self.port``); None: no endpoint.
        addr: the address to bind (``--metrics-bind``; loopback by default).
        fps_window_s: the window of ``posestream_fps``.
        max_streams: streams kept apart; further ones are counted as ``_other``.
        clock: seconds (monotonic), for tests.
    """

    def __init__(self, port: int | None = None, addr: str = "127.0.0.1", role: str = "engine",
                 fps_window_s: float = 5.0, max_streams: int = 256, clock: Callable[[], float] = time.monotonic):
        self.role, self.fps_window_s, self.max_streams, self.clock = role, fps_window_s, max_streams, clock
        self.started = clock()
        self.streams: dict[str, _Stream] = {}
        self.rejects: Counter[str] = Counter()
        self._watched: list[Mapping[str, int]] = []
        self.queue_depth: Callable[[], int] = lambda: 0
        self.active_streams: Callable[[], int] = lambda: 0
        self.batching: tuple[int, float] | None = None  # (max_batch, budget_s)
        self.lock = threading.Lock()
        self._prom: dict | None = None
        self.port: int | None = None
        if port is not None:
            self._prom = self._serve(port, addr)

    # -- Prometheus -------------------------------------------------------------------------------------
    def _serve(self, port: int, addr: str) -> dict:
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        registry = CollectorRegistry()
        prom = {
            "frames": Counter("posestream_frames", "frames published", ["stream"], registry=registry),
            "drops": Counter("posestream_drops", "frames dropped", ["stream", "where"], registry=registry),
            "latency": Histogram("posestream_latency_seconds", "capture to publish latency", ["stream"],
                                 buckets=(.005, .01, .02, .033, .05, .1, .2, .5, 1, 2, 5), registry=registry),
            "batch_size": Histogram("posestream_batch_size", "frames per batch", registry=registry,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)),
            "batch_wait": Histogram("posestream_batch_wait_seconds", "admission to batch start, per frame",
                                    buckets=(.0005, .001, .002, .004, .008, .016, .033, .066, .1, .25, 1),
                                    registry=registry),
            "batch_time": Histogram("posestream_batch_seconds", "engine time per batch", registry=registry,
                                    buckets=(.002, .005, .01, .02, .033, .05, .1, .2, .5, 1, 5)),
        }
        registry.register(_Collector(self))
        self.server, _thread = start_http_server(port, addr=addr, registry=registry)
        self.port = self.server.server_port
        return prom

    # -- recording --------------------------------------------------------------------------------------
    def _stream(self, name: str) -> tuple[str, _Stream]:
        state = self.streams.get(name)
        if state is None:
            if len(self.streams) >= self.max_streams + (OTHER in self.streams):
                name = OTHER
            state = self.streams.get(name) or self.streams.setdefault(name, _Stream(self.fps_window_s))
        return name, state

    def frame(self, stream: str, latency_ms: float) -> None:
        now = self.clock()
        with self.lock:
            stream, state = self._stream(stream)
            state.frames += 1
            state.latency.add(latency_ms)
            state.rate.add(now)
            state.first, state.last = state.first if state.first is not None else now, now
        if self._prom:
            self._prom["frames"].labels(stream).inc()
            self._prom["latency"].labels(stream).observe(latency_ms / 1000)

    def drop(self, stream: str, where: str, count: int = 1) -> None:
        with self.lock:
            stream, state = self._stream(stream)
            state.drops += count
        if self._prom:
            self._prom["drops"].labels(stream, where).inc(count)

    def reject(self, reason: str, count: int = 1) -> None:
        """Count a rejected message (see also :meth:`watch_rejects`)."""
        with self.lock:
            self.rejects[reason] += count

    def watch_rejects(self, counts: Mapping[str, int]) -> None:
        """Export a live reject counter (e.g. ``wire.RejectCounter.counts``) too: read at each scrape and summary,
        so every reject it counts is visible without a second count."""
        self._watched.append(counts)

    def watch_server(self, rejects: Mapping[str, int], queue_depth: Callable[[], int], streams: Callable[[], int],
                     max_batch: int, budget_s: float) -> None:
        """What an engine server exports as read at scrape time: its reject counts, queue depth, attached streams
        and batching settings."""
        self.watch_rejects(rejects)
        self.queue_depth, self.active_streams, self.batching = queue_depth, streams, (max_batch, budget_s)

    def batch(self, waits_s: list[float]) -> None:
        """A batch taken: one wait (seconds from admission to now) per frame in it."""
        if self._prom:
            self._prom["batch_size"].observe(len(waits_s))
            for wait in waits_s:
                self._prom["batch_wait"].observe(wait)

    def batch_time(self, seconds: float) -> None:
        """The engine's time on a batch (from handing it to the worker to its result)."""
        if self._prom:
            self._prom["batch_time"].observe(seconds)

    # -- reading ----------------------------------------------------------------------------------------
    @property
    def frames(self) -> Counter[str]:
        """Frames published per stream."""
        with self.lock:
            return Counter({name: s.frames for name, s in self.streams.items()})

    @property
    def drops(self) -> Counter[str]:
        """Frames dropped per stream."""
        with self.lock:
            return Counter({name: s.drops for name, s in self.streams.items()})

    def all_rejects(self) -> Counter[str]:
        total = Counter(self.rejects)
        for counts in self._watched:
            for _ in range(3):  # the owner may add a reason while we copy: copy again
                try:
                    total.update(dict(counts))
                    break
                except RuntimeError:
                    continue
        return total

    def fps(self, stream: str | None = None) -> float:
        """Frames per second over the last ``fps_window_s`` (all streams when ``stream`` is None)."""
        now = self.clock()
        with self.lock:
            states = [self.streams[stream]] if stream in self.streams else [] if stream else list(self.streams.values())
            return sum(s.rate.rate(now) for s in states)

    def summary(self) -> dict:
        """Closing numbers: frames, fps (each stream from its first to its last frame), latency percentiles."""
        with self.lock:
            total = LatencyHistogram()
            streams = {}
            for name, s in self.streams.items():
                total.merge(s.latency)
                streams[name] = {"frames": s.frames, "drops": s.drops, "fps": round(_span_rate(s.frames, s.first, s.last), 2),
                                 "latency_ms": s.latency.percentiles()}
            firsts = [s.first for s in self.streams.values() if s.first is not None]
            lasts = [s.last for s in self.streams.values() if s.last is not None]
            frames = sum(s.frames for s in self.streams.values())
        fps = _span_rate(frames, min(firsts, default=None), max(lasts, default=None))
        return {"frames": frames, "fps": round(fps, 2), "latency_ms": total.percentiles(),
                "drops": sum(s["drops"] for s in streams.values()), "rejects": dict(self.all_rejects()),
                "streams": {n: s for n, s in streams.items() if s["frames"] or s["drops"]}}

    def close(self) -> None:
        if self._prom:
            self.server.shutdown()
            self.server.server_close()


def _span_rate(frames: int, first: float | None, last: float | None) -> float:
    """Frames per second between the first and the last frame (0 with fewer than two)."""
    if frames < 2 or first is None or last is None or last <= first:
        return 0.0
    return (frames - 1) / (last - first)


class _Collector:
    """The metrics read at scrape time: fps over the window, rejects, queue depth, streams, batching settings."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # unchecked: the names are fixed (METRICS)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.metrics
        now = m.clock()
        fps = GaugeMetricFamily("posestream_fps", METRICS["posestream_fps"][2], labels=["stream"])
        with m.lock:
            for name, state in m.streams.items():
                fps.add_metric([name], state.rate.rate(now))
        yield fps
        rejects = CounterMetricFamily("posestream_rejects", METRICS["posestream_rejects_total"][2], labels=["reason"])
        for reason, count in sorted(m.all_rejects().items()):
            rejects.add_metric([reason], count)
        yield rejects
        yield GaugeMetricFamily("posestream_queue_depth", METRICS["posestream_queue_depth"][2], value=m.queue_depth())
        yield GaugeMetricFamily("posestream_streams", METRICS["posestream_streams"][2], value=m.active_streams())
        if m.batching is not None:
            max_batch, budget_s = m.batching
            yield GaugeMetricFamily("posestream_max_batch", METRICS["posestream_max_batch"][2], value=max_batch)
            yield GaugeMetricFamily("posestream_batch_budget_seconds", METRICS["posestream_batch_budget_seconds"][2],
                                    value=budget_s)
