"""``python -m tools.bench models``: parameters, GMACs, CPU latency and throughput of every model factory.

For each factory (at its own input size, random weights): parameter count (M), multiply-accumulates of
one image (GMAC, via ``torch.utils.flop_counter``: FLOPs / 2), then on the CPU with ``--threads`` threads
the median latency at batch 1 (ms) and the throughput at batch 8 (images/s) for PyTorch (eval, no_grad)
and ONNX Runtime (a fresh export of the raw maps). With a CUDA device, also fp16 throughput at batch
1/16/64 replayed through CUDA graphs.

Options: ``--models hg1_64 spm_small`` picks factories, ``--quick`` skips batch 8 for models above 5 GMAC
and times fewer repeats, ``--backends torch onnxruntime`` picks the CPU backends.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from tools.bench.common import emit, machine, time_call

BENCH = "models"


def build_parser() -> argparse.ArgumentParser:
    from models import MODELS

    p = argparse.ArgumentParser(prog="python -m tools.bench models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="factories (default all)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="CPU threads (default all cores; on a loaded machine 1 avoids OpenMP spin-wait collapse)")
    p.add_argument("--quick", action="store_true", help="skip batch 8 above 5 GMAC; fewer repeats")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timing per measurement (default 3)")
    p.add_argument("--no-gpu", action="store_true", help="skip the CUDA fp16 measurements even with a GPU")
    return p


def gmacs(model, batch) -> float:
    """Multiply-accumulates (GMAC) of one forward pass of ``model.infer`` on ``batch`` [1,3,H,W]."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.infer(batch)
    return counter.get_total_flops() / 2e9


def measure(fn, batch: int, budget: float, quick: bool) -> tuple[float, float, float]:
    """(median wall seconds per call, images per second, mean process CPU seconds per call) of ``fn``.

    One untimed call warms up and sizes the repeats to about ``budget`` seconds (1..3 with quick, 2..20).
    The CPU time (all threads) is the figure to trust on a shared, loaded machine: with one thread it is
    close to the unloaded latency.
    """
    import time

    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    repeat = max(1 if quick else 2, min(3 if quick else 20, int(budget / max(once, 1e-6))))
    cpu0 = time.process_time()
    seconds = time_call(fn, repeat=repeat, warmup=0)
    return seconds, batch / seconds, (time.process_time() - cpu0) / repeat


def onnx_runner(model, batch_size: int, threads: int, folder: Path):
    """A callable running ONNX Runtime (CPU) on a random batch, from a fresh export of ``model``'s maps."""
    import onnxruntime as ort

    from tools.export_onnx import export, export_graph, io_names

    path = folder / f"{model.config.name}.onnx"
    if not path.is_file():
        inputs, outputs = io_names(model.config, False)
        export(export_graph(model, False), path, inputs, outputs, 17)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    w, h = model.config.input_size
    x = np.random.default_rng(0).standard_normal((batch_size, 3, h, w), dtype=np.float32)
    return lambda: session.run(None, {"input": x})


def bench_cpu(name: str, args, folder: Path) -> None:
    import torch

    from models import build_model

    torch.set_num_threads(args.threads)
    model = build_model(name).eval()
    w, h = model.config.input_size
    extra = {"model": name, "input_size": [w, h], "threads": args.threads}
    emit(BENCH, f"{name}.params", sum(p.numel() for p in model.parameters()) / 1e6, "M", **extra)
    cost = gmacs(model, torch.zeros(1, 3, h, w))
    emit(BENCH, f"{name}.gmacs", cost, "GMAC", **extra)
    for backend in args.backends:
        for batch in (1, 8):
            if batch == 8 and args.quick and cost > 5:
                continue
            if backend == "torch":
                x = torch.randn(batch, 3, h, w)

                def fn(x=x):
                    with torch.no_grad():
                        model.infer(x)
            else:
                fn = onnx_runner(model, batch, args.threads, folder)
            seconds, rate, cpu = measure(fn, batch, args.budget, args.quick)
            emit(BENCH, f"{name}.{backend}.b{batch}.latency", seconds * 1e3, "ms", backend=backend, batch=batch, **extra)
            emit(BENCH, f"{name}.{backend}.b{batch}.cpu_time", cpu * 1e3, "ms", backend=backend, batch=batch, **extra)
            emit(BENCH, f"{name}.{backend}.b{batch}.throughput", rate, "images/s", backend=backend, batch=batch,
                 **extra)


def bench_cuda(name: str, args) -> None:
    """fp16 throughput at batch 1/16/64 on the GPU, each batch captured once in a CUDA graph and replayed."""
    import torch

    from models import build_model

    model = build_model(name).eval().cuda().half()
    w, h = model.config.input_size
    device = torch.cuda.get_device_name(0)
    for batch in (1, 16, 64):
        static = torch.randn(batch, 3, h, w, device="cuda", dtype=torch.half)
        with torch.no_grad():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    model.infer(static)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model.infer(static)
        seconds = time_call(graph.replay, repeat=20, warmup=3, sync=torch.cuda.synchronize)
        emit(BENCH, f"{name}.cuda_fp16_graph.b{batch}.throughput", batch / seconds, "images/s", model=name,
             backend="torch-cuda-fp16-graph", batch=batch, input_size=[w, h], device=device)
        emit(BENCH, f"{name}.cuda_fp16_graph.b{batch}.latency", seconds * 1e3, "ms", model=name,
             backend="torch-cuda-fp16-graph", batch=batch, input_size=[w, h], device=device)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    emit(BENCH, "machine", 0, "", machine=machine(), torch=torch.__version__)
    with tempfile.TemporaryDirectory(prefix="posestream-bench-") as tmp:
        for name in args.models:
            bench_cpu(name, args, Path(tmp))
    if torch.cuda.is_available() and not args.no_gpu:
        for name in args.models:
            bench_cuda(name, args)
    return 0
