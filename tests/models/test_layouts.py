import numpy as np
import pytest

from models.layouts import (
    BLAZEPOSE33,
    COCO17,
    LAYOUTS,
    MPII16,
    PANOPTIC19,
    convert,
    convertible,
    derived_map,
    get_layout,
    index_map,
)


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=lambda layout: layout.name)
def test_layout_is_consistent(layout):
    k = layout.num_joints
    assert len(layout.names) == len(set(layout.names)) == k
    for a, b in layout.bones:
        assert 0 <= a < k and 0 <= b < k and a != b
    flip = layout.flip_index
    assert sorted(flip) == list(range(k))
    assert np.array_equal(flip[flip], np.arange(k))
    for a, b in layout.flip_pairs:
        assert layout.names[a].startswith("l_") and layout.names[b].startswith("r_")
        assert layout.names[a][2:] == layout.names[b][2:]
    # every parent sits one level above its child (the SPM decoder chains level by level)
    for j, p in enumerate(layout.parents):
        assert layout.levels[j] == (2 if p == -1 else layout.levels[p] + 1)
    assert len(layout.bone_colors) == len(layout.bones)


def test_counts_match_the_datasets():
    assert (MPII16.num_joints, COCO17.num_joints, PANOPTIC19.num_joints) == (16, 17, 19)
    assert MPII16.names[6] == "pelvis" and MPII16.names[9] == "head_top"
    assert PANOPTIC19.names[2] == "body_center" and PANOPTIC19.root_joints == (2,)


def test_index_map_between_layouts():
    pan_to_coco = index_map(PANOPTIC19, COCO17)
    assert (pan_to_coco >= 0).all(), "every COCO joint exists in Panoptic"
    assert PANOPTIC19.names[pan_to_coco[COCO17.joints.L_WRIST]] == "l_wrist"
    coco_to_mpii = index_map(COCO17, MPII16)
    assert coco_to_mpii[MPII16.joints.HEAD_TOP] == -1
    assert COCO17.names[coco_to_mpii[MPII16.joints.R_KNEE]] == "r_knee"
    pan_to_mpii = index_map(PANOPTIC19, MPII16)
    assert PANOPTIC19.names[pan_to_mpii[MPII16.joints.PELVIS]] == "body_center"


def test_convert_fills_missing_joints_with_zero_score():
    kp = np.random.default_rng(0).random((3, 17, 2)).astype(np.float32)
    sc = np.ones((3, 17), np.float32)
    out, out_sc = convert(kp, sc, COCO17, MPII16)
    assert out.shape == (3, 16, 2)
    assert out_sc[:, MPII16.joints.HEAD_TOP].sum() == 0
    np.testing.assert_array_equal(out[:, MPII16.joints.L_ANKLE], kp[:, COCO17.joints.L_ANKLE])


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown keypoint layout 'foo'"):
        get_layout("foo")


def _blazepose_points(rng, shape=(2,)) -> tuple[np.ndarray, np.ndarray]:
    kp = rng.normal(100.0, 40.0, shape + (BLAZEPOSE33.num_joints, 3)).astype(np.float32)
    sc = rng.random(shape + (BLAZEPOSE33.num_joints,)).astype(np.float32)
    return kp, sc


def test_blazepose_layout_is_the_models_order():
    assert BLAZEPOSE33.num_joints == 33 and BLAZEPOSE33.root_joints == (23, 24)
    b = BLAZEPOSE33.joints
    assert (b.NOSE, b.L_EAR, b.R_SHOULDER, b.L_WRIST, b.R_HIP, b.L_ANKLE, b.R_FOOT_INDEX) == (0, 7, 12, 15, 24, 27, 32)
    assert len(BLAZEPOSE33.flip_pairs) == 16   # every joint but the nose has a mirror


@pytest.mark.parametrize("dst", [PANOPTIC19, COCO17, MPII16], ids=lambda layout: layout.name)
def test_blazepose_converts_to_every_joint_of(dst):
    kp, sc = _blazepose_points(np.random.default_rng(1))
    assert convertible(BLAZEPOSE33, dst).all()
    out, out_sc = convert(kp, sc + 0.1, BLAZEPOSE33, dst)
    assert out.shape == (2, dst.num_joints, 3) and (out_sc > 0).all(), "no joint of the target left empty"


