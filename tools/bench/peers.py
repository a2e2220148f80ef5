"""``python -m tools.bench peers``: posestream's default against MediaPipe Pose on the same frames, same run.

The frames (a synthetic 640x480 clip from ``tools.synth``, or ``--video FILE``) are decoded once and written to a
raw ``.npy`` file in a temporary directory; both sides read it. Each side runs the first ``--warmup`` frames
untimed, then times every one of the next ``--frames`` frames alone (batch 1) and reports frames / summed time:

* MediaPipe Pose 0.10.14 "full" (``model_complexity=1``), tracking mode, one person: BGR->RGB + ``process``.
  It runs in the teacher's virtual environment (its opencv-contrib-python clashes with our opencv-python)
  with MediaPipe's solution API installed: ``posestream teacher setup --solution`` makes it (``.venv-teacher`` in
  the repository root; needs PyPI once), or give any Python with mediapipe as ``--teacher-python``.
* posestream: ``Engine(model, backend)`` end to end (preprocess + infer + postprocess into ``Poses``), ONNX
  Runtime's default threads on CPU. ``--model`` may be given several times; ``default`` falls back to
  ``random:spm_small`` (said on stderr and in the ``fallback`` field) while the zoo has no ``default`` model.

Prints JSON lines: ``mediapipe_fps``, then ``posestream_fps`` and ``ratio`` (posestream / MediaPipe) per model.

Examples::

    python -m tools.bench peers
    python -m tools.bench peers --frames 200 --persons 1-3 --model default --model random:hg1
    python -m tools.bench peers --video clip.mp4 --teacher-python /opt/mp/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from engine.teacher import TeacherError, check_teacher, child_env, default_venv, teacher_python
from tools.bench.common import emit, machine
from tools.cli import count_range

CHILD = Path(__file__).with_name("_mediapipe_child.py")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="posestream model spec, repeatable (default: default)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"))
    p.add_argument("--device", default=None, help="posestream device: cpu or cuda (default: cuda when available)")
    p.add_argument("--video", help="read frames from this video (default: a synthetic clip)")
    p.add_argument("--frames", type=int, default=100, help="timed frames per side (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first (default 10)")
    p.add_argument("--seed", type=int, default=7, help="synthetic clip seed (default 7)")
    p.add_argument("--persons", type=count_range, default="1", help="synthetic clip: people, N or MIN-MAX (default 1)")
    p.add_argument("--teacher-python", help="a Python with mediapipe (default: the teacher venv's)")
    p.add_argument("--teacher-venv", default=str(default_venv()),
                   help="the teacher venv (default %(default)s; `posestream teacher setup --solution` makes it)")
    return p


def synth_frames(seed: int, persons: tuple[int, int], count: int, size=(640, 480)) -> np.ndarray:
    """uint8 [count,H,W,3] BGR frames of a ``tools.synth`` clip (coco17 people)."""
    from tools.synth import generate_clip

    return np.stack([f for f, _ in generate_clip(seed, persons=persons, frames=count, size=size)])


def video_frames(path: str, count: int) -> np.ndarray:
    """Up to ``count`` uint8 [N,H,W,3] BGR frames of ``path``, decoded with OpenCV."""
    import cv2

    if not os.path.isfile(path):
        raise ValueError(f"--video {path!r}: file not found")
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise ValueError(f"--video {path!r}: no frame could be decoded")
    return np.stack(frames)


def write_frames(frames: np.ndarray, path: str | Path) -> Path:
    """Save uint8 [N,H,W,3] frames as a raw .npy file (no pickle) and return its path."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 [N,H,W,3], got {frames.dtype} {frames.shape}")
    np.save(path, frames, allow_pickle=False)
    return Path(path)


def read_frames(path: str | Path) -> np.ndarray:
    """The uint8 [N,H,W,3] frames of a file written by ``write_frames``."""
    frames = np.load(path, allow_pickle=False)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 [N,H,W,3] frames, got {frames.dtype} {frames.shape}")
    return frames


def _tail(text: str, lines: int = 6) -> str:
    return "\n    ".join(text.strip().splitlines()[-lines:])


def solution_python(given: str | None, venv: Path) -> Path:
    """``given`` or the teacher venv's Python, checked to import MediaPipe's solution API (TeacherError if not)."""
    python = teacher_python(given, venv)
    if not python.exists():
        raise TeacherError(f"teacher python {python}: no such file")
    if check_teacher(python).solution is None:
        raise TeacherError(f"teacher python {python}: cannot import mediapipe and cv2 (MediaPipe's solution API); "
                           f"`posestream teacher setup --solution` installs it")
    return python


