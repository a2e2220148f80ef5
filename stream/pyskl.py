"""Skeleton-action export: PYSKL annotations (and heatmap volumes) from tracked pose records.

PYSKL's format, checked against its own code (kennymckormick/pyskl: ``tools/data/README.md``,
``tools/data/custom_2d_skeleton.py``, ``demo/demo_skeleton.py``, ``pyskl/datasets/pose_dataset.py``,
``pyskl/datasets/pipelines/pose_related.py`` and ``augmentations.py``):

* one annotation per video, a dict: ``frame_dir`` (the video's name up to its first dot, as
  ``custom_2d_skeleton.py`` sets it), ``label`` (int; -1 when unknown, as PYSKL's demo), ``img_shape`` and
  ``original_shape`` ((height, width) of the frames), ``total_frames`` (T), ``keypoint`` float32 [M, T, 17, 2]
  in frame pixels and ``keypoint_score`` float32 [M, T, 17] (PYSKL's ``PoseDecode`` reads them as float32;
  its extraction script stores float16, which loses ~0.03 px at 1080p: we keep float32);
* COCO-17 joints (PYSKL's 2D default, its pretrained HRNet's layout); a model with another layout is
  converted, and joints it lacks are (0, 0) with score 0, PYSKL's value for "no keypoint";
* persons are tracks of posestream's tracker; a frame where a kept track has no pose is zeros; M is the number
  of tracks kept, at most ``max_persons``, ranked by PYSKL's rule (``pose_tracking`` in ``demo_skeleton.py``):
  most frames with a pose first, ties in order of the tracks' first appearance (Python's stable sort over
  tracks created in that order);
* a data set is ``{"split": {name: [frame_dir, ...]}, "annotations": [...]}`` (``PoseDataset`` selects
  ``annotations`` by ``split[name]``);
* the pickle uses protocol 4 and stores arrays as ``numpy.ndarray(shape, dtype, bytearray)``, which any numpy
  unpickles into writable arrays (numpy 2's own array pickles need ``numpy._core``, absent from the numpy 1.x
  that PYSKL's environments use). posestream itself never reads pickle.

Heatmap volumes (``--volumes``) follow PYSKL's PoseC3D test pipeline on the whole clip: ``PoseCompact``
(padding 0.25, threshold 10, hw_ratio 1, allow_imgpad) to a square box around every kept pose, ``Resize`` of that
box to the volume size without keeping the ratio, then ``GeneratePoseTarget`` (keypoints and/or
:data:`models.codecs.PYSKL_LIMBS`), written chunk by chunk into an ``.npz`` on the device the engine runs on.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.layouts import COCO17, convert, get_layout
from stream.posefile import PoseRecord

PICKLE_PROTOCOL = 4  # readable by Python 3.4+ (PYSKL supports 3.7)


def frame_dir_of(path: str | Path) -> str:
    """PYSKL's ``frame_dir`` of a video: its file name up to the first dot."""
    return Path(path).name.split(".")[0]


def rank_tracks(records: Iterable[PoseRecord]) -> list[int]:
    """Track ids, most frames with a pose first; ties by first appearance (then id), as PYSKL's pose_tracking."""
    frames: dict[int, int] = {}
    first: dict[int, tuple[int, int]] = {}
    for t, record in enumerate(records):
        for i, track in enumerate(record.poses.track_id.tolist()):
            if track < 0:
                raise ValueError(f"frame {record.frame}: a person without a track id (PYSKL export needs tracking)")
            frames[track] = frames.get(track, 0) + 1
            first.setdefault(track, (t, i))
    return sorted(frames, key=lambda track: (-frames[track], first[track], track))


def annotation(records: list[PoseRecord], frame_dir: str, img_shape: tuple[int, int], label: int = -1,
               max_persons: int = 2) -> dict:
    """PYSKL's annotation of one video from its pose records (one per frame, in order, with track ids)."""
    if max_persons < 1:
        raise ValueError(f"max_persons must be >= 1, got {max_persons}")
    h, w = (int(v) for v in img_shape)
    kept = rank_tracks(records)[:max_persons]
    slot = {track: m for m, track in enumerate(kept)}
    t_total = len(records)
    keypoint = np.zeros((len(kept), t_total, COCO17.num_joints, 2), np.float32)
    score = np.zeros((len(kept), t_total, COCO17.num_joints), np.float32)
    for t, record in enumerate(records):
        poses = record.poses
        if not len(poses):
            continue
        xy, sc = convert(poses.xy, poses.score, get_layout(poses.layout), COCO17)
        for i, track in enumerate(poses.track_id.tolist()):
            if track in slot:
                keypoint[slot[track], t], score[slot[track], t] = xy[i], sc[i]
    ok = np.isfinite(keypoint).all(-1) & np.isfinite(score)
    keypoint[~ok], score[~ok] = 0, 0
    return {"frame_dir": frame_dir, "label": int(label), "img_shape": (h, w), "original_shape": (h, w),
            "total_frames": t_total, "keypoint": keypoint, "keypoint_score": score}