def test_derived_joints_follow_their_formulas():
    b = BLAZEPOSE33.joints
    kp = np.zeros((33, 2), np.float32)
    sc = np.ones(33, np.float32)
    # an upright figure: shoulders at y=100, ears at y=50, hips at y=200
    kp[b.L_SHOULDER], kp[b.R_SHOULDER] = (60, 100), (40, 100)
    kp[b.L_EAR], kp[b.R_EAR] = (56, 50), (44, 50)
    kp[b.L_HIP], kp[b.R_HIP] = (58, 200), (42, 200)
    sc[b.L_EAR], sc[b.R_SHOULDER] = 0.3, 0.6
    pan, pan_sc = convert(kp, sc, BLAZEPOSE33, PANOPTIC19)
    p = PANOPTIC19.joints
    np.testing.assert_allclose(pan[p.NECK], (50, 100))
    np.testing.assert_allclose(pan[p.BODY_CENTER], (50, 200))
    assert pan_sc[p.NECK] == pytest.approx(0.6) and pan_sc[p.BODY_CENTER] == 1.0   # min of the sources
    mpii, mpii_sc = convert(kp, sc, BLAZEPOSE33, MPII16)
    m = MPII16.joints
    np.testing.assert_allclose(mpii[m.PELVIS], (50, 200))
    np.testing.assert_allclose(mpii[m.THORAX], (50, 100))
    np.testing.assert_allclose(mpii[m.UPPER_NECK], (50, 0.6 * 100 + 0.4 * 50))   # 0.6 S + 0.4 E
    np.testing.assert_allclose(mpii[m.HEAD_TOP], (50, 1.6 * 50 - 0.6 * 100))     # 1.6 E - 0.6 S
    assert mpii_sc[m.HEAD_TOP] == pytest.approx(0.3) and mpii_sc[m.UPPER_NECK] == pytest.approx(0.3)
    np.testing.assert_allclose(mpii[m.L_KNEE], kp[b.L_KNEE])


def test_derived_joints_work_in_3d_and_move_with_the_body():
    kp, sc = _blazepose_points(np.random.default_rng(2), shape=(4, 2))
    out, _ = convert(kp, sc, BLAZEPOSE33, MPII16)
    shifted, _ = convert(kp + np.float32([10, -20, 300]), sc, BLAZEPOSE33, MPII16)
    np.testing.assert_allclose(shifted - out, np.broadcast_to([10, -20, 300], out.shape), atol=1e-3)
    assert out.shape == (4, 2, 16, 3)


def test_derived_joints_commute_with_flips():
    """Mirroring a BlazePose figure then converting equals converting then mirroring (left/right swap)."""
    kp, sc = _blazepose_points(np.random.default_rng(3))
    mirror = kp.copy()
    mirror[..., 0] = -mirror[..., 0]
    for dst in (PANOPTIC19, MPII16, COCO17):
        a, a_sc = convert(mirror[:, BLAZEPOSE33.flip_index], sc[:, BLAZEPOSE33.flip_index], BLAZEPOSE33, dst)
        b, b_sc = convert(kp, sc, BLAZEPOSE33, dst)
        b[..., 0] = -b[..., 0]
        np.testing.assert_allclose(a, b[:, dst.flip_index], atol=1e-4)
        np.testing.assert_allclose(a_sc, b_sc[:, dst.flip_index])


def test_index_map_keeps_derived_joints_out():
    assert index_map(BLAZEPOSE33, PANOPTIC19)[PANOPTIC19.joints.NECK] == -1
    assert set(derived_map(BLAZEPOSE33, MPII16)) == {MPII16.joints.PELVIS, MPII16.joints.THORAX,
                                                     MPII16.joints.UPPER_NECK, MPII16.joints.HEAD_TOP}
    assert not derived_map(COCO17, PANOPTIC19), "only layouts with a table derive joints"
