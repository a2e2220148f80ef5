"""engine.blazepose: the teacher's arithmetic (numpy only, so these run without the teacher environment)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import blazepose as bp


def test_anchors_are_mediapipes_grid():
    a = bp.ssd_anchors()
    assert a.shape == (2254, 2)
    np.testing.assert_allclose(a[0], (0.5 / 28, 0.5 / 28))
    np.testing.assert_allclose(a[1], a[0])                    # two anchors per cell at stride 8
    np.testing.assert_allclose(a[2], (1.5 / 28, 0.5 / 28))
    np.testing.assert_allclose(a[28 * 28 * 2], (0.5 / 14, 0.5 / 14))
    last = a[28 * 28 * 2 + 14 * 14 * 2:]
    assert len(last) == 7 * 7 * 6 and np.allclose(last[:6], (0.5 / 7, 0.5 / 7))
    np.testing.assert_allclose(a[-1], (6.5 / 7, 6.5 / 7))


def test_detections_decode_against_their_anchor():
    anchors = bp.ssd_anchors()
    raw = np.zeros((2254, 12), np.float32)
    logits = np.full(2254, -10.0, np.float32)
    i = 28 * 28 * 2 + 5                                       # a stride-16 anchor
    logits[i] = 2.0
    raw[i] = [22.4, -11.2, 44.8, 67.2, 0, 0, 11.2, 22.4, 0, 0, 0, 0]   # input pixels
    boxes, kps, scores = bp.decode_detections(raw, logits, anchors, min_score=0.5)
    assert len(scores) == 1 and scores[0] == pytest.approx(1 / (1 + math.exp(-2)))
    cx, cy = anchors[i] + (0.1, -0.05)
    np.testing.assert_allclose(boxes[0], (cx - 0.1, cy - 0.15, cx + 0.1, cy + 0.15), atol=1e-6)
    np.testing.assert_allclose(kps[0, 0], anchors[i], atol=1e-6)
    np.testing.assert_allclose(kps[0, 1], anchors[i] + (0.05, 0.1), atol=1e-6)
    assert len(bp.decode_detections(raw, logits, anchors, min_score=0.9)[2]) == 0


def test_merge_joins_one_person_and_keeps_neighbours_apart():
    # person 1 seen twice (two tiles), person 2 standing 0.6 body radii to its side
    kps = np.array([[[100, 200], [100, 160], [0, 0], [0, 0]],
                    [[103, 201], [103, 162], [0, 0], [0, 0]],
                    [[124, 200], [124, 160], [0, 0], [0, 0]]], np.float64)
    scores = np.array([0.9, 0.6, 0.8])
    merged, s = bp.merge_detections(kps, scores, distance=0.3)
    assert len(s) == 2 and list(s) == [0.9, 0.8]
    np.testing.assert_allclose(merged[0, 0], (100 + 0.6 / 1.5 * 3, 200 + 0.6 / 1.5 * 1))   # score-weighted
    np.testing.assert_allclose(merged[1], kps[2])


def test_alignment_region_points_the_crop_up_at_the_scale_point():
    rng = np.random.default_rng(0)
    centre = rng.uniform(50, 500, (20, 2))
    scale_point = centre + rng.normal(0, 60, (20, 2))
    regions = bp.alignment_regions(centre, scale_point)
    dist = np.hypot(*(scale_point - centre).T)
    np.testing.assert_allclose(regions[:, 2], 2 * dist * bp.REGION_SCALE)
    for r, s in zip(regions, scale_point):
        top = bp.to_frame(np.array([0.5, 0.5 - 0.5 / bp.REGION_SCALE]), r)   # up the crop's axis
        np.testing.assert_allclose(top, s, atol=1e-6)
    upright = bp.alignment_regions(np.array([[10.0, 100.0]]), np.array([[10.0, 60.0]]))[0]
    assert upright[3] == pytest.approx(0.0)


def _pattern(h=120, w=160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 1.5 % 256, y * 2 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_unit_crop_copies_pixels():
    frame = _pattern()
    region = np.array([39.5, 29.5, 40.0, 0.0])                # pixels 20..59 x 10..49, one crop pixel each
    out = bp.crop(frame, region, 40, replicate=True)
    np.testing.assert_allclose(out, frame[10:50, 20:60, ::-1] / 255.0, atol=1e-5)


def test_rotated_crop_is_the_upright_crop_turned():
    frame = _pattern()
    up = bp.crop(frame, np.array([80.0, 60.0, 48.0, 0.0]), 48, replicate=True)
    turned = bp.crop(frame, np.array([80.0, 60.0, 48.0, math.pi / 2]), 48, replicate=True)
    # the crop's up points along the frame's +x: the crop is the upright one turned by a quarter
    np.testing.assert_allclose(turned, np.rot90(up, k=1), atol=1e-4)


def test_upright_path_matches_the_general_one_and_borders():
    frame = _pattern()
    for region in ([30.2, 20.7, 90.0, 0.0], [150.0, 110.0, 70.0, 0.0], [80.0, 60.0, 400.0, 0.0]):
        r = np.array(region)
        for replicate in (True, False):
            fast = bp.crop(frame, r, 56, replicate)
            general = bp.crop(frame, r + (0, 0, 0, 1e-12), 56, replicate)
            np.testing.assert_allclose(fast, general, atol=1e-4)
    black = bp.crop(frame, np.array([80.0, 60.0, 400.0, 0.0]), 64, replicate=False)
    assert black[0, 0].max() == 0 and black[32, 32].max() > 0   # letterbox outside, picture inside
    edge = bp.crop(frame, np.array([80.0, 60.0, 400.0, 0.0]), 64, replicate=True)
    assert edge[0, 0].max() > 0


def test_heatmap_refinement_moves_to_the_peak_only_when_confident():
    hm = np.full((64, 64, 2), -8.0, np.float32)
    hm[30, 40, 0] = 6.0                                       # joint 0: a sharp peak at cell (40, 30)
    hm[10, 10, 1] = -1.0                                      # joint 1: nothing confident
    start = np.array([[41 / 64, 31 / 64], [10.2 / 64, 10.2 / 64]])
    out = bp.refine_from_heatmap(start, hm)
    np.testing.assert_allclose(out[0], (40 / 64, 30 / 64), atol=2e-3)   # MediaPipe's cell positions
    np.testing.assert_allclose(out[1], start[1])


def test_landmarks_map_back_through_the_region():
    region = np.array([200.0, 150.0, 128.0, math.pi / 2])
    raw = np.zeros((39, 5), np.float32)
    raw[:, 0], raw[:, 1] = 128.0, 64.0                        # crop centre-x, a quarter down
    raw[:, 3], raw[:, 4] = 3.0, -3.0
    world = np.zeros((39, 3), np.float32)
    world[:, 1] = -0.5                                        # half a metre up in the crop
    out = bp.decode_landmarks({"landmarks": raw.ravel(), "presence": np.array([0.9]),
                               "heatmap": np.full((64, 64, 39), -10.0, np.float32), "world": world.ravel()}, region)
    # a quarter down the crop = a quarter of the side towards the crop's up = frame +x when turned 90 degrees
    np.testing.assert_allclose(out["xy"][0], (200 + 32, 150), atol=1e-6)
    np.testing.assert_allclose(out["world"][0], (0.5, 0, 0), atol=1e-6)
    assert out["visibility"][0] == pytest.approx(1 / (1 + math.exp(-3)))
    assert out["flag"] == pytest.approx(0.9) and out["world"].shape == (33, 3)


def test_tiles_cover_the_frame():
    for across in (1, 2, 3):
        tiles = bp.tile_regions((768, 576), across, 0.25)
        boxes = bp.region_boxes(tiles)
        assert boxes[:, 0].min() <= 0 and boxes[:, 1].min() <= 0
        assert boxes[:, 2].max() >= 767 and boxes[:, 3].max() >= 575
        ys, xs = np.mgrid[0:576:16, 0:768:16]
        covered = np.zeros(xs.shape, bool)
        for x0, y0, x1, y1 in boxes:
            covered |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        assert covered.all()
    assert len(bp.tile_regions((768, 576), 3, 0.25)) == 12


def test_region_boxes_shrink_and_narrow():
    box = bp.region_boxes(np.array([[100.0, 100.0, 125.0, 0.0]]), shrink=1.25, aspect=0.5)[0]
    np.testing.assert_allclose(box, (75, 50, 125, 150))
    turned = bp.region_boxes(np.array([[100.0, 100.0, 125.0, math.pi / 2]]), shrink=1.25, aspect=0.5)[0]
    np.testing.assert_allclose(turned, (50, 75, 150, 125), atol=1e-9)


def test_search_params_reject_nonsense():
    with pytest.raises(ValueError, match="tiles"):
        bp.SearchParams(tiles=())
    with pytest.raises(ValueError, match="detect_every"):
        bp.SearchParams(detect_every=0)
