"""``python -m tools.data.refine3d``: the 3D refiner's data set (models/refine3d.py), written as .npz chunks.

Two kinds of records, both in the model's layout (K joints), camera millimetres:

* **predictions** (``pred-*.npz``): the first stage (``--model``, default ``default``) run by ``engine.Engine``
  over generated clips (``tools.synth``, the clip's intrinsics given), each predicted person matched one-to-one
  to a true one (``tools.evaluate.match_persons``: greedy by mean 2D distance over the truth's labelled joints).
  Arrays per matched person (N rows): ``pred_xyz`` [N,K,3], ``pred_score`` [N,K], ``pred_xy`` [N,K,2] frame px,
  ``gt_xyz`` [N,K,3], ``gt_vis`` [N,K] (0 outside the frame, 1 occluded, 2 visible), ``gt_xy`` [N,K,2],
  ``match_px`` [N] (the mean 2D distance of the match), ``gt_size`` [N] (the truth's labelled-joint box
  diagonal, px), ``seed`` [N] (the clip), ``frame`` [N], ``track_id`` [N];
* **poses** (``poses-*.npz``): true poses of the generator's people at random moments in front of random
  cameras, without rendering (milliseconds each, where a rendered and inferred frame takes ~30): ``gt_xyz``
  [N,K,3] and ``in_frame`` [N,K] (the joint projects inside the frame). The trainer adds noise shaped like the
  first stage's measured errors to them (tools/train/refine3d.py).

Clip seeds start at ``--seed`` (default 9 * 10**11, far from the image networks' training seeds, < 10**11, and
from the held-out clips 31-33, 71-78, 5151); a validation set takes another ``--seed`` (e.g. 9 * 10**11 +
10**6). Chunks already written are kept, so an interrupted run continues where it stopped.

Examples::

    python -m tools.data.refine3d --out runs/refine3d_data/train --clips 800 --frames 24
    python -m tools.data.refine3d --out runs/refine3d_data/val --clips 60 --frames 24 --seed 900001000000 \\
        --poses 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tools.cli import count_range, frame_size

DEFAULT_SEED = 9 * 10**11
PRED_KEYS = ("pred_xyz", "pred_score", "pred_xy", "gt_xyz", "gt_vis", "gt_xy", "match_px", "gt_size", "seed",
             "frame", "track_id")
POSE_KEYS = ("gt_xyz", "in_frame")


def clip_records(engine, seed: int, frames: int, persons: tuple[int, int], size: tuple[int, int], fps: float,
                 layout: str) -> dict[str, np.ndarray]:
    """The matched (prediction, truth) persons of one generated clip (arrays as in the module docstring)."""
    from tools.evaluate import match_persons
    from tools.synth import generate_clip

    pairs = list(generate_clip(seed, persons, frames, size, layout, fps=fps))
    if not pairs:
        return _empty(PRED_KEYS)
    k = pairs[0][1].intrinsics
    cam = (k["fx"], k["fy"], k["cx"], k["cy"])
    preds = engine.infer([f for f, _ in pairs], intrinsics=[cam] * len(pairs))
    rows: dict[str, list] = {key: [] for key in PRED_KEYS}
    for (_, record), pred in zip(pairs, preds):
        gt = record.poses
        if pred.xyz is None:
            raise ValueError(f"model {engine.model_id}: no 3D output; the refiner's data needs a 3D model")
        ok = gt.score > 0
        for p, g in match_persons(pred.xy, gt.xy, ok):
            dist = np.linalg.norm(pred.xy[p] - gt.xy[g], axis=-1)
            lo, hi = gt.xy[g][ok[g]].min(axis=0), gt.xy[g][ok[g]].max(axis=0)
            row = {"pred_xyz": pred.xyz[p], "pred_score": pred.score[p], "pred_xy": pred.xy[p],
                   "gt_xyz": gt.xyz[g], "gt_vis": gt.score[g].astype(np.int8), "gt_xy": gt.xy[g],
                   "match_px": dist[ok[g]].mean(), "gt_size": np.linalg.norm(hi - lo), "seed": seed,
                   "frame": record.frame, "track_id": gt.track_id[g]}
            for key, value in row.items():
                rows[key].append(value)
    return _stack(rows)


def true_poses(seed: int, count: int, size: tuple[int, int], layout: str) -> dict[str, np.ndarray]:
    """``count`` true poses of the generator's people (one random camera and moment per scene, up to six people
    each), in ``layout``, camera mm, with whether each joint projects inside a frame of ``size``; only people
    with a joint in the frame and everyone at least 1 m in front of the camera are kept."""
    from tools.synth.body import NUM_KEYPOINTS
    from tools.synth.generate import layout_index
    from tools.synth.scene import Camera, camera_points, sample_person

    index = layout_index(layout)
    rng = np.random.default_rng([seed, 3])
    w, h = size
    xyz, inside = [], []
    while len(xyz) < count:
        camera = Camera.sample(rng, size)
        t = float(rng.uniform(0.0, 10.0))
        for i in range(int(rng.integers(1, 7))):
            person = sample_person(rng, i, camera, size, duration=t + 1.0, central=i == 0)
            pts = camera_points(person, camera, t)[:NUM_KEYPOINTS][index]
            if pts[:, 2].min() < 1000.0:
                continue
            uv = camera.project(pts)
            ok = (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
            if ok.any():
                xyz.append(pts)
                inside.append(ok)
    return {"gt_xyz": np.asarray(xyz[:count], np.float32), "in_frame": np.asarray(inside[:count], bool)}


def load_records(folder: str | Path, kind: str = "pred") -> dict[str, np.ndarray]:
    """All ``kind`` ("pred" or "poses") chunks of ``folder`` concatenated (chunks in name order)."""
    files = sorted(Path(folder).glob(f"{kind}-*.npz"))
    if not files:
        raise ValueError(f"{folder}: no {kind}-*.npz chunks (python -m tools.data.refine3d writes them)")
    parts = []
    for f in files:
        try:
            with np.load(f) as data:
                parts.append({k: data[k] for k in data.files})
        except (OSError, ValueError) as err:
            raise ValueError(f"{f}: not a readable .npz chunk ({err})") from None
    keys = PRED_KEYS if kind == "pred" else POSE_KEYS
    for f, part in zip(files, parts):
        missing = sorted(set(keys) - set(part))
        if missing:
            raise ValueError(f"{f}: chunk lacks arrays {missing}")
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _stack(rows: dict[str, list]) -> dict[str, np.ndarray]:
    if not rows["seed"]:
        return _empty(PRED_KEYS)
    out = {k: np.asarray(v) for k, v in rows.items()}
    for k in ("pred_xyz", "pred_score", "pred_xy", "gt_xyz", "gt_xy", "match_px", "gt_size"):
        out[k] = out[k].astype(np.float32)
    return out


def _empty(keys) -> dict[str, np.ndarray]:
    return {k: np.zeros((0,), np.float32) for k in keys}


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.data.refine3d", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (chunks are kept across runs)")
    p.add_argument("--model", default="default", help="the first stage: a 3D model spec (default: default)")
    p.add_argument("--clips", type=int, default=800, help="generated clips (default 800)")
    p.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    p.add_argument("--fps", type=float, default=6.0,
                   help="clip frame rate: lower spreads a clip's frames over more poses (default 6)")
    p.add_argument("--persons", type=count_range, default="1-6", help="people per clip, N or MIN-MAX (default 1-6)")
    p.add_argument("--size", type=frame_size, default="640x480", help="frame size WxH (default 640x480)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"first clip seed (default {DEFAULT_SEED})")
    p.add_argument("--chunk", type=int, default=40, help="clips per chunk file (default 40)")
    p.add_argument("--poses", type=int, default=200_000, help="true poses to write too (default 200000; 0: none)")
    p.add_argument("--batch", type=int, default=8, help="engine batch (default 8)")
    p.add_argument("--backend", default="auto", help="engine backend (default auto)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clips < 0 or args.frames < 1 or args.chunk < 1 or args.poses < 0:
        print("tools.data.refine3d: --clips, --poses >= 0 and --frames, --chunk >= 1", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        from engine import Engine

        engine = Engine(args.model, args.backend, max_batch=args.batch, refine3d=False)
        if not engine.has_3d:
            raise ValueError(f"model {args.model!r} has no 3D output")
        layout = engine.layout.name
        if args.poses:
            target = args.out / f"poses-{args.seed}.npz"
            if not target.is_file():
                _save(target, true_poses(args.seed, args.poses, args.size, layout))
        chunks = range(0, args.clips, args.chunk)
        for start in tqdm(chunks, desc="chunks", unit="chunk"):
            target = args.out / f"pred-{args.seed + start:015d}.npz"
            if target.is_file():
                continue
            parts = [clip_records(engine, args.seed + c, args.frames, args.persons, args.size, args.fps, layout)
                     for c in range(start, min(start + args.chunk, args.clips))]
            _save(target, {k: np.concatenate([p[k] for p in parts if len(p["seed"])] or [p[k] for p in parts])
                           for k in PRED_KEYS})
    except ValueError as err:
        print(f"tools.data.refine3d: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
