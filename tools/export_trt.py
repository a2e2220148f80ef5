"""Build a TensorRT 10 engine from an exported ONNX file (tools/export_onnx), cache it, check it.

    python -m tools.export_trt model.onnx -o model.engine [--fp16] [--int8 --calib DIR_OR_synth]
                               [--batch MIN OPT MAX] [--cache DIR]

One optimisation profile covers the dynamic batch (``--batch``, default 1 8 32) at the manifest's input
size. ``--int8`` calibrates with an entropy calibrator (IInt8EntropyCalibrator2) on frames read from a
folder (letterboxed to the input size) or rendered by ``tools.synth`` (``--calib synth``). A timing cache
and the finished plans live in ``--cache`` (default ``~/.cache/posestream/trt``), keyed by (ONNX sha256,
TensorRT version, GPU name, precision, profile): a second identical call copies the cached plan at once.
The manifest beside the engine is the ONNX manifest plus those keys under ``export``; a 3D refiner the ONNX
manifest names (models/refine3d.py) is copied beside the engine and named by its manifest.

After a build, ONNX Runtime (CPU) and the engine run the same synthetic batch and the keypoint
difference is printed (maps are decoded with the model's codec first).

Needs the ``tensorrt`` package and a CUDA GPU: ``pip install posestream[trt]``. Without them it exits
with status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

MISSING = ("export_trt: the Python package `tensorrt` (TensorRT >= 10) is not installed; install the `trt` extra "
           "on a machine with an NVIDIA GPU: pip install posestream[trt]")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.export_trt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", help="ONNX file written by tools.export_onnx (manifest .json beside it)")
    p.add_argument("-o", "--output", required=True, help="output engine path (.engine); manifest beside it")
    p.add_argument("--fp16", action="store_true", help="allow float16 kernels")
    p.add_argument("--int8", action="store_true", help="allow int8 kernels (needs --calib)")
    p.add_argument("--calib", help="folder of calibration frames (jpg/png), or 'synth' for tools.synth frames")
    p.add_argument("--calib-count", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--batch", type=int, nargs=3, default=(1, 8, 32), metavar=("MIN", "OPT", "MAX"),
                   help="batch sizes of the optimisation profile (default 1 8 32)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "posestream" / "trt"), help="engine/timing cache")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit (GiB, default 4)")
    return p


def calibration_images(source: str, config, count: int) -> np.ndarray:
    """Normalised float32 [N,3,H,W] from a folder of frames (letterboxed) or from ``tools.synth``."""
    import cv2

    from models.codecs import Letterbox

    w, h = config.input_size
    if source == "synth":
        from tools.synth import generate_sample

        frames = [generate_sample(seed, size=(w, h), layout=config.layout)[0] for seed in range(count)]
    else:
        files = sorted(p for p in Path(source).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
        if not files:
            raise ValueError(f"--calib {source}: no .jpg/.png frames found")
        frames = []
        for path in files:
            frame = cv2.imread(str(path))
            if frame is None:
                raise ValueError(f"--calib: {path} is not a readable image")
            box = Letterbox(src_size=(frame.shape[1], frame.shape[0]), dst_size=(w, h))
            frames.append(cv2.warpAffine(frame, box.matrix, (w, h), flags=cv2.INTER_LINEAR))
    rgb = np.stack([f[..., ::-1] for f in frames]).astype(np.float32)
    return np.ascontiguousarray(((rgb - np.float32(config.mean)) / np.float32(config.std)).transpose(0, 3, 1, 2))


def make_calibrator(trt, feed: dict[str, np.ndarray], batch: int, cache_file: Path):
    """An IInt8EntropyCalibrator2 feeding the arrays ``feed`` (name -> [N, ...]) in batches from CUDA memory."""
    import torch

    count = min(len(v) for v in feed.values())

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index, self.buffers = 0, {}

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            if self.index + batch > count:
                return None
            sl = slice(self.index, self.index + batch)
            self.buffers = {n: torch.from_numpy(feed[n][sl]).cuda().contiguous() for n in names}
            self.index += batch
            return [int(self.buffers[n].data_ptr()) for n in names]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return Calibrator()


def build_engine(trt, onnx: Path, config, args, profile: dict, cache_dir: Path) -> bytes:
    """Parse ``onnx`` and build a serialized plan with one optimisation profile and the timing cache."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"{onnx}: TensorRT's ONNX parser failed: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(args.workspace_gb * (1 << 30)))
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        opt_profile.set_shape(tensor.name, *[(b, *rest) for b in profile["batch"]])
    builder_config.add_optimization_profile(opt_profile)
    if args.fp16:
        builder_config.set_flag(trt.BuilderFlag.FP16)
    elif not args.int8:  # true fp32: TensorRT would otherwise use TF32 on Ampere and later
        builder_config.clear_flag(trt.BuilderFlag.TF32)
    if args.int8:
        builder_config.set_flag(trt.BuilderFlag.INT8)
        from tools.export_onnx import sample_inputs

        images = calibration_images(args.calib, config, args.calib_count)
        feed = {"input": images, "intrinsics": sample_inputs(config, len(images))["intrinsics"]}
        calib_file = cache_dir / f"calib-{hashlib.sha256(onnx.read_bytes()).hexdigest()[:16]}.cache"
        builder_config.int8_calibrator = make_calibrator(trt, feed, profile["batch"][1], calib_file)
        builder_config.set_calibration_profile(opt_profile)
    timing_file = cache_dir / "timing.cache"
    timing = builder_config.create_timing_cache(timing_file.read_bytes() if timing_file.is_file() else b"")
    builder_config.set_timing_cache(timing, False)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise ValueError(f"{onnx}: TensorRT failed to build an engine (see the log above)")
    timing_file.write_bytes(bytes(builder_config.get_timing_cache().serialize()))
    return bytes(plan)


