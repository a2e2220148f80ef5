"""The 3D refiner's data tool, error model, augmentation and trainer (tools/data/refine3d.py, tools/train/refine3d*.py)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from models.layouts import PANOPTIC19
from models.refine3d import load_refine3d, read_refine3d_manifest
from tools.data import refine3d as data
from tools.train.__main__ import main as train_main
from tools.train.config import TrainConfig
from tools.train.refine3d import Refine3DTrainer
from tools.train.refine3d_data import Augment, ErrorModel, mirror, rotate_about_root

ROOTS = tuple(PANOPTIC19.root_joints)
ARMS = [4, 5, 10, 11]  # elbows and wrists


def _bones(xyz: np.ndarray) -> np.ndarray:
    return np.stack([np.linalg.norm(xyz[..., a, :] - xyz[..., b, :], axis=-1) for a, b in PANOPTIC19.bones], -1)


def test_the_data_tool_writes_matched_predictions_and_true_poses(tmp_path):
    out = tmp_path / "d"
    args = ["--out", str(out), "--clips", "2", "--frames", "2", "--chunk", "1", "--poses", "300", "--persons", "2-3",
            "--seed", "777"]
    assert data.main(args) == 0
    pred, poses = data.load_records(out), data.load_records(out, "poses")
    assert sorted(p.name for p in out.iterdir()) == ["poses-777.npz", "pred-000000000000777.npz",
                                                     "pred-000000000000778.npz"]
    n = len(pred["seed"])
    assert n >= 4 and set(pred["seed"].tolist()) == {777, 778} and pred["pred_xyz"].shape == (n, 19, 3)
    assert np.median(pred["match_px"] / pred["gt_size"]) < 0.2  # the matches are the same people
    # the decoded 3D back-projects onto the decoded 2D through the clip's camera
    from tools.synth.generate import sample_scene

    cam = sample_scene(777, (2, 3), (640, 480)).camera
    rows = pred["seed"] == 777
    xyz, xy = pred["pred_xyz"][rows], pred["pred_xy"][rows]
    uv = np.stack([cam.fx * xyz[..., 0] / xyz[..., 2] + cam.cx, cam.fy * xyz[..., 1] / xyz[..., 2] + cam.cy], -1)
    np.testing.assert_allclose(uv, xy, atol=0.05)
    assert poses["gt_xyz"].shape == (300, 19, 3) and poses["in_frame"].any(1).all()
    assert (poses["gt_xyz"][..., 2] >= 1000).all()
    stamp = (out / "pred-000000000000777.npz").stat().st_mtime_ns
    assert data.main(args) == 0 and (out / "pred-000000000000777.npz").stat().st_mtime_ns == stamp  # kept
    with pytest.raises(ValueError, match="no pred-\\*.npz chunks"):
        data.load_records(tmp_path)


def test_mirror_and_rotation_keep_the_body_and_its_root():
    xyz = torch.from_numpy(data.true_poses(5, 20, (640, 480), "panoptic19")["gt_xyz"])
    flip = PANOPTIC19.flip_index
    torch.testing.assert_close(mirror(mirror(xyz, flip), flip), xyz)
    assert torch.allclose(mirror(xyz, flip)[:, 3, 0], -xyz[:, 9, 0])  # a left shoulder becomes a right one
    turned = rotate_about_root(xyz, torch.full((20,), 0.7), ROOTS)
    torch.testing.assert_close(turned[:, ROOTS[0]], xyz[:, ROOTS[0]])
    np.testing.assert_allclose(_bones(turned.numpy()), _bones(xyz.numpy()), rtol=1e-4, atol=0.05)
    same = Augment(flip=True, rotate_deg=30.0).geometry([xyz, xyz.clone()], flip, ROOTS, np.random.default_rng(0))
    torch.testing.assert_close(same[0], same[1])  # one draw for every tensor of a sample
    lost = (Augment(drop_joints=0.5).drop(torch.ones(2000, 19), np.random.default_rng(1)) == 0).float()
    assert 0.22 < lost.mean() < 0.28  # each sample's rate uniform in [0, 0.5]
    assert lost.mean(1).min() < 0.06 and lost.mean(1).max() > 0.4


def _biased(gt: np.ndarray, seed: int) -> np.ndarray:
    """A first stage that puts elbows and wrists 150 mm too low (raised arms pulled down) and jitters every joint."""
    rng = np.random.default_rng(seed)
    pred = gt + rng.normal(0, 15, gt.shape)
    pred[:, ARMS, 1] += 150.0
    return pred.astype(np.float32)


def test_the_error_model_reproduces_the_measured_errors_per_joint_and_axis():
    gt = torch.from_numpy(data.true_poses(6, 3000, (640, 480), "panoptic19")["gt_xyz"])
    pred = torch.from_numpy(_biased(gt.numpy(), 0))
    valid = torch.ones(3000, 19, dtype=torch.bool)
    valid[:1500, 5] = False
    inside = torch.ones(3000, 19, dtype=torch.bool)
    score = torch.full((3000, 19), 0.75)
    errors = ErrorModel.measure(pred, score, valid, gt, inside, ROOTS)
    assert abs(errors.valid_in[5] - 0.5) < 1e-6 and errors.valid_in[4] == 1.0
    fresh = torch.from_numpy(data.true_poses(7, 3000, (640, 480), "panoptic19")["gt_xyz"])
    noised, flags = errors.noised(fresh, inside, ROOTS, np.random.default_rng(2))
    assert set(flags.unique().tolist()) <= {0.0, 0.75}  # a valid joint takes the score measured with its error
    again = ErrorModel.measure(noised, flags, flags > 0, fresh, inside, ROOTS)
    for j in (0, 4, 5, 7, 10):
        np.testing.assert_allclose(again.joint_errors[j].mean(0), errors.joint_errors[j].mean(0), atol=6.0)
        np.testing.assert_allclose(again.joint_errors[j].std(0), errors.joint_errors[j].std(0), rtol=0.15, atol=3.0)
    assert abs(float((flags[:, 5] > 0).float().mean()) - 0.5) < 0.05
    assert errors.summary(PANOPTIC19.names)["joints"]["l_wrist"]["valid_in_frame"] == 0.5


def _write_pairs(folder, seed: int, count: int) -> None:
    poses = data.true_poses(seed, count, (640, 480), "panoptic19")
    gt = poses["gt_xyz"]
    n = len(gt)
    folder.mkdir(parents=True)
    np.savez(folder / f"pred-{seed}.npz", pred_xyz=_biased(gt, seed), pred_score=np.ones((n, 19), np.float32),
             pred_xy=np.zeros((n, 19, 2), np.float32), gt_xyz=gt, gt_vis=np.where(poses["in_frame"], 2, 0),
             gt_xy=np.zeros((n, 19, 2), np.float32), match_px=np.ones(n, np.float32),
             gt_size=np.full(n, 100.0, np.float32), seed=np.full(n, seed), frame=np.zeros(n, int),
             track_id=np.zeros(n, int))
    np.savez(folder / f"poses-{seed}.npz", **data.true_poses(seed + 1, count, (640, 480), "panoptic19"))


def test_training_the_refiner_removes_a_systematic_error_and_resumes(tmp_path):
    """About 20 s on one CPU thread: a first stage that pulls arms down; the refiner learns to put them back."""
    torch.set_num_threads(1)
    _write_pairs(tmp_path / "train", 11, 4000)
    _write_pairs(tmp_path / "val", 12, 500)
    config = tmp_path / "r.toml"
    config.write_text(f"""[refine3d]
