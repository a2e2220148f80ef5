"""Device pre-processing: warps agree exactly with the transforms' matrices; non-square letterboxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.preprocess import Preprocessor, resize_span
from models.codecs import Crop, Letterbox


def ramp_frame(w: int, h: int) -> np.ndarray:
    """BGR frame whose R channel is x, G is y and B is 7 (values are pixel coordinates)."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 2] = np.arange(w)[None, :]
    frame[..., 1] = np.arange(h)[:, None]
    frame[..., 0] = 7
    return frame


@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize("frame_size", [(200, 120), (90, 160), (128, 128)])
def test_letterbox_maps_back_exactly(frame_size, separable):
    """Each input pixel holds the frame coordinates of Letterbox.inverse(its centre), bilinear being exact on ramps."""
    w, h = frame_size
    pre = Preprocessor((64, 96), mean=(0, 0, 0), std=(1, 1, 1), separable=separable)
    frames = [ramp_frame(w, h), ramp_frame(180, 100)]  # mixed sizes in one batch
    boxes = [Letterbox((w, h), (64, 96)), Letterbox((180, 100), (64, 96))]
    out = pre(frames, [b.matrix for b in boxes])
    assert out.shape == (2, 3, 96, 64) and out.dtype == torch.float32
    for i, (box, (fw, fh)) in enumerate(zip(boxes, [(w, h), (180, 100)])):
        ys, xs = np.mgrid[0:96, 0:64]
        src = box.inverse(np.stack([xs, ys], -1).astype(np.float64))
        inside = (src[..., 0] >= 0) & (src[..., 0] <= fw - 1) & (src[..., 1] >= 0) & (src[..., 1] <= fh - 1)
        assert inside.mean() > 0.3
        rgb = out[i].numpy()
        np.testing.assert_allclose(rgb[0][inside], src[..., 0][inside], atol=2e-3)  # R = x
        np.testing.assert_allclose(rgb[1][inside], src[..., 1][inside], atol=2e-3)  # G = y
        np.testing.assert_allclose(rgb[2][inside], 7.0, atol=1e-4)                  # B
        outside = (src[..., 0] < -1) | (src[..., 0] > fw) | (src[..., 1] < -1) | (src[..., 1] > fh)
        assert outside.any() == (fw * 96 != fh * 64) and np.all(rgb[:, outside] == 0)


def test_crop_with_rotation_and_normalisation_match_opencv():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    crop = Crop(center=(120.3, 70.8), size=(90, 110), dst_size=(48, 64), rotation=17.0)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    out = Preprocessor((48, 64), mean, std)([frame], [crop.matrix])[0].numpy()
    want = crop.warp(frame)[..., ::-1].astype(np.float32)  # cv2 bilinear (1/32 px fixed point), RGB
    want = (want - np.array(mean, np.float32)) / np.array(std, np.float32)
    diff = np.abs(out - want.transpose(2, 0, 1))
    assert np.median(diff) * 57 < 1.0 and diff.max() * 57 < 12


def test_bad_frames_are_rejected():
    pre = Preprocessor((64, 64), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        pre([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], [np.eye(2, 3)] * 2)
    with pytest.raises(ValueError, match="uint8"):
        pre([np.zeros((8, 8, 3), np.float32)], [np.eye(2, 3)])


def test_crops_of_shared_frames_equal_one_by_one():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (100, 140, 3), dtype=np.uint8), rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)]
    crops = [Crop((50, 40), (60, 80), (32, 48)), Crop((30, 70), (40, 40), (32, 48), 30.0),
             Crop((90, 60), (70, 90), (32, 48)), Crop((20, 20), (30, 45), (32, 48))]
    index = [1, 0, 0, 0]
    pre = Preprocessor((32, 48), (120, 110, 100), (60, 60, 60))
    together = pre(frames, [c.matrix for c in crops], frame_index=index)
    assert together.shape == (4, 3, 48, 32)
    for i, (c, f) in enumerate(zip(crops, index)):
        alone = pre([frames[f]], [c.matrix])[0]
        torch.testing.assert_close(together[i], alone, atol=1e-4, rtol=0)


