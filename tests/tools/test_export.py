import importlib.util
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models import build_model
from models.checkpoint import load_checkpoint, manifest_path, read_manifest, save_checkpoint
from tools import export_onnx, export_trt


def _checkpoint(tmp_path, name, **overrides):
    torch.manual_seed(5)
    model = build_model(name, **overrides).eval()
    if model.config.arch == "spm":
        with torch.no_grad():  # lift the root map above the codec's threshold so that people are decoded
            model.heads[-1]["root"].bias.fill_(0.6)
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(model, path, provenance={"data": "none", "epochs": 0})
    return path


def _run(session, feed):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {i.name: feed[i.name] for i in session.get_inputs()})))


@pytest.mark.parametrize("name, overrides", [
    ("hg2", {"arch_args": {"width": 16}, "input_size": (128, 64)}),
    ("spm_small", {"arch_args": {"width": 16}, "input_size": (96, 64)}),
    ("spm_small", {"arch_args": {"width": 16}, "input_size": (96, 64), "codec": {"heatmap_sigma": 1.5}}),
])
def test_onnx_export_with_and_without_decode_agrees_with_pytorch(tmp_path, capsys, name, overrides):
    ckpt = _checkpoint(tmp_path, name, **overrides)
    model = load_checkpoint(ckpt)
    config = model.config
    feed = export_onnx.sample_inputs(config, 4, seed=7)  # batch 4: not the traced batch
    with torch.no_grad():
        maps = model.infer(torch.from_numpy(feed["input"]))

    raw = tmp_path / "raw.onnx"
    assert export_onnx.main([str(ckpt), "-o", str(raw)]) == 0
    got = _run(ort.InferenceSession(str(raw)), feed)
    assert list(got) == list(maps)
    for key in maps:
        np.testing.assert_allclose(got[key], maps[key].numpy(), atol=1e-4, rtol=1e-4)
    manifest = read_manifest(raw)
    assert manifest["kind"] == "onnx" and manifest["export"]["with_decode"] is False
    assert manifest["export"]["outputs"] == list(maps) and manifest["provenance"]["epochs"] == 0
    assert manifest["config"] == config.to_dict()

    dec = tmp_path / "dec.onnx"
    assert export_onnx.main([str(ckpt), "-o", str(dec), "--with-decode"]) == 0
    got = _run(ort.InferenceSession(str(dec)), feed)
    if config.arch == "hourglass":
        xy, score = config.heatmap_codec().decode(maps["heatmaps"], method="dark")
    else:
        want = config.spm_codec().decode(maps, torch.from_numpy(feed["intrinsics"]))
        xy, score = want.xy, want.score
        assert (got["count"] > 0).all() and np.array_equal(got["count"], want.count.numpy())
        np.testing.assert_allclose(got["xyz"], want.xyz.numpy(), atol=1.0, rtol=1e-3)
    np.testing.assert_allclose(got["xy"], xy.numpy(), atol=0.1)
    np.testing.assert_allclose(got["score"], score.numpy(), atol=1e-4)
    assert read_manifest(dec)["export"]["outputs"] == list(got)
    out = capsys.readouterr().out
    assert "FAILED" not in out and out.count(" ok") >= 3


def test_bare_model_name_exports_random_weights_and_says_so(tmp_path, capsys):
    path = tmp_path / "hg1_64.onnx"
    assert export_onnx.main(["--model", "hg1_64", "-o", str(path)]) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().out
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["provenance"]["weights"] == "random" and manifest["config"]["name"] == "hg1_64"


def test_bad_arguments_and_disagreements_are_reported(tmp_path, capsys):
    assert export_onnx.main(["--model", "hg1", str(tmp_path / "x.safetensors"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert export_onnx.main([str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    ref = np.zeros((1, 2, 2), np.float32)
    assert export_onnx.compare("xy", ref, ref + 0.05, with_decode=True)[2]
    assert not export_onnx.compare("xy", ref, ref + 0.2, with_decode=True)[2]
    assert not export_onnx.compare("heatmaps", ref, ref + 1e-3, with_decode=False)[2]
    assert not export_onnx.compare("count", np.array([2]), np.array([3]), with_decode=True)[2]


HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here; this checks the message when it is missing")
def test_export_trt_without_tensorrt_exits_2_naming_the_package(tmp_path, capsys):
    assert export_trt.main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.engine")]) == 2
    err = capsys.readouterr().err
    assert "`tensorrt`" in err and "posestream[trt]" in err


@pytest.mark.tensorrt
def test_export_trt_builds_checks_and_caches(tmp_path, capsys):
    if not HAVE_TRT:
        pytest.skip("tensorrt is not installed (pip install posestream[trt])")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA device and none is available")
    ckpt = _checkpoint(tmp_path, "hg1", arch_args={"width": 32}, input_size=(128, 128))
    onnx = tmp_path / "hg.onnx"
    assert export_onnx.main([str(ckpt), "-o", str(onnx)]) == 0
    args = [str(onnx), "-o", str(tmp_path / "hg.engine"), "--batch", "1", "2", "4", "--cache", str(tmp_path / "c")]
    assert export_trt.main(args) == 0
    assert "built fp32 engine" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "hg.engine")
    assert manifest["kind"] == "tensorrt" and manifest["export"]["keypoint_diff_px"] < 0.1
    assert {"onnx_sha256", "trt_version", "gpu", "precision", "profile"} <= set(manifest["export"])
    assert export_trt.main(args) == 0
    assert "cache hit" in capsys.readouterr().out
