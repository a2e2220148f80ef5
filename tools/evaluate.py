"""``python -m tools.evaluate``: accuracy of predictions against ground truth pose files.

Predictions come from a pose JSON Lines file (``--pred``, e.g. written by the live pipeline) or from a
model (``--model``: checkpoint ``.safetensors``, ``.onnx`` file, zoo name or ``random:NAME``, run through
``engine.Engine``) on a video (``--video``) or a synthetic clip (``--synth SEED``). Ground truth is a pose
file in the same schema with visibility in place of the score (``--gt``; written by ``python -m tools.synth``
when ``--synth`` is used).

Per frame, predicted persons are matched one-to-one to true persons, greedily by mean joint distance.
Reported (JSON on stdout): PCKh@0.5 (gt layouts with a head segment; see tools.metrics for the head size),
OKS AP (pycocotools with the gt layout's sigmas), MPJPE root-relative, Procrustes-aligned (PA) and absolute and
3D PCK@150 mm
(when both sides have 3D; the root-relative error also per joint and per axis: x, y, depth), joint
precision / recall / F1 (greedy matching within ``--match-px``), and the acceleration error (jitter: the
predicted minus the true frame-to-frame acceleration of each matched person's joints, in px and, root-relative,
in mm per frame squared; when the truth's person ids are known, as for generated clips).
Predictions in another layout are converted to the truth's; only joints both layouts share count.

With ``--ref LABELS`` (a teacher's labels from ``posestream label``) the reference is the teacher instead of a
ground truth, on the labelled frames in [``--start``, ``--stop``): the share of the teacher's persons found,
PCK@0.2 in torso lengths and the share of false detections (see ``TeacherAccumulator``), e.g.
``python -m tools.evaluate --model NAME --video clip.mp4 --ref labels.jsonl --start 550``.
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
    return M.greedy_pairs(cost)


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
            out["pa_mpjpe_mm"] = M.pa_mpjpe(r["pred3"], r["gt3"], r["ok3"])
            out["pck3d@150mm"] = M.pck3d(r["pred3"], r["gt3"], r["ok3"], 150.0, self.layout)
            where = M.mpjpe_breakdown(r["pred3"], r["gt3"], r["ok3"], self.layout)
            out["mpjpe_per_axis_mm"] = where["per_axis"]
            out["mpjpe_image_plane_mm"] = where["image_plane"]
            out["mpjpe_per_joint_mm"] = self._by_joint(where["per_joint"])
        for key, unit in (("2d", "px"), ("3d", "mm")):  # 3D root-relative, as MPJPE
            accel = M.accel_error(self.motion[key])
            if not np.isnan(accel):
                out[f"accel_error_{unit}"] = accel
        j = self.joints
        out["joints"] = {"tp": j.tp, "fp": j.fp, "fn": j.fn, "precision": j.precision, "recall": j.recall,
                         "f1": j.f1, "match_px": self.match_px}
        return out


class TeacherAccumulator:
    """Predictions against a teacher's labels (``posestream label``) instead of ground truth.

    The teacher's persons are converted into the predictions' layout (derived joints included) and their
    joints with confidence >= ``min_conf`` count. Each teacher person's size is its torso (shoulders' mean to
    hips' mean; tools.metrics.torso_sizes); persons with fewer than ``min_joints`` such joints or no torso are
    not reference persons (a prediction on them is neither found nor false). Predicted and teacher persons pair
    greedily by mean joint distance in torso lengths, up to ``found_torso`` (default 1). Reported:

    * ``found``: share of reference persons paired with a prediction (recall of persons);
    * ``pck@T``: share of the paired persons' counted joints within ``T x torso`` of the teacher's (T = ``pck``,
      0.2), and ``pck@T_all`` with the unpaired reference persons' joints counted as misses;
    * ``false``: share of predicted persons paired with nobody and not centred in one of the teacher's ignore
      regions (places it saw a person it could not label);
    * ``mpjpe_rel_mm``: root-relative 3D distance to the teacher's 3D, where both have it.
    """

    def __init__(self, layout: str, pck: float = 0.2, min_conf: float = 0.5, found_torso: float = 1.0,
                 min_joints: int = 4) -> None:
        self.layout = get_layout(layout)
        self.pck, self.min_conf, self.found_torso, self.min_joints = pck, min_conf, found_torso, min_joints
        self.frames = self.refs = self.found = self.preds = self.false = 0
        self.hits = self.joints = self.missed_joints = 0
        k = self.layout.num_joints
        self.joint_hits, self.joint_counts = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.rows3: dict[str, list] = {"pred": [], "ref": [], "ok": []}

    def add(self, pred: Poses, ref: Poses, ignore: np.ndarray | None = None) -> None:
        """One frame: predictions (this layout), the teacher's persons (any layout), ignore boxes [M,4]."""
        xy, _, xyz = _in_layout(pred, self.layout.name)
        rxy, rconf, rxyz = _in_layout(ref, self.layout.name)
        ok = rconf >= self.min_conf
        size = M.torso_sizes(rxy, ok, self.layout)
        counted = (ok.sum(1) >= self.min_joints) & (size > 0)
        self.frames += 1
        self.refs += int(counted.sum())
        self.preds += len(xy)
        pairs = []
        if len(xy) and len(rxy):
            d = np.linalg.norm(xy[:, None] - rxy[None], axis=-1)  # [P,R,K]
            w = ok[None].astype(np.float64)
            mean = (np.nan_to_num(d, nan=1e9) * w).sum(-1) / np.maximum(w.sum(-1), 1.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                cost = np.where(ok.any(-1) & (size > 0), mean / size, np.inf)
            pairs = M.greedy_pairs(cost, self.found_torso)
        paired = {g: p for p, g in pairs}
        for g in np.flatnonzero(counted):
            n = int(ok[g].sum())
            self.joints += n
            p = paired.get(int(g))
            if p is None:
                self.missed_joints += n
                continue
            self.found += 1
            near = (np.linalg.norm(xy[p] - rxy[g], axis=-1) <= self.pck * size[g]) & ok[g]
            self.hits += int(near.sum())
            self.joint_hits += near
            self.joint_counts += ok[g]
            if xyz is not None and rxyz is not None:
                self.rows3["pred"].append(xyz[p])
                self.rows3["ref"].append(rxyz[g])
                self.rows3["ok"].append(ok[g])
        boxes = np.zeros((0, 4)) if ignore is None else np.asarray(ignore, np.float64).reshape(-1, 4)
        for p in set(range(len(xy))) - {p for p, _ in pairs}:
            c = np.nanmean(xy[p], axis=0)
            inside = (boxes[:, 0] <= c[0]) & (c[0] <= boxes[:, 2]) & (boxes[:, 1] <= c[1]) & (c[1] <= boxes[:, 3])
            self.false += int(not inside.any())

    def summary(self) -> dict:
        paired_joints = self.joints - self.missed_joints
        out = {"reference": "teacher", "frames": self.frames, "layout": self.layout.name,
               "teacher_persons": self.refs, "predicted_persons": self.preds,
               "found": self.found / self.refs if self.refs else float("nan"),
               f"pck@{self.pck:g}": self.hits / paired_joints if paired_joints else float("nan"),
               f"pck@{self.pck:g}_all": self.hits / self.joints if self.joints else float("nan"),
               "false": self.false / self.preds if self.preds else 0.0, "false_persons": self.false,
               "min_conf": self.min_conf, "found_torso": self.found_torso,
               f"pck@{self.pck:g}_per_joint": {n: round(float(h / c), 4) if c else None for n, h, c in
                                                zip(self.layout.names, self.joint_hits, self.joint_counts)}}
        if self.rows3["pred"]:
            r = {k: np.array(v) for k, v in self.rows3.items()}
            out["mpjpe_rel_mm"] = M.mpjpe(r["pred"], r["ref"], r["ok"], self.layout)
        return out


def label_poses(frame) -> Poses:
    """A labelled frame (tools.data.footage.LabelledFrame) as Poses: the teacher's confidences as scores."""
    n = len(frame.xy)
    return Poses(layout=frame.layout, xy=frame.xy, score=frame.conf, person_score=np.ones(n, np.float32),
                 track_id=np.full(n, -1, np.int64), xyz=frame.xyz)


def evaluate_against_teacher(preds: Iterable[PoseRecord], labels, layout: str, start: int = 0,
                             stop: int | None = None, **options) -> dict:
    """``TeacherAccumulator`` summary of predicted records against the labelled frames in [start, stop) of
    ``labels`` (tools.data.footage.Labels), paired by frame number (a labelled frame without a prediction
    counts as an empty prediction)."""
    by_frame = {r.frame: r for r in preds}
    acc = TeacherAccumulator(layout, **options)
    k = acc.layout.num_joints
    for ref in labels.frames:
        if ref.frame < start or (stop is not None and ref.frame >= stop):
            continue
        pred = by_frame.get(ref.frame)
        acc.add(pred.poses if pred is not None else Poses.empty(layout, k), label_poses(ref), ref.ignore)
    if not acc.frames:
        raise ValueError(f"evaluate: {labels.path} has no labelled frame in [{start}, {stop or 'end'})")
    out = acc.summary()
    out.update(teacher=labels.teacher, frames_range=[start, stop])
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
            batch: int = 8, flip_test: bool = False, smooth: bool = False,
            refine3d: bool = True) -> list[PoseRecord]:
    """Run ``engine.Engine(model)`` over frames; one record per frame (frame numbers from 0). ``refine3d``:
    run the 3D refiner the model's manifest names (``Engine(refine3d=...)``)."""
    try:
        from engine import Engine
    except ImportError as err:  # the engine is optional for pose-file evaluation
        raise ValueError(f"evaluate: --model needs engine.Engine, which is not available ({err})") from None
    engine = Engine(model, backend=backend, max_batch=batch, flip_test=flip_test, smoothing=smooth,
                    refine3d=refine3d)
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
    p.add_argument("--ref", type=Path, help="a teacher's labels (posestream label) as the reference instead of --gt: "
                                            "share of its persons found, PCK in torso lengths, false detections")
    p.add_argument("--start", type=int, default=0, help="--ref: first frame scored (default 0)")
    p.add_argument("--stop", type=int, help="--ref: frames from --stop on are not scored (default: all)")
    p.add_argument("--pck", type=float, default=0.2, help="--ref: PCK threshold in torso lengths (default 0.2)")
    p.add_argument("--min-conf", type=float, default=0.5, help="--ref: teacher joints counted from this confidence")
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
    p.add_argument("--no-refine3d", action="store_true",
                   help="run --model without the 3D refiner its manifest names (the first stage's own 3D)")
    p.add_argument("--match-px", type=float, default=10.0, help="joint matching distance in pixels (default 10)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="predicted joints counted from this score")
    p.add_argument("-o", "--output", type=Path, help="also write the summary JSON here")
    return p


def _synth_inputs(args) -> tuple[list[np.ndarray], list[PoseRecord]]:
    from tools.synth import generate_clip

    pairs = list(generate_clip(args.synth, args.persons, args.frames, args.size, args.layout))
    return [f for f, _ in pairs], [r for _, r in pairs]


def _video_subset(path: Path, wanted: set[int]) -> Iterable[np.ndarray]:
    """The frames of ``path`` whose numbers are in ``wanted``, in order (read as posestream's capture does)."""
    from stream.sources import SourceError, open_source

    try:
        source = open_source(str(path))
    except SourceError as err:
        raise ValueError(str(err)) from None
    try:
        for number, item in enumerate(source.frames()):
            if number > max(wanted):
                break
            if number in wanted:
                yield item.image
    finally:
        source.close()


def _against_teacher(args) -> dict:
    from tools.data.footage import read_labels

    labels = read_labels(args.ref)
    frames = [f.frame for f in labels.frames if f.frame >= args.start and (args.stop is None or f.frame < args.stop)]
    if not frames:
        raise ValueError(f"{args.ref}: no labelled frame in [{args.start}, {args.stop or 'end'})")
    if args.pred is not None:
        preds = list(read_pose_file(args.pred))
    else:
        if args.video is None:
            raise ValueError("evaluate: --ref with --model needs --video (the labelled video)")
        k = labels.intrinsics
        preds = predict(args.model, _video_subset(args.video, set(frames)), [k] * len(frames), args.backend,
                        flip_test=args.flip_test, smooth=args.smooth)
        for record, number in zip(preds, frames):
            record.frame = number
    if not preds:
        raise ValueError("evaluate: no prediction to score")
    return evaluate_against_teacher(preds, labels, preds[0].layout, args.start, args.stop, pck=args.pck,
                                    min_conf=args.min_conf)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.ref is not None:
            summary = _against_teacher(args)
            return _report(summary, args.output)
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
                            smooth=args.smooth, refine3d=not args.no_refine3d)
        summary = evaluate(preds, gts, args.match_px, args.score_threshold)
    except (ValueError, FileNotFoundError) as err:
        print(f"tools.evaluate: {err}", file=sys.stderr)
        return 2
    return _report(summary, args.output)


def _report(summary: dict, output: Path | None) -> int:
    text = json.dumps(summary, indent=2)
    print(text)
    if output:
        output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
