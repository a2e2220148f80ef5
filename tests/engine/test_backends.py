"""The same inputs through every available backend: raw outputs and keypoints agree."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine import Engine
from engine.backends import OnnxRuntimeBackend, TorchBackend, batch_buckets, check_trt_manifest
from engine.loading import make_backend, resolve_model
from models import build_model
from tests.engine.conftest import SPM_ARGS, random_frames

CUDA = torch.cuda.is_available()


def _keypoints_close(a, b, tol=0.5):
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        assert pa.xy.shape == pb.xy.shape
        np.testing.assert_allclose(pa.xy, pb.xy, atol=tol)
        np.testing.assert_allclose(pa.score, pb.score, atol=1e-3)


def test_hourglass_torch_and_onnxruntime_agree(hg_model, onnx_cache):
    frames = random_frames(5)
    outs = []
    for backend in ("torch", "onnxruntime"):
        engine = Engine(hg_model, backend, device="cpu", max_batch=4, cache_dir=onnx_cache, roi=False)
        assert engine.stage.backend.name == backend
        outs.append(engine.infer(frames))
    _keypoints_close(*outs)


def test_raw_outputs_agree(hg_model, onnx_cache):
    loaded = resolve_model(hg_model)
    batch = torch.randn(3, 3, 64, 64)
    a = make_backend(loaded, "torch", "cpu").infer(batch)
    b = make_backend(loaded, "onnxruntime", "cpu", cache_dir=onnx_cache).infer(batch)
    assert set(a) == set(b) == {"heatmaps"}
    torch.testing.assert_close(a["heatmaps"], b["heatmaps"], atol=1e-4, rtol=1e-4)


def test_auto_on_cpu_is_onnxruntime_and_exports_once(hg_model, onnx_cache):
    loaded = resolve_model(hg_model)
    first = make_backend(loaded, "auto", "cpu", cache_dir=onnx_cache)
    assert first.name == "onnxruntime"
    mtime = first.path.stat().st_mtime_ns
    assert make_backend(loaded, "auto", "cpu", cache_dir=onnx_cache).path.stat().st_mtime_ns == mtime


def test_onnxruntime_session_options(hg_model, onnx_cache):
    backend = make_backend(resolve_model(hg_model), "onnxruntime", "cpu", cache_dir=onnx_cache)
    options = backend.session.get_session_options()
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = OnnxRuntimeBackend(backend.path, threads=2, spinning=True).session.get_session_options()
    assert spinning.intra_op_num_threads == 2
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_bad_backend_requests(hg_model):
    loaded = resolve_model(hg_model)
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend(loaded, "tvm")
    with pytest.raises(ValueError, match="needs a .engine plan"):
        make_backend(loaded, "tensorrt")
    with pytest.raises(ValueError, match="not a zoo model"):
        resolve_model("no_such_model")


def test_trt_manifest_mismatch_is_a_clear_error():
    manifest = {"export": {"trt_version": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3"}}
    check_trt_manifest(manifest, "m.engine", "10.3.0", "NVIDIA H100 80GB HBM3")
    with pytest.raises(ValueError, match="trt_version='10.3.0'.*'10.9.0'"):
        check_trt_manifest(manifest, "m.engine", "10.9.0", "NVIDIA H100 80GB HBM3")
    with pytest.raises(ValueError, match="gpu"):
        check_trt_manifest(manifest, "m.engine", "10.3.0", "NVIDIA A10")
    with pytest.raises(ValueError, match="lacks field 'gpu'"):
        check_trt_manifest({"trt_version": "10.3.0"}, "m.engine", "10.3.0", "x")


def test_batch_buckets():
    assert batch_buckets(8) == (1, 2, 4, 8)
    assert batch_buckets(6) == (1, 2, 4, 6)
    assert batch_buckets(1) == (1,)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_graphs_fp16_agree_with_cpu(hg_model):
    cpu = TorchBackend(hg_model, "cpu")
    batch = torch.randn(5, 3, 64, 64)
    want = cpu.infer(batch)["heatmaps"]
    gpu = TorchBackend(copy.deepcopy(hg_model), "cuda", fp16=True, cuda_graphs=True, max_batch=8)
    for b in (5, 3, 5):  # bucket 8 captured once, replayed with padding
        got = gpu.infer(batch[:b].cuda())["heatmaps"].float().cpu()
        torch.testing.assert_close(got, want[:b], atol=5e-2, rtol=5e-2)


def _build_plan(onnx_path, plan_path, input_size, max_batch):
    """A TensorRT plan (FP32, batch 1..max_batch) from an ONNX file, with its manifest beside it."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    w, h = input_size
    profile.set_shape("input", (1, 3, h, w), (max_batch, 3, h, w), (max_batch, 3, h, w))
    config.add_optimization_profile(profile)
    plan_path.write_bytes(bytes(builder.build_serialized_network(network, config)))
    return trt.__version__, torch.cuda.get_device_name(0)


@pytest.mark.tensorrt
def test_tensorrt_plan_agrees_with_torch(hg_model, onnx_cache, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not CUDA:
        pytest.skip("TensorRT needs a CUDA device")
    from engine.loading import onnx_for
    from models.checkpoint import build_manifest, write_manifest

    plan = tmp_path / "hg.engine"
    version, gpu = _build_plan(onnx_for(resolve_model(hg_model), onnx_cache), plan, (64, 64), 4)
    write_manifest(plan, build_manifest(hg_model.config, "tensorrt", export={"trt_version": version, "gpu": gpu}))
    frames = random_frames(6)
    trt_out = Engine(str(plan), "auto", device="cuda", max_batch=4, roi=False)
    assert trt_out.stage.backend.name == "tensorrt"
    ref = Engine(copy.deepcopy(hg_model), "torch", device="cuda", max_batch=4, roi=False,
                 torch_options={"fp16": False, "cuda_graphs": False})
    _keypoints_close(trt_out.infer(frames), ref.infer(frames))
    write_manifest(plan, build_manifest(hg_model.config, "tensorrt", export={"trt_version": "0.0", "gpu": gpu}))
    with pytest.raises(ValueError, match="trt_version"):
        Engine(str(plan), "tensorrt", device="cuda")


def test_spm_torch_and_onnxruntime_agree(spm_model, onnx_cache):
    frames = random_frames(3, seed=7)
    outs = [Engine(spm_model, b, device="cpu", cache_dir=onnx_cache).infer(frames) for b in ("torch", "onnxruntime")]
    assert sum(len(p) for p in outs[0]) > 0
    _keypoints_close(*outs)
    for a, b in zip(*outs):
        np.testing.assert_allclose(a.xyz, b.xyz, rtol=1e-3, atol=1.0)


def test_spm_with_joint_heatmaps_agrees_on_torch_and_onnxruntime(onnx_cache):
    torch.manual_seed(4)
    model = build_model("spm_small", **{**SPM_ARGS, "codec": {**SPM_ARGS["codec"], "heatmap_sigma": 1.5}}).eval()
    with torch.no_grad():  # root peaks and joint peaks from random weights
        model.heads[-1]["root"].bias += 0.8
        model.heads[-1]["heatmaps"].bias += 0.3
    frames = random_frames(3, seed=2)
    outs = [Engine(model, backend, device="cpu", cache_dir=onnx_cache).infer(frames)
            for backend in ("torch", "onnxruntime")]
    assert sum(len(p) for p in outs[0]) > 0
    _keypoints_close(*outs)
    poses = [p for p in outs[0] if len(p)]  # joint scores are the heatmap maxima, not the person's score
    assert any((p.score != p.person_score[:, None]).any() for p in poses)
