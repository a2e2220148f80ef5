"""``python -m tools.evaluate``: accuracy of predictions against ground truth pose files.

Predictions come from a pose JSON Lines file (``--pred``, e.g. written by the live pipeline) or from a
model (``--model``: checkpoint ``.safetensors``, ``.onnx`` file, zoo name or ``random:NAME``, run through
``engine.Engine``) on a video (``--video``) or a synthetic clip (``--synth SEED``). Ground truth is a pose
file in the same schema with visibility in place of the score (``--gt``; written by ``python -m tools.synth``
when ``--synth`` is used).

Per frame, predicted persons are matched one-to-one to true persons, greedily by mean joint distance.
Reported (JSON on stdout): PCKh@0.5 (gt layouts with a head segment; see tools.metrics for the head size),
OKS AP (pycocotools with the gt layout's sigmas), MPJPE root-relative and absolute and 3D PCK@150 mm
(when both sides have 3D; the root-relative error also per joint and per axis: x, y, depth), joint
precision / recall / F1 (greedy matching within ``--match-px``), and the acceleration error (jitter: the
predicted minus the true frame-to-frame acceleration of each matched person's joints, in px and, root-relative,
in mm per frame squared; when the truth's person ids are known, as for generated clips).
Predictions in another layout are converted to the truth's; only joints both layouts share count.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine.results import Poses
from models.layouts import convert, get_layout, index_map
from stream.posefile import PoseRecord, read_pose_file
from tools import metrics as M
from tools.cli import count_range, frame_size


def match_persons(pred_xy: np.ndarray, gt_xy: np.ndarray, gt_ok: np.ndarray) -> list[tuple[int, int]]:
    """Greedy one-to-one (pred, gt) person pairs by mean distance over the truth's labelled joints.

    pred_xy [P,K,2], gt_xy [G,K,2], gt_ok [G,K] bool.
    """
    if len(pred_xy) == 0 or len(gt_xy) == 0:
        return []
    d = np.linalg.norm(pred_xy[:, None] - gt_xy[None], axis=-1)  # [P,G,K]
    w = gt_ok[None].astype(np.float64)
    cost = (np.nan_to_num(d, nan=1e9) * w).sum(-1) / np.maximum(w.sum(-1), 1.0)
    cost[:, ~gt_ok.any(-1)] = np.inf
    pairs, used_p, used_g = [], set(), set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        p, g = divmod(int(flat), cost.shape[1])
        if np.isfinite(cost[p, g]) and p not in used_p and g not in used_g:
            used_p.add(p)
            used_g.add(g)
            pairs.append((p, g))
    return pairs


def _in_layout(poses: Poses, layout_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if poses.layout == layout_name:
        return poses.xy, poses.score, poses.xyz
    src, dst = get_layout(poses.layout), get_layout(layout_name)
    xy, score = convert(poses.xy, poses.score, src, dst)
    xyz = None if poses.xyz is None else convert(poses.xyz, poses.score, src, dst)[0]
    return xy, score, xyz


class Accumulator:
    """Collects matched frames and computes the summary (``summary()``)."""

    def __init__(self, layout: str, match_px: float = 10.0, score_threshold: float = 0.3) -> None:
        self.layout = get_layout(layout)
        self.match_px, self.score_threshold = match_px, score_threshold
        self.frames = 0
        self.images: list[dict] = []
        self.rows: dict[str, list] = {k: [] for k in ("pred", "gt", "vis", "head", "pred3", "gt3", "ok3")}
        self.joints = M.Counts()
        self.common: np.ndarray | None = None
        self.motion: dict[str, list[dict]] = {"2d": [], "3d": []}  # per frame, by true person id: for accel_error

    def add(self, pred: Poses, gt: Poses) -> None:
        """One frame: predictions (any layout) and ground truth (this layout, visibility as score)."""
        if gt.layout != self.layout.name:
            raise ValueError(f"ground truth layout {gt.layout!r} differs from {self.layout.name!r}")
        common = index_map(get_layout(pred.layout), self.layout) >= 0
        self.common = common if self.common is None else self.common & common
        xy, score, xyz = _in_layout(pred, self.layout.name)
        gt_ok = (gt.score > 0) & common
        self.frames += 1
        self.images.append({"gt_xy": gt.xy, "gt_vis": np.where(common, gt.score, 0), "pred_xy": xy,
                            "pred_score": score, "pred_person_score": pred.person_score})
        self.joints += M.joint_counts(xy, (score >= self.score_threshold) & common, gt.xy, gt_ok, self.match_px)
        matched = dict((g, p) for p, g in match_persons(xy, gt.xy, gt_ok))
        self._add_motion(matched, xy, xyz, gt, gt_ok)
        for g in range(len(gt)):
            p = matched.get(g)
            self.rows["gt"].append(gt.xy[g])
            self.rows["vis"].append(gt_ok[g])
            self.rows["pred"].append(xy[p] if p is not None else np.full_like(gt.xy[g], np.nan))
            if gt.xyz is not None and xyz is not None and p is not None:
                self.rows["pred3"].append(xyz[p])
                self.rows["gt3"].append(gt.xyz[g])
                self.rows["ok3"].append(gt_ok[g])

    def _add_motion(self, matched: dict, xy, xyz, gt: Poses, gt_ok: np.ndarray) -> None:
        """This frame's matched people by true id (ids must be unique and set: the truth of a clip)."""
        ids = gt.track_id.tolist()
        known = len(set(ids)) == len(ids) and min(ids, default=0) >= 0
        pairs = [(ids[g], p, g) for g, p in matched.items()] if known else []
        self.motion["2d"].append({i: (xy[p], gt.xy[g], gt_ok[g]) for i, p, g in pairs})
        root, has_3d = self.layout.root_point, xyz is not None and gt.xyz is not None
        # one entry per frame, empty without 3D: a triple must be three consecutive frames
        self.motion["3d"].append({i: (xyz[p] - root(xyz[p]), gt.xyz[g] - root(gt.xyz[g]), gt_ok[g])
                                  for i, p, g in pairs} if has_3d else {})

    def _by_joint(self, values: np.ndarray) -> dict[str, float | None]:
        """Per-joint values [K] as {joint name: value}, None where NaN (a joint never labelled)."""
        return {n: None if np.isnan(v) else float(v) for n, v in zip(self.layout.names, values)}

    def summary(self) -> dict:
        r = {k: np.array(v) for k, v in self.rows.items()}
        out: dict = {"frames": self.frames, "gt_persons": int(len(r["gt"])), "layout": self.layout.name}
        if len(r["gt"]) and self.layout.head_segment is not None:
            per_joint, total = M.pckh(r["pred"], r["gt"], r["vis"], M.head_sizes(r["gt"], self.layout))
            # MPII tables leave pelvis and thorax out of the mean; "pckh@0.5_all" keeps every joint.
            keep = [j for j, n in enumerate(self.layout.names) if n not in ("pelvis", "thorax")]
            out["pckh@0.5"] = M.pckh(r["pred"][:, keep], r["gt"][:, keep], r["vis"][:, keep],
                                     M.head_sizes(r["gt"], self.layout))[1]
            out["pckh@0.5_all"] = total
            out["pckh_per_joint"] = self._by_joint(per_joint)
        if any((im["gt_vis"] > 0).any() for im in self.images):
            sigmas = tuple(np.asarray(self.layout.oks_sigmas))
            out["oks"] = M.oks_ap(self.images, sigmas)
        if len(r["gt3"]):
            out["mpjpe_mm"] = M.mpjpe(r["pred3"], r["gt3"], r["ok3"], self.layout)
            out["mpjpe_abs_mm"] = M.mpjpe(r["pred3"], r["gt3"], r["ok3"])
            out["pck3d@150mm"] = M.pck3d(r["pred3"], r["gt3"], r["ok3"], 150.0, self.layout)
            where = M.mpjpe_breakdown(r["pred3"], r["gt3"], r["ok3"], self.layout)
            out["mpjpe_per_axis_mm"] = where["per_axis"]
            out["mpjpe_per_joint_mm"] = self._by_joint(where["per_joint"])
        for key, unit in (("2d", "px"), ("3d", "mm")):  # 3D root-relative, as MPJPE
            accel = M.accel_error(self.motion[key])
            if not np.isnan(accel):
                out[f"accel_error_{unit}"] = accel
        j = self.joints
        out["joints"] = {"tp": j.tp, "fp": j.fp, "fn": j.fn, "precision": j.precision, "recall": j.recall,
                         "f1": j.f1, "match_px": self.match_px}
        return out


