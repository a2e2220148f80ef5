"""The one annotation record every reader produces and every later stage (shards, augmentation) consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.layouts import get_layout


@dataclass
class Sample:
    """The people annotated in one image. N persons, K joints of ``layout``.

    image:      path of the image file (str/Path) or its encoded bytes (JPEG/PNG), as stored in shards
    key:        a unique name of the sample (for warnings and splits)
    xy:         float32 [N,K,2] pixels, pixel-centre convention
    vis:        float32 [N,K]   0 not labelled, 1 labelled but occluded (or unknown), 2 visible
    xyz:        float32 [N,K,3] camera millimetres, or None
    intrinsics: (fx, fy, cx, cy) pixels, or None
    center:     float32 [N,2] person centres (MPII), or None
    scale:      float32 [N]   person height / 200 px (MPII), or None
    bbox:       float32 [N,4] (x, y, w, h) person boxes (COCO), or None
    size:       (width, height) of the image, or None when unknown
    """

    image: str | Path | bytes
    key: str
    layout: str
    xy: np.ndarray
    vis: np.ndarray
    xyz: np.ndarray | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    bbox: np.ndarray | None = None
    size: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = get_layout(self.layout).num_joints
        self.xy = np.asarray(self.xy, np.float32).reshape(-1, k, 2)
        n = len(self.xy)
        self.vis = np.asarray(self.vis, np.float32).reshape(n, k)
        if self.xyz is not None:
            self.xyz = np.asarray(self.xyz, np.float32).reshape(n, k, 3)
        for name, shape in (("center", (n, 2)), ("scale", (n,)), ("bbox", (n, 4))):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, np.float32)
                if value.shape != shape:
                    raise ValueError(f"sample {self.key!r}: {name} has shape {value.shape}, expected {shape}")
                setattr(self, name, value)

    @property
    def num_persons(self) -> int:
        return len(self.xy)

    def scaled(self, factor: int) -> Sample:
        """A copy whose pixel quantities describe the image shrunk ``factor`` times (JPEG reduced decoding):
        x -> (x + 0.5) / factor - 0.5 for points, centres and principal points; sizes, scales and focal
        lengths divided by ``factor``. 3D points are unchanged."""
        f = float(factor)
        pix = lambda a: None if a is None else (np.asarray(a, np.float32) + 0.5) / f - 0.5  # noqa: E731
        k = self.intrinsics
        bbox = None if self.bbox is None else np.concatenate([pix(self.bbox[:, :2]), self.bbox[:, 2:] / f], axis=1)
        return Sample(image=self.image, key=self.key, layout=self.layout, xy=pix(self.xy), vis=self.vis.copy(),
                      xyz=self.xyz, intrinsics=None if k is None else (k[0] / f, k[1] / f, (k[2] + 0.5) / f - 0.5,
                                                                        (k[3] + 0.5) / f - 0.5),
                      center=pix(self.center), scale=None if self.scale is None else self.scale / f, bbox=bbox,
                      size=None if self.size is None else (self.size[0] // factor, self.size[1] // factor),
                      extra=dict(self.extra))

    def read_image_bytes(self) -> bytes:
        """The encoded image: ``image`` itself when bytes, else the file's contents."""
        if isinstance(self.image, bytes):
            return self.image
        return Path(self.image).read_bytes()
