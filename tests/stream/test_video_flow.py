"""`posestream video` end to end: three real processes over ipc://, real files."""

import json

import av

from stream.cli import main
from stream.posefile import read_pose_file
from tests.stream.conftest import MODEL_CLI, decoded_pts, decoded_times, make_video


def test_lossless_video_gives_one_annotated_frame_and_one_record_per_input_frame(tmp_path, capfd):
    pts = make_video(tmp_path / "in.mp4", 30)
    out, poses, coco = tmp_path / "out.mp4", tmp_path / "out.jsonl", tmp_path / "coco.json"
    code = main(["video", str(tmp_path / "in.mp4"), "-o", str(out), "--poses", str(poses), "--coco", str(coco),
                 "--no-progress", "--smooth", *MODEL_CLI])
    assert code == 0
    records = list(read_pose_file(poses))
    assert [r.frame for r in records] == list(range(30))
    assert all(r.poses.track_id.min() >= 0 for r in records)  # --smooth tracks people (ids are -1 without)
    assert [r.pts for r in records] == pts
    assert all(r.layout == "mpii16" and len(r.poses) == 1 and r.latency_ms > 0 for r in records)
    assert decoded_times(out) == decoded_times(tmp_path / "in.mp4")
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 25
    assert len(json.loads(coco.read_text())) == 30
    summary = json.loads(capfd.readouterr().err.split("posestream: ")[-1])
    assert summary["frames"] == 30 and summary["drops"] == 0 and summary["latency_ms"]["p50"] > 0
    assert not _my_private_folders(), "the run's sockets and summaries folder is gone"
    assert not (tmp_path / "out.partial.mp4").exists()


def _my_private_folders() -> list:
    """Private folders (stream.transport.private_dir) this process still owns."""
    import os
    import tempfile
    from pathlib import Path

    return [p for p in Path(tempfile.gettempdir()).glob("posestream-*")
            if (p / "owner.pid").is_file() and (p / "owner.pid").read_text() == str(os.getpid())]


def test_truncated_video_processes_every_decodable_frame_and_exits_3(tmp_path, capfd):
    path = tmp_path / "cut.mkv"
    make_video(path, 40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    decodable, times = decoded_pts(path), decoded_times(path)
    out, poses = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    # --flip-test rides along: video forwards it to the engine process, whose parser must know it (else exit 2)
    code = main(["video", str(path), "-o", str(out), "--poses", str(poses), "--no-progress", "--flip-test", *MODEL_CLI])
    err = capfd.readouterr().err
    assert code == 3
    assert f"{path}: truncated or corrupt" in err
    assert [r.pts for r in read_pose_file(poses)] == decodable
    assert decoded_times(out) == times


def test_missing_camera_or_model_is_a_one_line_error(tmp_path, capfd):
    assert main(["run", "--source", "webcam:57", "--no-progress", *MODEL_CLI]) == 2
    err = capfd.readouterr().err.strip()
    assert err == "posestream run: webcam:57: no such camera (/dev/video57 does not exist)"
    assert main(["serve", "--model", str(tmp_path / "nope.safetensors"), "--frames", "ipc://unused"]) == 2
    err = capfd.readouterr().err.strip()
    assert "\n" not in err and "cannot load model" in err and "nope.safetensors" in err
