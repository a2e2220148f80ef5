"""Letterbox and Crop: point maps both ways, numpy and torch, consistent with cv2.warpAffine."""

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.codecs import Crop, Letterbox

sizes = st.tuples(st.integers(8, 1920), st.integers(8, 1080))


@settings(max_examples=60, deadline=None)
@given(src=sizes, dst=sizes, seed=st.integers(0, 2**31 - 1))
def test_letterbox_round_trip(src, dst, seed):
    t = Letterbox(src, dst)
    pts = np.random.default_rng(seed).uniform(-10, max(src) + 10, size=(5, 3, 2))
    back = t.inverse(t.forward(pts))
    assert np.abs(back - pts).max() <= 1e-4
    # Image corners (pixel edges) land inside the destination, padding centred.
    edges = t.forward(np.array([[-0.5, -0.5], [src[0] - 0.5, src[1] - 0.5]]))
    assert edges[0, 0] >= -0.5 - 1e-9 and edges[1, 0] <= dst[0] - 0.5 + 1e-9
    assert edges[0, 1] >= -0.5 - 1e-9 and edges[1, 1] <= dst[1] - 0.5 + 1e-9
    assert abs((edges[0, 0] + 0.5) - (dst[0] - 0.5 - edges[1, 0])) < 1e-6


@settings(max_examples=60, deadline=None)
@given(src=sizes, cx=st.floats(-50, 500), cy=st.floats(-50, 500), bw=st.floats(4, 400), bh=st.floats(4, 400),
       dst=st.tuples(st.integers(8, 512), st.integers(8, 512)), rot=st.floats(-180, 180),
       seed=st.integers(0, 2**31 - 1))
def test_crop_round_trip_numpy_and_torch(src, cx, cy, bw, bh, dst, rot, seed):
    t = Crop((cx, cy), (bw, bh), dst, rotation=rot)
    pts = np.random.default_rng(seed).uniform(-100, 600, size=(4, 2))
    back = t.inverse(t.forward(pts))
    assert np.abs(back - pts).max() <= 1e-4
    fwd_t = t.forward(torch.from_numpy(pts))
    assert isinstance(fwd_t, torch.Tensor) and fwd_t.dtype == torch.float64
    np.testing.assert_allclose(fwd_t.numpy(), t.forward(pts), atol=1e-9)
    back32 = t.inverse(t.forward(torch.from_numpy(pts).float()))
    assert back32.dtype == torch.float32


def test_crop_centre_maps_to_destination_centre_and_rotation_sign():
    t = Crop((100.0, 50.0), (40.0, 20.0), (80, 40), rotation=90.0)
    np.testing.assert_allclose(t.forward(np.array([100.0, 50.0])), [39.5, 19.5], atol=1e-9)
    # Counter-clockwise on screen (y down): a point to the right of the centre goes up.
    right = t.forward(np.array([110.0, 50.0]))
    assert right[1] < 19.5 and abs(right[0] - 39.5) < 1e-9


def _blob(size, at):
    ys, xs = np.mgrid[: size[1], : size[0]]
    return np.exp(-((xs - at[0]) ** 2 + (ys - at[1]) ** 2) / (2 * 6.0**2)).astype(np.float32)


def _centroid(img):
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * img).sum() / img.sum(), (ys * img).sum() / img.sum()])


@pytest.mark.parametrize("transform", [
    Letterbox((300, 170), (128, 128)),
    Letterbox((120, 260), (96, 160)),
    Crop((140.0, 90.0), (120.0, 90.0), (64, 48), rotation=0.0),
    Crop((150.0, 80.0), (100.0, 100.0), (100, 100), rotation=30.0),
    Crop((150.0, 80.0), (60.0, 80.0), (90, 120), rotation=-75.0),
])
def test_warp_affine_agrees_with_forward(transform):
    src = (300, 170) if isinstance(transform, Crop) else transform.src_size
    at = (150, 85) if isinstance(transform, Crop) else (src[0] // 3, src[1] // 2)
    img = _blob(src, at)
    warped = cv2.warpAffine(img, transform.matrix, transform.dst_size, flags=cv2.INTER_LINEAR)
    assert warped.sum() > 0
    expected = transform.forward(np.array(at, np.float64))
    assert np.abs(_centroid(warped) - expected).max() < 0.05


def test_bad_sizes_raise_value_error():
    with pytest.raises(ValueError, match="src_size"):
        Letterbox((0, 10), (10, 10))
    with pytest.raises(ValueError, match="size"):
        Crop((0.0, 0.0), (10.0, -1.0), (10, 10))
    with pytest.raises(ValueError, match="points"):
        Letterbox((10, 10), (20, 20)).forward(np.zeros((3, 3)))
