"""Device pre-processing: uint8 HxWx3 BGR frames -> normalised float [B,3,H,W] RGB network input.

Each frame is warped by its own transform (a ``models.codecs.Letterbox`` for whole frames, a
``models.codecs.Crop`` for ROI crops; anything with a 2x3 source->destination ``.matrix``) in one
``grid_sample`` pass over the batch, as torch ops on the backend's device. Output pixel centres are mapped
back through the transform's exact inverse and sampled bilinearly (pixel-centre convention), so results map
back to frame pixels with the same matrices. Outside the frame the input is black (0 before normalisation).

On the CPU, axis-aligned transforms (letterboxes, unrotated crops) take a separable host path instead (tens of
times cheaper than ``grid_sample`` there): bilinear is then a row pass and a column pass of two taps each, with
the same taps, weights and zero border as ``grid_sample``. A shrinking letterbox with whole-pixel padding (the
usual 640x480 -> 320x256) is exactly ``cv2.resize`` of the float frame into the padded rectangle; other maps
use :func:`linear_taps` in numpy per RGB plane. Both agree with the ``grid_sample`` path to float rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _full(matrix: np.ndarray) -> np.ndarray:
    """2x3 affine -> 3x3 homogeneous (float64)."""
    return np.vstack([np.asarray(matrix, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def _normaliser(size: tuple[int, int]) -> np.ndarray:
    """3x3 map from pixel-centre coordinates of an image of ``size`` (w, h) to grid_sample's [-1, 1]."""
    w, h = size
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])


def grid_theta(matrices: Sequence[np.ndarray], canvas_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """affine_grid thetas [B,2,3]: normalised output coords -> normalised canvas coords, per 2x3 matrix."""
    n_src, n_out_inv = _normaliser(canvas_size), np.linalg.inv(_normaliser(out_size))
    return np.stack([(n_src @ np.linalg.inv(_full(m)) @ n_out_inv)[:2] for m in matrices])


def axis_aligned(matrix: np.ndarray) -> bool:
    """True when the 2x3 ``matrix`` is a per-axis scale + shift (no rotation or shear), invertible."""
    m = np.asarray(matrix, np.float64).reshape(2, 3)
    return m[0, 1] == 0.0 and m[1, 0] == 0.0 and m[0, 0] != 0.0 and m[1, 1] != 0.0


def linear_taps(n_out: int, n_in: int, scale: float, shift: float):
    """Bilinear taps along one axis for ``out = scale * src + shift`` (pixel centres).

    Returns (i0, i1 int64 [n_out] source indices, w0, w1 float32 [n_out] weights, (lo, hi) the range of outputs
    with any weight). Taps outside [0, n_in) weigh 0 (a black border, as ``grid_sample(padding_mode="zeros")``).
    """
    src = (np.arange(n_out, dtype=np.float64) - shift) / scale
    i0 = np.floor(src).astype(np.int64)
    i1 = i0 + 1
    w1 = src - i0
    w0 = np.where((i0 >= 0) & (i0 < n_in), 1.0 - w1, 0.0).astype(np.float32)
    w1 = np.where((i1 >= 0) & (i1 < n_in), w1, 0.0).astype(np.float32)
    used = np.flatnonzero((w0 > 0) | (w1 > 0))
    span = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 0)
    return np.clip(i0, 0, n_in - 1), np.clip(i1, 0, n_in - 1), w0, w1, span


def resize_span(n_out: int, n_in: int, scale: float, shift: float) -> tuple[int, int] | None:
    """Output span [a, b) when ``out = scale * src + shift`` (pixel centres) is a resize of the whole source axis
    onto ``b - a`` whole output pixels, shrinking (0 < scale <= 1: no tap leaves the source); else None."""
    size, start = scale * n_in, shift - 0.5 * scale + 0.5
    if not 0.0 < scale <= 1.0 or abs(size - round(size)) > 1e-6 or abs(start - round(start)) > 1e-6:
        return None
    a, b = round(start), round(start) + round(size)
    return (a, b) if 0 <= a < b <= n_out else None


