"""The engine runs a model's 3D refiner after decoding (tiny random models and refiners, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Engine
from engine.stage import Stage
from models.checkpoint import save_checkpoint
from models.refine3d import Refine3D, Refine3DConfig, attach, save_refine3d
from tests.engine.conftest import HG_ARGS, random_frames, random_spm


def _refiner(seed: int = 0) -> Refine3D:
    """A refiner that is not the identity (random output layer) with BatchNorm statistics of plausible rows."""
    torch.manual_seed(seed)
    model = Refine3D(Refine3DConfig(width=32, blocks=1)).train()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.05)
        rows = torch.randn(64, 19, 3) * 300 + torch.tensor([0.0, 0.0, 4000.0])
        model(rows, torch.rand(64, 19))
    return model.eval()


@pytest.fixture(scope="module")
def spm3d():
    model = random_spm(4, layout="panoptic19")
    with torch.no_grad():  # the root (the depth anchor: Z / f_x) metres away, as people are
        model.heads[-1]["depth"].bias[model.config.spm_codec().anchor] += 40.0
    return model


def test_the_engine_output_equals_the_refiner_run_by_hand_on_the_decoded_poses(spm3d):
    frames = random_frames(3, seed=8, sizes=((160, 120), (128, 96)))
    refiner = _refiner()
    plain = Engine(spm3d, "torch", device="cpu", refine3d=False).infer(frames)
    refined = Engine(spm3d, "torch", device="cpu", refine3d=refiner).infer(frames)
    assert sum(len(p) for p in plain) > 0, "the random model must find people for this test to mean anything"
    for a, b in zip(plain, refined):
        assert np.array_equal(a.xy, b.xy) and np.array_equal(a.score, b.score)  # 2D untouched
        with torch.no_grad():
            want = refiner(torch.from_numpy(a.xyz), torch.from_numpy(a.score)).numpy()
        np.testing.assert_allclose(b.xyz, want, atol=1e-3, rtol=1e-5)
        if len(a):
            assert np.abs(b.xyz - a.xyz).max() > 1.0


def test_a_checkpoint_runs_the_refiner_its_manifest_names(tmp_path, spm3d):
    path = tmp_path / "net.safetensors"
    save_checkpoint(spm3d, path)
    assert Stage(str(path), "torch", "cpu").refine3d is None  # names none
    save_refine3d(_refiner(1), tmp_path / "r.safetensors")
    attach(path, tmp_path / "r.safetensors")
    frames = random_frames(2, seed=9)
    stage = Engine(str(path), "torch", device="cpu").stage
    assert isinstance(stage.refine3d, Refine3D) and not stage.refine3d.training
    off = Engine(str(path), "torch", device="cpu", refine3d=False)
    assert off.stage.refine3d is None
    by_path = Engine(str(path), "torch", device="cpu", refine3d=str(tmp_path / "r.safetensors")).infer(frames)
    named = Engine(str(path), "torch", device="cpu").infer(frames)
    for a, b in zip(named, by_path):
        np.testing.assert_allclose(a.xyz, b.xyz, atol=1e-3)


def test_onnxruntime_and_torch_backends_refine_alike(tmp_path, spm3d, onnx_cache):
    frames = random_frames(2, seed=10)
    refiner = _refiner(2)
    ort = Engine(spm3d, "onnxruntime", device="cpu", refine3d=refiner, cache_dir=onnx_cache).infer(frames)
    pt = Engine(spm3d, "torch", device="cpu", refine3d=refiner).infer(frames)
    for a, b in zip(ort, pt):
        np.testing.assert_allclose(a.xyz, b.xyz, atol=0.5)


def test_a_refiner_needs_a_3d_model_of_its_layout(hg_model, spm_model):
    with pytest.raises(ValueError, match="needs a 3D \\(SPM\\) model"):
        Engine(hg_model, "torch", device="cpu", refine3d=_refiner())
    with pytest.raises(ValueError, match="layout 'panoptic19' differs from the model's 'coco17'"):
        Engine(spm_model, "torch", device="cpu", refine3d=_refiner())
    with pytest.raises(ValueError, match="expected True, False, a refiner path"):
        Engine(spm_model, "torch", device="cpu", refine3d=3)
    assert Engine("random:hg1", "torch", device="cpu", model_args=HG_ARGS).stage.refine3d is None
