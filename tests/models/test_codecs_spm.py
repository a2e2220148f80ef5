"""SPM / SMAP codec: encode -> decode recovers random scenes; masks; numpy/torch; ONNX export."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.codecs import SPMCodec, SPMParams
from models.layouts import get_layout

INPUT = (320, 256)  # 80 x 64 output map at stride 4


def _scene(codec, n, seed, intrinsics):
    """n persons with roots on a 5x4 grid of 64-px cells (jittered), joints anywhere nearby, depths 2-6 m.

    Returns keypoints [n,K,2] input px and xyz [n,K,3] mm consistent with the intrinsics.
    """
    rng = np.random.default_rng(seed)
    lay = codec.layout
    cells = rng.permutation(20)[:n]
    roots = np.stack([cells % 5 * 64 + 32, cells // 5 * 64 + 32], axis=-1) + rng.uniform(-8, 8, (n, 2))
    kp = roots[:, None] + rng.uniform(-60, 60, (n, lay.num_joints, 2))
    shift = roots - kp[:, list(lay.root_joints)].mean(axis=1)
    kp += shift[:, None]  # the root point (mean of the root joints) sits exactly on the grid root
    z = rng.uniform(2000, 6000, (n, 1)) + rng.uniform(-400, 400, (n, lay.num_joints))
    fx, fy, cx, cy = intrinsics
    xyz = np.stack([(kp[..., 0] - cx) * z / fx, (kp[..., 1] - cy) * z / fy, z], axis=-1)
    return kp, xyz, roots


def _match(decoded_xy, count, truth_roots, codec):
    """Index of the decoded person for each true person (nearest decoded root point)."""
    lay = codec.layout
    pred_roots = decoded_xy[:count][:, list(lay.root_joints)].mean(axis=1)
    return np.array([np.argmin(np.linalg.norm(pred_roots - r, axis=-1)) for r in truth_roots])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), seed=st.integers(0, 2**31 - 1), hierarchical=st.booleans(),
       layout=st.sampled_from(["coco17", "panoptic19", "mpii16"]), window=st.sampled_from([1, 3]),
       known_intrinsics=st.booleans())
def test_encode_decode_recovers_every_person(n, seed, hierarchical, layout, window, known_intrinsics):
    codec = SPMCodec(SPMParams(INPUT, layout=layout, hierarchical=hierarchical, disp_window=window))
    intr = (400.0, 420.0, 150.0, 140.0) if known_intrinsics else codec.default_intrinsics()
    kp, xyz, roots = _scene(codec, n, seed, intr)
    targets = codec.encode(kp, np.ones(kp.shape[:2]), xyz, intrinsics=intr if known_intrinsics else None)
    outputs = {name: torch.from_numpy(targets[name])[None] for name in ("root", "disp", "depth")}
    decoded = codec.decode(outputs, torch.tensor([intr]) if known_intrinsics else None)
    assert decoded.count.tolist() == [n]
    assert decoded.xy.shape == (1, 20, codec.layout.num_joints, 2)
    xy, xyz_pred = decoded.xy[0].numpy(), decoded.xyz[0].numpy()
    order = _match(xy, n, roots, codec)
    assert len(set(order.tolist())) == n
    assert np.abs(xy[order] - kp).max() <= 0.5
    assert np.abs(xyz_pred[order, :, 2] / xyz[..., 2] - 1).max() <= 0.01
    assert np.all(decoded.person_score[0, :n].numpy() > 0.9) and not decoded.person_score[0, n:].any()
    assert not decoded.xy[0, n:].any() and not decoded.xyz[0, n:].any()


def test_empty_scene_gives_zero_persons():
    codec = SPMCodec(SPMParams(INPUT, layout="coco17"))
    targets = codec.encode(np.zeros((0, 17, 2)), np.zeros((0, 17)))
    assert not any(v.any() for v in targets.values())
    decoded = codec.decode({name: torch.from_numpy(targets[name])[None] for name in ("root", "disp")})
    assert decoded.count.tolist() == [0] and decoded.xyz is None
    assert not decoded.xy.any() and not decoded.person_score.any()


def test_numpy_and_torch_encode_agree():
    codec = SPMCodec(SPMParams(INPUT, layout="panoptic19", hierarchical=True))
    kp, xyz, _ = _scene(codec, 6, 7, codec.default_intrinsics())
    vis = (np.random.default_rng(1).uniform(size=kp.shape[:2]) > 0.2).astype(np.float64)
    a = codec.encode(kp, vis, xyz)
    b = codec.encode(torch.from_numpy(kp), torch.from_numpy(vis), torch.from_numpy(xyz))
    for name, value in a.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32
        assert isinstance(b[name], torch.Tensor)
        np.testing.assert_array_equal(b[name].numpy(), value, err_msg=name)


def test_masks_follow_visibility_and_hierarchy():
    codec = SPMCodec(SPMParams(INPUT, layout="mpii16", hierarchical=True))
    lay = get_layout("mpii16")
    kp, xyz, roots = _scene(codec, 2, 3, codec.default_intrinsics())
    vis = np.ones((2, 16))
    knee = 4  # l_knee, parent l_hip (3); child l_ankle (5)
    vis[0, 3] = 0
    t = codec.encode(kp, vis, xyz)
    rx, ry = np.round((roots[0] + 0.5) / 4 - 0.5).astype(int)
    on = t["disp_mask"][:, ry, rx].reshape(16, 2)[:, 0]
    assert on[3] == 0 and on[knee] == 0 and on[5] == 1  # l_hip unlabelled: it and its child lose labels
    assert t["depth_mask"][3, ry, rx] == 0 and t["depth_mask"][knee, ry, rx] == 0
    # Labels only within disp_radius of a root; everything masked is zero.
    assert t["disp_mask"].sum(axis=0).max() > 0 and not t["disp"][t["disp_mask"] == 0].any()
    far = t["disp_mask"][:, 0, 0].any() or t["disp_mask"][:, -1, -1].any()
    assert not far
    # Hierarchical channel of l_ankle holds (ankle - knee) / Z at the root of the second person.
    rx, ry = np.round((roots[1] + 0.5) / 4 - 0.5).astype(int)
    ankle = t["disp"][10:12, ry, rx] * codec.params.z * 4
    np.testing.assert_allclose(ankle, kp[1, 5] - kp[1, knee], atol=1e-3)
    assert lay.parents[5] == knee


def test_persons_without_root_are_left_out():
    codec = SPMCodec(SPMParams(INPUT, layout="coco17"))
    kp, _, _ = _scene(codec, 3, 4, codec.default_intrinsics())
    vis = np.ones((3, 17))
    vis[1, [11, 12]] = 0  # both hips unlabelled
    t = codec.encode(kp, vis)
    decoded = codec.decode({name: torch.from_numpy(t[name])[None] for name in ("root", "disp")})
    assert decoded.count.tolist() == [2]


def test_bad_inputs_raise_value_error():
    codec = SPMCodec(SPMParams(INPUT, layout="coco17"))
    with pytest.raises(ValueError, match="keypoints"):
        codec.encode(np.zeros((1, 16, 2)), np.ones((1, 16)))
    with pytest.raises(ValueError, match="visibility"):
        codec.encode(np.zeros((1, 17, 2)), np.ones((2, 17)))
    with pytest.raises(ValueError, match="disp"):
        codec.decode({"root": torch.zeros(1, 1, 64, 80), "disp": torch.zeros(1, 17, 64, 80)})
    with pytest.raises(ValueError, match="intrinsics"):
        codec.decode({"root": torch.zeros(1, 1, 64, 80), "disp": torch.zeros(1, 34, 64, 80),
                      "depth": torch.zeros(1, 17, 64, 80)}, intrinsics=torch.zeros(4))
    with pytest.raises(ValueError, match="divisible"):
        SPMParams((321, 256))
    with pytest.raises(ValueError, match="layout"):
        SPMParams(INPUT, layout="coco18")


class _Decode(torch.nn.Module):
    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, root, disp, depth, intrinsics):
        d = self.codec.decode({"root": root, "disp": disp, "depth": depth}, intrinsics)
        return d.xy, d.score, d.person_score, d.count, d.xyz


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_decode_exports_to_onnx_with_dynamic_batch():
    ort = pytest.importorskip("onnxruntime")
    codec = SPMCodec(SPMParams(INPUT, layout="panoptic19", hierarchical=True, disp_window=3))
    batch, cams = [], []
    for seed in range(3):
        intr = (380.0 + seed, 390.0, 160.0, 128.0)
        kp, xyz, _ = _scene(codec, 2 + seed, seed, intr)
        batch.append(codec.encode(kp, np.ones(kp.shape[:2]), xyz, intrinsics=intr))
        cams.append(intr)
    inputs = {name: torch.from_numpy(np.stack([t[name] for t in batch])) for name in ("root", "disp", "depth")}
    inputs["intrinsics"] = torch.tensor(cams, dtype=torch.float32)
    names = list(inputs)
    buf = io.BytesIO()
    torch.onnx.export(_Decode(codec), tuple(v[:2] for v in inputs.values()), buf, dynamo=False, opset_version=17,
                      input_names=names, output_names=["xy", "score", "person_score", "count", "xyz"],
                      dynamic_axes={name: {0: "batch"} for name in names})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: v.numpy() for name, v in inputs.items()})
    want = _Decode(codec)(*inputs.values())
    assert got[0].shape == (3, 20, 19, 2)
    np.testing.assert_array_equal(got[3], [2, 3, 4])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_on_cuda_matches_cpu():
    codec = SPMCodec(SPMParams(INPUT, layout="coco17", hierarchical=True))
    kp, xyz, _ = _scene(codec, 5, 2, codec.default_intrinsics())
    t = codec.encode(kp, np.ones(kp.shape[:2]), xyz)
    cpu = codec.decode({name: torch.from_numpy(t[name])[None] for name in ("root", "disp", "depth")})
    gpu = codec.decode({name: torch.from_numpy(t[name])[None].cuda() for name in ("root", "disp", "depth")})
    np.testing.assert_allclose(gpu.xy.cpu().numpy(), cpu.xy.numpy(), atol=1e-3)
    np.testing.assert_allclose(gpu.xyz.cpu().numpy(), cpu.xyz.numpy(), rtol=1e-5, atol=1e-2)


def _heat_codec(**kw):
    return SPMCodec(SPMParams(INPUT, layout="panoptic19", heatmap_sigma=1.5, **kw))


def test_heatmaps_peak_at_labelled_joints_and_merge_by_max():
    codec = _heat_codec()
    kp, _, _ = _scene(codec, 2, 11, codec.default_intrinsics())
    kp[1] = kp[0] + 2.0  # person 1 stands half a map pixel off person 0: the Gaussians overlap
    vis = np.ones(kp.shape[:2])
    vis[:, 5] = 0  # l_wrist unlabelled for both
    heat = codec.encode(kp, vis)["heatmaps"]
    assert heat.shape == (19, 64, 80) and "heatmaps" not in SPMCodec(SPMParams(INPUT)).encode(kp[:, :17], vis[:, :17])
    assert heat.max() <= 1.0 and not heat[5].any()
    uv = (kp + 0.5) / 4 - 0.5
    for j in (0, 3, 11):  # on the map: the pixel nearest the joint holds about the Gaussian's peak
        x, y = np.rint(uv[0, j]).astype(int)
        if 0 <= x < 80 and 0 <= y < 64:
            assert heat[j, y, x] > 0.75
            single = codec.encode(kp[:1], vis[:1])["heatmaps"]
            np.testing.assert_allclose(heat[j], np.maximum(single[j], codec.encode(kp[1:], vis[1:])["heatmaps"][j]))


def test_heatmaps_snap_regressed_joints_onto_their_peaks():
    codec = _heat_codec()
    kp, _, roots = _scene(codec, 4, 12, codec.default_intrinsics())
    kp = np.clip(kp, 8, [311, 247])  # joints on the map, away from its border
    t = codec.encode(kp, np.ones(kp.shape[:2]))
    maps = {name: torch.from_numpy(t[name])[None] for name in ("root", "disp", "heatmaps")}
    noise = torch.from_numpy(np.random.default_rng(0).uniform(-1.5, 1.5, maps["disp"].shape)).float()
    maps["disp"] = maps["disp"] + noise / codec.params.z  # up to 1.5 map px (6 input px) of regression error
    errors = {}
    for with_heat in (False, True):
        decoded = codec.decode(maps if with_heat else {k: v for k, v in maps.items() if k != "heatmaps"})
        order = _match(decoded.xy[0].numpy(), 4, roots, codec)
        errors[with_heat] = np.linalg.norm(decoded.xy[0, order].numpy() - kp, axis=-1)
        if with_heat:
            assert decoded.score[0, :4].min() > 0.5 and not decoded.score[0, 4:].any()
    assert errors[False].mean() > 2.0
    # the log-parabola step is exact on Gaussian peaks (a quarter-pixel step was off by 0.77 input px on average)
    assert errors[True].max() < 0.01


def test_person_score_weighs_the_root_by_the_joints_and_orders_the_rows():
    codec = _heat_codec()
    kp, _, roots = _scene(codec, 3, 21, codec.default_intrinsics())
    kp = np.clip(kp, 8, [311, 247])
    t = codec.encode(kp, np.ones(kp.shape[:2]))
    maps = {name: torch.from_numpy(t[name])[None].float() for name in ("root", "disp", "heatmaps")}
    alone = [codec.encode(kp[i:i + 1], np.ones((1, kp.shape[1]))) for i in range(3)]
    # person 0's root peaks highest (above 1, as a network's may), but only its first 5 joints have heatmaps;
    # person 2's root is the weakest, with every joint seen
    root = np.maximum.reduce([a["root"] * f for a, f in zip(alone, (1.05, 1.0, 0.8))])
    faint = np.where(np.arange(kp.shape[1])[:, None, None] < 5, alone[0]["heatmaps"], 0.0)
    heat = np.maximum.reduce([faint, alone[1]["heatmaps"], alone[2]["heatmaps"]])
    maps["root"], maps["heatmaps"] = torch.from_numpy(root)[None].float(), torch.from_numpy(heat)[None].float()
    d = codec.decode(maps)
    assert d.count.tolist() == [3]
    order = _match(d.xy[0].numpy(), 3, roots, codec)  # decoded row of each true person
    ps = d.person_score[0].numpy()
    assert list(order) == [2, 0, 1]  # person 0 ranks last despite its root
    assert np.all(np.diff(ps[:3]) <= 0) and ps.max() <= 1.0 and not ps[3:].any()
    roots_seen = ps[:3] / d.score[0, :3].numpy().mean(-1)  # the root peaks, clamped to 1
    assert roots_seen[2] > roots_seen[0] > roots_seen[1] and 0.9 < roots_seen[2] <= 1.0 + 1e-6
    assert ps[2] < 0.3  # 5 of 19 joints seen


def test_person_threshold_drops_weak_persons_and_keeps_the_rest_in_order():
    codec = _heat_codec()
    kp, _, roots = _scene(codec, 3, 21, codec.default_intrinsics())
    kp = np.clip(kp, 8, [311, 247])
    alone = [codec.encode(kp[i:i + 1], np.ones((1, kp.shape[1]))) for i in range(3)]
    faint = np.where(np.arange(kp.shape[1])[:, None, None] < 5, alone[0]["heatmaps"], 0.0)  # person 0: 5 joints
    maps = {"root": np.maximum.reduce([a["root"] for a in alone]), "disp": codec.encode(kp, np.ones(kp.shape[:2]))["disp"],
            "heatmaps": np.maximum.reduce([faint, alone[1]["heatmaps"], alone[2]["heatmaps"]])}
    maps = {k: torch.from_numpy(v)[None].float() for k, v in maps.items()}
    every = codec.decode(maps)
    strict = SPMCodec(SPMParams(**{**codec.params.__dict__, "person_threshold": 0.5})).decode(maps)
    assert every.count.tolist() == [3] and strict.count.tolist() == [2]
    ps = strict.person_score[0].numpy()
    assert ps[0] >= ps[1] >= 0.5 and not ps[2:].any() and not strict.xy[0, 2:].any()
    torch.testing.assert_close(strict.xy[0, :2], every.xy[0, :2])  # the persons kept are decoded as before
    with pytest.raises(ValueError, match="person_threshold"):
        SPMParams(input_size=INPUT, person_threshold=1.0)


def test_rows_with_equal_scores_keep_their_order():
    from models.codecs.spm_decode import _descending

    score = torch.tensor([[0.2, 0.5, 0.2, 0.0, 0.5, 0.0], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]])
    assert _descending(score).tolist() == [[1, 4, 0, 2, 3, 5], [0, 1, 2, 3, 4, 5]]


def test_joints_the_heatmaps_do_not_see_keep_their_regressed_position():
    codec = _heat_codec()
    kp, _, _ = _scene(codec, 3, 13, codec.default_intrinsics())
    t = codec.encode(kp, np.ones(kp.shape[:2]))
    maps = {name: torch.from_numpy(t[name])[None] for name in ("root", "disp")}
    plain = codec.decode(maps)
    blind = codec.decode({**maps, "heatmaps": torch.full((1, 19, 64, 80), 0.05)})  # below refine_threshold 0.1
    np.testing.assert_array_equal(blind.xy.numpy(), plain.xy.numpy())
    np.testing.assert_allclose(blind.score[0, :3].numpy(), 0.05)
    with pytest.raises(ValueError, match="heatmaps"):
        codec.decode({**maps, "heatmaps": torch.zeros(1, 17, 64, 80)})
    for bad in ({"refine_window": 4}, {"heatmap_sigma": -1.0}, {"refine_threshold": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SPMParams(INPUT, **bad)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_mean_matches_reading_pixel_by_pixel(window):
    from models.codecs.spm_decode import _window_mean

    g = torch.Generator().manual_seed(window)
    maps = torch.randn(2, 6, 9, 11, generator=g, dtype=torch.float64)
    x, y = torch.tensor([[0, 5, 10], [3, 10, 1]]), torch.tensor([[0, 4, 8], [8, 1, 2]])  # corners and edges too
    base = torch.tensor([1.0, 0.0, 1.0])  # channel pairs 0 and 2 are relative to the read pixel
    got = _window_mean(maps, x, y, window, base, 0.5)
    r = window // 2
    for b in range(2):
        for p in range(3):
            reads = []
            for oy in range(-r, r + 1):
                for ox in range(-r, r + 1):
                    qx, qy = min(max(int(x[b, p]) + ox, 0), 10), min(max(int(y[b, p]) + oy, 0), 8)
                    v = maps[b, :, qy, qx] * 0.5
                    reads.append(v + torch.tensor([qx, qy] * 3, dtype=v.dtype) * base.repeat_interleave(2))
            torch.testing.assert_close(got[b, p], torch.stack(reads).mean(0))
