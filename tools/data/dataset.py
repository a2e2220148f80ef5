"""Training datasets: synthetic (generated on the fly) or sharded samples -> augmented inputs + codec targets.

Targets are made inside the DataLoader's worker processes. Items are dicts of tensors:

* hourglass (one person crop): ``image`` uint8 [H,W,3] BGR (as decoded; the trainer makes RGB [B,3,H,W]), ``heatmaps`` f32 [K,h,w], ``weights`` f32 [K],
  ``keypoints`` f32 [K,2] crop pixels, ``vis`` f32 [K], ``head_size`` f32 [] (PCKh head size in crop pixels,
  0 when the layout has no head segment);
* spm (whole frame): ``image`` and the SPM codec's ``root``, ``disp``, ``disp_mask``, ``depth``, ``depth_mask``.

Network normalisation (mean/std) is left to the trainer, on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from models.config import ModelConfig
from models.layouts import convert, get_layout
from tools.data.augment import AugmentParams, augment_frame, augment_person, person_box
from tools.data.sample import Sample
from tools.metrics import head_sizes


def _image(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image))


class Targets:
    """(image, Sample-like annotations) -> list of training items for one model config."""

    def __init__(self, config: ModelConfig, params: AugmentParams, min_joints: int = 4, max_persons: int = 2):
        self.config, self.params = config, params
        self.layout = get_layout(config.layout)
        self.min_joints, self.max_persons = min_joints, max_persons
        self.codec = config.heatmap_codec() if config.arch == "hourglass" else config.spm_codec()

    def decode_factor(self, sample: Sample) -> int:
        """The largest shrink factor (1, 2, 4, 8) at which every person crop of ``sample`` still has at least
        the network's input resolution (hourglass only; SPM frames decode in full)."""
        if self.config.arch != "hourglass" or sample.num_persons == 0:
            return 1
        margin = self.params.margin[0] if self.params.train else self.params.val_margin
        shrink = self.params.scale[0] if self.params.train else 1.0
        sides = []
        for n in range(sample.num_persons):
            scale = None if sample.scale is None else float(sample.scale[n])
            box = person_box(sample.xy[n], sample.vis[n], margin, scale)
            if box is not None:
                sides.append(box[1] * shrink)
        factor, need = 1, max(self.params.input_size)
        while factor < 8 and sides and min(sides) / (2 * factor) >= need:
            factor *= 2
        return factor

    def _in_layout(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if sample.layout == self.layout.name:
            return sample.xy, sample.vis, sample.xyz
        src = get_layout(sample.layout)
        xy, vis = convert(sample.xy, sample.vis, src, self.layout)
        xyz = None if sample.xyz is None else convert(sample.xyz, sample.vis, src, self.layout)[0]
        return xy, vis, xyz

    def __call__(self, sample: Sample, image: np.ndarray, rng: np.random.Generator) -> list[dict]:
        xy, vis, xyz = self._in_layout(sample)
        if self.config.arch == "spm":
            return [self._frame_item(sample, image, xy, vis, xyz, rng)]
        h, w = image.shape[:2]
        inside = (xy[..., 0] >= 0) & (xy[..., 0] <= w - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= h - 1)
        people = np.flatnonzero(((vis > 0) & inside).sum(axis=1) >= self.min_joints)
        if len(people) > self.max_persons:
            people = rng.choice(people, self.max_persons, replace=False)
        items = []
        for n in people:
            scale = None if sample.scale is None else float(sample.scale[n])
            out = augment_person(image, xy, vis, int(n), self.layout, self.params, rng, scale)
            if out is not None:
                items.append(self._person_item(*out[:3], int(n)))
        return items

    def _person_item(self, img: np.ndarray, xy: np.ndarray, vis: np.ndarray, n: int) -> dict:
        kp, v = xy[n], vis[n]
        heatmaps, weights = self.codec.encode(kp[None], (v > 0).astype(np.float32)[None])
        head = float(head_sizes(kp[None], self.layout)[0]) if self.layout.head_segment else 0.0
        return {"image": _image(img), "heatmaps": torch.from_numpy(heatmaps), "weights": torch.from_numpy(weights),
                "keypoints": torch.from_numpy(kp.astype(np.float32)), "vis": torch.from_numpy(v.astype(np.float32)),
                "head_size": torch.tensor(head, dtype=torch.float32)}

    def _frame_item(self, sample: Sample, image, xy, vis, xyz, rng) -> dict:
        img, xy2, vis2, k, xyz2, _ = augment_frame(image, xy, vis, self.layout, self.params, rng, sample.intrinsics, xyz)
        maps = self.codec.encode(xy2, vis2, xyz2, k)
        return {"image": _image(img), **{name: torch.from_numpy(v) for name, v in maps.items()}}


def synthetic_sample(seed: int, layout: str, size: tuple[int, int], persons: tuple[int, int]
                     ) -> tuple[Sample, np.ndarray]:
    """(Sample, BGR image) of ``tools.synth.generate_sample`` (visibility 0/1/2, 3D, intrinsics)."""
    from tools.synth import generate_sample

    frame, rec = generate_sample(seed, persons=persons, size=size, layout=layout)
    p, k = rec.poses, rec.intrinsics
    sample = Sample(image=b"", key=f"synth/{seed}", layout=layout, xy=p.xy, vis=p.score, xyz=p.xyz,
                    intrinsics=(k["fx"], k["fy"], k["cx"], k["cy"]), size=size)
    return sample, frame


def _worker_slice() -> tuple[int, int, int]:
    info = get_worker_info()
    if info is None:
        return 0, 1, 0
    torch.set_num_threads(1)
    return info.id, info.num_workers, info.seed


class SynthDataset(IterableDataset):
    """``samples`` synthetic images per epoch (seeds ``seed * 10**7 + epoch * samples + i``), each giving
    one or more items through ``targets``. Workers split the images."""

    def __init__(self, targets: Targets, samples: int, seed: int = 0, size: tuple[int, int] = (320, 240),
                 persons: tuple[int, int] = (1, 3)):
        self.targets, self.samples, self.seed = targets, samples, seed
        self.size, self.persons = size, persons
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        wid, workers, _ = _worker_slice()
        base = self.seed * 10**7 + self.epoch * self.samples
        for i in range(wid, self.samples, workers):
            sample, image = synthetic_sample(base + i, self.targets.layout.name, self.size, self.persons)
            yield from self.targets(sample, image, np.random.default_rng([base + i, 7]))


class ShardDataset(IterableDataset):
    """Samples of shard files (workers take every n-th file), shuffled through a buffer, through ``targets``.

    Corrupt records and images are skipped with a warning (see :mod:`tools.data.shards`).
    """

    def __init__(self, targets: Targets, files: Sequence[str | Path], shuffle_buffer: int = 256, seed: int = 0):
        if not files:
            raise ValueError("ShardDataset: no shard files given")
        self.targets, self.files = targets, [str(f) for f in files]
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        from tools.data.shards import stream_samples

        wid, workers, _ = _worker_slice()
        mine = self.files[wid::workers] if len(self.files) >= workers else self.files
        if len(self.files) < workers and wid >= len(self.files):
            return
        rng = np.random.default_rng([self.seed, self.epoch, wid])
        factor = getattr(self.targets, "decode_factor", None)
        for sample, image in stream_samples(mine, self.shuffle_buffer, seed=self.seed * 1000 + self.epoch * 10 + wid,
                                            decode_factor=factor):
            yield from self.targets(sample, image, rng)
