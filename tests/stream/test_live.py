"""Live mode: a consumer slower than the source keeps latency bounded by dropping (and counting) frames."""

import json
import threading
import urllib.request

from engine import Engine
from stream.capture import Capture, CaptureConfig
from stream.metrics import Metrics
from stream.serve import EngineServer, ServeConfig
from stream.sources import open_source
from stream.subscribe import PoseSubscriber
from stream.transport import Policy
from tests.stream.conftest import make_video

FAST = Policy(heartbeat_s=0.1, peer_timeout_s=1.0)


def test_live_mode_with_a_slow_engine_drops_frames_and_keeps_latency_bounded(tmp_path, ipc):
    make_video(tmp_path / "in.mp4", 150, fps=100)
    # The deliberately slow consumer: the engine at 192x192 takes far longer per frame than decoding does.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        engine = Engine("random:hg1_64", "torch", model_args={"input_size": (192, 192)})
    metrics = Metrics(port=0)
    server = EngineServer(engine, ServeConfig(ipc["frames"], ipc["poses"], policy=FAST), metrics)
    stop = threading.Event()
    serving = threading.Thread(target=server.run, args=(stop,), daemon=True)
    serving.start()
    server.ready.wait(30)
    records = []
    subscriber = PoseSubscriber(ipc["poses"], until_end=True, timeout=20)
    listening = threading.Thread(target=lambda: records.extend(subscriber), daemon=True)
    listening.start()
    capture = Capture(open_source(str(tmp_path / "in.mp4"), realtime=True), CaptureConfig(ipc["frames"], "live", policy=FAST))
    try:
        stats = capture.run()
        listening.join(30)
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=10).read().decode()
    finally:
        stop.set()
        serving.join(10)
        metrics.close()
    assert stats.read == 150 and stats.dropped > 0 and stats.sent + stats.dropped == stats.read
    frames = [r.frame for r in records]
    assert frames == sorted(set(frames)) and 0 < len(frames) < 150, "newer frames only, with gaps"
    publish = [r.capture_ns / 1e6 + r.latency_ms for r in records]
    service = max(b - a for a, b in zip(publish, publish[1:]))
    worst = max(r.latency_ms for r in records)
    assert worst <= (FAST.live_window + 2) * service + 250, f"latency {worst:.0f} ms vs service {service:.0f} ms"
    assert worst < 0.5 * (publish[-1] - records[0].capture_ns / 1e6), "latency does not grow with the run"
    assert f'posestream_frames_total{{stream="live"}} {float(len(frames))}' in scrape
    assert "posestream_latency_seconds_bucket" in scrape


def test_live_pipeline_summary_counts_each_unpublished_frame_once(tmp_path, capfd):
    from stream.cli import main
    from stream.posefile import read_pose_file

    make_video(tmp_path / "in.mp4", 60, fps=100)  # paced at 100 fps: faster than this engine, so frames drop
    poses = tmp_path / "out.jsonl"
    code = main(["run", "--source", str(tmp_path / "in.mp4"), "--realtime", "--poses", str(poses), "--no-progress",
                 "--model", "random:hg1_64", "--model-args", '{"input_size": [192, 192]}', "--backend", "torch"])
    assert code == 0
    summary = json.loads(capfd.readouterr().err.split("posestream: ")[-1])
    published = len(list(read_pose_file(poses)))
    assert summary["read"] == 60 and summary["frames"] == published
    assert summary["drops"] > 0 and summary["frames"] + summary["drops"] == 60
