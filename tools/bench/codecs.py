"""``python -m tools.bench codecs``: speed of the pose codecs, one JSON line per measurement.

Cases: heatmap encode (17 joints, 64x64), limb maps, PYSKL-style volumes (2 persons x 48 frames x 17 keypoints
at 64x64, sigma 0.6; keypoints and limbs) against the plain per-keypoint loop algorithm of PYSKL's
GeneratePoseTarget, timed in alternation in the same run (the speed-up is reported) for the numpy function and
for the torch one on the CPU (``_torch_cpu``) and on CUDA where present (``_torch_cuda``); ``dark`` /
``argmax_quarter`` decode at batch 64 and SPM decode at batch 16. Times are medians in milliseconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tools.bench.common import emit, machine, time_call

BENCH = "codecs"
EPS = 1e-3


# --- the baseline: PYSKL's loop algorithm (use_score=True), one window at a time ---------------------------------

def _loop_point(arr, mu, value, sigma):
    h, w = arr.shape
    if value < EPS:
        return
    x0, x1 = max(int(mu[0] - 3 * sigma), 0), min(int(mu[0] + 3 * sigma) + 1, w)
    y0, y1 = max(int(mu[1] - 3 * sigma), 0), min(int(mu[1] + 3 * sigma) + 1, h)
    x, y = np.arange(x0, x1, 1, np.float32), np.arange(y0, y1, 1, np.float32)[:, None]
    if x.size and y.size:
        patch = np.exp(-((x - mu[0]) ** 2 + (y - mu[1]) ** 2) / 2 / sigma**2) * value
        arr[y0:y1, x0:x1] = np.maximum(arr[y0:y1, x0:x1], patch)


def _loop_limb(arr, a, b, va, vb, sigma):
    h, w = arr.shape
    value = min(va, vb)
    if value < EPS:
        return
    x0, x1 = max(int(min(a[0], b[0]) - 3 * sigma), 0), min(int(max(a[0], b[0]) + 3 * sigma) + 1, w)
    y0, y1 = max(int(min(a[1], b[1]) - 3 * sigma), 0), min(int(max(a[1], b[1]) + 3 * sigma) + 1, h)
    x, y = np.arange(x0, x1, 1, np.float32), np.arange(y0, y1, 1, np.float32)[:, None]
    if not (x.size and y.size):
        return
    d2a, d2b = (x - a[0]) ** 2 + (y - a[1]) ** 2, (x - b[0]) ** 2 + (y - b[1]) ** 2
    d2ab = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    if d2ab < 1:
        _loop_point(arr, a, va, sigma)
        return
    coeff = (d2a - d2b + d2ab) / 2.0 / d2ab
    a_dom, b_dom = coeff <= 0, coeff >= 1
    px, py = a[0] + coeff * (b[0] - a[0]), a[1] + coeff * (b[1] - a[1])
    d2 = a_dom * d2a + b_dom * d2b + (1 - a_dom - b_dom) * ((x - px) ** 2 + (y - py) ** 2)
    arr[y0:y1, x0:x1] = np.maximum(arr[y0:y1, x0:x1], np.exp(-d2 / 2.0 / sigma**2) * value)


def loop_volume(kps, scores, size, sigma, limbs=None):
    """Baseline volume [T,C,H,W]: frames x channels x persons, one Python call per window."""
    m, t, k, _ = kps.shape
    channels = k if limbs is None else len(limbs)
    out = np.zeros((t, channels, size[1], size[0]), np.float32)
    for f in range(t):
        for c in range(channels):
            for p in range(m):
                if limbs is None:
                    _loop_point(out[f, c], kps[p, f, c], scores[p, f, c], sigma)
                else:
                    i, j = limbs[c]
                    _loop_limb(out[f, c], kps[p, f, i], kps[p, f, j], scores[p, f, i], scores[p, f, j], sigma)
    return out


# --- data ------------------------------------------------------------------------------------------------------

def skeleton_clip(seed: int, persons: int = 2, frames: int = 48, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A plausible COCO-17 clip in a ``size`` map: keypoints [M,T,17,2] float32 and scores [M,T,17]."""
    rng = np.random.default_rng(seed)
    # A standing person, x in [-1, 1] (half width), y from head (-1) to feet (+1).
    template = np.array([[0, -.85], [-.08, -.9], [.08, -.9], [-.18, -.85], [.18, -.85], [-.35, -.55], [.35, -.55],
                         [-.45, -.2], [.45, -.2], [-.5, .1], [.5, .1], [-.22, .1], [.22, .1], [-.25, .5], [.25, .5],
                         [-.27, .9], [.27, .9]], dtype=np.float64)
    t = np.arange(frames)[None, :, None, None]
    centre = rng.uniform(0.3, 0.7, (persons, 1, 1, 2)) * size
    scale = rng.uniform(0.3, 0.45, (persons, 1, 1, 1)) * size
    sway = np.sin(t / 6.0 + rng.uniform(0, 6, (persons, 1, 1, 1))) * 0.08
    kps = centre + scale * (template[None, None] + sway + rng.normal(0, 0.02, (persons, frames, 17, 2)))
    scores = rng.uniform(0.4, 1.0, (persons, frames, 17))
    return kps.astype(np.float32), scores.astype(np.float32)