class _Pickler(pickle.Pickler):
    """Arrays as ``numpy.ndarray(shape, dtype, bytearray)``: loadable by numpy 1.x and 2.x alike."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            data = np.ascontiguousarray(obj)
            return np.ndarray, (data.shape, data.dtype.str, bytearray(data.tobytes()))
        return NotImplemented


def write_pickle(obj, path: str | Path) -> None:
    """Write ``obj`` (annotations or a data set) as PYSKL reads it; the file appears whole or not at all."""
    path = Path(path)
    buf = io.BytesIO()
    _Pickler(buf, protocol=PICKLE_PROTOCOL).dump(obj)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def compact_box(keypoint: np.ndarray, img_shape: tuple[int, int], padding: float = 0.25, threshold: int = 10,
                hw_ratio: float = 1.0) -> tuple[int, int, int, int]:
    """PYSKL's ``PoseCompact(allow_imgpad=True)`` box (x0, y0, x1, y1) around keypoints [..., 2] (zeros = none);
    the whole frame when the poses span less than ``threshold`` pixels."""
    h, w = img_shape
    x, y = keypoint[..., 0], keypoint[..., 1]
    xs, ys = x[x != 0], y[y != 0]
    if not xs.size or not ys.size or np.ptp(xs) < threshold or np.ptp(ys) < threshold:
        return 0, 0, int(w), int(h)
    min_x, max_x, min_y, max_y = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    cx, cy = (max_x + min_x) / 2, (max_y + min_y) / 2
    half_w, half_h = (max_x - min_x) / 2 * (1 + padding), (max_y - min_y) / 2 * (1 + padding)
    half_h = max(hw_ratio * half_w, half_h)
    half_w = max(1 / hw_ratio * half_h, half_w)
    return int(cx - half_w), int(cy - half_h), int(cx + half_w), int(cy + half_h)


def volume_keypoints(ann: dict, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Keypoints [M,T,K,2] in volume pixels (PoseCompact then Resize to ``size`` = (w, h)) and the box."""
    kp = ann["keypoint"].astype(np.float32)
    box = compact_box(kp, ann["img_shape"])
    x0, y0, x1, y1 = box
    moved = kp.copy()
    moved[..., 0][kp[..., 0] != 0] -= x0  # PoseCompact shifts only non-zero coordinates
    moved[..., 1][kp[..., 1] != 0] -= y0
    moved *= np.array([size[0] / (x1 - x0), size[1] / (y1 - y0)], np.float32)
    return moved, box


@dataclass(frozen=True)
class VolumeSpec:
    """What ``--volumes`` writes: ``kind`` keypoints, limbs or both; ``size`` (w, h); ``sigma`` in volume pixels."""

    kind: str = "keypoints"
    size: tuple[int, int] = (64, 64)
    sigma: float = 0.6
    chunk: int = 64  # frames computed (and held) at a time

    def __post_init__(self) -> None:
        if self.kind not in ("keypoints", "limbs", "both"):
            raise ValueError(f"volume kind must be keypoints, limbs or both, got {self.kind!r}")
        if min(self.size) < 1 or not self.sigma > 0 or self.chunk < 1:
            raise ValueError(f"volume size and sigma must be positive, got {self.size} and {self.sigma}")


def _volume_fn(device: str):
    """numpy on the CPU (the faster there), torch on a GPU."""
    if device == "cpu":
        from models.codecs import heatmap_volume

        return heatmap_volume

    from models.codecs import heatmap_volume_torch

    def on_device(kp, sc, size, sigma, limbs):
        return heatmap_volume_torch(kp, sc, size, sigma, limbs, device=device).cpu().numpy()

    return on_device


def write_volumes(path: str | Path, ann: dict, spec: VolumeSpec, device: str | None = None) -> dict:
    """Heatmap volumes of an annotation into an ``.npz`` (deflated), ``spec.chunk`` frames at a time.

    Arrays: ``keypoints`` float32 [T,17,H,W] and/or ``limbs`` [T,17,H,W] (``limb_pairs`` [17,2] int64),
    ``box`` int64 [4] (x0, y0, x1, y1: the frame pixels the maps cover), ``sigma``. ``device`` None: CUDA when
    available (where the engine runs), else the CPU. Returns a summary for the log.
    """
    import torch

    from models.codecs import PYSKL_LIMBS

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    volume = _volume_fn(device)
    kp, box = volume_keypoints(ann, spec.size)
    sc = ann["keypoint_score"].astype(np.float32)
    w, h = spec.size
    t_total = kp.shape[1]
    kinds = {"keypoints": [("keypoints", None)], "limbs": [("limbs", PYSKL_LIMBS)]}
    kinds["both"] = kinds["keypoints"] + kinds["limbs"]
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, limbs in kinds[spec.kind]:
            channels = kp.shape[2] if limbs is None else len(limbs)
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_2_0(
                    fh, {"descr": "<f4", "fortran_order": False, "shape": (t_total, channels, h, w)})
                for t0 in range(0, t_total, spec.chunk):
                    part = slice(t0, t0 + spec.chunk)
                    fh.write(volume(kp[:, part], sc[:, part], (w, h), spec.sigma, limbs).tobytes())
        extras = {"box": np.asarray(box, np.int64), "sigma": np.float32(spec.sigma)}
        if spec.kind != "keypoints":
            extras["limb_pairs"] = np.asarray(PYSKL_LIMBS, np.int64)
        for name, array in extras.items():
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
    tmp.replace(path)
    return {"volumes": str(path), "kind": spec.kind, "frames": t_total, "size": [w, h], "device": device}


