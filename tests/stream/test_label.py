"""``posestream label``: the labels file (schema, header), resuming, ``--every``, exit codes; the pose file's
header convention and the records' teacher fields."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from engine.results import Poses
from stream.cli import main
from stream.label import LabelConfig, LabelError, label_video, scan_labels
from stream.posefile import PoseRecord, read_header, read_pose_file, write_record

CLIP = Path(__file__).resolve().parents[1] / "data" / "vtest_40-63.mp4"       # 24 real frames, 768x576


def _record(frame: int, ignore=None, teacher=None) -> PoseRecord:
    rng = np.random.default_rng(frame)
    poses = Poses("blazepose33", rng.random((2, 33, 2), dtype=np.float32) * 100, rng.random((2, 33), np.float32),
                  np.ones(2, np.float32), np.arange(2), rng.random((2, 33, 3), dtype=np.float32) * 1000)
    return PoseRecord("clip", frame, "blazepose33", poses, teacher=teacher, ignore=ignore)


def test_records_keep_teacher_and_ignore_and_files_skip_headers(tmp_path):
    path = tmp_path / "labels.jsonl"
    with path.open("w") as fh:
        fh.write(json.dumps({"kind": "header", "format": "posestream.labels", "format_version": 1}) + "\n")
        write_record(fh, _record(0, np.array([[1.5, 2, 30, 40.25]], np.float32), "blazepose_heavy"))
        write_record(fh, _record(1))
    assert read_header(path) == {"kind": "header", "format": "posestream.labels", "format_version": 1}
    first, second = read_pose_file(path)
    assert first.teacher == "blazepose_heavy" and second.teacher is None and second.ignore is None
    np.testing.assert_allclose(first.ignore, [[1.5, 2, 30, 40.25]])
    np.testing.assert_allclose(first.poses.xyz, _record(0).poses.xyz, atol=0.01)
    plain = tmp_path / "plain.jsonl"
    with plain.open("w") as fh:
        write_record(fh, _record(3))
    assert read_header(plain) is None and [r.frame for r in read_pose_file(plain)] == [3]
    assert "teacher" not in json.loads(plain.read_text()) and "ignore" not in json.loads(plain.read_text())


def test_scan_cuts_a_torn_last_line_and_refuses_a_broken_middle(tmp_path):
    path = tmp_path / "labels.jsonl"
    with path.open("w") as fh:
        fh.write(json.dumps({"kind": "header", "format": "posestream.labels"}) + "\n")
        write_record(fh, _record(0))
        write_record(fh, _record(2))
    whole = path.stat().st_size
    with path.open("a") as fh:
        fh.write('{"stream": "clip", "frame": 4, "pers')
    header, last, good = scan_labels(path)
    assert header["format"] == "posestream.labels" and last == 2 and good == whole
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{oops", lines[1], lines[2]]) + "\n")
    with pytest.raises(LabelError, match=r"labels.jsonl:2: malformed line"):
        scan_labels(path)


def test_cli_says_what_is_missing(tmp_path, capfd, monkeypatch):
    assert main(["label", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "l.jsonl")]) == 2
    assert "none.mp4: no such file" in capfd.readouterr().err
    monkeypatch.setenv("POSESTREAM_TEACHER_VENV", str(tmp_path / "no-venv"))
    assert main(["label", str(CLIP), "-o", str(tmp_path / "l.jsonl")]) == 2
    err = capfd.readouterr().err
    assert "no teacher environment at" in err and "posestream teacher setup" in err
    assert main(["label", str(CLIP), "-o", str(tmp_path / "nofolder" / "l.jsonl")]) == 2
    assert "no such folder" in capfd.readouterr().err
    assert not (tmp_path / "l.jsonl").exists()


# ---- with the teacher (its own environment; `make test` makes it) ------------------------------------------------

def _frames(path: Path) -> list[int]:
    return [r.frame for r in read_pose_file(path)]


def _config(teacher_python, **kw) -> LabelConfig:
    return LabelConfig(teacher="full", python=str(teacher_python), progress=False, **kw)


@pytest.mark.slow
def test_labels_file_schema_and_every(tmp_path, teacher_python):
    out = tmp_path / "labels.jsonl"
    seen = []
    summary = label_video(str(CLIP), out, _config(teacher_python, every=4, start=2),
                          progress=lambda done, total: seen.append((done, total)))
    assert summary.exit_code == 0 and summary.labelled == 6 and summary.teacher == "blazepose_full"
    assert seen == [(i, 6) for i in range(1, 7)]
    header = read_header(out)
    assert header["format"] == "posestream.labels" and header["format_version"] == 1
    assert header["teacher"] == "blazepose_full" and header["layout"] == "blazepose33"
    assert header["frame_size"] == [768, 576] and header["rate"] == [10, 1] and header["every"] == 4
    assert header["source"] == str(CLIP) and header["intrinsics"] == {"fx": 768.0, "fy": 768.0, "cx": 383.5,
                                                                      "cy": 287.5}
    records = list(read_pose_file(out))
    assert [r.frame for r in records] == [2, 6, 10, 14, 18, 22]
    lines = out.read_text().splitlines()
    raw = json.loads(lines[1])
    assert raw["teacher"] == "blazepose_full" and isinstance(raw["ignore"], list) and raw["layout"] == "blazepose33"
    person = raw["persons"][0]
    assert len(person["keypoints"]) == 33 and len(person["keypoints"][0]) == 3
    assert len(person["keypoints_3d"]) == 33 and person["keypoints_3d"][23][2] > 1000
    assert sum(len(r.poses) for r in records) == summary.persons >= 18      # 4-6 people in these frames


@pytest.mark.slow
def test_resume_after_a_stop_a_kill_and_an_interrupt(tmp_path, teacher_python, capfd):
    out = tmp_path / "labels.jsonl"
    first = label_video(str(CLIP), out, _config(teacher_python, every=3, stop=7))
    assert first.exit_code == 0 and _frames(out) == [0, 3, 6]
    with out.open("a") as fh:                                # a run killed mid-line
        fh.write('{"stream": "vtest_40-63", "frame": 9, "pers')
    stop = threading.Event()
    second = label_video(str(CLIP), out, _config(teacher_python, every=3), stop=stop,
                         progress=lambda done, total: stop.set() if done == 2 else None)
    assert second.exit_code == 130 and second.interrupted and second.resumed == 3
    assert _frames(out) == [0, 3, 6, 9, 12]
    assert main(["label", str(CLIP), "-o", str(out), "--teacher", "full", "--every", "3", "--no-progress",
                 "--teacher-python", str(teacher_python)]) == 0
    assert "3 frames labelled (5 already in" in capfd.readouterr().err
    assert _frames(out) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert sum(1 for line in out.read_text().splitlines() if '"kind": "header"' in line) == 1
    with pytest.raises(LabelError, match=r"was made with every 3, this run has 2"):
        label_video(str(CLIP), out, _config(teacher_python, every=2))


@pytest.mark.slow
def test_a_truncated_video_is_labelled_to_its_end_and_exits_3(tmp_path, teacher_python, capfd):
    mkv = tmp_path / "clip.mkv"
    with av.open(str(CLIP)) as src, av.open(str(mkv), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = mkv.read_bytes()
    mkv.write_bytes(data[: len(data) * 6 // 10])
    with av.open(str(mkv)) as c:
        decodable = sum(1 for _ in c.decode(video=0))
    assert 0 < decodable < 24
    out = tmp_path / "labels.jsonl"
    code = main(["label", str(mkv), "-o", str(out), "--teacher", "full", "--every", "4", "--no-progress",
                 "--teacher-python", str(teacher_python)])
    assert code == 3
    assert f"{mkv}: truncated or corrupt" in capfd.readouterr().err
    assert _frames(out) == list(range(0, decodable, 4))
