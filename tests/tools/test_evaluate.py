"""tools.evaluate: pose files against ground truth, person matching, layouts, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from engine.results import Poses
from models.layouts import get_layout
from stream.posefile import read_pose_file, write_record
from tools.evaluate import evaluate, main, match_persons
from tools.synth.__main__ import main as synth_main


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    for layout in ("mpii16", "panoptic19"):
        assert synth_main(["--seed", "8", "--persons", "2-4", "--frames", "6", "--size", "320x240",
                           "--layout", layout, "--gt", str(d / f"{layout}.jsonl")]) == 0
    return d


def _shifted(records, dx, reverse=False):
    out = []
    for r in records:
        p = r.poses
        order = slice(None, None, -1) if reverse else slice(None)
        poses = replace(p, xy=p.xy[order] + np.float32(dx), score=np.minimum(p.score[order], 1.0),
                        person_score=p.person_score[order], track_id=p.track_id[order],
                        xyz=None if p.xyz is None else p.xyz[order])
        out.append(replace(r, poses=poses))
    return out


def test_perfect_predictions_score_one(clip):
    gt = list(read_pose_file(clip / "mpii16.jsonl"))
    s = evaluate(_shifted(gt, 0.0, reverse=True), gt)
    assert s["pckh@0.5"] == 1.0 and s["pckh@0.5_all"] == 1.0
    assert s["oks"]["AP"] == pytest.approx(1.0)
    assert s["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3) and s["pck3d@150mm"] == 1.0
    assert max(s["mpjpe_per_axis_mm"].values()) == pytest.approx(0.0, abs=1e-3)
    assert set(s["mpjpe_per_joint_mm"]) == set(get_layout("mpii16").names)
    assert s["joints"]["f1"] == 1.0
    assert s["accel_error_px"] == pytest.approx(0.0, abs=1e-3) and s["accel_error_mm"] == pytest.approx(0.0, abs=1e-3)


def test_jitter_raises_the_acceleration_error_and_a_steady_offset_does_not(clip):
    gt = list(read_pose_file(clip / "panoptic19.jsonl"))
    assert evaluate(_shifted(gt, 3.0), gt)["accel_error_px"] == pytest.approx(0.0, abs=1e-3)
    # every joint of every person 1 px down-right on even frames, 1 px up-left on odd ones: accelerations of
    # (+-4, +-4) px per frame squared
    jittered = [_shifted([r], 1.0 if r.frame % 2 == 0 else -1.0)[0] for r in gt]
    assert evaluate(jittered, gt)["accel_error_px"] == pytest.approx(4 * 2**0.5, abs=1e-3)
    # one joint 10 mm off in 3D, alternately to each side; a frame without a prediction (2 of 0-5) breaks the
    # triples through it, and the frames around it are not made neighbours: only frames 3-5 count
    wobbly = []
    for r in gt:
        xyz = r.poses.xyz.copy()
        xyz[:, 0, 0] += 10.0 if r.frame % 2 == 0 else -10.0
        wobbly.append(replace(r, poses=replace(r.poses, xyz=xyz)))
    gapped = evaluate([r for r in wobbly if r.frame != 2], gt)["accel_error_mm"]
    assert gapped > 0 and gapped == pytest.approx(evaluate(wobbly[3:], gt[3:])["accel_error_mm"])


def test_shift_beyond_the_threshold_scores_zero(clip):
    gt = list(read_pose_file(clip / "mpii16.jsonl"))
    s = evaluate(_shifted(gt, 500.0), gt)
    assert s["pckh@0.5"] == 0.0 and s["oks"]["AP"] == pytest.approx(0.0)
    assert s["joints"]["tp"] == 0 and s["joints"]["recall"] == 0.0


def test_missing_frames_are_empty_predictions(clip):
    gt = list(read_pose_file(clip / "mpii16.jsonl"))
    s = evaluate(_shifted(gt[:3], 0.0), gt)
    persons = [len(r.poses) for r in gt]
    assert s["joints"]["precision"] == 1.0
    assert s["pckh@0.5_all"] < 1.0 and s["gt_persons"] == sum(persons)


def test_other_layout_predictions_are_converted(clip):
    gt = list(read_pose_file(clip / "mpii16.jsonl"))
    pred = list(read_pose_file(clip / "panoptic19.jsonl"))  # same clip, another layout
    s = evaluate(_shifted(pred, 0.0), gt)
    assert s["pckh@0.5"] == 1.0  # head_top / upper_neck are absent from panoptic19: they do not count
    assert s["pckh_per_joint"]["head_top"] is None


def test_match_persons_is_one_to_one():
    gt = np.array([[[0.0, 0.0], [10.0, 0.0]], [[100.0, 0.0], [110.0, 0.0]]])
    ok = np.ones((2, 2), bool)
    pred = np.stack([gt[1] + 1.0, gt[0] + 2.0, gt[0] + 3.0])
    assert sorted(match_persons(pred, gt, ok)) == [(0, 1), (1, 0)]


def test_cli(clip, tmp_path):
    gt = list(read_pose_file(clip / "mpii16.jsonl"))
    pred_path = tmp_path / "pred.jsonl"
    with pred_path.open("w") as fh:
        for r in _shifted(gt, 0.0):
            write_record(fh, r)
    out = tmp_path / "summary.json"
    assert main(["--pred", str(pred_path), "--gt", str(clip / "mpii16.jsonl"), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["pckh@0.5"] == 1.0
    assert main(["--pred", str(pred_path), "--gt", str(tmp_path / "missing.jsonl")]) == 2


def test_cli_runs_a_model_through_the_engine(capsys):
    pytest.importorskip("engine.engine")
    assert main(["--model", "random:hg1_64", "--synth", "0", "--frames", "2", "--size", "128x96",
                 "--persons", "1"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["frames"] == 2 and 0.0 <= s["pckh@0.5_all"] <= 1.0


def _teacher_person(dx: float = 0.0) -> np.ndarray:
    """A standing panoptic19 person (torso 100 px: neck at y 100, body centre at y 200), shifted by dx."""
    from models.layouts import Panoptic as P

    xy = np.zeros((19, 2), np.float32)
    pts = {P.NECK: (300, 100), P.NOSE: (300, 70), P.BODY_CENTER: (300, 200), P.L_SHOULDER: (330, 100),
           P.R_SHOULDER: (270, 100), P.L_ELBOW: (340, 150), P.R_ELBOW: (260, 150), P.L_WRIST: (345, 195),
           P.R_WRIST: (255, 195), P.L_HIP: (320, 200), P.R_HIP: (280, 200), P.L_KNEE: (320, 280),
           P.R_KNEE: (280, 280), P.L_ANKLE: (320, 360), P.R_ANKLE: (280, 360), P.L_EYE: (308, 62),
           P.R_EYE: (292, 62), P.L_EAR: (315, 66), P.R_EAR: (285, 66)}
    for j, v in pts.items():
        xy[j] = v
    return xy + np.float32([dx, 0.0])


def test_teacher_reference_scores_found_pck_and_false_detections():
    from tools.evaluate import TeacherAccumulator

    def poses(people, conf=None):
        xy = np.stack(people) if people else np.zeros((0, 19, 2), np.float32)
        score = np.ones(xy.shape[:2], np.float32) if conf is None else conf
        return Poses(layout="panoptic19", xy=xy, score=score, person_score=np.ones(len(xy), np.float32),
                     track_id=np.arange(len(xy)))

    acc = TeacherAccumulator("panoptic19")
    teacher = poses([_teacher_person(), _teacher_person(200.0)])
    # person 0 found exactly; person 1 found 15 px off (0.15 torso: within PCK@0.2); one false detection far
    # away and one inside the teacher's ignore box (not false)
    acc.add(poses([_teacher_person(), _teacher_person(215.0), _teacher_person(-250.0), _teacher_person(450.0)]),
            teacher, ignore=np.array([[700, 0, 800, 400]]))
    # a frame where the teacher's person is missed (a prediction 1.5 torso away does not count as found) and a
    # teacher person with 3 confident joints that is no reference at all
    weak = np.zeros((2, 19), np.float32)
    weak[0] = 1.0
    weak[1, :3] = 1.0
    acc.add(poses([_teacher_person(150.0)]), poses([_teacher_person(), _teacher_person(400.0)], weak))
    out = acc.summary()
    assert out["teacher_persons"] == 3 and out["found"] == pytest.approx(2 / 3)
    assert out["pck@0.2"] == 1.0 and out["pck@0.2_all"] == pytest.approx(2 / 3)
    assert out["false_persons"] == 2 and out["false"] == pytest.approx(2 / 5)
    acc = TeacherAccumulator("panoptic19")
    acc.add(poses([_teacher_person(25.0)]), poses([_teacher_person()]))
    assert acc.summary()["found"] == 1.0 and acc.summary()["pck@0.2"] == 0.0  # 0.25 torso off: found, not precise