def evaluate(preds: Iterable[PoseRecord], gts: Iterable[PoseRecord], match_px: float = 10.0,
             score_threshold: float = 0.3) -> dict:
    """Summary metrics of predicted records against ground truth records, paired by frame number.

    A ground truth frame without a prediction counts as an empty prediction.
    """
    by_frame = {r.frame: r for r in preds}
    acc = None
    for gt in gts:
        acc = acc or Accumulator(gt.layout, match_px, score_threshold)
        pred = by_frame.get(gt.frame)
        poses = pred.poses if pred is not None else Poses.empty(gt.layout, gt.poses.score.shape[1])
        acc.add(poses, gt.poses)
    if acc is None:
        raise ValueError("evaluate: the ground truth has no frames")
    return acc.summary()


def _video_frames(path: Path) -> Iterable[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="bgr24")


def predict(model: str, frames: Iterable[np.ndarray], intrinsics: list[tuple | None], backend: str = "auto",
            batch: int = 8, flip_test: bool = False, smooth: bool = False) -> list[PoseRecord]:
    """Run ``engine.Engine(model)`` over frames; one record per frame (frame numbers from 0)."""
    try:
        from engine import Engine
    except ImportError as err:  # the engine is optional for pose-file evaluation
        raise ValueError(f"evaluate: --model needs engine.Engine, which is not available ({err})") from None
    engine = Engine(model, backend=backend, max_batch=batch, flip_test=flip_test, smoothing=smooth)
    out: list[PoseRecord] = []
    chunk: list[np.ndarray] = []

    def flush() -> None:
        k = [intrinsics[i] if i < len(intrinsics) else None for i in range(len(out), len(out) + len(chunk))]
        for poses in engine.infer(chunk, intrinsics=k):
            out.append(PoseRecord(stream="eval", frame=len(out), layout=poses.layout, poses=poses))
        chunk.clear()

    try:
        for f in frames:
            chunk.append(f)
            if len(chunk) == batch:
                flush()
        if chunk:
            flush()
    finally:
        engine.close()
    return out


