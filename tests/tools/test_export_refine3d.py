"""Exports keep the 3D refiner a checkpoint names; tools.ship_refine3d attaches one; PA-MPJPE."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.stage import Stage
from models import build_model
from models.checkpoint import file_sha256, read_manifest, save_checkpoint
from models.refine3d import Refine3D, Refine3DConfig, load_refine3d, read_refine3d_manifest, save_refine3d
from tools import export_onnx, ship_refine3d
from tools.metrics import pa_mpjpe


def _model_with_refiner(tmp_path):
    torch.manual_seed(5)
    model = build_model("spm_small", layout="panoptic19", arch_args={"width": 16}, input_size=(96, 64),
                        codec={"heatmap_sigma": 1.5}).eval()
    with torch.no_grad():  # people above the root threshold, their roots metres away
        model.heads[-1]["root"].bias.fill_(0.6)
        model.heads[-1]["depth"].bias[model.config.spm_codec().anchor] += 40.0
    path = tmp_path / "net.safetensors"
    save_checkpoint(model, path)
    refiner = Refine3D(Refine3DConfig(width=32, blocks=1)).eval()
    with torch.no_grad():
        refiner.head.weight.normal_(0, 0.05)
    trained = tmp_path / "run" / "best.safetensors"
    trained.parent.mkdir()
    save_refine3d(refiner, trained)
    assert ship_refine3d.main([str(trained), "--model", str(path), "--dtype", "float32"]) == 0
    return path, model, load_refine3d(tmp_path / "net.refine3d.safetensors")


def test_exports_keep_the_refiner(tmp_path):
    path, model, refiner = _model_with_refiner(tmp_path)
    assert read_manifest(path)["refine3d"]["file"] == "net.refine3d.safetensors"
    raw = tmp_path / "out" / "raw.onnx"
    assert export_onnx.main([str(path), "-o", str(raw)]) == 0
    entry = read_manifest(raw)["refine3d"]
    assert entry == {"file": "raw.refine3d.safetensors", "sha256": file_sha256(raw.with_name("raw.refine3d.safetensors"))}
    assert isinstance(Stage(str(raw), "onnxruntime", "cpu").refine3d, Refine3D)  # the engine runs it on the .onnx
    assert export_onnx.main([str(path), "-o", str(tmp_path / "plain.onnx"), "--no-refine3d"]) == 0
    assert "refine3d" not in read_manifest(tmp_path / "plain.onnx")

    dec = tmp_path / "dec.onnx"
    assert export_onnx.main([str(path), "-o", str(dec), "--with-decode"]) == 0
    manifest = read_manifest(dec)
    assert manifest["export"]["refine3d_in_graph"] == "net.refine3d.safetensors" and "refine3d" not in manifest
    feed = export_onnx.sample_inputs(model.config, 3, seed=4)
    session = ort.InferenceSession(str(dec))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    with torch.no_grad():
        d = model.config.spm_codec().decode(model.infer(torch.from_numpy(feed["input"])),
                                            torch.from_numpy(feed["intrinsics"]))
        want = refiner(d.xyz, d.score)
    assert int(d.count.sum()) > 0
    np.testing.assert_allclose(got["xyz"], want.numpy(), atol=0.5, rtol=1e-4)
    assert np.abs(got["xyz"] - d.xyz.numpy()).max() > 1.0  # refined, not the decoder's own 3D


def test_ship_refine3d_errors_are_clear(tmp_path, capsys):
    save_refine3d(Refine3D(Refine3DConfig(width=8, blocks=0)), tmp_path / "r.safetensors")
    assert ship_refine3d.main([str(tmp_path / "r.safetensors"), "--model", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert read_refine3d_manifest(tmp_path / "r.safetensors")["config"]["width"] == 8


def test_pa_mpjpe_ignores_scale_rotation_and_place_but_not_shape():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 300, (5, 19, 3))
    c, s = np.cos(0.8), np.sin(0.8)
    turn = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    moved = 1.3 * gt @ turn.T + np.array([100.0, -50.0, 2000.0])
    mask = np.ones((5, 19), bool)
    assert pa_mpjpe(moved, gt, mask) < 1e-6
    noisy = moved + rng.normal(0, 20, moved.shape)
    assert 10 < pa_mpjpe(noisy, gt, mask) < 40
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a reflection is not a rotation
    assert pa_mpjpe(mirrored, gt, mask) > 50
    few = mask.copy()
    few[:, 2:] = False
    assert np.isnan(pa_mpjpe(moved, gt, few))  # fewer than three joints: nobody counts
    with pytest.raises(ValueError, match="must both be \\[N,K,3\\]"):
        pa_mpjpe(gt[..., :2], gt[..., :2], mask)


def test_evaluate_reports_pa_mpjpe_beside_mpjpe(tmp_path):
    from dataclasses import replace

    from models.layouts import PANOPTIC19
    from stream.posefile import read_pose_file
    from tools.evaluate import evaluate
    from tools.synth.__main__ import main as synth_main

    assert synth_main(["--seed", "8", "--persons", "2-3", "--frames", "3", "--size", "320x240",
                       "--layout", "panoptic19", "--gt", str(tmp_path / "gt.jsonl")]) == 0
    gt = list(read_pose_file(tmp_path / "gt.jsonl"))
    bigger = []
    for r in gt:  # every person 25% larger about its root: a scale error, the right shape
        root = PANOPTIC19.root_point(r.poses.xyz)[:, None]
        xyz = (root + 1.25 * (r.poses.xyz - root)).astype(np.float32)
        bigger.append(replace(r, poses=replace(r.poses, xyz=xyz, score=np.minimum(r.poses.score, 1.0))))
    s = evaluate(bigger, gt)
    assert s["mpjpe_mm"] > 50 and s["pa_mpjpe_mm"] == pytest.approx(0.0, abs=0.5)
