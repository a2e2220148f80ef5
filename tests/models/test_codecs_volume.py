"""heatmap_volume against PYSKL's GeneratePoseTarget loop algorithm (use_score=True), written out plainly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.codecs import heatmap_volume
from models.layouts import COCO17

EPS = 1e-3


def _loop_point(arr, mu, value, sigma):
    """PYSKL generate_a_heatmap for one centre: Gaussian on the +-3 sigma window, max-merged."""
    h, w = arr.shape
    if value < EPS:
        return
    x0, x1 = max(int(mu[0] - 3 * sigma), 0), min(int(mu[0] + 3 * sigma) + 1, w)
    y0, y1 = max(int(mu[1] - 3 * sigma), 0), min(int(mu[1] + 3 * sigma) + 1, h)
    x = np.arange(x0, x1, 1, np.float32)
    y = np.arange(y0, y1, 1, np.float32)[:, None]
    if not (x.size and y.size):
        return
    patch = np.exp(-((x - mu[0]) ** 2 + (y - mu[1]) ** 2) / 2 / sigma**2) * value
    arr[y0:y1, x0:x1] = np.maximum(arr[y0:y1, x0:x1], patch)


def _loop_limb(arr, a, b, va, vb, sigma):
    """PYSKL generate_a_limb_heatmap for one limb: distance to the segment on the grown box."""
    h, w = arr.shape
    value = min(va, vb)
    if value < EPS:
        return
    x0, x1 = max(int(min(a[0], b[0]) - 3 * sigma), 0), min(int(max(a[0], b[0]) + 3 * sigma) + 1, w)
    y0, y1 = max(int(min(a[1], b[1]) - 3 * sigma), 0), min(int(max(a[1], b[1]) + 3 * sigma) + 1, h)
    x = np.arange(x0, x1, 1, np.float32)
    y = np.arange(y0, y1, 1, np.float32)[:, None]
    if not (x.size and y.size):
        return
    d2a = (x - a[0]) ** 2 + (y - a[1]) ** 2
    d2b = (x - b[0]) ** 2 + (y - b[1]) ** 2
    d2ab = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    if d2ab < 1:
        _loop_point(arr, a, va, sigma)
        return
    coeff = (d2a - d2b + d2ab) / 2.0 / d2ab
    a_dom, b_dom = coeff <= 0, coeff >= 1
    seg = 1 - a_dom - b_dom
    px, py = a[0] + coeff * (b[0] - a[0]), a[1] + coeff * (b[1] - a[1])
    d2line = (x - px) ** 2 + (y - py) ** 2
    d2 = a_dom * d2a + b_dom * d2b + seg * d2line
    patch = np.exp(-d2 / 2.0 / sigma**2) * value
    arr[y0:y1, x0:x1] = np.maximum(arr[y0:y1, x0:x1], patch)


def loop_volume(kps, scores, size, sigma, limbs=None):
    """The loop algorithm: for every frame, every keypoint (or limb), every person."""
    m, t, k, _ = kps.shape
    channels = k if limbs is None else len(limbs)
    out = np.zeros((t, channels, size[1], size[0]), np.float32)
    for f in range(t):
        for c in range(channels):
            for p in range(m):
                if limbs is None:
                    _loop_point(out[f, c], kps[p, f, c], scores[p, f, c], sigma)
                else:
                    i, j = limbs[c]
                    _loop_limb(out[f, c], kps[p, f, i], kps[p, f, j], scores[p, f, i], scores[p, f, j], sigma)
    return out


def _clip(seed, m, t, k, size, spread):
    rng = np.random.default_rng(seed)
    kps = rng.uniform(-spread, np.array(size) + spread, (m, t, k, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (m, t, k)).astype(np.float32)
    scores[rng.uniform(size=scores.shape) < 0.15] = 0.0
    scores[rng.uniform(size=scores.shape) < 0.05] = 5e-4
    # some near-duplicate points so that short limbs (< 1 px) occur
    kps[:, :, 1] = np.where(rng.uniform(size=(m, t, 1)) < 0.3, kps[:, :, 0] + rng.uniform(-0.6, 0.6, (m, t, 2)),
                            kps[:, :, 1])
    return kps, scores


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 3), t=st.integers(1, 4),
       size=st.sampled_from([(64, 64), (56, 48), (17, 33)]), sigma=st.sampled_from([0.6, 1.0, 2.5]))
def test_keypoint_volume_matches_loop_algorithm(seed, m, t, size, sigma):
    kps, scores = _clip(seed, m, t, 17, size, spread=8)
    got = heatmap_volume(kps, scores, size, sigma=sigma)
    assert got.dtype == np.float32 and got.shape == (t, 17, size[1], size[0])
    np.testing.assert_allclose(got, loop_volume(kps, scores, size, sigma), rtol=0, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 3), t=st.integers(1, 3),
       size=st.sampled_from([(64, 64), (56, 48), (17, 33)]), sigma=st.sampled_from([0.6, 1.0, 2.5]))
def test_limb_volume_matches_loop_algorithm(seed, m, t, size, sigma):
    kps, scores = _clip(seed, m, t, 17, size, spread=8)
    limbs = list(COCO17.bones)
    got = heatmap_volume(kps, scores, size, sigma=sigma, limbs=limbs)
    assert got.shape == (t, len(limbs), size[1], size[0])
    np.testing.assert_allclose(got, loop_volume(kps, scores, size, sigma, limbs), rtol=0, atol=1e-5)


def test_empty_and_skipped_inputs_give_zero_volumes():
    assert not heatmap_volume(np.zeros((0, 5, 17, 2)), np.zeros((0, 5, 17)), (32, 32)).any()
    kps = np.full((1, 2, 3, 2), 10.0)
    kps[0, 1, 0] = np.nan
    vol = heatmap_volume(kps, np.array([[[1e-4, 0, 0], [1, 0, 0]]]), (32, 32))
    assert not vol.any()
    far = heatmap_volume(np.full((1, 1, 1, 2), -50.0), np.ones((1, 1, 1)), (32, 32), limbs=[(0, 0)])
    assert far.shape == (1, 1, 32, 32) and not far.any()


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="keypoints"):
        heatmap_volume(np.zeros((2, 17, 2)), np.zeros((2, 17)), (64, 64))
    with pytest.raises(ValueError, match="scores"):
        heatmap_volume(np.zeros((1, 2, 17, 2)), np.zeros((1, 2, 16)), (64, 64))
    with pytest.raises(ValueError, match="limbs"):
        heatmap_volume(np.zeros((1, 2, 17, 2)), np.zeros((1, 2, 17)), (64, 64), limbs=[(0, 17)])
    with pytest.raises(ValueError, match="size"):
        heatmap_volume(np.zeros((1, 2, 17, 2)), np.zeros((1, 2, 17)), (64,))
