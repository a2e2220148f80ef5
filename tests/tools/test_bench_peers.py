"""tools.bench.peers: frame files, the teacher environment checks, the posestream side, and (when the teacher
environment has MediaPipe's solution API: ``posestream teacher setup --solution``) one short MediaPipe run."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.teacher import TeacherError, check_teacher, default_venv
from tools.bench import peers

TEACHER = default_venv() / "bin" / "python"


def _has_solution() -> bool:
    try:
        return TEACHER.exists() and check_teacher(TEACHER).solution is not None
    except TeacherError:
        return False


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return peers.synth_frames(seed=3, persons=(1, 2), count=4, size=(160, 120))


def test_frame_file_round_trip(tmp_path, frames):
    path = peers.write_frames(frames, tmp_path / "frames.npy")
    back = peers.read_frames(path)
    assert back.shape == (4, 120, 160, 3) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, frames)
    assert frames.std() > 0  # real pictures, not blank frames


def test_frame_file_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"frames: expected uint8 \[N,H,W,3\]"):
        peers.write_frames(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "f.npy")
    np.save(tmp_path / "gray.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="gray.npy: expected uint8"):
        peers.read_frames(tmp_path / "gray.npy")


def test_a_python_without_mediapipe_is_refused(tmp_path):
    # this test environment's own Python has no mediapipe (it must not: its cv2 would clash)
    with pytest.raises(TeacherError, match=r"teacher python .*: no mediapipe wheel"):
        peers.solution_python(sys.executable, tmp_path)


def test_main_reports_an_unusable_teacher(tmp_path, capsys):
    code = peers.main(["--teacher-python", str(tmp_path / "nope"), "--frames", "2", "--warmup", "0"])
    assert code == 2
    assert "tools.bench peers: teacher python" in capsys.readouterr().err


def test_main_says_how_to_make_the_teacher(tmp_path, capsys):
    code = peers.main(["--teacher-venv", str(tmp_path / "no-venv"), "--frames", "2", "--warmup", "0"])
    assert code == 2
    assert "posestream teacher setup" in capsys.readouterr().err


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="--video .*file not found"):
        peers.video_frames(str(tmp_path / "missing.mp4"), 3)


def test_default_spec_falls_back_only_when_not_shipped(capsys):
    from engine.loading import zoo_dir

    assert peers.resolve_spec("random:hg1") == ("random:hg1", False)
    spec, fallback = peers.resolve_spec("default")
    if (zoo_dir() / "default.safetensors").is_file():
        assert (spec, fallback) == ("default", False)
    else:
        assert (spec, fallback) == ("random:spm_small", True)
        assert "WARNING" in capsys.readouterr().err


def test_posestream_side_times_frames_after_warmup(frames):
    r = peers.time_posestream("random:spm_small", frames, warmup=1, backend="torch", device="cpu")
    assert r["frames"] == 3 and r["total_s"] > 0
    assert r["mode"] == "multi" and r["has_3d"] is True and r["backend"] == "torch"
    assert r["median_ms"] <= r["p90_ms"]


@pytest.mark.slow
@pytest.mark.skipif(not _has_solution(), reason="the teacher venv has no MediaPipe solution API "
                    "(`posestream teacher setup --solution` installs it, ~1 GB; CI does not)")
def test_mediapipe_child_runs_on_the_frame_file(tmp_path, frames):
    path = peers.write_frames(frames, tmp_path / "frames.npy")
    r = peers.run_teacher(TEACHER, path, warmup=1)
    assert r["frames"] == 3 and r["mediapipe"] == "0.10.14"
    assert 0 <= r["detected"] <= 3 and r["median_ms"] <= r["p90_ms"]
