"""Tracker: stable ids through crossings and short gaps; One-Euro smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from engine.results import Poses
from engine.smoothing import OneEuroFilter, OneEuroParams
from engine.tracking import StreamTrackers, Tracker, TrackerParams, box_iou, match
from models.layouts import COCO17

K = COCO17.num_joints
# A rough standing skeleton (COCO order), about 100 px tall, root at the origin.
TEMPLATE = np.array([
    [0, -60], [-3, -63], [3, -63], [-7, -61], [7, -61], [-12, -45], [12, -45], [-15, -25], [15, -25],
    [-16, -8], [16, -8], [-8, 0], [8, 0], [-9, 20], [9, 20], [-9, 40], [9, 40]], np.float64)


def frame_poses(centres, rng, order=None) -> Poses:
    """Poses of TEMPLATE at each centre (None = missing), with 0.5 px noise."""
    centres = [c for c in centres if c is not None]
    xy = np.stack([TEMPLATE + c + rng.normal(0, 0.5, TEMPLATE.shape) for c in centres]) if centres else np.zeros((0, K, 2))
    n = len(xy)
    poses = Poses("coco17", xy.astype(np.float32), np.ones((n, K), np.float32), np.ones(n, np.float32),
                  np.full(n, -1, np.int64))
    if order is not None:
        poses = Poses("coco17", poses.xy[order], poses.score[order], poses.person_score[order], poses.track_id[order])
    return poses


@pytest.mark.parametrize("matcher", ["hungarian", "greedy"])
@pytest.mark.parametrize("metric", ["oks", "iou"])
def test_ids_kept_through_crossing(matcher, metric):
    rng = np.random.default_rng(0)
    tracker = Tracker(COCO17.oks_sigmas, TrackerParams(metric=metric, matcher=matcher))
    first_ids = None
    for f in range(40):
        a = np.array([50 + 8 * f, 200.0])   # walks right
        b = np.array([370 - 8 * f, 204.0])  # walks left, crosses a at frame 20
        order = [1, 0] if f % 2 else [0, 1]  # detection order shuffled per frame
        out = tracker.update(frame_poses([a, b], rng, order))
        by_x = {int(tid): float(out.xy[i, :, 0].mean()) for i, tid in enumerate(out.track_id)}
        # the track that started on the left must be the one at a's x now
        if first_ids is None:
            first_ids = (min(by_x, key=by_x.get), max(by_x, key=by_x.get))
        assert by_x[first_ids[0]] == pytest.approx(a[0], abs=3), f"frame {f}: ids swapped"
        assert by_x[first_ids[1]] == pytest.approx(b[0], abs=3), f"frame {f}: ids swapped"


def test_ids_kept_through_short_gap_and_dropped_after_max_age():
    rng = np.random.default_rng(1)
    tracker = Tracker(COCO17.oks_sigmas, TrackerParams(max_age=3))
    ids = []
    for f in range(30):
        c = np.array([100 + 3 * f, 150.0])
        missing = f in (5, 6, 7) or 15 <= f < 20
        out = tracker.update(frame_poses([None if missing else c], rng))
        ids.append(int(out.track_id[0]) if len(out) else None)
    assert set(ids[:15]) - {None} == {0}, ids      # a 3-frame gap keeps the id
    assert set(ids[20:]) == {1}, ids               # a 5-frame gap (> max_age) starts a new track


def test_streams_are_independent():
    rng = np.random.default_rng(2)
    trackers = StreamTrackers(COCO17.oks_sigmas)
    a = trackers.update("a", frame_poses([np.array([100.0, 100.0])], rng))
    b = trackers.update("b", frame_poses([np.array([300.0, 100.0]), np.array([100.0, 100.0])], rng))
    assert a.track_id.tolist() == [0] and b.track_id.tolist() == [0, 1]


def test_match_threshold_and_greedy_vs_hungarian():
    sim = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert sorted(match(sim, 0.0, "hungarian")) == [(0, 1), (1, 0)]
    assert sorted(match(sim, 0.0, "greedy")) == [(0, 0), (1, 1)]
    assert match(sim, 0.95, "hungarian") == []
    assert box_iou(np.array([[0, 0, 2, 2.0]]), np.array([[1, 1, 3, 3.0]]))[0, 0] == pytest.approx(1 / 7)


def test_one_euro_reduces_jitter_and_follows_motion():
    rng = np.random.default_rng(3)
    f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=0.0))
    still = [f(np.array([10.0]) + rng.normal(0, 1.0, 1), t / 30) for t in range(300)]
    assert np.std(np.concatenate(still[50:])) < 0.5
    g = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=1.0))
    moving = [g(np.array([5.0 * t]), t / 30) for t in range(60)]
    assert abs(moving[-1][0] - 5.0 * 59) < 10


def test_tracker_smoothing_off_by_default_and_on_when_asked():
    rng = np.random.default_rng(4)
    raw = [frame_poses([np.array([100.0, 100.0])], rng) for _ in range(60)]
    plain, smooth = Tracker(COCO17.oks_sigmas), Tracker(COCO17.oks_sigmas, TrackerParams(smoothing=OneEuroParams()))
    out_plain = [plain.update(p) for p in raw]
    out_smooth = [smooth.update(p) for p in raw]
    np.testing.assert_array_equal(out_plain[10].xy, raw[10].xy)
    jitter = lambda outs: np.std(np.stack([o.xy[0] for o in outs[20:]]), axis=0).mean()  # noqa: E731
    assert jitter(out_smooth) < 0.5 * jitter(out_plain)


def test_bad_input():
    with pytest.raises(ValueError, match="metric"):
        TrackerParams(metric="l2")
    tracker = Tracker(COCO17.oks_sigmas)
    bad = Poses("x", np.zeros((1, 3, 2), np.float32), np.ones((1, 3), np.float32), np.ones(1, np.float32),
                np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="joints"):
        tracker.update(bad)


def test_empty_frames_and_3d_smoothing():
    rng = np.random.default_rng(5)
    params = TrackerParams(smoothing=OneEuroParams(), smoothing_3d=OneEuroParams(beta=0.005))
    tracker = Tracker(COCO17.oks_sigmas, params)
    assert len(tracker.update(Poses.empty("coco17", K, with_3d=True))) == 0
    zs = []
    for f in range(30):
        p = frame_poses([np.array([100.0, 100.0])], rng)
        xyz = np.concatenate([p.xy, np.full((1, K, 1), 3000.0) + rng.normal(0, 20, (1, K, 1))], -1)
        out = tracker.update(Poses("coco17", p.xy, p.score, p.person_score, p.track_id, xyz.astype(np.float32)))
        assert out.track_id.tolist() == [0] and out.xyz.shape == (1, K, 3)
        zs.append(out.xyz[0, :, 2])
        if f == 10:
            assert len(tracker.update(Poses.empty("coco17", K, with_3d=True))) == 0  # one empty frame in between
    assert np.std(np.stack(zs[15:])) < 10.0  # input noise is 20 mm


def test_non_finite_or_runaway_joints_never_poison_the_tracks():
    """Hostile detections (NaN, 5e36) are ignored for matching and motion; a state that went non-finite anyway is
    started afresh instead of carried on (it once ran away for 27 batches)."""
    rng = np.random.default_rng(3)
    tracker = Tracker(COCO17.oks_sigmas, TrackerParams(smoothing=OneEuroParams()))
    ids = []
    for f in range(12):
        poses = frame_poses([np.array([100.0 + 2 * f, 200.0])], rng)
        if f in (4, 5, 6):
            poses.xy[0, :5] = 5e36 if f != 5 else np.nan
        out = tracker.update(poses, t=f / 30)
        ids.append(int(out.track_id[0]))
        assert all(np.isfinite(t.xy).all() and np.isfinite(t.velocity).all() for t in tracker._state.tracks)
        assert np.isfinite(out.xy[0, 5:]).all()
    assert len(set(ids)) == 1, "the person keeps its id through the hostile frames"
    tracker._state.tracks[0].velocity[:] = np.inf  # however it got there
    out = tracker.update(frame_poses([np.array([130.0, 200.0])], rng), t=0.5)
    assert out.track_id[0] == -1 and not tracker._state.tracks, "reset, not carried on"
    out = tracker.update(frame_poses([np.array([132.0, 200.0])], rng), t=0.54)
    assert out.track_id[0] > ids[0] and np.isfinite(out.xy).all(), "tracking resumes with a fresh id"


def test_one_euro_filter_restarts_instead_of_running_away():
    euro = OneEuroFilter(OneEuroParams())
    euro(np.array([1.0, 2.0]), 0.0)
    euro(np.array([1e308, -1e308]), 0.03)  # its speed overflows
    assert np.isfinite(euro(np.array([3.0, 4.0]), 0.06)).all(), "not NaN from then on"
