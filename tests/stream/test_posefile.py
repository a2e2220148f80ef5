"""Pose files: the header line and the records after it."""

import numpy as np

from engine.results import Poses
from stream.posefile import PoseRecord, make_header, read_header, read_pose_file, write_header, write_record


def _record(frame: int) -> PoseRecord:
    poses = Poses(layout="mpii16", xy=np.full((1, 16, 2), frame, np.float32), score=np.ones((1, 16), np.float32),
                  person_score=np.ones(1, np.float32), track_id=np.zeros(1, np.int64))
    return PoseRecord(stream="cam", frame=frame, layout="mpii16", poses=poses)


def test_the_header_line_is_returned_by_read_header_and_skipped_by_read_pose_file(tmp_path):
    path = tmp_path / "poses.jsonl"
    header = make_header(stream="cam", model_id="hg_mpii", layout="mpii16", width=640, height=480,
                         intrinsics=(500, 501, 319.5, 239.5))
    with path.open("w") as fh:
        write_header(fh, header)
        for frame in range(3):
            write_record(fh, _record(frame))
    assert read_header(path) == header
    assert header["format"] == "posestream.poses" and header["joints"][0] == "r_ankle" and len(header["joints"]) == 16
    assert header["intrinsics"] == {"fx": 500.0, "fy": 501.0, "cx": 319.5, "cy": 239.5}
    assert [r.frame for r in read_pose_file(path)] == [0, 1, 2]


def test_a_pose_file_without_a_header_reads_as_before(tmp_path):
    path = tmp_path / "old.jsonl"
    with path.open("w") as fh:
        write_record(fh, _record(0))
    assert read_header(path) is None
    assert [r.frame for r in read_pose_file(path)] == [0]
