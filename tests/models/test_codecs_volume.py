"""heatmap_volume (numpy) and heatmap_volume_torch (CPU; CUDA where present) against PYSKL's GeneratePoseTarget
loop algorithm (use_score=True), written out plainly in tools/bench/codecs.py (the baseline the codecs benchmark
times them against)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.codecs import PYSKL_LIMBS, heatmap_volume, heatmap_volume_torch
from models.layouts import COCO17
from tools.bench.codecs import loop_volume


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


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 3), size=st.sampled_from([(64, 64), (96, 40), (7, 5)]),
       sigma=st.sampled_from([0.3, 0.6, 4.0]), spread=st.sampled_from([2.0, 40.0]))
def test_long_limbs_small_sigma_and_far_points_match_too(seed, m, size, sigma, spread):
    """Limbs hundreds of sigmas long (float32 sums cancel along them), windows cut by the map's edges, points far
    off it: within 1e-5 of the loop algorithm computed in float64. PYSKL's own float32 arithmetic is off by up to
    ~1.1e-5 there (seen at sigma 0.3 on a 135 px limb), so against the float32 loop the bound is 2e-5."""
    kps, scores = _clip(seed, m, 2, 17, size, spread=spread)
    for limbs in (PYSKL_LIMBS, [(3, 3)]):
        got = heatmap_volume(kps, scores, size, sigma=sigma, limbs=limbs)
        exact = loop_volume(kps.astype(np.float64), scores.astype(np.float64), size, sigma, limbs)
        np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got, loop_volume(kps, scores, size, sigma, limbs), rtol=0, atol=2e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("limbs", [None, list(COCO17.bones), PYSKL_LIMBS])
def test_torch_volume_matches_loop_algorithm_on_each_device(device, limbs):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none here)")
    for seed, size, sigma in ((0, (64, 64), 0.6), (1, (56, 48), 1.0), (2, (17, 33), 2.5), (3, (96, 40), 0.3)):
        kps, scores = _clip(seed, 3, 3, 17, size, spread=8)
        got = heatmap_volume_torch(torch.from_numpy(kps).to(device), torch.from_numpy(scores).to(device), size,
                                   sigma, limbs)
        assert got.device.type == device and got.dtype == torch.float32
        np.testing.assert_allclose(got.cpu().numpy(), loop_volume(kps, scores, size, sigma, limbs), rtol=0, atol=1e-5)


def test_torch_volume_of_nothing_and_bad_input():
    import torch

    got = heatmap_volume_torch(torch.zeros((0, 4, 17, 2)), torch.zeros((0, 4, 17)), (8, 6), limbs=PYSKL_LIMBS)
    assert got.shape == (4, len(PYSKL_LIMBS), 6, 8) and not got.any()
    with pytest.raises(ValueError, match="limbs"):
        heatmap_volume_torch(torch.zeros((1, 2, 17, 2)), torch.zeros((1, 2, 17)), (64, 64), limbs=[(0, 17)])
