"""Pose files: JSON Lines, one object per frame, shared by the renderer, the subscriber,
the synthetic generator's ground truth and the evaluator.

The renderer's files start with a header line (readers skip it; :func:`read_header` returns it)::

    {"kind": "header", "format": "posestream.poses", "version": 1, "stream": str, "model_id": str,
     "layout": str, "joints": [str, ...], "width": int, "height": int,
     "intrinsics": {"fx", "fy", "cx", "cy"} | null}           # the camera the 3D was computed with

Then one line per frame::

    {"stream": str, "frame": int, "pts": int | null, "capture_ns": int | null,
     "latency_ms": float | null, "layout": str,
     "intrinsics": {"fx", "fy", "cx", "cy"} | null,          # optional, ground truth only
     "persons": [{"id": int, "score": float,
                  "keypoints": [[x, y, s], ...],            # frame pixels; s = score (or visibility in ground truth)
                  "keypoints_3d": [[X, Y, Z], ...] | null}],  # camera millimetres
     "teacher": str, "ignore": [[x0, y0, x1, y1], ...]}     # optional, teacher labels (``posestream label``)

A labels file (``stream.label``) has its own header, ``"format": "posestream.labels"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from engine.results import Poses


@dataclass
class PoseRecord:
    """One frame of a pose file."""

    stream: str
    frame: int
    layout: str
    poses: Poses
    pts: int | None = None
    capture_ns: int | None = None
    latency_ms: float | None = None
    intrinsics: dict[str, float] | None = field(default=None)
    teacher: str | None = None                 # the teacher that labelled this frame
    ignore: np.ndarray | None = None           # float32 [M, 4] boxes where the teacher saw a person it could not label

    def to_json(self) -> dict:
        p = self.poses
        persons = []
        for i in range(len(p)):
            kps = np.concatenate([p.xy[i], p.score[i][:, None]], axis=1).astype(np.float64)  # float64: short decimals
            persons.append({
                "id": int(p.track_id[i]),
                "score": round(float(p.person_score[i]), 4),
                "keypoints": np.round(kps, 3).tolist(),
                "keypoints_3d": None if p.xyz is None else np.round(p.xyz[i].astype(np.float64), 2).tolist(),
            })
        out = {
            "stream": self.stream, "frame": int(self.frame), "pts": self.pts, "capture_ns": self.capture_ns,
            "latency_ms": None if self.latency_ms is None else round(float(self.latency_ms), 3),
            "layout": self.layout, "persons": persons,
        }
        if self.intrinsics is not None:
            out["intrinsics"] = {k: float(self.intrinsics[k]) for k in ("fx", "fy", "cx", "cy")}
        if self.teacher is not None:
            out["teacher"] = self.teacher
        if self.ignore is not None:
            out["ignore"] = np.round(np.asarray(self.ignore, np.float64).reshape(-1, 4), 2).tolist()
        return out

    @classmethod
    def from_json(cls, obj: dict, num_joints: int | None = None) -> PoseRecord:
        persons = obj["persons"]
        if persons:
            kps = np.asarray([q["keypoints"] for q in persons], np.float32).reshape(len(persons), -1, 3)
        else:
            if num_joints is None:
                from models.layouts import get_layout

                num_joints = get_layout(obj["layout"]).num_joints
            kps = np.zeros((0, num_joints, 3), np.float32)
        has_3d = bool(persons) and all(q.get("keypoints_3d") is not None for q in persons)
        xyz = np.asarray([q["keypoints_3d"] for q in persons], np.float32).reshape(len(persons), -1, 3) if has_3d else None
        poses = Poses(
            layout=obj["layout"], xy=kps[..., :2].copy(), score=kps[..., 2].copy(),
            person_score=np.asarray([q.get("score", 1.0) for q in persons], np.float32),
            track_id=np.asarray([q.get("id", -1) for q in persons], np.int64), xyz=xyz,
        )
        ignore = obj.get("ignore")
        return cls(stream=obj.get("stream", ""), frame=int(obj["frame"]), layout=obj["layout"], poses=poses,
                   pts=obj.get("pts"), capture_ns=obj.get("capture_ns"), latency_ms=obj.get("latency_ms"),
                   intrinsics=obj.get("intrinsics"), teacher=obj.get("teacher"),
                   ignore=None if ignore is None else np.asarray(ignore, np.float32).reshape(-1, 4))


FORMAT = "posestream.poses"
FORMAT_VERSION = 1


def camera_json(intrinsics: tuple[float, float, float, float] | None) -> dict[str, float] | None:
    """``{"fx", "fy", "cx", "cy"}`` of a camera (fx, fy, cx, cy), as pose files and records carry it, or None."""
    return None if intrinsics is None else dict(zip(("fx", "fy", "cx", "cy"), map(float, intrinsics)))


def make_header(*, stream: str, model_id: str, layout: str, width: int, height: int,
                intrinsics: tuple[float, float, float, float] | None) -> dict:
    """The header object of a pose file (see the module docstring)."""
    from models.layouts import get_layout

    return {"kind": "header", "format": FORMAT, "version": FORMAT_VERSION, "stream": stream, "model_id": model_id,
            "layout": layout, "joints": list(get_layout(layout).names), "width": int(width), "height": int(height),
            "intrinsics": camera_json(intrinsics)}


def is_header(obj) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == "header"


def read_header(path: str | Path) -> dict | None:
    """The header object on the first line of a pose file (``{"kind": "header", ...}``), or None when it has none."""
    with Path(path).open() as fh:
        first = fh.readline()
    try:
        obj = json.loads(first)
    except ValueError:
        return None
    return obj if is_header(obj) else None


def count_records(path: str | Path | None) -> int | None:
    """The frame records in a pose file, its header line aside (None where it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (OSError, TypeError):
        return None
    return data.count(b"\n") - data.startswith(b'{"kind":"header"')


def write_header(fh: IO[str], header: dict) -> None:
    """Write ``header`` (:func:`make_header`) as the first line of a pose file."""
    fh.write(json.dumps(header, separators=(",", ":")) + "\n")


def write_record(fh: IO[str], record: PoseRecord) -> None:
    fh.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")


def read_pose_file(path: str | Path) -> Iterator[PoseRecord]:
    """Records of a pose file in order (header lines skipped); a malformed line raises ValueError naming the
    file and line."""
    path = Path(path)
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if is_header(obj):
                    continue
                yield PoseRecord.from_json(obj)
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: malformed pose record ({err})") from err