def run_engine(trt, plan: bytes, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a serialized plan once on host arrays ``feed``; host outputs by name."""
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    buffers = {}
    for name in names:
        dtype = getattr(torch, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            buffers[name] = torch.from_numpy(feed[name]).to("cuda", dtype).contiguous()
            context.set_input_shape(name, tuple(buffers[name].shape))
    for name in names:
        if name not in buffers:
            dtype = getattr(torch, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    torch.cuda.synchronize()
    return {n: buffers[n].float().cpu().numpy() for n in names if n not in feed}


def keypoints(config, export: dict, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Keypoints [B, ..., 2] (input px) from graph outputs: decoded in the graph, or by the codec here."""
    import torch

    if export.get("with_decode"):
        return outputs["xy"]
    maps = {k: torch.from_numpy(v) for k, v in outputs.items()}
    if config.arch == "hourglass":
        return config.heatmap_codec().decode(maps["heatmaps"], method="dark")[0].numpy()
    return config.spm_codec().decode(maps).xy.numpy()


def compare(trt, plan: bytes, onnx: Path, config, export: dict) -> float:
    """Max keypoint difference (px) between ONNX Runtime and the engine on a synthetic batch of 2."""
    import onnxruntime as ort

    from tools.export_onnx import sample_inputs

    feed = {k: v for k, v in sample_inputs(config, 2, seed=1).items() if k in export["inputs"]}
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    ref = dict(zip(export["outputs"], session.run(export["outputs"], feed)))
    got = run_engine(trt, plan, feed)
    diff = float(np.abs(keypoints(config, export, ref) - keypoints(config, export, got)).max(initial=0.0))
    return diff


def plan_keys(trt, onnx: Path, config, args) -> dict:
    """The cache keys of the requested engine: ONNX hash, TensorRT version, GPU, precision, profile."""
    import torch

    from models.checkpoint import file_sha256

    lo, opt, hi = args.batch
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"--batch needs 1 <= MIN <= OPT <= MAX, got {args.batch}")
    if args.int8 and not args.calib:
        raise ValueError("--int8 needs --calib DIR or --calib synth")
    return {"onnx_sha256": file_sha256(onnx), "trt_version": trt.__version__, "gpu": torch.cuda.get_device_name(0),
            "precision": "int8" if args.int8 else "fp16" if args.fp16 else "fp32",
            "profile": {"batch": [lo, opt, hi], "input_size": list(config.input_size)},
            "calibration": f"{args.calib}:{args.calib_count}" if args.int8 else None}


def cached_plan(trt, onnx: Path, manifest: dict, config, args) -> tuple[Path, dict]:
    """(cached plan path, its record): built, checked against ONNX Runtime and stored on a miss."""
    keys = plan_keys(trt, onnx, config, args)
    cache_dir = Path(args.cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:32]
    cached = cache_dir / f"{key}.engine"
    if cached.is_file() and cached.with_suffix(".json").is_file():
        print(f"export_trt: cache hit {cached}")
        return cached, json.loads(cached.with_suffix(".json").read_text())
    plan = build_engine(trt, onnx, config, args, keys["profile"], cache_dir)
    diff = compare(trt, plan, onnx, config, manifest["export"])
    print(f"export_trt: built {keys['precision']} engine; max keypoint difference vs ONNX Runtime: {diff:.3f} px")
    tmp = cached.with_suffix(".tmp")
    tmp.write_bytes(plan)
    tmp.replace(cached)
    record = {**keys, "keypoint_diff_px": diff}
    cached.with_suffix(".json").write_text(json.dumps(record))
    return cached, record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import tensorrt as trt
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    import torch

    from models.checkpoint import manifest_config, manifest_path, read_manifest, write_manifest

    if not torch.cuda.is_available():
        print("export_trt: TensorRT needs a CUDA GPU and torch sees none", file=sys.stderr)
        return 2
    onnx, out = Path(args.onnx), Path(args.output)
    try:
        manifest = read_manifest(onnx)
        if manifest["kind"] != "onnx" or "export" not in manifest:
            raise ValueError(f"{manifest_path(onnx)}: field 'kind' must be 'onnx' with an 'export' section")
        config = manifest_config(manifest, manifest_path(onnx))
        cached, record = cached_plan(trt, onnx, manifest, config, args)
    except ValueError as err:
        print(f"export_trt: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, out)
    from models.refine3d import MANIFEST_KEY, carry

    manifest = {k: v for k, v in manifest.items() if k != MANIFEST_KEY}
    try:
        refiner = carry(onnx, read_manifest(onnx), out)  # the 3D refiner the ONNX file names, beside the plan too
    except ValueError as err:
        print(f"export_trt: {err}", file=sys.stderr)
        return 2
    write_manifest(out, {**manifest, "kind": "tensorrt", "export": {**manifest["export"], **record},
                         **({MANIFEST_KEY: refiner} if refiner else {})})
    print(f"export_trt: wrote {out} and {manifest_path(out)} (keypoint diff {record['keypoint_diff_px']:.3f} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