def _intrinsics(records: list[PoseRecord]) -> list[tuple | None]:
    return [None if r.intrinsics is None else tuple(r.intrinsics[k] for k in ("fx", "fy", "cx", "cy"))
            for r in records]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path, help="predicted pose JSON Lines file")
    src.add_argument("--model", help="checkpoint .safetensors, .onnx file, zoo name or random:NAME")
    p.add_argument("--gt", type=Path, help="ground truth pose JSON Lines file (visibility in place of score)")
    p.add_argument("--video", type=Path, help="video to run --model on (frames pair with --gt by number)")
    p.add_argument("--synth", type=int, metavar="SEED", help="run --model on a synthetic clip with this seed")
    p.add_argument("--frames", type=int, default=60, help="frames of the --synth clip (default 60)")
    p.add_argument("--persons", type=count_range, default="1-4", help="people in the --synth clip, N or MIN-MAX (default 1-4)")
    p.add_argument("--size", type=frame_size, default="640x480", help="--synth frame size WxH (default 640x480)")
    p.add_argument("--layout", default="mpii16", help="--synth ground truth layout (default mpii16)")
    p.add_argument("--backend", default="auto", help="engine backend (auto, torch, onnxruntime, tensorrt)")
    p.add_argument("--flip-test", action="store_true", help="run --model with the test-time flip (Engine flip_test)")
    p.add_argument("--smooth", action="store_true",
                   help="run --model with One-Euro smoothing per tracked person (posestream --smooth; frames 30 fps apart)")
    p.add_argument("--match-px", type=float, default=10.0, help="joint matching distance in pixels (default 10)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="predicted joints counted from this score")
    p.add_argument("-o", "--output", type=Path, help="also write the summary JSON here")
    return p


def _synth_inputs(args) -> tuple[list[np.ndarray], list[PoseRecord]]:
    from tools.synth import generate_clip

    pairs = list(generate_clip(args.synth, args.persons, args.frames, args.size, args.layout))
    return [f for f, _ in pairs], [r for _, r in pairs]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.synth is not None:
            if args.model is None:
                raise ValueError("evaluate: --synth needs --model")
            frames, gts = _synth_inputs(args)
        else:
            if args.gt is None:
                raise ValueError("evaluate: --gt is required (or --model with --synth)")
            gts = list(read_pose_file(args.gt))
            frames = None
        if args.pred is not None:
            preds = list(read_pose_file(args.pred))
        else:
            if frames is None:
                if args.video is None:
                    raise ValueError("evaluate: --model needs --video or --synth")
                frames = _video_frames(args.video)
            preds = predict(args.model, frames, _intrinsics(gts), args.backend, flip_test=args.flip_test,
                            smooth=args.smooth)
        summary = evaluate(preds, gts, args.match_px, args.score_threshold)
    except (ValueError, FileNotFoundError) as err:
        print(f"tools.evaluate: {err}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
