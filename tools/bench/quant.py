"""``python -m tools.bench quant``: int8 (ONNX Runtime static quantisation) against float32, speed and accuracy.

The lever issue 7 names for CPU speed, measured rather than assumed. MODEL's float32 ONNX graph is
quantised by ONNX Runtime: QDQ, per-channel int8 weights, uint8 activations with ranges from the 99.99th
percentile of a calibration clip. The calibration inputs are what the engine itself feeds the network on a
synthetic clip (``--calib-seed``; letterboxed frames for SPM, ROI crops for the hourglass), so they follow
the inputs met at run time. The convolutions that write the outputs stay float32 (their ranges are the
answer). Then both graphs are timed on the same inputs in alternating rounds (a median per graph, so a
noisy machine slows both alike), and both run through ``engine.Engine`` on an evaluation clip
(``--eval-seed``, never the calibration clip) and are scored against its ground truth.

``--save PATH.onnx`` keeps the int8 graph with its manifest beside it: ``posestream video --model PATH.onnx``
runs it. Whether int8 pays depends on the CPU: ONNX Runtime's int8 kernels gain most with AVX512-VNNI or
AVX-VNNI, little with plain AVX2.

Example::

    python -m tools.bench quant --model default --eval-seed 71 --persons 2-5
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from tools.bench.common import emit, machine
from tools.cli import count_range, frame_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench quant", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="zoo NAME, PATH.safetensors or PATH.onnx (default: default)")
    p.add_argument("--calib-seed", type=int, default=700, help="synthetic calibration clip seed (default 700)")
    p.add_argument("--calib-frames", type=int, default=64, help="calibration frames (default 64)")
    p.add_argument("--eval-seed", type=int, default=71, help="synthetic evaluation clip seed (default 71)")
    p.add_argument("--eval-frames", type=int, default=30, help="evaluation frames (default 30)")
    p.add_argument("--persons", type=count_range, default="2-5", help="people per clip, N or MIN-MAX (default 2-5)")
    p.add_argument("--size", type=frame_size, default="640x480", help="clip frame size WxH (default 640x480)")
    p.add_argument("--rounds", type=int, default=8, help="alternating timing rounds (default 8)")
    p.add_argument("--iters", type=int, default=10, help="inferences per graph per round (default 10)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default 0: one per core)")
    p.add_argument("--save", type=Path, help="keep the int8 graph here (.onnx; the manifest goes beside it)")
    return p


def float_graph(spec: str, workdir: Path) -> Path:
    """MODEL as a float32 .onnx with its manifest (a copy in ``workdir``)."""
    from engine.loading import onnx_for, resolve_model
    from models.checkpoint import build_manifest, write_manifest

    loaded = resolve_model(spec)
    if loaded.kind == "tensorrt":
        raise ValueError(f"quant: model {spec!r} is a TensorRT plan; give its checkpoint or ONNX file")
    src = onnx_for(loaded, workdir / "cache")
    path = workdir / "float32.onnx"
    shutil.copyfile(src, path)
    provenance = {**loaded.manifest.get("provenance", {}), "source": spec}
    write_manifest(path, build_manifest(loaded.config, "onnx", provenance, export={"precision": "float32"}))
    return path


def calibration_inputs(model: Path, frames: list[np.ndarray], intrinsics: list) -> list[np.ndarray]:
    """The network inputs ``engine.Engine(model)`` produces on ``frames``, one per backend call."""
    from engine import Engine

    seen: list[np.ndarray] = []
    with Engine(str(model), backend="onnxruntime", max_batch=1) as engine:
        backend = engine.stage.backend
        run = backend.infer

        def record(batch):
            seen.append(batch.detach().cpu().float().numpy().copy())
            return run(batch)

        backend.infer = record
        for frame, k in zip(frames, intrinsics):
            engine.infer([frame], intrinsics=[k])
    return seen


def output_convs(path: Path) -> list[str]:
    """Names of the Conv nodes that write graph outputs."""
    import onnx

    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if n.op_type == "Conv" and outputs & set(n.output)]


def quantize(model: Path, inputs: list[np.ndarray], out: Path) -> Path:
    """``model`` quantised (QDQ, int8 per-channel weights, uint8 activations) into ``out`` with its manifest."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from models.checkpoint import read_manifest, write_manifest

    if not inputs:
        raise ValueError("quant: no calibration inputs (the calibration clip gave the network nothing to run)")
    name = read_manifest(model).get("export", {}).get("inputs", ["input"])[0]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(inputs)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}

    prepared = out.with_name(out.stem + ".pre.onnx")
    # the symbolic shape pass cannot follow the dynamic batch through Resize; ONNX's own shape inference can
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    # ONNX Runtime's quantiser prints progress on stdout (ours carries JSON lines) and warns through the root
    # logger about every 1-D BatchNormalization weight it cannot quantise per channel (they stay float)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            nodes_to_exclude=output_convs(prepared), extra_options={"CalibPercentile": 99.99})
    finally:
        root.setLevel(level)
    prepared.unlink()
    manifest = read_manifest(model)
    manifest["export"] = {**manifest.get("export", {}), "precision": "int8",
                          "quantization": {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8",
                                           "calibration": "percentile 99.99", "calibration_inputs": len(inputs)}}
    write_manifest(out, manifest)
    return out


