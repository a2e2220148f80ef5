"""``Engine``: frames in, typed ``Poses`` out (docs/interfaces.md).

Modes, chosen by the models:

* **multi-person** (an SPM model): each frame letterboxed whole; SPM decoding finds every person (and 3D
  when the model has depth maps).
* **single-person** (an hourglass): one person per frame, with ROI tracking per stream: the next frame's
  crop comes from this frame's keypoints, back to the whole (letterboxed) frame when the mean joint score
  drops below ``RoiParams.threshold`` (a frame seen whole gets a second look at the crop of its keypoints,
  ``RoiParams.second_look``; a tracked frame scoring below ``RoiParams.zoom_below`` one at a smaller crop).
  The tracker checks itself: now and then, and soon after a doubtful frame, it sweeps the frame with search
  windows (a few per frame) and takes a window that scores clearly better, so a lock on the background that
  scores above the drop threshold is left (``engine.roi.Relock``).
  Frames of one stream run one after another (each on the crop of the one before); frames of different
  streams are batched together.
* **cascade** (an SPM model plus ``refiner=`` an hourglass): SPM finds the people, the hourglass refines a
  crop of each person (crops of the whole batch batched together). Results are in the refiner's layout;
  3D points (if any) come from SPM, mapped to that layout.

Tracking (stable ``track_id`` per stream) and One-Euro smoothing are off by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.preprocess import check_frame
from engine.results import Poses
from engine.roi import Relock, RoiParams, crop_from_keypoints, next_roi, zoom_crop
from engine.smoothing import OneEuroParams
from engine.stage import Stage
from engine.tracking import StreamTrackers, TrackerParams
from models.layouts import Layout, convert, get_layout

DEFAULT_STREAM = "default"


class Engine:
    """Pose inference on frames of one or many streams.

    Args:
        model: zoo name, ``.safetensors`` checkpoint, ``.onnx`` or ``.engine`` file, ``random:NAME``, or a module.
        backend: "auto", "torch", "onnxruntime" or "tensorrt".
        max_batch: largest batch sent to the backend.
        tracking: True (default ``TrackerParams``) or ``TrackerParams`` to assign stable ``track_id``.
        smoothing: True (default ``OneEuroParams``) or ``OneEuroParams``: One-Euro filter per track on 2D and
            3D points (implies tracking).
        device: torch device; None: CUDA when available, else CPU.
        refiner: an hourglass spec for cascade mode (``model`` must then be an SPM model).
        roi: single-person ROI tracking on (``RoiParams`` or bool).
        cache_dir: where ONNX exports of torch models are cached (default ``~/.cache/posestream``).
        model_args, refiner_args: ``build_model`` overrides for ``random:`` specs.
        torch_options: ``TorchBackend`` options (fp16, cuda_graphs, compile).
        flip_test: also run every input mirrored and average the outputs, mirrored back (the hourglass and
            SPM papers' test-time flip; twice the inference, for both the model and the refiner).
        refine3d: the 3D refiner (``models.refine3d``) run on the SPM model's decoded 3D, on the device: True
            (default) runs the one the model's manifest names, if any; False none; or a refiner
            ``.safetensors`` path (or ``Refine3D`` module) to run that one. 2D results are unchanged by it.
    """

    def __init__(self, model: str | nn.Module = "default", backend: str = "auto", *, max_batch: int = 8,
                 tracking: bool | TrackerParams = False, smoothing: bool | OneEuroParams = False,
                 device: str | torch.device | None = None, refiner: str | nn.Module | None = None,
                 roi: bool | RoiParams = True, cache_dir: str | Path | None = None, model_args: dict | None = None,
                 refiner_args: dict | None = None, torch_options: dict | None = None, flip_test: bool = False,
                 refine3d: bool | str | Path | nn.Module = True) -> None:
        if max_batch < 1:
            raise ValueError(f"Engine: max_batch must be >= 1, got {max_batch}")
        opts = dict(max_batch=max_batch, cache_dir=cache_dir, torch_options=torch_options, flip_test=flip_test)
        self.stage = Stage(model, backend, device, model_args=model_args, refine3d=refine3d, **opts)
        self.refiner = None if refiner is None else Stage(refiner, backend, device, model_args=refiner_args, **opts)
        self._check_modes()
        self.max_batch = max_batch
        final = self.refiner or self.stage
        self.layout: Layout = get_layout(final.config.layout)
        self.model_id = self.stage.loaded.model_id + (f"+{self.refiner.loaded.model_id}" if self.refiner else "")
        self.input_size = self.stage.input_size
        self.has_3d = self.stage.post.has_3d
        self.device = self.stage.device
        self.roi = (RoiParams() if roi is True else roi) or None
        self._rois: dict[str, object] = {}
        self._relocks: dict[str, Relock] = {}
        self.trackers = self._make_trackers(tracking, smoothing)

    def _check_modes(self) -> None:
        arch = self.stage.config.arch
        if self.refiner is not None and (arch != "spm" or self.refiner.config.arch != "hourglass"):
            raise ValueError(f"Engine: cascade mode needs an SPM model and an hourglass refiner, got {arch} and "
                             f"{self.refiner.config.arch}")

    @property
    def mode(self) -> str:
        if self.refiner is not None:
            return "cascade"
        return "single" if self.stage.config.arch == "hourglass" else "multi"

    def _make_trackers(self, tracking, smoothing) -> StreamTrackers | None:
        if not tracking and not smoothing:
            return None
        params = tracking if isinstance(tracking, TrackerParams) else TrackerParams()
        if smoothing:
            euro = smoothing if isinstance(smoothing, OneEuroParams) else OneEuroParams()
            euro_3d = replace(euro, beta=euro.beta / 10.0)  # millimetres move ~10x faster than pixels
            params = replace(params, smoothing=euro, smoothing_3d=euro_3d)
        return StreamTrackers(self.layout.oks_sigmas, params)

    def infer(self, frames: Sequence[np.ndarray], stream_ids: Sequence[str] | None = None,
              intrinsics: Sequence[tuple | None] | None = None,
              timestamps: Sequence[float] | None = None) -> list[Poses]:
        """``Poses`` (frame pixels) for each uint8 HxWx3 BGR frame.

        ``stream_ids``: one per frame (default: all frames of one stream, in order); ``intrinsics``: per frame
        (fx, fy, cx, cy) in frame pixels or None (3D models: f = width, c = centre); ``timestamps``: seconds
        per frame for smoothing (default: the tracker's frame rate).
        """
        if self.stage is None:
            raise ValueError("Engine.infer: the engine is closed")
        frames = list(frames)
        for i, f in enumerate(frames):
            check_frame(f, i)
        ids = [DEFAULT_STREAM] * len(frames) if stream_ids is None else [str(s) for s in stream_ids]
        for name, seq in (("stream_ids", ids), ("intrinsics", intrinsics), ("timestamps", timestamps)):
            if seq is not None and len(seq) != len(frames):
                raise ValueError(f"Engine.infer: {name} has {len(seq)} entries for {len(frames)} frames")
        out: list[Poses] = []
        for s in range(0, len(frames), self.max_batch):
            part = slice(s, s + self.max_batch)
            out += self._infer_batch(frames[part], ids[part], intrinsics[part] if intrinsics else None)
        if self.trackers is not None:
            out = [self.trackers.update(sid, p, None if timestamps is None else float(timestamps[i]))
                   for i, (sid, p) in enumerate(zip(ids, out))]
        return out

    def _infer_batch(self, frames, ids, intrinsics) -> list[Poses]:
        if self.mode == "multi":
            return self.stage.run(frames, intrinsics=intrinsics)
        if self.mode == "cascade":
            return self._cascade(frames, intrinsics)
        return self._single(frames, ids)

    def _single(self, frames, ids) -> list[Poses]:
        if not self.roi:
            return self._single_round(frames, ids)
        # ROI tracking is sequential within a stream: round r holds the r-th frame of each stream of the batch.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, sid in enumerate(ids):
            r = seen[sid] = seen.get(sid, -1) + 1
            if r == len(rounds):
                rounds.append([])
            rounds[r].append(i)
        out: list[Poses | None] = [None] * len(frames)
        for idx in rounds:
            for i, poses in zip(idx, self._single_round([frames[i] for i in idx], [ids[i] for i in idx])):
                out[i] = poses
        return out

    def _single_round(self, frames, ids) -> list[Poses]:
        letterboxes = self.stage.letterboxes(frames)
        rois = [self._rois.get(sid) if self.roi else None for sid in ids]
        matrices = [lb if roi is None else roi.matrix for lb, roi in zip(letterboxes, rois)]
        out = self.stage.run(frames, matrices)
        if self.roi and (self.roi.second_look or self.roi.zoom_below > 0):
            out = self._second_look(frames, rois, out)
        if self.roi and self.roi.check_every:
            out = self._relock(frames, ids, out)
        if self.roi:
            for sid, poses in zip(ids, out):
                self._rois[sid] = next_roi(poses.xy[0], poses.score[0], self.input_size, self.roi)
        return out

    def _second_look(self, frames, rois, out: list[Poses]) -> list[Poses]:
        """Frames seen whole run again on the crop of their keypoints, tracked frames scoring low on a smaller
        crop (``RoiParams``); the more confident look is kept."""
        idx, crops = [], []
        for i, roi in enumerate(rois):
            xy, score = out[i].xy[0], out[i].score[0]
            if roi is None:
                crop = crop_from_keypoints(xy, score, self.input_size, self.roi) if self.roi.second_look else None
            else:
                crop = zoom_crop(roi, xy, score, self.roi)
            if crop is not None:
                idx.append(i), crops.append(crop.matrix)
        if not idx:
            return out
        out = list(out)
        for i, poses in zip(idx, self.stage.run(frames, crops, idx)):
            if poses.score.mean() > out[i].score.mean():
                out[i] = poses
        return out

    def _relock(self, frames, ids, out: list[Poses]) -> list[Poses]:
        """The tracker's self-check (``engine.roi.Relock``): streams in a sweep also look at search windows of
        the frame; a window scoring ``relock_margin`` better than the frame's own look, and at least the lock
        ``threshold``, replaces it."""
        idx, crops = [], []
        for i, sid in enumerate(ids):
            state = self._relocks.get(sid) or self._relocks.setdefault(sid, Relock(self.roi))
            size = (frames[i].shape[1], frames[i].shape[0])
            for crop in state.windows(size, float(out[i].score[0].mean()), self.input_size):
                idx.append(i), crops.append(crop.matrix)
        if not idx:
            return out
        best: dict[int, Poses] = {}
        for i, poses in zip(idx, self.stage.run(frames, crops, idx)):
            if i not in best or poses.score.mean() > best[i].score.mean():
                best[i] = poses
        out = list(out)
        for i, poses in best.items():
            score = poses.score.mean()
            if score > out[i].score.mean() + self.roi.relock_margin and score >= self.roi.threshold:
                out[i] = poses
                self._relocks[ids[i]].relocked()
        return out

    def _cascade(self, frames, intrinsics) -> list[Poses]:
        people = self.stage.run(frames, intrinsics=intrinsics)
        params = self.roi or RoiParams()
        crops, owner, slot = [], [], []
        for f, poses in enumerate(people):
            for p in range(len(poses)):
                crop = crop_from_keypoints(poses.xy[p], poses.score[p], self.refiner.input_size, params)
                if crop is not None:
                    crops.append(crop.matrix), owner.append(f), slot.append(p)
        refined = self.refiner.run(frames, crops, owner) if crops else []
        return [self._merge(f, poses, refined, owner, slot) for f, poses in enumerate(people)]

    def _merge(self, f: int, poses: Poses, refined: list[Poses], owner: list[int], slot: list[int]) -> Poses:
        """The refined people of frame f, with SPM's person scores and (layout-mapped) 3D points."""
        mine = [i for i, o in enumerate(owner) if o == f]
        k = self.layout.num_joints
        if not mine:
            return Poses.empty(self.layout.name, k, with_3d=self.has_3d)
        keep = np.array([slot[i] for i in mine])
        xyz = None
        if self.has_3d and poses.xyz is not None:
            src = get_layout(poses.layout)
            xyz, _ = convert(poses.xyz[keep], poses.score[keep], src, self.layout)
        return Poses(self.layout.name, np.concatenate([refined[i].xy for i in mine]),
                     np.concatenate([refined[i].score for i in mine]), poses.person_score[keep],
                     np.full(len(mine), -1, np.int64), xyz)

    def reset(self, stream_id: str | None = None) -> None:
        """Forget ROI and track state of one stream (or of all)."""
        if stream_id is None:
            self._rois.clear()
            self._relocks.clear()
            if self.trackers is not None:
                self.trackers = StreamTrackers(self.layout.oks_sigmas, self.trackers.params)
            return
        self._rois.pop(stream_id, None)
        self._relocks.pop(stream_id, None)
        if self.trackers is not None:
            self.trackers.drop(stream_id)

    def close(self) -> None:
        """Release the backends (sessions, CUDA graphs, TensorRT contexts)."""
        self.stage = self.refiner = None
        self._rois.clear()
        self._relocks.clear()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
