"""CMU Panoptic: 3D bodies (``hdPose3d_stage1_coco19/body3DScene_XXXXXXXX.json``) seen by calibrated cameras.

Body file::

    {"version": 1.x, "univTime": t, "fpsType": "hd_29_97",
     "bodies": [{"id": int, "joints19": [x, y, z, c] * 19}]}     # world centimetres, c = confidence (-1 absent)

Calibration file (``calibration_<sequence>.json``)::

    {"cameras": [{"name": "00_00", "type": "hd", "resolution": [w, h], "panel": p, "node": n,
                  "K": 3x3, "distCoef": [k1, k2, p1, p2, k3], "R": 3x3, "t": 3x1 (cm)}]}

A world point X (cm) is in camera ``c`` at ``R X + t`` (cm; x 10 for our millimetres), and in pixels after
the radial/tangential distortion of OpenCV's model and ``K``. Each (frame, camera) becomes one
:class:`Sample` with 2D (distorted pixels), 3D camera mm and the pinhole intrinsics (fx, fy, cx, cy) of
``K``: projecting the 3D points with those intrinsics alone omits the lens distortion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.data.sample import Sample

CM_TO_MM = 10.0


@dataclass(frozen=True)
class PanopticCamera:
    """One calibrated camera: K [3,3], dist [5] (k1, k2, p1, p2, k3), R [3,3], t [3] cm, resolution (w, h)."""

    name: str
    kind: str
    resolution: tuple[int, int]
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def to_camera_mm(self, world_cm: np.ndarray) -> np.ndarray:
        """Camera coordinates [...,3] mm of world points [...,3] cm."""
        return (np.asarray(world_cm, np.float64) @ self.R.T + self.t) * CM_TO_MM

    def project(self, world_cm: np.ndarray) -> np.ndarray:
        """Distorted pixels [...,2] of world points [...,3] cm (in front of the camera)."""
        cam = self.to_camera_mm(world_cm)
        x, y = cam[..., 0] / cam[..., 2], cam[..., 1] / cam[..., 2]
        k1, k2, p1, p2, k3 = self.dist
        r = x * x + y * y
        radial = 1.0 + k1 * r + k2 * r * r + k3 * r * r * r
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r + 2.0 * x * x)
        yd = y * radial + 2.0 * p2 * x * y + p1 * (r + 2.0 * y * y)
        k = self.K
        return np.stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]], axis=-1)

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        return float(self.K[0, 0]), float(self.K[1, 1]), float(self.K[0, 2]), float(self.K[1, 2])


def read_calibration(path: str | Path) -> dict[str, PanopticCamera]:
    """Cameras of a Panoptic calibration JSON by name."""
    path = Path(path)
    try:
        cameras = json.loads(path.read_text())["cameras"]
        out = {}
        for c in cameras:
            dist = np.zeros(5)
            coef = np.asarray(c.get("distCoef", []), np.float64).reshape(-1)[:5]
            dist[: len(coef)] = coef
            out[str(c["name"])] = PanopticCamera(
                name=str(c["name"]), kind=str(c.get("type", "")), resolution=tuple(int(v) for v in c["resolution"]),
                K=np.asarray(c["K"], np.float64).reshape(3, 3), dist=dist,
                R=np.asarray(c["R"], np.float64).reshape(3, 3), t=np.asarray(c["t"], np.float64).reshape(3))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a Panoptic calibration file ({err!r})") from None
    return out


def read_bodies(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [N] int64, joints [N,19,3] world cm, confidence [N,19]) of a body3DScene JSON file."""
    path = Path(path)
    try:
        bodies = json.loads(path.read_text())["bodies"]
        ids = np.asarray([b["id"] for b in bodies], np.int64)
        raw = np.asarray([b["joints19"] for b in bodies], np.float64).reshape(len(bodies), 19, 4)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a Panoptic coco19 body file ({err!r})") from None
    return ids, raw[..., :3], raw[..., 3]


def frame_number(path: str | Path) -> int:
    """The frame number of a ``body3DScene_00001234.json`` name."""
    m = re.search(r"(\d+)\.json$", Path(path).name)
    if m is None:
        raise ValueError(f"{path}: no frame number in the file name")
    return int(m.group(1))


def panoptic_samples(body_file: str | Path, cameras: dict[str, PanopticCamera], image_root: str | Path,
                     names: list[str] | None = None, min_confidence: float = 0.1) -> list[Sample]:
    """One Sample per camera (``names``, default all) for a body file; images are
    ``image_root/<cam>/<cam>_<frame:08d>.jpg`` (Panoptic's hdImgs layout).

    A joint is labelled (visibility 2) when its confidence >= ``min_confidence``, it lies in front of the
    camera and inside the image; else visibility 0. People with no labelled joint in a view are left out.
    """
    ids, joints, conf = read_bodies(body_file)
    frame = frame_number(body_file)
    out = []
    for name in names or sorted(cameras):
        if name not in cameras:
            raise ValueError(f"camera {name!r} is not in the calibration (have {', '.join(sorted(cameras))})")
        cam = cameras[name]
        xyz = cam.to_camera_mm(joints)
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = cam.project(joints)
        w, h = cam.resolution
        inside = (xy[..., 0] >= -0.5) & (xy[..., 0] < w - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] < h - 0.5)
        vis = np.where((conf >= min_confidence) & (xyz[..., 2] > 0) & inside, 2.0, 0.0)
        keep = vis.any(axis=1)
        out.append(Sample(image=Path(image_root) / name / f"{name}_{frame:08d}.jpg", key=f"panoptic/{name}/{frame}",
                          layout="panoptic19", xy=np.nan_to_num(xy[keep]), vis=vis[keep], xyz=xyz[keep],
                          intrinsics=cam.intrinsics, size=(w, h), extra={"ids": ids[keep].tolist()}))
    return out