def check_frame(frame: np.ndarray, index: int) -> None:
    """A clear error unless ``frame`` is uint8 HxWx3."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frames[{index}] must be a uint8 HxWx3 BGR array, got {desc}")


class Preprocessor:
    """Warps, converts BGR->RGB and normalises a batch of frames on ``device``.

    Args:
        input_size: network input (w, h).
        mean, std: RGB normalisation in 0-255 units (the model config's).
        device: torch device of the backend.
        dtype: dtype of the produced batch (float32, or float16 for fp16 backends).
        separable: on the CPU, warp axis-aligned transforms with the separable host path (False: always
            ``grid_sample``; the two agree to float rounding).
    """

    def __init__(self, input_size: tuple[int, int], mean, std, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, separable: bool = True) -> None:
        self.input_size = tuple(int(v) for v in input_size)
        self.device = torch.device(device)
        self.dtype = dtype
        self.separable = separable and self.device.type == "cpu"
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._inv_std = 1.0 / torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale = (1.0 / np.asarray(std, np.float64)).astype(np.float32)  # host path: v * scale - offset
        self._offset = (np.asarray(mean, np.float64) / np.asarray(std, np.float64)).astype(np.float32)
        self._local = threading.local()  # per-thread work arrays (_scratch)

    def canvas(self, frames: Sequence[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Frames stacked (zero-padded to the largest) as uint8 [B,H,W,3] on the device, and its (w, h)."""
        for i, f in enumerate(frames):
            check_frame(f, i)
        h = max(f.shape[0] for f in frames)
        w = max(f.shape[1] for f in frames)
        same = all(f.shape[:2] == (h, w) for f in frames)
        pin = self.device.type == "cuda"  # one copy into (cached) pinned memory, then an asynchronous upload
        host = (torch.empty if same else torch.zeros)((len(frames), h, w, 3), dtype=torch.uint8, pin_memory=pin)
        view = host.numpy()
        for i, f in enumerate(frames):
            view[i, : f.shape[0], : f.shape[1]] = f
        return host.to(self.device, non_blocking=True), (w, h)

    def __call__(self, frames: Sequence[np.ndarray], matrices: Sequence[np.ndarray],
                 frame_index: Sequence[int] | None = None) -> torch.Tensor:
        """Network input [N,3,H,W] (``dtype``, on ``device``) from frames and 2x3 frame->input matrices.

        Without ``frame_index`` there is one matrix per frame (N = len(frames)). With it, matrix ``i`` warps
        ``frames[frame_index[i]]`` (several crops of one frame, e.g. one per person; N = len(matrices)); each
        frame is uploaded and converted once, its crops sampled in one ``grid_sample`` call.
        """
        index = list(range(len(frames))) if frame_index is None else [int(i) for i in frame_index]
        if len(index) != len(matrices) or not frames or not matrices:
            raise ValueError(f"Preprocessor: need one matrix per frame (or per frame_index entry) and >= 1 frame, "
                             f"got {len(frames)} frames, {len(matrices)} matrices, {len(index)} indices")
        if min(index) < 0 or max(index) >= len(frames):
            raise ValueError(f"Preprocessor: frame_index values must be in [0, {len(frames)}), got {index}")
        if self.separable and all(axis_aligned(m) for m in matrices):
            return self.host(frames, matrices, index)
        canvas, canvas_size = self.canvas(frames)
        w, h = self.input_size
        slots = _slots(index, len(frames))  # [F, P] position in matrices, or -1
        per_frame = slots.shape[1]
        far = np.array([[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]])  # every output pixel at grid coords (9, 9)
        theta = grid_theta([np.asarray(matrices[i], np.float64) for i in slots[slots >= 0]], canvas_size, (w, h))
        full = np.broadcast_to(far, slots.shape + (2, 3)).copy()  # unused slots sample far outside -> 0
        full[slots >= 0] = theta
        theta_t = torch.from_numpy(full.reshape(-1, 2, 3)).to(self.device, torch.float32)
        grid = F.affine_grid(theta_t, [theta_t.shape[0], 3, h, w], align_corners=False)
        grid = grid.view(len(frames), per_frame * h, w, 2)
        image = canvas.permute(0, 3, 1, 2).flip(1).float()  # BGR -> RGB, [F,3,H,W]
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.view(len(frames), 3, per_frame, h, w).transpose(1, 2).reshape(-1, 3, h, w)
        if per_frame > 1 or frame_index is not None:
            order = np.argsort(slots.reshape(-1), kind="stable")[-len(index):]
            out = out[torch.from_numpy(order).to(self.device)]
        return ((out - self._mean) * self._inv_std).to(self.dtype).contiguous()

    def host(self, frames: Sequence[np.ndarray], matrices: Sequence[np.ndarray], index: Sequence[int]) -> torch.Tensor:
        """The separable CPU path: input [N,3,H,W] (``dtype``) from axis-aligned matrices, one per ``index`` entry.

        A shrinking map onto a whole-pixel rectangle (a letterbox with integer padding) is ``cv2.resize`` of the
        float frame (the same bilinear taps); any other goes through :func:`linear_taps` in numpy.
        """
        import cv2

        for i, f in enumerate(frames):
            check_frame(f, i)
        w, h = self.input_size
        out = np.empty((len(index), 3, h, w), np.float32)
        planes: dict[int, list[np.ndarray]] = {}
        for n, (f, m) in enumerate(zip(index, matrices)):
            m = np.asarray(m, np.float64).reshape(2, 3)
            fh, fw = frames[f].shape[:2]
            rx, ry = resize_span(w, fw, m[0, 0], m[0, 2]), resize_span(h, fh, m[1, 1], m[1, 2])
            if rx is not None and ry is not None:
                frame = self._scratch("frame", frames[f].shape)
                np.copyto(frame, frames[f])
                small = self._scratch("small", (ry[1] - ry[0], rx[1] - rx[0], 3))
                cv2.resize(frame, small.shape[1::-1], dst=small, interpolation=cv2.INTER_LINEAR)
                self._place([small[..., 2], small[..., 1], small[..., 0]], out[n], ry, rx)
                continue
            if f not in planes:
                planes[f] = cv2.split(np.ascontiguousarray(frames[f]))[::-1]  # uint8 [H,W] R, G, B
            self._warp_planes(planes[f], m, out[n])
        return torch.from_numpy(out).to(self.dtype)

    def _scratch(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 work array kept per thread and reused while ``shape`` stays the same. Fresh multi-MB arrays
        on every call made glibc map and unmap their pages each time (at 448x352 input from 640x480 frames:
        4.5 ms per frame instead of 0.8)."""
        buf = getattr(self._local, name, None)
        if buf is None or buf.shape != tuple(shape):
            buf = np.empty(shape, np.float32)
            setattr(self._local, name, buf)
        return buf

    def _place(self, planes: Sequence[np.ndarray], dst: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]):
        """Normalise RGB float planes [r,c] into dst[:, rows, cols] of dst [3,h,w]; black elsewhere."""
        for c, plane in enumerate(planes):
            dst[c].fill(-self._offset[c])
            inner = dst[c, rows[0]:rows[1], cols[0]:cols[1]]
            np.multiply(plane, self._scale[c], out=inner)
            inner -= self._offset[c]

    def _warp_planes(self, planes: Sequence[np.ndarray], m: np.ndarray, dst: np.ndarray) -> None:
        """Bilinear warp of RGB planes uint8 [H,W] by the axis-aligned 2x3 ``m`` into normalised dst [3,h,w]."""
        (w, h), (fh, fw) = self.input_size, planes[0].shape
        x0, x1, wx0, wx1, (c0, c1) = linear_taps(w, fw, m[0, 0], m[0, 2])
        y0, y1, wy0, wy1, (r0, r1) = linear_taps(h, fh, m[1, 1], m[1, 2])
        x0, x1, wx0, wx1 = x0[c0:c1], x1[c0:c1], wx0[c0:c1], wx1[c0:c1]
        y0, y1, wy0, wy1 = y0[r0:r1], y1[r0:r1], wy0[r0:r1, None], wy1[r0:r1, None]
        warped = []
        for plane in planes:
            rows = plane[y0] * wy0  # float32 [r1-r0, W]
            rows += plane[y1] * wy1
            cols = rows[:, x0] * wx0
            cols += rows[:, x1] * wx1
            warped.append(cols)
        self._place(warped, dst, (r0, r1), (c0, c1))


def _slots(index: list[int], frames: int) -> np.ndarray:
    """[F, P] table: slots[f, j] = position in ``index`` of frame f's j-th crop, -1 where unused."""
    counts = np.bincount(np.asarray(index), minlength=frames)
    slots = np.full((frames, max(int(counts.max()), 1)), -1, np.int64)
    fill = np.zeros(frames, np.int64)
    for pos, f in enumerate(index):
        slots[f, fill[f]] = pos
        fill[f] += 1
    return slots
