import json

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models import build_model
from models.checkpoint import load_checkpoint, read_manifest, save_checkpoint
from tools.bench import quant


def _checkpoint(tmp_path):
    torch.manual_seed(3)
    model = build_model("spm_small", arch_args={"width": 16}, input_size=(96, 64)).eval()
    with torch.no_grad():  # lift the root map above the codec's threshold so that people are decoded
        model.heads[-1]["root"].bias.fill_(0.6)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, path, provenance={"data": "none", "epochs": 0})
    return path, model.config


def test_quant_bench_writes_an_int8_graph_that_runs_and_reports_both_precisions(tmp_path, capsys):
    ckpt, config = _checkpoint(tmp_path)
    saved = tmp_path / "tiny-int8.onnx"
    rc = quant.main(["--model", str(ckpt), "--calib-frames", "6", "--eval-frames", "3", "--rounds", "2",
                     "--iters", "2", "--size", "160x120", "--persons", "1-2", "--save", str(saved)])
    assert rc == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # nothing but JSON lines
    cases = {r["case"]: r["value"] for r in records}
    assert cases["float32 infer_ms"] > 0 and cases["int8 infer_ms"] > 0
    assert np.isclose(cases["int8 speed-up"], cases["float32 infer_ms"] / cases["int8 infer_ms"], rtol=1e-3)
    metrics = {c.split(" ", 1)[1] for c in cases if c.startswith(("float32 ", "int8 ")) and c.split(" ", 1)[1] not in ("infer_ms", "speed-up")}
    assert {"oks_ap", "joint_f1", "mpjpe_mm"} <= metrics
    assert all(f"{p} {m}" in cases for p in ("float32", "int8") for m in metrics)

    manifest = read_manifest(saved)
    assert manifest["export"]["precision"] == "int8" and manifest["config"] == config.resolved().to_dict()
    assert manifest["export"]["quantization"]["calibration_inputs"] == 6
    graph = onnx.load(str(saved)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    producers = {o: n for n in graph.node for o in n.output}
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for out in graph.output:  # the output convolutions keep float weights
        node = producers[out.name]
        assert node.op_type == "Conv" and node.input[1] in floats

    # the int8 graph approximates the float one it came from on an engine-made input
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in load_checkpoint(ckpt).eval().infer(torch.from_numpy(x)).items()}
    session = ort.InferenceSession(str(saved), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape
        assert np.corrcoef(got[k].ravel(), want[k].ravel())[0, 1] > 0.9, k


def test_quant_bench_rejects_a_save_path_that_is_not_onnx(tmp_path, capsys):
    assert quant.main(["--save", str(tmp_path / "int8.bin")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
