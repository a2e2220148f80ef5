"""Typed per-frame results of the engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Poses:
    """The people found in one frame, in that frame's pixels.

    Shapes (N persons, K joints of ``layout``):
        xy:           float32 [N, K, 2]  (x, y) frame pixels, pixel-centre convention
        score:        float32 [N, K]     per-joint confidence in [0, 1]
        xyz:          float32 [N, K, 3]  camera coordinates in millimetres, or None (2D-only models)
        person_score: float32 [N]        confidence of each person
        track_id:     int64   [N]        stable id per stream; -1 when tracking is off
    """

    layout: str
    xy: np.ndarray
    score: np.ndarray
    person_score: np.ndarray
    track_id: np.ndarray
    xyz: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, k = self.score.shape
        if self.xy.shape != (n, k, 2):
            raise ValueError(f"Poses.xy has shape {self.xy.shape}, expected {(n, k, 2)}")
        if self.person_score.shape != (n,) or self.track_id.shape != (n,):
            raise ValueError("Poses.person_score and Poses.track_id must have shape [N]")
        if self.xyz is not None and self.xyz.shape != (n, k, 3):
            raise ValueError(f"Poses.xyz has shape {self.xyz.shape}, expected {(n, k, 3)}")

    def __len__(self) -> int:
        return len(self.person_score)

    @classmethod
    def empty(cls, layout: str, num_joints: int, with_3d: bool = False) -> Poses:
        return cls(
            layout=layout,
            xy=np.zeros((0, num_joints, 2), np.float32),
            score=np.zeros((0, num_joints), np.float32),
            person_score=np.zeros((0,), np.float32),
            track_id=np.zeros((0,), np.int64),
            xyz=np.zeros((0, num_joints, 3), np.float32) if with_3d else None,
        )
