"""``python -m tools.bench engine`` runs end to end on a tiny model and prints one JSON line per stage."""

from __future__ import annotations

import json

from tools.bench import engine as bench


def test_bench_engine_prints_stage_records(capsys, tmp_path):
    args = ["--model", "random:hg1", "--backend", "onnxruntime", "--batch", "2", "--iters", "1", "--warmup", "0",
            "--frame-size", "80x60", "--cache-dir", str(tmp_path),
            "--model-args", '{"arch_args": {"width": 16, "depth": 2}, "input_size": [64, 64]}']
    assert bench.main(args) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cases = {r["case"]: r for r in records}
    assert {"pre_ms", "infer_ms", "post_ms", "copy_ms", "images_per_s"} <= set(cases)
    assert cases["infer_ms"]["backend"] == "onnxruntime" and cases["infer_ms"]["frame_size"] == [80, 60]
    assert all(r["value"] > 0 for r in records)


def test_bench_engine_bad_model_is_a_clear_error(capsys):
    assert bench.main(["--model", "random:no_such_net", "--backend", "torch"]) == 2
    assert "unknown model 'no_such_net'" in capsys.readouterr().err
