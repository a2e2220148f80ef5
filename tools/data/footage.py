"""Labelled footage as training data: a video and its teacher's labels (``posestream label``) -> SPM items.

Labels are a pose JSON Lines file (stream/posefile.py) whose first line may be a header (``"kind": "header"``);
each record is one labelled frame: the teacher's persons with keypoints ``[x, y, confidence]`` in frame
pixels (any layout: converted to the model's, derived joints included, by ``models.layouts.convert``),
optional ``keypoints_3d`` (camera mm), and ``ignore`` boxes ``[x0, y0, x1, y1]`` where the teacher saw a
person it could not label.

What the trainer gets from a labelled frame (``FootageTargets``), beside the SPM codec's targets:

* joints the teacher placed with confidence >= ``min_conf`` are labelled, and the displacement and depth
  masks carry that confidence as their loss weight (``SPMCodec.encode(weights=...)``);
* ``root_weight_map`` [1,h,w]: 0 on the background inside ignore boxes (a person the teacher missed is neither a
  positive nor a negative; a labelled person inside a box stays a positive), 1 elsewhere; it weighs the
  root-map loss;
* ``heatmap_weight_map`` [K,h,w]: the same per joint, and 0 on the background within 3 sigma of each joint the
  teacher placed below ``min_conf`` (unsure: not a negative either); it weighs the joint-heatmap loss.

Synthetic items get all-ones maps, so both kinds share batches (``MixedDataset``).

Frames are decoded once by posestream's own reader (PyAV, ``stream.sources``: the frame numbers of the labels)
into a uint8 memory-mapped cache that the DataLoader's workers share. Training views are crops at the scale
the model will see the camera at (``side`` frame pixels per input pixel), jittered; validation views are the
whole frame at the model's input size. The validation frames are a held-out tail by time (``split_tail``),
never shuffled frames: neighbouring frames are near-copies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from models.codecs import SPMCodec
from models.config import ModelConfig
from models.layouts import convert, get_layout
from tools.data.augment import AugmentParams, augment_frame
from tools.data.dataset import _worker_slice, synthetic_sample


@dataclass
class LabelledFrame:
    """The teacher's persons in one frame, in the labels' layout. N persons, K joints.

    xy [N,K,2] frame px; conf [N,K] in [0, 1]; xyz [N,K,3] camera mm or None; ignore [M,4] x0, y0, x1, y1 frame px.
    """

    frame: int
    layout: str
    xy: np.ndarray
    conf: np.ndarray
    xyz: np.ndarray | None
    ignore: np.ndarray


@dataclass
class Labels:
    """A labels file: its header (or {}), layout, intrinsics (fx, fy, cx, cy frame px, or None) and frames."""

    path: Path
    header: dict
    layout: str
    intrinsics: tuple[float, float, float, float] | None
    frames: list[LabelledFrame]

    @property
    def teacher(self) -> str:
        return str(self.header.get("teacher", "unknown"))


def _frame(obj: dict, layout: str) -> LabelledFrame:
    k = get_layout(layout).num_joints
    persons = obj["persons"]
    kps = np.asarray([q["keypoints"] for q in persons], np.float32).reshape(len(persons), k, 3)
    has_3d = bool(persons) and all(q.get("keypoints_3d") is not None for q in persons)
    xyz = np.asarray([q["keypoints_3d"] for q in persons], np.float32).reshape(-1, k, 3) if has_3d else None
    ignore = np.asarray(obj.get("ignore") or [], np.float32).reshape(-1, 4)
    return LabelledFrame(int(obj["frame"]), layout, kps[..., :2].copy(), np.clip(kps[..., 2], 0.0, 1.0), xyz, ignore)


def read_labels(path: str | Path) -> Labels:
    """A labels file; ValueError naming the file and line when it is malformed, mixes layouts or is empty."""
    path = Path(path)
    header: dict = {}
    frames: list[LabelledFrame] = []
    layout = None
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise ValueError(f"labels {path}: cannot read ({err.strerror or err})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if obj.get("kind") == "header":
                header = obj
                continue
            layout = layout or obj["layout"]
            if obj["layout"] != layout:
                raise ValueError(f"layout {obj['layout']!r} after {layout!r}")
            frames.append(_frame(obj, layout))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"labels {path}:{lineno}: malformed record ({err})") from None
    if not frames:
        raise ValueError(f"labels {path}: no labelled frame")
    frames.sort(key=lambda f: f.frame)
    k = header.get("intrinsics")
    intrinsics = None if not k else tuple(float(k[n]) for n in ("fx", "fy", "cx", "cy"))
    return Labels(path, header, layout, intrinsics, frames)


def split_tail(frames: Sequence[int], val_fraction: float, gap: int) -> tuple[list[int], list[int]]:
    """(train, validation) frame numbers: validation is the last ``val_fraction`` of ``frames`` by time, and
    training stops ``gap`` frames before it (neighbouring frames are near-copies)."""
    ordered = sorted(frames)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, math.ceil(len(ordered) * val_fraction))
    val = ordered[-n_val:]
    train = [f for f in ordered[:-n_val] if f < val[0] - gap]
    if not train:
        raise ValueError(f"{len(ordered)} labelled frames leave none for training before the validation tail "
                         f"(last {n_val} frames, gap {gap})")
    return train, val


def decode_cache(video: str | Path, frames: Sequence[int], cache: Path) -> tuple[np.ndarray, dict[int, int]]:
    """The BGR frames ``frames`` of ``video`` (frame numbers as ``stream.sources`` counts them) as a read-only
    uint8 [T,H,W,3] memory map at ``cache`` (written once; reused when it holds the same frames), and the
    row of each frame number."""
    from stream.sources import open_source

    wanted = sorted(set(int(f) for f in frames))
    rows = {f: i for i, f in enumerate(wanted)}
    index = cache.with_suffix(".json")
    key = {"video": str(Path(video).resolve()), "frames": wanted}
    if cache.is_file() and index.is_file() and json.loads(index.read_text()).get("key") == key:
        return np.load(cache, mmap_mode="r"), rows
    source = open_source(str(video))
    out, seen = None, 0
    try:
        for number, item in enumerate(source.frames()):
            if number > wanted[-1]:
                break
            if number not in rows:
                continue
            if out is None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                out = np.lib.format.open_memmap(cache, mode="w+", dtype=np.uint8,
                                                shape=(len(wanted), *item.image.shape))
            out[rows[number]] = item.image
            seen += 1
    finally:
        source.close()
    if out is not None:
        out.flush()
        del out
    if seen < len(wanted):
        raise ValueError(f"{video}: {len(wanted) - seen} of the {len(wanted)} labelled frames could not be decoded "
                         f"({source.error or 'the video ended before frame ' + str(wanted[-1])})")
    index.write_text(json.dumps({"key": key}))
    return np.load(cache, mmap_mode="r"), rows


class Footage:
    """One labelled video: decoded frames + labels in a model's layout, split into training and validation."""

    def __init__(self, video: str | Path, labels: str | Path, layout: str, cache: Path, start: int = 0,
                 stop: int | None = None, val_fraction: float = 0.15, gap: int = 10):
        self.video = Path(video)
        self.labels = read_labels(labels)
        frames = [f for f in self.labels.frames if f.frame >= start and (stop is None or f.frame < stop)]
        if not frames:
            raise ValueError(f"labels {labels}: no labelled frame in [{start}, {stop if stop is not None else 'end'})")
        self.by_frame = {f.frame: f for f in frames}
        self.train, self.val = split_tail(list(self.by_frame), val_fraction, gap)
        self.layout = get_layout(layout)
        self.src = get_layout(self.labels.layout)
        self.images, self.rows = decode_cache(self.video, list(self.by_frame), cache)
        self.size = (self.images.shape[2], self.images.shape[1])

    def intrinsics(self) -> tuple[float, float, float, float]:
        """The labels' intrinsics, else posestream's default (f = frame width, c = frame centre)."""
        w, h = self.size
        return self.labels.intrinsics or (float(w), float(w), w / 2.0 - 0.5, h / 2.0 - 0.5)

    def get(self, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """(image BGR [H,W,3], xy [N,K,2], conf [N,K], xyz [N,K,3] | None, ignore [M,4]) in the model's layout."""
        f = self.by_frame[frame]
        xy, conf = convert(f.xy, f.conf, self.src, self.layout)
        xyz = None if f.xyz is None else convert(f.xyz, f.conf, self.src, self.layout)[0]
        return np.asarray(self.images[self.rows[frame]]), xy, conf, xyz, f.ignore


def _box_mask(boxes: np.ndarray, stride: int, map_size: tuple[int, int]) -> np.ndarray:
    """bool [h,w]: output pixels whose centre lies in any box (x0, y0, x1, y1 input px)."""
    w, h = map_size
    centres_x = (np.arange(w) + 0.5) * stride - 0.5
    centres_y = (np.arange(h) + 0.5) * stride - 0.5
    mask = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        mask |= ((centres_y >= y0) & (centres_y <= y1))[:, None] & ((centres_x >= x0) & (centres_x <= x1))[None]
    return mask


class FootageTargets:
    """Training items (image + SPM targets + loss-weight maps) of labelled frames and of synthetic samples.

    ``config``: the model (its layout, codec, input size: the validation view); ``params.input_size``: the size
    of the views made (training crops, or the model's input for validation). ``side``: frame pixels per input
    pixel at which the model sees the footage (1.0: native resolution). A training crop is centred near a
    labelled person (within 0.6 of its half-size) with probability ``person_crops``, else anywhere in the frame.
    The codec keeps the model's displacement normaliser at every size.
    """

    def __init__(self, config: ModelConfig, params: AugmentParams, side: float, min_conf: float = 0.5,
                 person_crops: float = 0.8):
        if config.arch != "spm":
            raise ValueError(f"footage training needs an SPM model, got {config.arch!r} ({config.name})")
        self.config, self.params, self.side, self.min_conf = config, params, float(side), float(min_conf)
        self.person_crops = float(person_crops)
        self.layout = get_layout(config.layout)
        model_codec = config.spm_codec()
        self.codec = SPMCodec(replace(model_codec.params, input_size=tuple(params.input_size),
                                      disp_norm=model_codec.params.z))

    def footage_item(self, footage: Footage, frame: int, rng: np.random.Generator) -> dict:
        image, xy, conf, xyz, ignore = footage.get(frame)
        h, w = image.shape[:2]
        if self.params.train:  # a crop at the model's scale: around a labelled person, else anywhere
            iw, ih = self.params.input_size
            half = np.array([iw, ih]) * self.side / 2.0
            lo, hi = np.minimum(half, [w / 2.0, h / 2.0]), np.maximum([w - half[0], h - half[1]], [w / 2.0, h / 2.0])
            people = np.flatnonzero((conf >= self.min_conf).sum(1) >= 4)
            if len(people) and rng.random() < self.person_crops:
                n = int(rng.choice(people))
                anchor = xy[n][conf[n] >= self.min_conf].mean(axis=0)
                centre = np.clip(anchor + rng.uniform(-0.6, 0.6, 2) * half, lo - 0.5, hi - 0.5)
            else:
                centre = rng.uniform(lo - 0.5, hi - 0.5)
        else:
            centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        img, xy2, conf2, k, xyz2, boxes = augment_frame(image, xy, conf, self.layout, self.params, rng,
                                                         footage.intrinsics(), xyz, view=(centre, self.side),
                                                         boxes=ignore)
        sure = conf2 >= self.min_conf
        maps = self.codec.encode(xy2, sure, xyz2, k, weights=conf2)
        ignored = _box_mask(boxes, self.codec.params.stride, self.codec.params.map_size)[None]
        # inside an ignore box only the background goes unweighted: labelled people there stay positives
        root_weight = (~ignored | (maps["root"] > 0.01)).astype(np.float32)
        heat_weight = np.ones((self.layout.num_joints, *ignored.shape[1:]), np.float32)
        if "heatmaps" in maps:
            heat_weight = (~ignored | (maps["heatmaps"] > 0.01)).astype(np.float32)
            unsure = (conf2 > 0) & ~sure
            heat_weight[self.codec.joint_discs(xy2, unsure) & (maps["heatmaps"] <= 0.01)] = 0.0
        return self._item(img, maps, root_weight, heat_weight)

    def synth_item(self, seed: int, size: tuple[int, int], persons: tuple[int, int], rng: np.random.Generator) -> dict:
        sample, image = synthetic_sample(seed, self.layout.name, size, persons)
        img, xy, vis, k, xyz, _ = augment_frame(image, sample.xy, sample.vis, self.layout, self.params, rng,
                                                sample.intrinsics, sample.xyz)
        maps = self.codec.encode(xy, vis, xyz, k)
        w, h = self.codec.params.map_size
        return self._item(img, maps, np.ones((1, h, w), np.float32),
                          np.ones((self.layout.num_joints, h, w), np.float32))

    @staticmethod
    def _item(img, maps: dict, root_weight, heat_weight) -> dict:
        item = {"image": torch.from_numpy(np.ascontiguousarray(img))}
        item.update({name: torch.from_numpy(v) for name, v in maps.items()})
        item["root_weight_map"] = torch.from_numpy(root_weight)
        item["heatmap_weight_map"] = torch.from_numpy(heat_weight)
        return item


class MixedDataset(IterableDataset):
    """``samples`` training items per epoch: each a random training frame of the footage (a random crop) with
    probability ``ratio``, else a synthetic image (``tools.synth``, seeds from ``seed``, never repeated).
    Workers split the items."""

    def __init__(self, targets: FootageTargets, footage: Sequence[Footage], samples: int, ratio: float,
                 seed: int = 0, synth_size: tuple[int, int] = (640, 480), persons: tuple[int, int] = (1, 6)):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"footage ratio must be in [0, 1], got {ratio}")
        self.targets, self.footage, self.samples, self.ratio = targets, list(footage), samples, ratio
        self.seed, self.synth_size, self.persons, self.epoch = seed, synth_size, persons, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        wid, workers, _ = _worker_slice()
        base = self.seed * 10**7 + self.epoch * self.samples
        pool = [(f, n) for f in self.footage for n in f.train]
        for i in range(wid, self.samples, workers):
            rng = np.random.default_rng([base + i, 11])
            if rng.random() < self.ratio:
                footage, frame = pool[int(rng.integers(len(pool)))]
                yield self.targets.footage_item(footage, frame, rng)
            else:
                yield self.targets.synth_item(base + i, self.synth_size, self.persons, rng)


class FootageValidation(IterableDataset):
    """The validation tails of the footage, in time order, whole frames at the model's input size."""

    def __init__(self, targets: FootageTargets, footage: Sequence[Footage]):
        self.targets, self.footage = targets, list(footage)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self) -> Iterator[dict]:
        wid, workers, _ = _worker_slice()
        items = [(f, n) for f in self.footage for n in f.val]
        for footage, frame in items[wid::workers]:
            yield self.targets.footage_item(footage, frame, np.random.default_rng(frame))
