import json

import numpy as np
import pytest
import torch

from models import build_model
from models.checkpoint import file_sha256, read_manifest, save_checkpoint
from models.layouts import PANOPTIC19
from models.refine3d import (
    Refine3D,
    Refine3DConfig,
    attach,
    load_refine3d,
    named_refine3d,
    read_refine3d_manifest,
    save_refine3d,
)


def _people(n: int, seed: int = 0) -> torch.Tensor:
    """n camera-space poses [n,19,3] mm: a standing skeleton, jittered, 2-8 m in front of the camera."""
    rng = np.random.default_rng(seed)
    base = np.zeros((19, 3))
    base[[0, 1, 2]] = [[0, -500, 0], [0, -700, -80], [0, 0, 0]]
    for side, s in ((3, 1), (9, -1)):  # shoulder, elbow, wrist, hip, knee, ankle
        base[side:side + 3] = [[s * 220, -480, 0], [s * 250, -180, 0], [s * 260, 60, 0]]
        base[side + 3:side + 6] = [[s * 150, 0, 0], [s * 160, 420, 0], [s * 160, 830, 0]]
    base[15:] = [[60, -760, -60], [120, -730, 10], [-60, -760, -60], [-120, -730, 10]]
    poses = base + rng.normal(0, 15, (n, 19, 3))
    poses += np.stack([rng.uniform(-1500, 1500, n), rng.uniform(-300, 300, n), rng.uniform(2000, 8000, n)], -1)[:, None]
    return torch.tensor(poses, dtype=torch.float32)


def _trained(config: Refine3DConfig | None = None) -> Refine3D:
    """A refiner whose output layer is not zero (so it is not the identity) and whose BatchNorm has statistics."""
    torch.manual_seed(0)
    model = Refine3D(config or Refine3DConfig(width=32, blocks=1)).train()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.05)
        model(_people(64), torch.ones(64, 19))
    return model.eval()


def test_an_untrained_refiner_returns_its_input_and_passes_padded_rows_through():
    model = Refine3D(Refine3DConfig(width=32, blocks=1)).eval()
    xyz = torch.zeros(2, 5, 19, 3)
    xyz[0, :3] = _people(3).reshape(3, 19, 3)  # rows 3-4 of image 0 and all of image 1: padding (zeros)
    with torch.no_grad():
        out = model(xyz, torch.ones(2, 5, 19))
    assert out.shape == xyz.shape
    torch.testing.assert_close(out, xyz, atol=0.05, rtol=0)
    assert torch.equal(out[1], xyz[1]) and torch.equal(out[0, 3:], xyz[0, 3:])


def test_the_root_stays_and_the_output_depends_on_the_input():
    model = _trained()
    xyz, score = _people(8, seed=1), torch.ones(8, 19)
    with torch.no_grad():
        out = model(xyz, score)
    root = PANOPTIC19.root_joints[0]
    torch.testing.assert_close(out[:, root], xyz[:, root])
    assert (out - xyz).abs().max() > 1.0  # not the identity once trained


def test_invalid_joints_are_flagged_by_score_depth_and_finiteness():
    model = Refine3D(Refine3DConfig(min_score=0.1))
    xyz, score = _people(1), torch.ones(1, 19)
    score[0, 5] = 0.05
    xyz[0, 8, 2] = -300.0  # behind the camera: out of range
    xyz[0, 11] = float("nan")
    valid = model.valid(xyz, score)
    assert valid.sum() == 16 and not valid[0, [5, 8, 11]].any()
    with torch.no_grad():
        out = model.eval()(xyz, score)
    assert torch.isfinite(out).all()


def test_root_depth_correction_moves_the_root_along_its_ray():
    model = _trained(Refine3DConfig(width=32, blocks=1, root_depth=True))
    with torch.no_grad():
        model.head.bias[-1] = np.log(1.1)
        model.head.weight[-1] = 0
        xyz = _people(4, seed=2)
        out = model(xyz, torch.ones(4, 19))
    root = PANOPTIC19.root_joints[0]
    torch.testing.assert_close(out[:, root], xyz[:, root] * 1.1)


def test_round_trip_without_pickle_and_errors_name_the_file(tmp_path):
    model = _trained()
    path = tmp_path / "r.safetensors"
    save_refine3d(model, path, {"data": "test"})
    manifest = read_refine3d_manifest(path)
    assert manifest["format"] == "posestream.refine3d" and manifest["config"]["width"] == 32
    assert manifest["weights"]["sha256"] == file_sha256(path) and manifest["provenance"]["data"] == "test"
    loaded = load_refine3d(path)
    xyz = _people(5, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(xyz, torch.ones(5, 19)), model(xyz, torch.ones(5, 19)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="r.safetensors.*corrupted or truncated"):
        load_refine3d(path)
    with pytest.raises(ValueError, match="not a 3D refiner"):
        (tmp_path / "x.json").write_text(json.dumps({"format": "posestream.model"}))
        read_refine3d_manifest(tmp_path / "x.safetensors")


def test_attach_names_the_refiner_and_leaves_the_model_weights_alone(tmp_path):
    spm = build_model("spm_small", layout="panoptic19", arch_args={"width": 16, "depth": 2}, input_size=(96, 64))
    model_path = tmp_path / "net.safetensors"
    save_checkpoint(spm, model_path)
    weights = model_path.read_bytes()
    refiner = tmp_path / "run" / "best.safetensors"
    refiner.parent.mkdir()
    save_refine3d(_trained(), refiner, {"epochs": 3})
    placed = attach(model_path, refiner, {"note": 1}, dtype="float16")
    assert placed == tmp_path / "net.refine3d.safetensors" and model_path.read_bytes() == weights
    manifest = read_manifest(model_path)
    assert manifest["refine3d"] == {"file": "net.refine3d.safetensors", "sha256": file_sha256(placed)}
    assert named_refine3d(model_path, manifest) == placed
    info = read_refine3d_manifest(placed)
    assert info["weights"]["dtype"] == "float16" and info["provenance"] == {**info["provenance"], "epochs": 3, "note": 1}
    save_refine3d(_trained(Refine3DConfig(width=16, blocks=1)), placed)  # replaced behind the model's back
    with pytest.raises(ValueError, match="refine3d.sha256"):
        named_refine3d(model_path, manifest)
    placed.unlink()
    with pytest.raises(ValueError, match="is missing"):
        named_refine3d(model_path, manifest)


def test_attach_refuses_another_layout(tmp_path):
    spm = build_model("spm_small", arch_args={"width": 16, "depth": 2}, input_size=(96, 64))  # coco17
    save_checkpoint(spm, tmp_path / "net.safetensors")
    save_refine3d(_trained(), tmp_path / "r.safetensors")
    with pytest.raises(ValueError, match="layout 'panoptic19' differs"):
        attach(tmp_path / "net.safetensors", tmp_path / "r.safetensors")


def test_the_fused_copy_computes_the_same_with_fewer_layers():
    model = _trained(Refine3DConfig(width=32, blocks=2, root_depth=True))
    fused = model.fused()
    xyz, score = _people(16, seed=4), torch.rand(16, 19)
    with torch.no_grad():
        torch.testing.assert_close(fused(xyz, score), model(xyz, score), atol=0.01, rtol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())  # the original is untouched