# --- cases -----------------------------------------------------------------------------------------------------

def bench_encode(repeat: int) -> None:
    from models.codecs import HeatmapCodec, HeatmapParams
    from models.layouts import COCO17

    codec = HeatmapCodec(HeatmapParams((256, 256), (64, 64), 2.0))
    kps, scores = skeleton_clip(0, persons=3, frames=1, size=256)
    for n in (1, 3):
        kp, sc = kps[:n, 0], scores[:n, 0]
        ms = time_call(lambda kp=kp, sc=sc: codec.encode(kp, sc), repeat=repeat) * 1e3
        emit(BENCH, "heatmap_encode", ms, "ms", joints=17, size="64x64", persons=n)
        ms = time_call(lambda kp=kp, sc=sc: codec.encode_limbs(kp, sc, COCO17.bones), repeat=repeat) * 1e3
        emit(BENCH, "limb_encode", ms, "ms", limbs=len(COCO17.bones), size="64x64", persons=n)


def _timed(fn, wall: list, cpu: list) -> None:
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    cpu.append(time.thread_time() - c0)
    wall.append(time.perf_counter() - t0)


def _interleaved(fast: dict, slow, rounds: int, per_round: int = 5) -> tuple[dict, dict]:
    """Times (s) of each of ``fast`` (name -> function) and of ``slow`` (key ``None``), taken in alternation so that
    all see the same machine load: ``{name: (wall times, thread CPU times)}``. The CPU times are the steadier
    measure on a machine shared with other work (they leave out the time this thread waited for a core)."""
    for fn in (*fast.values(), slow):
        fn()
    times = {name: ([], []) for name in (None, *fast)}
    for _ in range(rounds):
        _timed(slow, *times[None])
        for name, fn in fast.items():
            for _ in range(per_round):
                _timed(fn, *times[name])
    return times


def _volume_variants(kps, scores, limbs) -> dict:
    """name -> (function returning a numpy volume, suffix of its case names): numpy, and torch on the CPU and on
    CUDA where present (timed up to the finished device volume; the copy back only for the comparison)."""
    import torch

    from models.codecs import heatmap_volume, heatmap_volume_torch

    variants = {"numpy": (lambda: heatmap_volume(kps, scores, (64, 64), 0.6, limbs), "")}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        tk, ts = torch.from_numpy(kps).to(dev), torch.from_numpy(scores).to(dev)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

        def run(tk=tk, ts=ts, sync=sync):
            out = heatmap_volume_torch(tk, ts, (64, 64), 0.6, limbs)
            sync()
            return out

        variants[f"torch_{dev}"] = (run, f"_torch_{dev}")
    return variants


