"""tools.bench view: the live pipeline with and without the viewer, and the share of frames it showed."""

import json

from tests.stream.conftest import MODEL
from tools.bench import view


def test_reports_frames_shown_over_published_and_the_engine_fps_both_ways(capsys):
    args = ["--frames", "15", "--size", "160x120", "--persons", "2", "--model", MODEL,
            "--model-args", '{"input_size": [64, 64]}', "--backend", "torch"]
    assert view.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["case"], r["viewer"]) for r in rows] == [
        ("engine fps", False), ("frames published / read", False),
        ("engine fps", True), ("frames published / read", True), ("frames shown / published", True)]
    shown = rows[-1]
    assert shown["view_summary"]["received"] >= shown["view_summary"]["shown"] > 0
    assert shown["value"] == round(shown["view_summary"]["shown"] / shown["published"], 6)
    assert all(r["load_avg_1m_before"] is not None for r in rows)


def test_replay_publishes_ground_truth_at_the_asked_rate_to_a_live_viewer(capsys):
    args = ["--replay", "--frames", "20", "--fps", "10", "--size", "160x120", "--persons", "2", "--model", MODEL,
            "--model-args", '{"input_size": [64, 64]}', "--backend", "torch"]
    assert view.main(args) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["case"] == "replay: frames shown / published" and row["published"] == 20
    assert 8 < row["publish_fps"] < 12, "paced at 10 fps"
    summary = row["view_summary"]
    assert summary["shown"] + summary["skipped"] <= summary["received"] <= 20 and summary["shown"] > 0
    assert row["value"] == round(summary["shown"] / 20, 6)
