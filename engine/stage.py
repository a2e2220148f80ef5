"""One model's pipeline: device pre-processing -> backend -> fused post-processing.

``Stage.run`` is what the engine calls; the step methods are public so that ``tools.bench engine`` can time
pre, infer, post and copy separately.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.loading import make_backend, refine3d_for, resolve_model
from engine.postprocess import Decoded, PostProcessor, frame_intrinsics, input_intrinsics
from engine.preprocess import Preprocessor
from engine.results import Poses
from models.codecs import Letterbox


def _invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (float64)."""
    full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


@contextmanager
def host_threads(device: torch.device, threads: int = 1) -> Iterator[None]:
    """On the CPU, torch's intra-op threads limited to ``threads`` for the block (restored after).

    Pre- and post-processing are many small ops: splitting them over threads costs more in wake-ups than it
    saves, and far more on a loaded machine (each parallel region waits for its slowest thread), so they run
    on the calling thread. The backend's own threads (ONNX Runtime's pool, a TorchBackend outside the block)
    are untouched. CUDA devices: nothing changes.
    """
    before = torch.get_num_threads() if device.type == "cpu" else threads
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            torch.set_num_threads(before)


class Stage:
    """A model spec loaded on a backend, with its pre- and post-processing on the backend's device."""

    def __init__(self, model: str | nn.Module, backend: str = "auto", device: str | torch.device | None = None, *,
                 max_batch: int = 8, cache_dir: Path | None = None, model_args: dict | None = None,
                 torch_options: dict | None = None, flip_test: bool = False,
                 refine3d: bool | str | Path | nn.Module = True) -> None:
        self.loaded = resolve_model(model, **(model_args or {}))
        self.config = self.loaded.config
        self.backend = make_backend(self.loaded, backend, device, max_batch=max_batch, cache_dir=cache_dir,
                                    **(torch_options or {}))
        self.device = self.backend.device
        self.max_batch = max_batch
        self.pre = Preprocessor(self.config.input_size, self.config.mean, self.config.std, self.device,
                                self.backend.input_dtype)
        self.refine3d = refine3d_for(self.loaded, refine3d, self.device)
        self.post = PostProcessor(self.config, self.refine3d)
        self.flip_test = flip_test

    @property
    def input_size(self) -> tuple[int, int]:
        return self.config.input_size

    def letterboxes(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """2x3 frame -> input matrices letterboxing each whole frame."""
        return [Letterbox((f.shape[1], f.shape[0]), self.input_size).matrix for f in frames]

    def intrinsics(self, frames, matrices, frame_index, intrinsics) -> torch.Tensor | None:
        """Input-pixel intrinsics [N,4] on the device for 3D models, else None."""
        if not self.post.has_3d:
            return None
        rows = []
        for m, f in zip(matrices, frame_index):
            k = frame_intrinsics((frames[f].shape[1], frames[f].shape[0]), intrinsics[f] if intrinsics else None)
            rows.append(input_intrinsics(m, k))
        return torch.tensor(rows, dtype=torch.float32, device=self.device)

    def prepare(self, frames, matrices, frame_index=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input [N,3,H,W], inverse matrices [N,2,3] input -> frame) on the device."""
        with host_threads(self.device):
            batch = self.pre(frames, matrices, frame_index)
        inverse = torch.from_numpy(np.stack([_invert(m) for m in matrices])).to(self.device, torch.float32)
        return batch, inverse

    def infer(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs of the backend, in chunks of at most ``max_batch``; with ``flip_test``, averaged with the
        outputs of the mirrored batch (twice the inference)."""
        if not self.flip_test:
            return self._infer(batch)
        n = batch.shape[0]
        both = self._infer(torch.cat([batch, batch.flip(-1)]))
        with host_threads(self.device), torch.inference_mode():
            return self.post.merge_flipped({k: v[:n] for k, v in both.items()}, {k: v[n:] for k, v in both.items()})

    def _infer(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if batch.shape[0] <= self.max_batch:
            return self.backend.infer(batch)
        parts = [{k: v.clone() for k, v in self.backend.infer(batch[i:i + self.max_batch]).items()}  # buffers reused
                 for i in range(0, batch.shape[0], self.max_batch)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def decode(self, outputs, inverse, intrinsics=None) -> Decoded:
        """Decoded poses in frame pixels, on the device."""
        with host_threads(self.device), torch.inference_mode():
            return self.post.to_frames(self.post.decode(outputs, intrinsics), inverse)

    def fetch(self, decoded: Decoded) -> list[Poses]:
        """The one device -> host copy of the batch, unpacked into ``Poses`` per input."""
        with host_threads(self.device):
            host = self.post.pack(decoded).cpu().numpy()
        return self.post.unpack(host, decoded.xy.shape[1], decoded.xyz is not None)

    def run(self, frames: Sequence[np.ndarray], matrices: Sequence[np.ndarray] | None = None,
            frame_index: Sequence[int] | None = None, intrinsics: Sequence | None = None) -> list[Poses]:
        """Poses in frame pixels, one per matrix (default: one letterbox per frame)."""
        matrices = self.letterboxes(frames) if matrices is None else matrices
        index = list(range(len(frames))) if frame_index is None else list(frame_index)
        batch, inverse = self.prepare(frames, matrices, frame_index)
        k = self.intrinsics(frames, matrices, index, intrinsics)
        return self.fetch(self.decode(self.infer(batch), inverse, k))