data = "{tmp_path / 'train'}"
val_data = "{tmp_path / 'val'}"
width = 128
blocks = 1
dropout = 0.1
noisy_share = 0.3
bone_weight = 1.0
drop_joints = 0.2
[data]
batch_size = 128
[optim]
lr = 2e-3
epochs = 4
seed = 3
[output]
dir = "{tmp_path / 'run'}"
tensorboard = false
""")
    assert train_main(["--config", str(config)]) == 0
    run = tmp_path / "run"
    with (run / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    manifest = read_refine3d_manifest(run / "best.safetensors")
    before = manifest["provenance"]["first_stage_val"]["mpjpe_mm"]
    best = min(float(r["val_mpjpe_mm"]) for r in rows)
    assert best < 0.7 * before, (before, rows)
    assert manifest["provenance"]["metrics"]["val_mpjpe_mm"] == best
    bias = manifest["provenance"]["first_stage_errors"]["joints"]["l_wrist"]["mean"]
    assert 120 < bias[1] < 180  # the measured error: the wrist 150 mm low (y is down), relative to the root
    refiner = load_refine3d(run / "best.safetensors")
    assert refiner.config.width == 128 and not refiner.training
    assert train_main(["--config", str(config), "--epochs", "5", "--resume"]) == 0
    with (run / "log.csv").open() as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1, 2, 3, 4]


def test_the_refine3d_section_is_checked():
    with pytest.raises(ValueError, match="unknown keys \\['wdith'\\] in \\[refine3d\\]"):
        Refine3DTrainer(TrainConfig(refine3d={"wdith": 3}))
    with pytest.raises(ValueError, match="noisy_share must be in \\[0, 1\\)"):
        Refine3DTrainer(TrainConfig(refine3d={"noisy_share": 1.0}))
