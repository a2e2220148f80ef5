"""Metrics on hand-made cases: perfect predictions score 1, known shifts give known values."""

from __future__ import annotations

import numpy as np
import pytest

from models.layouts import COCO17, MPII16, PANOPTIC19
from tools import metrics as M


def _mpii_people(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 400, (n, 16, 2))
    gt[:, MPII16.head_segment[1]] = gt[:, MPII16.head_segment[0]] + [0.0, -50.0]  # head segment 50 px
    return gt


def test_head_size_is_0_6_of_the_head_segment_or_box_diagonal():
    gt = _mpii_people()
    np.testing.assert_allclose(M.head_sizes(gt, MPII16), 30.0)
    boxes = np.array([[[0.0, 0.0], [30.0, 40.0]]])
    np.testing.assert_allclose(M.head_sizes(gt[:1], MPII16, boxes), 30.0)
    with pytest.raises(ValueError, match="head segment"):
        M.head_sizes(np.zeros((1, 17, 2)), COCO17)


def test_pckh_known_shifts():
    gt = _mpii_people()
    vis = np.ones((3, 16), bool)
    head = M.head_sizes(gt, MPII16)  # 30 px: the threshold is 15 px
    assert M.pckh(gt, gt, vis, head)[1] == 1.0
    assert M.pckh(gt + [14.0, 0.0], gt, vis, head)[1] == 1.0
    assert M.pckh(gt + [8.0, 12.0], gt, vis, head)[1] == 1.0  # 14.4 px
    assert M.pckh(gt + [16.0, 0.0], gt, vis, head)[1] == 0.0
    pred = gt.copy()
    pred[:, :8] += 100.0
    per_joint, total = M.pckh(pred, gt, vis, head)
    assert total == 0.5 and np.all(per_joint[:8] == 0) and np.all(per_joint[8:] == 1)
    vis[:, :8] = False  # invisible joints do not count
    per_joint, total = M.pckh(pred, gt, vis, head)
    assert total == 1.0 and np.all(np.isnan(per_joint[:8]))
    pred[0, 10] = np.nan  # a missing prediction is wrong
    assert M.pckh(pred, gt, vis, head)[1] == pytest.approx(23 / 24)


def test_mpjpe_and_pck3d():
    rng = np.random.default_rng(1)
    gt = rng.uniform(-500, 500, (2, 19, 3)) + [0, 0, 4000]
    mask = np.ones((2, 19), bool)
    assert M.mpjpe(gt, gt, mask) == 0.0
    shifted = gt + [30.0, 40.0, 0.0]
    assert M.mpjpe(shifted, gt, mask) == pytest.approx(50.0)
    assert M.mpjpe(shifted, gt, mask, PANOPTIC19) == pytest.approx(0.0)  # root-relative: a translation is free
    assert M.pck3d(shifted, gt, mask, 150.0) == 1.0
    assert M.pck3d(gt + [0.0, 0.0, 200.0], gt, mask, 150.0) == 0.0
    bent = gt.copy()
    bent[:, 5] += [0.0, 0.0, 300.0]  # one joint of 19 off by 300 mm (not the root)
    assert M.mpjpe(bent, gt, mask, PANOPTIC19) == pytest.approx(300.0 / 19)
    assert M.pck3d(bent, gt, mask, 150.0, PANOPTIC19) == pytest.approx(18 / 19)
    where = M.mpjpe_breakdown(bent, gt, mask, PANOPTIC19)
    assert where["per_joint"][5] == pytest.approx(300.0) and np.delete(where["per_joint"], 5) == pytest.approx(0.0)
    assert where["per_axis"] == pytest.approx({"x": 0.0, "y": 0.0, "z": 300.0 / 19})
    assert where["image_plane"] == pytest.approx(0.0), "a depth error alone leaves nothing in the image plane"
    bent[:, 6] += [30.0, 40.0, 0.0]
    assert M.mpjpe_breakdown(bent, gt, mask, PANOPTIC19)["image_plane"] == pytest.approx(50.0 / 19)
    mask[:, 7] = False  # a joint never labelled: NaN, not zero
    assert np.isnan(M.mpjpe_breakdown(shifted, gt, mask, PANOPTIC19)["per_joint"][7])


def test_joint_precision_recall_f1():
    empty = np.zeros((0, 2, 2)), np.zeros((0, 2), bool)
    c = M.joint_counts(*empty, *empty, 5.0)
    assert (c.precision, c.recall, c.f1) == (1.0, 1.0, 1.0)
    gt = np.array([[[10.0, 10.0], [50.0, 50.0]]])
    ok = np.ones((1, 2), bool)
    c = M.joint_counts(gt, ok, gt, ok, 5.0)
    assert (c.tp, c.fp, c.fn, c.f1) == (2, 0, 0, 1.0)
    # Two predictions near one truth: one-to-one, the closer wins, the other is a false positive.
    pred = np.array([[[11.0, 10.0], [50.0, 50.0]], [[10.5, 10.0], [90.0, 90.0]]])
    c = M.joint_counts(pred, np.ones((2, 2), bool), gt, ok, 5.0)
    assert (c.tp, c.fp, c.fn) == (2, 2, 0)
    assert c.precision == 0.5 and c.recall == 1.0 and c.f1 == pytest.approx(2 / 3)
    assert M.greedy_match(pred[:, 0], gt[:, 0], 5.0) == [(1, 0)]
    c = M.joint_counts(*empty, gt, ok, 5.0)
    assert (c.tp, c.fn, c.precision, c.recall) == (0, 2, 1.0, 0.0)


def _coco_image(rng, n=3):
    gt = rng.uniform(0, 300, (n, 17, 2))
    vis = np.full((n, 17), 2.0)
    return gt, vis


def test_oks_ap():
    rng = np.random.default_rng(2)
    images = []
    for _ in range(4):
        gt, vis = _coco_image(rng)
        images.append({"gt_xy": gt, "gt_vis": vis, "pred_xy": gt.copy(), "pred_score": np.ones((3, 17)),
                       "pred_person_score": np.ones(3)})
    sigmas = COCO17.oks_sigmas
    assert M.oks_ap(images, sigmas)["AP"] == pytest.approx(1.0)
    far = [dict(im, pred_xy=im["pred_xy"] + 200.0) for im in images]
    assert M.oks_ap(far, sigmas)["AP"] == pytest.approx(0.0)
    half = [dict(im, pred_xy=im["pred_xy"][:1], pred_score=im["pred_score"][:1],
                 pred_person_score=im["pred_person_score"][:1]) for im in images]
    r = M.oks_ap(half, sigmas)
    assert r["AR"] == pytest.approx(1 / 3, abs=0.01) and r["AP"] < 0.5


def test_accel_error_counts_only_joints_seen_in_three_consecutive_frames():
    still, ok = np.zeros((2, 3)), np.array([True, True])
    bump = np.array([[0.0, 0.0, 0.0], [6.0, 8.0, 0.0]])  # joint 1 off by 10 mm in the middle frame only
    frames = [{7: (still, still, ok)}, {7: (bump, still, ok)}, {7: (still, still, ok)}]
    assert M.accel_error(frames) == pytest.approx(10.0)  # joint 1: |-2 x (6, 8, 0)| = 20; joint 0: 0
    masked = [frames[0], {7: (bump, still, np.array([True, False]))}, frames[2]]
    assert M.accel_error(masked) == pytest.approx(0.0)
    assert np.isnan(M.accel_error([frames[0], {}, frames[2]]))  # the person missed in the middle: no triple
    assert np.isnan(M.accel_error(frames[:2]))
