import numpy as np
import pytest

from models.layouts import COCO17, LAYOUTS, MPII16, PANOPTIC19, convert, get_layout, index_map


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
