"""Gaussian heatmap codec and the dark / argmax_quarter decoders."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.codecs import HeatmapCodec, HeatmapParams, argmax_quarter, dark, dark_kernel_size

PARAMS = HeatmapParams(input_size=(256, 192), heatmap_size=(64, 48), sigma=2.0)


def _one_person(seed, k=17, sigma=2.0, margin=2.0):
    """A codec and one person's keypoints [1,K,2] (input px) at random sub-pixel heatmap positions."""
    codec = HeatmapCodec(HeatmapParams((256, 192), (64, 48), sigma))
    rng = np.random.default_rng(seed)
    uv = np.stack([rng.uniform(margin, 63 - margin, k), rng.uniform(margin, 47 - margin, k)], axis=-1)
    kp = (uv + 0.5) * 4.0 - 0.5
    return codec, kp[None], uv


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sigma=st.sampled_from([1.5, 2.0, 3.0]))
def test_round_trip_at_sub_pixel_positions(seed, sigma):
    # Away from the border by the modulation's blur radius (closer peaks are biased by the zero padding).
    codec, kp, uv = _one_person(seed, sigma=sigma, margin=dark_kernel_size(sigma) // 2)
    maps, weights = codec.encode(kp, np.ones((1, 17)))
    hm = torch.from_numpy(maps)[None]
    xy_dark, score = dark(hm, kernel=dark_kernel_size(sigma))
    xy_quarter, _ = argmax_quarter(hm)
    err_dark = np.linalg.norm(xy_dark[0].numpy() - uv, axis=-1)
    err_quarter = np.abs(xy_quarter[0].numpy() - uv)
    assert err_dark.mean() <= 0.05, err_dark
    assert err_quarter.max() <= 0.25 + 1e-4, err_quarter
    assert np.all(weights == 1) and score.min() > 0.85  # sampled peak of a sub-pixel Gaussian
    # The codec's decode works in input pixels: same answer, scaled by the stride.
    xy_in, _ = codec.decode(hm, method="dark")
    np.testing.assert_allclose(xy_in[0].numpy(), (xy_dark[0].numpy() + 0.5) * 4 - 0.5, atol=1e-4)
    assert np.linalg.norm(xy_in[0].numpy() - kp[0], axis=-1).mean() <= 0.05 * 4


def _dark_full_map(hm, kernel):
    """DARK written over whole maps: blur (zero padding), rescale to the max, log, Taylor step at the argmax."""
    b, k, h, w = hm.shape
    sig = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = torch.arange(kernel, dtype=torch.float64) - kernel // 2
    g = torch.exp(-(r**2) / (2 * sig**2))
    g = (g / g.sum()).to(hm.dtype)
    x = torch.nn.functional.conv2d(hm.reshape(-1, 1, h, w), (g[:, None] * g[None, :])[None, None], padding=kernel // 2)
    x = x.reshape(hm.shape)
    x = x * (hm.amax((2, 3)) / x.amax((2, 3)))[..., None, None]
    log = torch.log(x.clamp_min(1e-10)).numpy()
    out = np.zeros((b, k, 2))
    for i in range(b):
        for j in range(k):
            py, px = np.unravel_index(int(hm[i, j].argmax()), (h, w))
            m = log[i, j]
            dx, dy = 0.5 * (m[py, px + 1] - m[py, px - 1]), 0.5 * (m[py + 1, px] - m[py - 1, px])
            dxx = m[py, px + 1] - 2 * m[py, px] + m[py, px - 1]
            dyy = m[py + 1, px] - 2 * m[py, px] + m[py - 1, px]
            dxy = 0.25 * (m[py + 1, px + 1] - m[py - 1, px + 1] - m[py + 1, px - 1] + m[py - 1, px - 1])
            hess = np.array([[dxx, dxy], [dxy, dyy]])
            out[i, j] = np.array([px, py]) - np.linalg.solve(hess, [dx, dy])
    return out


def test_dark_matches_the_whole_map_algorithm_on_noisy_maps():
    codec = HeatmapCodec(PARAMS)
    rng = np.random.default_rng(9)
    maps = []
    for _ in range(3):
        kp = rng.uniform(40, 150, (1, 17, 2))
        maps.append(codec.encode(kp, np.ones((1, 17)))[0] + rng.uniform(0, 0.05, (17, 48, 64)).astype(np.float32))
    hm = torch.from_numpy(np.stack(maps))
    xy, _ = dark(hm, kernel=11)
    np.testing.assert_allclose(xy.numpy(), _dark_full_map(hm, 11), atol=1e-3)


def test_peak_height_is_score_and_persons_merge_by_max():
    codec = HeatmapCodec(PARAMS)
    kp = np.zeros((2, 2, 2))
    kp[:, 0] = (10.0 + 0.5) * 4 - 0.5, (12.0 + 0.5) * 4 - 0.5  # both persons on the same pixel centre
    kp[:, 1] = [[20.0, 20.0], [117.5, 97.5]]
    maps, weights = codec.encode(kp, np.array([[0.6, 0.5], [0.8, 0.9]]))
    assert maps[0, 12, 10] == pytest.approx(0.8)  # max, not sum
    assert maps[0].max() == pytest.approx(0.8)
    assert maps[1].max() == pytest.approx(0.9, abs=1e-3)
    np.testing.assert_array_equal(weights, [1, 1])


def test_invisible_and_out_of_map_joints_give_zero_maps_and_weights():
    codec = HeatmapCodec(PARAMS)
    kp = np.array([[[100.0, 100.0], [50.0, 60.0], [-40.0, 50.0], [300.0, 10.0], [np.nan, 3.0], [20.0, 900.0]]])
    scores = np.array([[1.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    scores[0, 1] = 5e-4  # below the 1e-3 threshold
    maps, weights = codec.encode(kp, scores)
    np.testing.assert_array_equal(weights, [1, 0, 0, 0, 0, 0])
    assert maps[0].max() > 0.9
    assert np.all(maps[1:] == 0)
    empty, w0 = codec.encode(np.zeros((0, 6, 2)), np.zeros((0, 6)))
    assert empty.shape == (6, 48, 64) and not empty.any() and not w0.any()


def test_numpy_and_torch_give_the_same_numbers():
    codec = HeatmapCodec(PARAMS)
    rng = np.random.default_rng(3)
    kp, sc = rng.uniform(-20, 270, (4, 17, 2)), rng.uniform(0, 1, (4, 17))
    maps_np, w_np = codec.encode(kp, sc)
    maps_t, w_t = codec.encode(torch.from_numpy(kp), torch.from_numpy(sc))
    assert isinstance(maps_np, np.ndarray) and maps_np.dtype == np.float32
    assert isinstance(maps_t, torch.Tensor)
    np.testing.assert_allclose(maps_t.numpy(), maps_np, atol=1e-6)
    np.testing.assert_array_equal(w_t.numpy(), w_np)
    bones = [(0, 1), (5, 7), (11, 12)]
    np.testing.assert_allclose(codec.encode_limbs(torch.from_numpy(kp), torch.from_numpy(sc), bones).numpy(),
                               codec.encode_limbs(kp, sc, bones), atol=1e-6)


def test_limb_maps_follow_the_segment_with_the_smaller_score():
    codec = HeatmapCodec(PARAMS)
    to_in = lambda u, v: [(u + 0.5) * 4 - 0.5, (v + 0.5) * 4 - 0.5]  # noqa: E731
    kp = np.array([[to_in(10, 10), to_in(30, 20), to_in(50, 40)]])
    limbs = codec.encode_limbs(kp, np.array([[0.9, 0.7, 0.0]]), [(0, 1), (1, 2)])
    assert limbs.shape == (2, 48, 64)
    ys, xs = np.mgrid[:48, :64]
    a, b = np.array([10.0, 10.0]), np.array([30.0, 20.0])
    t = np.clip(((xs - a[0]) * (b - a)[0] + (ys - a[1]) * (b - a)[1]) / ((b - a) ** 2).sum(), 0, 1)
    d2 = (xs - a[0] - t * (b - a)[0]) ** 2 + (ys - a[1] - t * (b - a)[1]) ** 2
    expected = 0.7 * np.exp(-d2 / 8.0) * (d2 <= 36.0)
    np.testing.assert_allclose(limbs[0], expected, atol=1e-6)
    assert limbs[0, 15, 20] == pytest.approx(0.7)  # on the segment
    assert not limbs[1].any()  # one end unlabelled


def test_decoders_on_border_and_flat_maps_stay_finite():
    hm = torch.zeros(2, 3, 16, 16)
    hm[0, 0, 0, 5] = 1.0
    hm[0, 1, 15, 15] = 1.0
    for decode in (dark, argmax_quarter):
        xy, score = decode(hm)
        assert torch.isfinite(xy).all()
        assert xy[0, 0].tolist() == [5.0, 0.0] or decode is dark
        assert xy[0, 1].tolist() == [15.0, 15.0]
        assert score[1].eq(0).all()


def test_bad_inputs_raise_value_error():
    codec = HeatmapCodec(PARAMS)
    with pytest.raises(ValueError, match="scores"):
        codec.encode(np.zeros((2, 17, 2)), np.zeros((2, 16)))
    with pytest.raises(ValueError, match="keypoints"):
        codec.encode(np.zeros((17, 2)), np.zeros((17,)))
    with pytest.raises(ValueError, match="bones"):
        codec.encode_limbs(np.zeros((1, 3, 2)), np.ones((1, 3)), [(0, 3)])
    with pytest.raises(ValueError, match="method"):
        codec.decode(torch.zeros(1, 17, 48, 64), method="soft")
    with pytest.raises(ValueError, match="heatmaps"):
        codec.decode(torch.zeros(1, 17, 64, 64))
    with pytest.raises(ValueError, match="heatmap_size"):
        HeatmapParams((256, 256), (64, 0))


class _Decode(torch.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, heatmaps):
        return self.method(heatmaps)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("method", [dark, argmax_quarter])
def test_decoders_export_to_onnx_with_dynamic_batch(method):
    ort = pytest.importorskip("onnxruntime")
    codec = HeatmapCodec(PARAMS)
    rng = np.random.default_rng(5)
    batch = [codec.encode(rng.uniform(10, 180, (2, 17, 2)), rng.uniform(0.2, 1, (2, 17)))[0] for _ in range(3)]
    hm = torch.from_numpy(np.stack(batch))
    buf = io.BytesIO()
    torch.onnx.export(_Decode(method), (hm[:2],), buf, dynamo=False, opset_version=17, input_names=["heatmaps"],
                      output_names=["xy", "score"], dynamic_axes={"heatmaps": {0: "batch"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    xy, score = session.run(None, {"heatmaps": hm.numpy()})
    ref_xy, ref_score = method(hm)
    assert xy.shape == (3, 17, 2)
    np.testing.assert_allclose(xy, ref_xy.numpy(), atol=1e-4)
    np.testing.assert_allclose(score, ref_score.numpy(), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decoders_on_cuda_match_cpu():
    codec, kp, _ = _one_person(11)
    hm = torch.from_numpy(codec.encode(kp, np.ones((1, 17)))[0])[None]
    for method in (dark, argmax_quarter):
        xy_cpu, _ = method(hm)
        xy_gpu, _ = method(hm.cuda())
        np.testing.assert_allclose(xy_gpu.cpu().numpy(), xy_cpu.numpy(), atol=1e-4)
