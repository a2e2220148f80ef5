"""MPII Human Pose in the JSON split used by the tutorial (train.json / validation.json).

Each file is a JSON list with one object per person::

    {"image": "015601864.jpg", "joints": [[x, y] * 16], "joints_vis": [0|1 * 16],
     "center": [x, y], "scale": s}          # person height in pixels = s * 200

Missing joints carry negative coordinates (e.g. -1) or ``joints_vis`` 0. MPII has no "occluded" state, so a
labelled joint becomes visibility 2. People of the same image are grouped into one :class:`Sample`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tools.data.sample import Sample

PIXEL_STD = 200.0  # MPII's scale unit: person height / 200 px


def _person(rec: dict, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    try:
        joints = np.asarray(rec["joints"], np.float64)
        vis = np.asarray(rec["joints_vis"], np.float64)
        center = np.asarray(rec["center"], np.float64)
        scale = float(rec["scale"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad MPII record ({err!r})") from None
    if joints.shape != (16, 2) or vis.shape != (16,) or center.shape != (2,):
        raise ValueError(f"{where}: joints must be 16 x [x, y], joints_vis 16 values, center [x, y]; "
                         f"got {joints.shape}, {vis.shape}, {center.shape}")
    labelled = (vis > 0) & (joints[:, 0] >= 0) & (joints[:, 1] >= 0)
    return joints, np.where(labelled, 2.0, 0.0), center, scale


def read_mpii(path: str | Path, image_root: str | Path | None = None) -> list[Sample]:
    """Samples (one per image, in first-appearance order) of an MPII JSON file; images under ``image_root``
    (default: the JSON file's folder ``images/``)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent / "images"
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of person records, got {type(records).__name__}")
    groups: dict[str, list] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "image" not in rec:
            raise ValueError(f"{path}: record {i} has no 'image'")
        groups.setdefault(str(rec["image"]), []).append(_person(rec, f"{path}: record {i}"))
    samples = []
    for name, people in groups.items():
        joints, vis, center, scale = (np.stack([p[k] for p in people]) for k in range(4))
        samples.append(Sample(image=root / name, key=f"mpii/{name}", layout="mpii16", xy=joints, vis=vis,
                              center=center, scale=scale))
    return samples