def bench_volume(repeat: int) -> None:
    from models.layouts import COCO17

    kps, scores = skeleton_clip(1)
    for kind, limbs in (("keypoints", None), ("limbs", list(COCO17.bones))):
        variants = _volume_variants(kps, scores, limbs)
        loop = loop_volume(kps, scores, (64, 64), 0.6, limbs)
        times = _interleaved({name: fn for name, (fn, _) in variants.items()},
                             lambda limbs=limbs: loop_volume(kps, scores, (64, 64), 0.6, limbs),
                             rounds=max(3, repeat // 2))
        shape = "2x48x17@64x64" if limbs is None else f"2x48x{len(limbs)}limbs@64x64"
        wall_loop, cpu_loop = times[None]
        emit(BENCH, f"volume_{kind}_loop", np.median(wall_loop) * 1e3, "ms", clip=shape, sigma=0.6,
             cpu_ms=round(float(np.median(cpu_loop)) * 1e3, 3))
        for name, (fn, suffix) in variants.items():
            out = fn()
            err = float(np.abs((out.cpu().numpy() if hasattr(out, "cpu") else out) - loop).max())
            wall, cpu = times[name]
            emit(BENCH, f"volume_{kind}{suffix}", np.median(wall) * 1e3, "ms", clip=shape, sigma=0.6,
                 max_abs_diff=err, cpu_ms=round(float(np.median(cpu)) * 1e3, 3))
            emit(BENCH, f"volume_{kind}{suffix}_speedup", np.median(wall_loop) / np.median(wall), "x", goal=20,
                 best_of=round(min(wall_loop) / min(wall), 2),
                 cpu_time=round(float(np.median(cpu_loop) / np.median(cpu)), 2))


def _sync(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else None


def bench_decode(repeat: int, device: str) -> None:
    import torch

    from models.codecs import HeatmapCodec, HeatmapParams, argmax_quarter, dark

    codec = HeatmapCodec(HeatmapParams((256, 256), (64, 64), 2.0))
    kps, scores = skeleton_clip(2, persons=1, frames=64, size=256)
    hm = torch.from_numpy(np.stack([codec.encode(kps[:, i], scores[:, i])[0] for i in range(64)])).to(device)
    with torch.no_grad():
        for name, fn in (("dark", dark), ("argmax_quarter", argmax_quarter)):
            ms = time_call(lambda fn=fn: fn(hm), repeat=repeat, sync=_sync(device)) * 1e3
            emit(BENCH, f"{name}_decode", ms, "ms", batch=64, joints=17, size="64x64", device=device)


def _spm_batch(codec, batch: int, seed: int):
    import torch

    rng = np.random.default_rng(seed)
    w, h = codec.params.input_size
    k = codec.layout.num_joints
    maps = []
    for _ in range(batch):
        n = int(rng.integers(1, 12))
        root = rng.uniform(0.1, 0.9, (n, 1, 2)) * (w, h)
        kp = root + rng.uniform(-60, 60, (n, k, 2))
        xyz = np.concatenate([kp, rng.uniform(2000, 6000, (n, k, 1))], axis=-1)
        maps.append(codec.encode(kp, np.ones((n, k)), xyz))
    return {name: torch.from_numpy(np.stack([m[name] for m in maps])) for name in ("root", "disp", "depth")}


def bench_spm(repeat: int, device: str) -> None:
    import torch

    from models.codecs import SPMCodec, SPMParams

    cases = (("coco17_flat", SPMParams((512, 512), layout="coco17")),
             ("panoptic19_hier_depth_w3", SPMParams((832, 512), layout="panoptic19", hierarchical=True, disp_window=3)))
    for name, params in cases:
        codec = SPMCodec(params)
        outputs = {k: v.to(device) for k, v in _spm_batch(codec, 16, 3).items()}
        if "depth" not in name:
            outputs.pop("depth")
        with torch.no_grad():
            ms = time_call(lambda codec=codec, outputs=outputs: codec.decode(outputs), repeat=repeat,
                           sync=_sync(device)) * 1e3
        w, h = params.map_size
        emit(BENCH, "spm_decode", ms, "ms", variant=name, batch=16, map=f"{w}x{h}", max_persons=params.max_persons,
             device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench codecs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions per case (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the torch decoders")
    parser.add_argument("--only", choices=["encode", "volume", "decode", "spm"], help="run one group of cases")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    emit(BENCH, "machine", 0, "", machine=machine(), torch=torch.__version__, threads=args.threads)
    groups = {"encode": lambda: bench_encode(args.repeat), "volume": lambda: bench_volume(args.repeat),
              "decode": lambda: bench_decode(args.repeat, args.device), "spm": lambda: bench_spm(args.repeat, args.device)}
    for name, run in groups.items():
        if args.only in (None, name):
            run()
    return 0
