"""Metrics: bounded memory, a sliding fps, and what a real Prometheus scrape of an engine server shows."""

import threading
import urllib.request
from collections import Counter

import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from stream import wire
from stream.metrics import METRICS, OTHER, LatencyHistogram, Metrics, RateWindow, percentiles
from stream.serve import EngineServer, ServeConfig
from stream.transport import Policy
from tests.stream.conftest import small_engine, wait_for


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def scrape(metrics: Metrics, host: str = "127.0.0.1") -> dict:
    """{(name, labels as a sorted tuple): value} of every sample of a real scrape, parsed by prometheus_client."""
    text = urllib.request.urlopen(f"http://{host}:{metrics.port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_latency_histogram_percentiles_within_a_percent_in_fixed_memory():
    values = np.random.default_rng(0).lognormal(np.log(30.0), 0.8, 200_000)  # ms
    hist = LatencyHistogram()
    size = hist.counts.nbytes
    for v in values:
        hist.add(float(v))
    exact, approx = percentiles(values), hist.percentiles()
    for q in ("p50", "p95", "p99"):
        assert approx[q] == pytest.approx(exact[q], rel=0.012)
    assert hist.count == len(values) and hist.counts.nbytes == size < 8 * 1024
    hist.add(float("nan"))
    hist.add(1e9)  # beyond the last bin: counted there
    assert hist.count == len(values) + 1


def test_rate_window_shows_the_current_rate_of_a_late_or_stalled_stream():
    rate = RateWindow(window_s=5.0)
    assert rate.rate(0.0) == 0.0
    t = 300.0  # the stream attaches 300 s after the server started
    for _ in range(30 * 10):
        rate.add(t)
        t += 1 / 30
    assert rate.rate(t) == pytest.approx(30.0, rel=0.06)
    for _ in range(10 * 3):  # slows to 10 fps for 3 s: the window follows
        rate.add(t)
        t += 1 / 10
    assert 10.0 < rate.rate(t) < 30.0
    assert rate.rate(t + 6.0) == 0.0  # stalled for longer than the window


def test_metrics_keep_per_stream_state_bounded():
    clock = Clock()
    metrics = Metrics(max_streams=3, clock=clock)
    for i in range(10):
        for _ in range(5):
            metrics.frame(f"s{i}", 12.0)
            clock.t += 0.01
    summary = metrics.summary()
    assert set(summary["streams"]) == {"s0", "s1", "s2", OTHER}
    assert summary["streams"][OTHER]["frames"] == 35 and summary["frames"] == 50
    assert summary["latency_ms"]["p50"] == pytest.approx(12.0, rel=0.01)


def test_a_real_scrape_shows_sliding_fps_rejects_and_batching():
    clock = Clock()
    metrics = Metrics(port=0, clock=clock)
    counts = Counter()
    try:
        metrics.watch_server(counts, lambda: 3, lambda: 2, max_batch=8, budget_s=0.004)
        clock.t += 600.0  # a stream attached 10 minutes after the server started
        for _ in range(150):
            metrics.frame("late", 20.0)
            clock.t += 1 / 30
        metrics.drop("late", "capture", 4)
        metrics.reject("oversized")
        counts["malformed"] += 2  # counted by the server's RejectCounter after it was watched
        metrics.batch([0.001, 0.003])
        metrics.batch_time(0.02)
        got = scrape(metrics)
    finally:
        metrics.close()
    assert got[("posestream_fps", (("stream", "late"),))] == pytest.approx(30.0, rel=0.06)
    assert got[("posestream_frames_total", (("stream", "late"),))] == 150
    assert got[("posestream_drops_total", (("stream", "late"), ("where", "capture")))] == 4
    assert got[("posestream_rejects_total", (("reason", "malformed"),))] == 2
    assert got[("posestream_rejects_total", (("reason", "oversized"),))] == 1
    assert got[("posestream_queue_depth", ())] == 3 and got[("posestream_streams", ())] == 2
    assert got[("posestream_max_batch", ())] == 8 and got[("posestream_batch_budget_seconds", ())] == 0.004
    assert got[("posestream_batch_size_count", ())] == 1 and got[("posestream_batch_size_sum", ())] == 2
    assert got[("posestream_batch_wait_seconds_count", ())] == 2
    assert got[("posestream_batch_seconds_count", ())] == 1
    scraped = {name for name, _ in got}
    for name, (kind, _labels, _meaning) in METRICS.items():  # the documented names are the scraped ones
        assert (name + "_count" if kind == "histogram" else name) in scraped, name


def _second_loopback() -> bool:
    import socket

    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


needs_127_0_0_2 = pytest.mark.skipif(not _second_loopback(), reason="127.0.0.2 is not a loopback address here")


@needs_127_0_0_2
def test_metrics_bind_to_the_address_asked_for():
    # Linux routes all of 127/8 to the loopback device, but a socket bound to 127.0.0.1 answers on that address
    # only: 127.0.0.2 stands for "another address of this host" without needing a network.
    everywhere = Metrics(port=0, addr="0.0.0.0")
    try:
        assert ("posestream_queue_depth", ()) in scrape(everywhere, "127.0.0.2")
    finally:
        everywhere.close()
    local = Metrics(port=0)  # the default: loopback only
    try:
        assert ("posestream_queue_depth", ()) in scrape(local)
        with pytest.raises(OSError):
            scrape(local, "127.0.0.2")
    finally:
        local.close()


def test_every_reject_of_an_engine_server_is_counted_by_reason_in_a_real_scrape(ipc):
    fast = Policy(heartbeat_s=0.1, peer_timeout_s=5.0)
    metrics = Metrics(port=0)
    server = EngineServer(small_engine(), ServeConfig(ipc["frames"], ipc["poses"], policy=fast), metrics)
    stop = threading.Event()
    serving = threading.Thread(target=server.run, args=(stop,), daemon=True)
    serving.start()
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(ipc["frames"])
    try:
        assert server.ready.wait(30)
        sock.send(b"\x00 not msgpack")
        sock.send_multipart([b"a", b"b", b"c", b"d", b"e"])
        sock.send(wire.encode(wire.Ack(stream="x", next_seq=1, instance=1)))  # well-formed, not for the engine
        wait_for(lambda: server.rejects.total >= 3, 30, "three rejects")
        got = scrape(metrics)
    finally:
        sock.close(linger=0)
        stop.set()
        serving.join(10)
        metrics.close()
    counted = {reason: n for (name, labels), n in got.items() if name == "posestream_rejects_total"
               for _, reason in labels}
    assert counted == dict(server.rejects.counts) and sum(counted.values()) == 3


@needs_127_0_0_2
def test_serve_takes_the_metrics_address_and_the_batch_budget_from_its_command_line(ipc):
    import signal
    import socket

    from tests.stream.conftest import MODEL_CLI, start_stage

    with socket.socket() as probe:  # a free port for the child to bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = start_stage("serve", "--frames", ipc["frames"], "--publish", ipc["poses"], "--deliver", "none",
                       "--metrics-port", str(port), "--metrics-bind", "0.0.0.0", "--batch-budget-ms", "7.5",
                       "--max-batch", "3", *MODEL_CLI)
    try:
        def scraped():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5).read().decode()
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                return None
            return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

        got = wait_for(scraped, 60, "the server's metrics endpoint")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert got["posestream_batch_budget_seconds"] == 0.0075 and got["posestream_max_batch"] == 3