# --- ``posestream video --pyskl / --volumes``: a pass over the pose file the renderer wrote ---------------------

def add_arguments(parser) -> None:
    """The export options of ``posestream video``."""
    g = parser.add_argument_group("skeleton-action export (PYSKL); implies --tracking")
    g.add_argument("--pyskl", metavar="OUT.pkl", help="also write PYSKL's annotation of the video (a list of one)")
    g.add_argument("--label", type=int, default=-1, help="its action label (default -1: unknown)")
    g.add_argument("--max-persons", type=int, default=2,
                   help="tracks kept, most frames first (PYSKL's rule; default 2, as its GCN configs)")
    g.add_argument("--volumes", metavar="OUT.npz", help="also write PoseC3D heatmap volumes of the kept tracks")
    g.add_argument("--volume-kind", choices=["keypoints", "limbs", "both"], default="keypoints",
                   help="keypoint and/or limb maps (default keypoints)")
    g.add_argument("--volume-size", type=int, nargs=2, default=(64, 64), metavar=("W", "H"),
                   help="map size in pixels (default 64 64)")
    g.add_argument("--volume-sigma", type=float, default=0.6, help="Gaussian sigma in map pixels (default 0.6)")


def prepare(args, workdir: Path) -> None:
    """Before the run: check the options, track people, keep a pose file (a temporary one if none was asked)."""
    if args.max_persons < 1:
        raise ValueError(f"--max-persons must be >= 1, got {args.max_persons}")
    args.volume_spec = VolumeSpec(args.volume_kind, tuple(args.volume_size), args.volume_sigma)
    args.tracking = True
    if not args.poses:
        args.poses = str(workdir / "poses.jsonl")


def frame_shape(source: str) -> tuple[int, int]:
    """(height, width) of the source's frames (its first decodable one)."""
    from stream.sources import SourceError, open_source

    src = open_source(source)
    try:
        for frame in src.frames():
            return frame.image.shape[:2]
    finally:
        src.close()
    raise SourceError(f"{source}: no decodable frame")


def run_with_export(source: str, args, total: int | None) -> int:
    """``posestream video`` with --pyskl / --volumes: the run (tracking, a pose file), then the export from its
    pose file (also after a truncated or interrupted run: the frames processed); returns the exit code."""
    import shutil
    import sys
    import tempfile

    from stream.pipeline import run_pipeline
    from stream.sources import SourceError
    from stream.stages import EXIT_FAIL, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_TRUNCATED

    workdir = Path(tempfile.mkdtemp(prefix="posestream-export-"))
    try:
        try:
            prepare(args, workdir)
        except ValueError as err:
            print(f"posestream video: {err}", file=sys.stderr)
            return EXIT_INPUT
        code = run_pipeline(source, True, args, total)
        if code not in (EXIT_OK, EXIT_TRUNCATED, EXIT_INTERRUPTED):
            return code
        try:
            print(f"posestream video: {export(args, source)}", file=sys.stderr)
        except (ValueError, OSError, SourceError) as err:
            print(f"posestream video: export failed: {err}", file=sys.stderr)
            return EXIT_FAIL if code == EXIT_OK else code
        return code
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def export(args, source: str) -> str:
    """After the run: write what was asked from the pose file; returns a one-line summary."""
    from stream.posefile import read_pose_file

    records = list(read_pose_file(args.poses))
    if not records:
        raise ValueError(f"{args.poses}: no pose records: nothing to export")
    ann = annotation(records, frame_dir_of(source), frame_shape(source), args.label, args.max_persons)
    done = []
    if args.pyskl:
        write_pickle([ann], args.pyskl)
        done.append(f"{args.pyskl} ({ann['keypoint'].shape[0]} persons x {ann['total_frames']} frames)")
    if args.volumes:
        summary = write_volumes(args.volumes, ann, args.volume_spec)
        done.append(f"{args.volumes} ({summary['kind']}, on {summary['device']})")
    return "wrote " + ", ".join(done)