def run_teacher(python: str | Path, frames_path: str | Path, warmup: int, timeout: float = 600) -> dict:
    """MediaPipe timings of the frames in ``frames_path`` (see ``_mediapipe_child``), run by ``python``."""
    cmd = [str(python), "-I", str(CHILD), str(frames_path), str(warmup)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=timeout,
                              cwd=Path(frames_path).parent)
    except subprocess.TimeoutExpired:
        raise ValueError(f"MediaPipe run with {python}: no result within {timeout:g} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise ValueError(f"MediaPipe run with {python} failed (exit {done.returncode}):\n    {_tail(done.stderr)}")
    return json.loads(lines[-1])


def resolve_spec(spec: str) -> tuple[str, bool]:
    """``(spec, False)``, or ``("random:spm_small", True)`` with a loud warning when ``default`` is not shipped."""
    from engine.loading import zoo_dir

    if spec != "default" or (zoo_dir() / "default.safetensors").is_file():
        return spec, False
    print("tools.bench peers: WARNING: no 'default' model in models/zoo yet; measuring random:spm_small "
          "(RANDOM WEIGHTS: same cost as an untrained SPM, poses meaningless)", file=sys.stderr)
    return "random:spm_small", True


def time_posestream(spec: str, frames: np.ndarray, warmup: int, backend: str, device: str | None) -> dict:
    """Per-frame ``Engine.infer`` (batch 1) times of frames[warmup:], after frames[:warmup]."""
    from engine import Engine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random: specs warn; resolve_spec already said so
        engine = Engine(spec, backend, max_batch=1, device=device)
    times, people = [], 0
    with engine:
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            poses = engine.infer([frame])[0]
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
                people += len(poses)
        ordered = sorted(times)
        return {"frames": len(times), "total_s": sum(times), "median_ms": ordered[len(ordered) // 2] * 1e3,
                "p90_ms": ordered[int(len(ordered) * 0.9)] * 1e3, "people_per_frame": people / len(times),
                "model_id": engine.model_id, "mode": engine.mode, "has_3d": engine.has_3d,
                "backend": engine.stage.backend.name, "device": str(engine.device)}


def _frames(args) -> tuple[np.ndarray, str]:
    count = args.warmup + args.frames
    if args.video:
        frames = video_frames(args.video, count)
        if len(frames) <= args.warmup:
            raise ValueError(f"--video {args.video!r}: {len(frames)} frames, need more than --warmup {args.warmup}")
        return frames, os.path.basename(args.video)
    lo, hi = args.persons
    return synth_frames(args.seed, args.persons, count), f"synth seed {args.seed} persons {lo}-{hi}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        raise SystemExit("tools.bench peers: --frames must be >= 1 and --warmup >= 0")
    try:
        python = solution_python(args.teacher_python, Path(args.teacher_venv))
        frames, source = _frames(args)
        with tempfile.TemporaryDirectory(prefix="posestream-peers-") as tmp:
            path = write_frames(frames, Path(tmp) / "frames.npy")
            teacher = run_teacher(python, path, args.warmup)
        ours = [(spec, *resolve_spec(spec)) for spec in (args.model or ["default"])]
        results = [(req, spec, fb, time_posestream(spec, frames, args.warmup, args.backend, args.device))
                   for req, spec, fb in ours]
    except (ValueError, TeacherError) as err:
        print(f"tools.bench peers: {err}", file=sys.stderr)
        return 2
    common = dict(machine=machine(), load_avg=[round(v, 2) for v in os.getloadavg()], source=source,
                  frame_size=[frames.shape[2], frames.shape[1]], frames=teacher["frames"], warmup=args.warmup)
    mp_fps = teacher["frames"] / teacher["total_s"]
    emit("peers", "mediapipe_fps", mp_fps, "frames/s", **common, mediapipe=teacher["mediapipe"],
         config="model_complexity=1 static_image_mode=False one person", teacher_python=str(python),
         median_ms=round(teacher["median_ms"], 3), p90_ms=round(teacher["p90_ms"], 3), detected=teacher["detected"])
    for requested, spec, fallback, r in results:
        fps = r["frames"] / r["total_s"]
        info = dict(model=spec, requested=requested, fallback=fallback, model_id=r["model_id"], mode=r["mode"],
                    has_3d=r["has_3d"])
        emit("peers", "posestream_fps", fps, "frames/s", **common, **info, backend=r["backend"], device=r["device"],
             threads="onnxruntime default", batch=1, median_ms=round(r["median_ms"], 3),
             p90_ms=round(r["p90_ms"], 3), people_per_frame=round(r["people_per_frame"], 3))
        emit("peers", "ratio", fps / mp_fps, "x", **common, **info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
