"""``python -m tools.bench engine``: per-stage engine times (pre, infer, post, copy) and images/s.

Stages, each timed with a device synchronisation after it (median over ``--iters``):

* ``pre``: upload + letterbox + BGR->RGB + normalise (engine.preprocess) of a batch of uint8 frames;
* ``infer``: the backend alone;
* ``post``: decoding and mapping back to frame pixels on the device;
* ``copy``: packing, the one device-to-host copy and unpacking into ``Poses``;
* ``refine3d`` (models whose manifest names a 3D refiner, unless ``--no-refine3d``): the refiner alone on
  ``--refine3d-persons`` people per image (default 6: random frames hold nobody, so the rows are made up; on
  the CPU the engine refines the rows that hold a person, on a GPU all ``max_persons`` rows); it is part of
  ``post`` on real frames.

``images_per_s`` is measured separately over whole ``Stage.run`` calls (no syncs between stages).
Frames are synthetic (random uint8) at ``--frame-size`` (default: the model's input size).

Examples::

    python -m tools.bench engine --model random:spm_small --backend onnxruntime --batch 8
    python -m tools.bench engine --model random:hg2 --backend torch --batch 64 --device cuda --iters 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch

from tools.bench.common import emit, machine, time_call
from tools.cli import frame_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model spec: zoo NAME, PATH.safetensors/.onnx/.engine, random:NAME")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"))
    p.add_argument("--batch", type=int, default=1, help="frames per batch (default 1)")
    p.add_argument("--iters", type=int, default=10, help="timed repetitions per stage (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--frame-size", type=frame_size, default=None, help="WxH of the synthetic frames (default: the model input size)")
    p.add_argument("--model-args", default=None, help="JSON build_model overrides for random: specs, e.g. "
                   "'{\"input_size\": [256, 192]}'")
    p.add_argument("--no-fp16", action="store_true", help="torch on CUDA: keep float32")
    p.add_argument("--no-cuda-graphs", action="store_true", help="torch on CUDA: no CUDA graphs")
    p.add_argument("--compile", action="store_true", help="torch: torch.compile the model")
    p.add_argument("--no-refine3d", action="store_true", help="without the 3D refiner the model's manifest names")
    p.add_argument("--refine3d-persons", type=int, default=6, help="people per image for the refine3d timing (default 6)")
    p.add_argument("--cache-dir", default=None, help="where ONNX exports are cached (default ~/.cache/posestream)")
    return p


def _frames(size: tuple[int, int], batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(batch)]


def _stage(args):
    from engine.stage import Stage

    torch_options = {}
    if args.no_fp16:
        torch_options["fp16"] = False
    if args.no_cuda_graphs:
        torch_options["cuda_graphs"] = False
    if args.compile:
        torch_options["compile"] = True
    model_args = json.loads(args.model_args) if args.model_args else None
    if model_args and "input_size" in model_args:
        model_args["input_size"] = tuple(model_args["input_size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random: specs warn; the record says what was run
        return Stage(args.model, args.backend, args.device, max_batch=args.batch, cache_dir=args.cache_dir,
                     model_args=model_args, torch_options=torch_options, refine3d=not args.no_refine3d)


def measure(stage, frames: list[np.ndarray], iters: int, warmup: int, persons: int = 6) -> dict[str, float]:
    """Median seconds of each stage and of a whole run, for one batch of ``frames``."""
    sync = torch.cuda.synchronize if stage.device.type == "cuda" else None
    matrices = stage.letterboxes(frames)
    batch, inverse = stage.prepare(frames, matrices)
    intrinsics = stage.intrinsics(frames, matrices, list(range(len(frames))), None)
    outputs = stage.infer(batch)
    decoded = stage.decode(outputs, inverse, intrinsics)
    kw = dict(repeat=iters, warmup=warmup, sync=sync)
    times = {
        "pre": time_call(lambda: stage.prepare(frames, matrices), **kw),
        "infer": time_call(lambda: stage.infer(batch), **kw),
        "post": time_call(lambda: stage.decode(outputs, inverse, intrinsics), **kw),
        "copy": time_call(lambda: stage.fetch(decoded), **kw),
    }
    if stage.refine3d is not None:
        xyz, score, person_score = _people(decoded, persons)
        times["refine3d"] = time_call(lambda: _refine(stage, xyz, score, person_score), **kw)
    times["total"] = time_call(lambda: stage.run(frames), **kw)
    return times


def _people(decoded, persons: int):
    """(xyz, score, person_score) of the decoded batch with its first ``persons`` rows per image made people
    (standing 3 m away, every joint seen): what the refiner gets from a frame of that many people."""
    b, p, k, _ = decoded.xyz.shape
    g = torch.Generator().manual_seed(0)
    xyz = torch.randn((b, p, k, 3), generator=g) * 300 + torch.tensor([0.0, 0.0, 3000.0])
    person_score = (torch.arange(p) < persons).float().expand(b, p).contiguous()
    dev = decoded.xyz.device
    return xyz.to(dev), torch.ones(b, p, k, device=dev), person_score.to(dev)


def _refine(stage, xyz, score, person_score):
    from engine.stage import host_threads

    with host_threads(stage.device), torch.inference_mode():
        return stage.post.refine(xyz, score, person_score)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.iters < 1:
        raise SystemExit("tools.bench engine: --batch and --iters must be >= 1")
    t0 = time.perf_counter()
    try:
        stage = _stage(args)
    except ValueError as err:
        print(f"tools.bench engine: {err}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    size = args.frame_size or stage.input_size
    times = measure(stage, _frames(size, args.batch), args.iters, args.warmup, args.refine3d_persons)
    device = str(stage.device) + (f" ({torch.cuda.get_device_name(stage.device)})" if stage.device.type == "cuda" else "")
    common = dict(model=args.model, backend=stage.backend.name, batch=args.batch, device=device,
                  input_size=list(stage.input_size), frame_size=list(size), dtype=str(stage.backend.input_dtype),
                  threads=torch.get_num_threads(), machine=machine())
    for name in ("pre", "infer", "post", "copy", "total"):
        emit("engine", f"{name}_ms", times[name] * 1e3, "ms", **common)
    if "refine3d" in times:
        emit("engine", "refine3d_ms", times["refine3d"] * 1e3, "ms", persons_per_image=args.refine3d_persons,
             params=sum(p.numel() for p in stage.refine3d.parameters()), **common)
    emit("engine", "images_per_s", args.batch / times["total"], "images/s", **common)
    emit("engine", "post_share", (times["post"] + times["copy"]) / times["total"], "fraction", **common)
    emit("engine", "load_s", load_s, "s", **common)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