def time_graphs(paths: dict[str, Path], inputs: list[np.ndarray], rounds: int, iters: int,
                threads: int) -> dict[str, float]:
    """Median ms per inference of each graph, timed in alternating rounds on the same inputs."""
    import torch

    from engine.backends import OnnxRuntimeBackend

    backends = {k: OnnxRuntimeBackend(p, threads=threads) for k, p in paths.items()}
    batches = [torch.from_numpy(x) for x in inputs]
    times: dict[str, list[float]] = {k: [] for k in backends}
    for _ in range(rounds):
        for k, backend in backends.items():
            backend.infer(batches[0])
            t0 = time.perf_counter()
            for i in range(iters):
                backend.infer(batches[i % len(batches)])
            times[k].append((time.perf_counter() - t0) / iters * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.checkpoint import read_manifest
    from tools.demo import headline
    from tools.evaluate import _intrinsics, evaluate, predict
    from tools.synth import generate_clip

    if args.save is not None and args.save.suffix != ".onnx":
        print(f"tools.bench quant: --save {args.save}: must end in .onnx", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="posestream-quant-"))
    try:
        persons, size = args.persons, args.size
        fp32 = float_graph(args.model, workdir)
        layout = read_manifest(fp32)["config"]["layout"]
        calib = list(generate_clip(args.calib_seed, persons, args.calib_frames, size, layout))
        inputs = calibration_inputs(fp32, [f for f, _ in calib], _intrinsics([r for _, r in calib]))
        int8 = quantize(fp32, inputs, args.save or workdir / "int8.onnx")
        info = {"model": args.model, "machine": machine(), "threads": args.threads or "default"}
        ms = time_graphs({"float32": fp32, "int8": int8}, inputs, args.rounds, args.iters, args.threads)
        for k, v in ms.items():
            emit("quant", f"{k} infer_ms", v, "ms", **info)
        emit("quant", "int8 speed-up", ms["float32"] / ms["int8"], "x", **info)
        clip = list(generate_clip(args.eval_seed, persons, args.eval_frames, size, layout))
        frames, gts = [f for f, _ in clip], [r for _, r in clip]
        for k, path in (("float32", fp32), ("int8", int8)):
            summary = evaluate(predict(str(path), frames, _intrinsics(gts), "onnxruntime"), gts)
            for name, value in headline(summary).items():
                if name not in ("frames", "people"):
                    emit("quant", f"{k} {name}", value, "mm" if name.endswith("_mm") else "fraction",
                         eval_seed=args.eval_seed, **info)
    except ValueError as err:
        print(f"tools.bench quant: {err}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.save:
        print(f"tools.bench quant: wrote {args.save} and its manifest", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