def test_separable_host_path_agrees_with_grid_sample():
    """Letterboxes (down- and up-scaling) and unrotated crops reaching past the frame: same input both ways."""
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), rng.integers(0, 256, (37, 61, 3), dtype=np.uint8),
              rng.integers(0, 256, (300, 170, 3), dtype=np.uint8)]
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    matrices = [Letterbox((640, 480), (80, 64)).matrix, Letterbox((61, 37), (80, 64)).matrix,
                Letterbox((170, 300), (80, 64)).matrix, Crop((20.0, 280.0), (100.0, 90.0), (80, 64)).matrix,
                Crop((600.0, 30.0), (45.0, 33.0), (80, 64)).matrix]
    index = [0, 1, 2, 2, 0]
    host = Preprocessor((80, 64), mean, std)
    assert host.separable
    fast = host.host(frames, matrices, index)
    grid = Preprocessor((80, 64), mean, std, separable=False)(frames, matrices, frame_index=index)
    assert fast.shape == grid.shape == (5, 3, 64, 80) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, grid, atol=3e-4, rtol=0)  # x std: < 0.02 grey level (grid_sample: f32 coords)
    torch.testing.assert_close(host(frames, matrices, frame_index=index), fast, atol=0, rtol=0)


def test_separable_path_keeps_dtype_and_falls_back_for_rotations():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    half = Preprocessor((32, 48), (120, 110, 100), (60, 60, 60), dtype=torch.float16)
    box = Letterbox((120, 90), (32, 48)).matrix
    assert half([frame], [box]).dtype == torch.float16
    rotated = Crop((60.0, 45.0), (50.0, 70.0), (32, 48), rotation=25.0).matrix
    full = Preprocessor((32, 48), (120, 110, 100), (60, 60, 60))
    grid = Preprocessor((32, 48), (120, 110, 100), (60, 60, 60), separable=False)
    torch.testing.assert_close(full([frame, frame], [box, rotated]), grid([frame, frame], [box, rotated]),
                               atol=1e-4, rtol=0)


def test_resize_span_only_for_shrinking_whole_pixel_rectangles():
    box = Letterbox((640, 480), (320, 256)).matrix
    assert resize_span(320, 640, box[0, 0], box[0, 2]) == (0, 320)
    assert resize_span(256, 480, box[1, 1], box[1, 2]) == (8, 248)  # 8 rows of padding each side
    odd = Letterbox((200, 120), (64, 96)).matrix  # 38.4 rows of content: fractional padding
    assert resize_span(96, 120, odd[1, 1], odd[1, 2]) is None
    up = Letterbox((61, 37), (80, 64)).matrix  # enlarging: border taps, not a plain resize
    assert resize_span(80, 61, up[0, 0], up[0, 2]) is None
    assert resize_span(10, 40, 0.5, -0.25) is None  # 20 pixels of content do not fit in 10


def test_reused_work_arrays_never_leak_between_calls_or_shapes():
    """The host path keeps its float work arrays between calls: results must not depend on what ran before,
    and a returned batch must not change when the next call reuses those arrays."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 255, (480, 640, 3), np.uint8), rng.integers(0, 255, (600, 800, 3), np.uint8)
    box_a, box_b = Letterbox((640, 480), (448, 352)).matrix, Letterbox((800, 600), (448, 352)).matrix
    for box, (fh, fw) in ((box_a, a.shape[:2]), (box_b, b.shape[:2])):  # both take the resize path, other shapes
        assert resize_span(448, fw, box[0, 0], box[0, 2]) and resize_span(352, fh, box[1, 1], box[1, 2])
    fresh = Preprocessor((448, 352), (120, 110, 100), (60, 60, 60))([a], [box_a])
    pre = Preprocessor((448, 352), (120, 110, 100), (60, 60, 60))
    first = pre([a], [box_a])
    kept = first.clone()
    pre([b], [box_b])
    again = pre([a, b], [box_a, box_b])
    torch.testing.assert_close(first, kept, atol=0, rtol=0)
    torch.testing.assert_close(again[:1], fresh, atol=0, rtol=0)
