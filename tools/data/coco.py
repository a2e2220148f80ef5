"""COCO person keypoints (``person_keypoints_*.json``) through the pycocotools COCO API.

Each image with at least one non-crowd person that has a labelled keypoint becomes a :class:`Sample` with
those people; keypoints are ``[x1, y1, v1, ...]`` with v = 0 not labelled, 1 labelled but not visible,
2 visible (kept as is). COCO's integer pixel coordinates are used unchanged.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from tools.data.sample import Sample


def read_coco(path: str | Path, image_root: str | Path | None = None, min_keypoints: int = 1) -> list[Sample]:
    """Samples of a COCO keypoints annotation file; images under ``image_root`` (default: its folder)."""
    from pycocotools.coco import COCO

    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such COCO annotation file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
        cats = coco.getCatIds(catNms=["person"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a COCO annotation file ({err!r})") from None
    if not cats:
        raise ValueError(f"{path}: no 'person' category")
    samples = []
    for image_id in sorted(coco.getImgIds(catIds=cats)):
        info = coco.loadImgs(image_id)[0]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=cats, iscrowd=False))
                if a.get("num_keypoints", 0) >= min_keypoints]
        if not anns:
            continue
        try:
            kps = np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
        except ValueError:
            raise ValueError(f"{path}: image {image_id}: keypoints must hold 17 x [x, y, v]") from None
        samples.append(Sample(
            image=root / info["file_name"], key=f"coco/{image_id}", layout="coco17", xy=kps[..., :2],
            vis=kps[..., 2], bbox=np.asarray([a["bbox"] for a in anns]), size=(info["width"], info["height"]),
            extra={"area": [float(a.get("area", 0.0)) for a in anns], "image_id": image_id}))
    return samples
