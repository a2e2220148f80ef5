"""tools.bench pipeline: the real three-process pipeline on its default clip, a generated one with people."""

import json

import av

from stream.posefile import read_pose_file
from tests.stream.conftest import MODEL
from tools.bench import pipeline
from tools.demo import DEMO_SEED, make_sample


def test_generated_clip_has_the_asked_size_and_people(tmp_path):
    video, gt = make_sample(tmp_path, DEMO_SEED, 6, (2, 3), "panoptic19", (160, 120))
    with av.open(str(video)) as container:
        sizes = {(f.width, f.height) for f in container.decode(video=0)}
        assert container.streams.video[0].frames in (0, 6)
    records = list(read_pose_file(gt))
    assert sizes == {(160, 120)} and len(records) == 6
    assert all(2 <= len(r.poses) <= 3 for r in records)


def test_every_frame_of_the_default_clip_is_published(capsys):
    args = ["--frames", "6", "--size", "160x120", "--persons", "2-3", "--model", MODEL,
            "--model-args", '{"input_size": [64, 64]}', "--backend", "torch"]
    assert pipeline.main(args) == 0
    rows = {r["case"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    fps = rows["end-to-end fps"]
    assert fps["frames"] == 6 and fps["value"] > 0 and fps["video"] == f"synth seed {DEMO_SEED}, 2-3 people"
    p50, p99 = rows["capture->publish latency p50"]["value"], rows["capture->publish latency p99"]["value"]
    assert 0 < p50 <= p99
    summary = rows["wall time incl. start-up"]["summary"]
    assert summary["frames"] == 6 and summary["drops"] == 0 and summary["errors"]["corrupt_frames"] == 0


def test_live_mode_reports_the_share_of_frames_published(capsys):
    args = ["--live", "--frames", "12", "--size", "160x120", "--persons", "1-2", "--model", MODEL,
            "--model-args", '{"input_size": [64, 64]}', "--backend", "torch"]
    assert pipeline.main(args) == 0
    rows = {r["case"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    share = rows["frames published"]
    assert share["read"] == 12 and share["mode"] == "live" and 0 < share["value"] <= 1
    assert share["value"] == round(share["frames"] / 12, 6)
    summary = rows["wall time incl. start-up"]["summary"]
    assert summary["frames"] + summary["drops"] == 12
