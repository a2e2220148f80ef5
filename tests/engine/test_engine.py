"""Engine: modes, ROI tracking, batching, tracking switches and input checks (tiny random models, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Engine, RoiParams
from engine.roi import crop_from_keypoints, zoom_crop
from models.codecs import Crop
from tests.engine.conftest import HG_ARGS, random_frames


def test_random_spec_warns_and_describes_itself():
    with pytest.warns(UserWarning, match="random weights"):
        engine = Engine("random:hg1", "torch", device="cpu", model_args=HG_ARGS)
    assert engine.mode == "single" and engine.layout.name == "mpii16" and engine.input_size == (64, 64)
    assert engine.model_id == "random:hg1" and engine.has_3d is False
    out = engine.infer(random_frames(2))
    assert [len(p) for p in out] == [1, 1] and out[0].track_id.tolist() == [-1]
    engine.close()


def test_chunks_of_max_batch_equal_single_frames(hg_model):
    frames = random_frames(7, seed=5)
    batched = Engine(hg_model, "torch", device="cpu", max_batch=3, roi=False).infer(frames)
    single = Engine(hg_model, "torch", device="cpu", max_batch=1, roi=False)
    for frame, want in zip(frames, batched):
        got = single.infer([frame])[0]
        np.testing.assert_allclose(got.xy, want.xy, atol=1e-2)


def test_roi_uses_previous_keypoints_and_falls_back(hg_model):
    frames = random_frames(3, seed=2, sizes=((160, 120),))
    plain = Engine(hg_model, "torch", device="cpu", roi=False).infer(frames)
    always = Engine(hg_model, "torch", device="cpu",
                    roi=RoiParams(threshold=0.0, joint_threshold=-1.0, second_look=False, zoom_below=0.0))
    never = Engine(hg_model, "torch", device="cpu", roi=RoiParams(threshold=1e9, second_look=False))
    got_always = [always.infer([f], stream_ids=["s"])[0] for f in frames]
    got_never = [never.infer([f], stream_ids=["s"])[0] for f in frames]
    for a, b in zip(got_never, plain):  # confidence never good enough: whole frames every time
        np.testing.assert_allclose(a.xy, b.xy, atol=1e-2)
    np.testing.assert_allclose(got_always[0].xy, plain[0].xy, atol=1e-2)  # first frame: whole frame
    crop = crop_from_keypoints(got_always[0].xy[0], got_always[0].score[0], (64, 64), always.roi)
    want = Engine(hg_model, "torch", device="cpu").stage.run([frames[1]], [crop.matrix])[0]
    np.testing.assert_allclose(got_always[1].xy, want.xy, atol=1e-2)  # second frame: crop of the first's joints
    assert np.abs(got_always[1].xy - plain[1].xy).max() > 1.0
    assert always._rois["s"] is not None and never._rois["s"] is None


def test_a_frame_seen_whole_gets_a_second_look_at_its_crop(hg_model):
    frames = random_frames(4, seed=6, sizes=((160, 120),))
    params = RoiParams(threshold=1e9, joint_threshold=-1.0)  # never tracked: every frame is seen whole
    plain = Engine(hg_model, "torch", device="cpu", roi=False)
    got = Engine(hg_model, "torch", device="cpu", roi=params).infer(frames)
    kept = set()
    for frame, first, poses in zip(frames, plain.infer(frames), got):
        crop = crop_from_keypoints(first.xy[0], first.score[0], (64, 64), params)
        second = plain.stage.run([frame], [crop.matrix])[0]
        want = second if second.score.mean() > first.score.mean() else first
        np.testing.assert_allclose(poses.xy, want.xy, atol=1e-2)
        kept.add(want is second)
    assert kept == {True, False}  # both outcomes occur on these frames
    no_crop = Engine(hg_model, "torch", device="cpu", roi=RoiParams(threshold=1e9, min_joints=99)).infer(frames)
    for a, b in zip(no_crop, plain.infer(frames)):
        np.testing.assert_allclose(a.xy, b.xy, atol=1e-2)


def test_a_tracked_frame_scoring_low_gets_a_look_at_a_smaller_crop(hg_model):
    frames = random_frames(8, seed=6, sizes=((160, 120),))
    params = RoiParams(threshold=0.0, joint_threshold=-1.0, second_look=False, zoom_below=1.0)  # every tracked frame
    engine = Engine(hg_model, "torch", device="cpu", roi=params)
    plain = Engine(hg_model, "torch", device="cpu", roi=False)
    kept = set()
    for frame in frames:
        roi = engine._rois.get("default")
        got = engine.infer([frame])[0]
        if roi is None:  # the first frame is seen whole
            continue
        first = plain.stage.run([frame], [roi.matrix])[0]
        crop = zoom_crop(roi, first.xy[0], first.score[0], params)
        assert crop.size == pytest.approx((roi.size[0] * 0.6, roi.size[1] * 0.6))
        np.testing.assert_allclose(crop.center, first.xy[0].mean(0), atol=1e-3)  # every joint counts here
        second = plain.stage.run([frame], [crop.matrix])[0]
        want = second if second.score.mean() > first.score.mean() else first
        np.testing.assert_allclose(got.xy, want.xy, atol=1e-2)
        kept.add(want is second)
    assert kept == {True, False}  # both outcomes occur on these frames


def test_zoom_crop_only_for_low_scores_and_never_under_min_size():
    roi = Crop((100.0, 80.0), (200.0, 200.0), (64, 64))
    xy = np.array([[90.0, 70.0], [110.0, 90.0], [500.0, 500.0]])
    params = RoiParams(joint_threshold=0.5, zoom_below=0.6, zoom=0.5, min_size=32.0)
    crop = zoom_crop(roi, xy, np.array([0.7, 0.7, 0.1]), params)  # mean 0.5: zoom, on the two confident joints
    assert crop.center == pytest.approx((100.0, 80.0)) and crop.size == pytest.approx((100.0, 100.0))
    assert zoom_crop(roi, xy, np.array([0.9, 0.9, 0.3]), params) is None  # mean 0.7: confident enough
    small = zoom_crop(Crop((100.0, 80.0), (40.0, 40.0), (64, 64)), xy, np.full(3, 0.1), params)
    assert small.size == pytest.approx((32.0, 32.0))  # 40 x 0.5 would be under min_size
    assert zoom_crop(Crop((100.0, 80.0), (30.0, 30.0), (64, 64)), xy, np.full(3, 0.1), params) is None
    assert zoom_crop(roi, xy, np.full(3, 0.1), RoiParams(zoom_below=0.0)) is None
    with pytest.raises(ValueError, match="zoom"):
        RoiParams(zoom=1.5)


def test_roi_tracking_in_a_batch_equals_frame_by_frame(hg_model):
    frames = random_frames(6, seed=4, sizes=((160, 120),))
    params = RoiParams(threshold=0.0, joint_threshold=-1.0)  # always tracked: each frame crops the one before
    ids = ["a", "b", "a", "a", "b", "b"]
    batched = Engine(hg_model, "torch", device="cpu", roi=params, max_batch=6).infer(frames, stream_ids=ids)
    single = Engine(hg_model, "torch", device="cpu", roi=params)
    for frame, sid, want in zip(frames, ids, batched):
        np.testing.assert_allclose(single.infer([frame], stream_ids=[sid])[0].xy, want.xy, atol=1e-2)


def test_roi_state_is_per_stream(hg_model):
    engine = Engine(hg_model, "torch", device="cpu",
                    roi=RoiParams(threshold=0.0, joint_threshold=-1.0, second_look=False))
    a, b = random_frames(2, seed=9, sizes=((160, 120),))
    engine.infer([a], stream_ids=["a"])
    first_b = engine.infer([b], stream_ids=["b"])[0]  # stream b has no ROI yet: whole frame
    fresh = Engine(hg_model, "torch", device="cpu", roi=False).infer([b])[0]
    np.testing.assert_allclose(first_b.xy, fresh.xy, atol=1e-2)
    engine.reset("a")
    assert "a" not in engine._rois and "b" in engine._rois


def test_tracking_switch_sets_ids(hg_model):
    frames = random_frames(4, seed=1, sizes=((160, 120),))
    tracked = Engine(hg_model, "torch", device="cpu", tracking=True, roi=False)
    out = tracked.infer(frames, stream_ids=["a", "b", "a", "b"])
    assert all(len(p.track_id) == 1 and p.track_id[0] >= 0 for p in out)
    smoothed = Engine(hg_model, "torch", device="cpu", smoothing=True, roi=False)
    out = smoothed.infer([frames[0]] * 5, timestamps=[0.0, 0.03, 0.06, 0.1, 0.13])
    assert [int(p.track_id[0]) for p in out] == [0] * 5  # same frame again and again: one track
    np.testing.assert_allclose(out[-1].xy, out[0].xy, atol=1e-2)


def test_bad_inputs_are_clear_errors(hg_model):
    engine = Engine(hg_model, "torch", device="cpu")
    with pytest.raises(ValueError, match=r"frames\[1\] must be a uint8 HxWx3"):
        engine.infer([random_frames(1)[0], np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="stream_ids has 1 entries for 2 frames"):
        engine.infer(random_frames(2), stream_ids=["a"])
    with pytest.raises(ValueError, match="max_batch"):
        Engine(hg_model, "torch", max_batch=0)
    with pytest.raises(ValueError, match="cascade mode needs an SPM model"):
        Engine(hg_model, "torch", device="cpu", refiner=hg_model)


def test_multi_person_spm_mode(spm_model):
    engine = Engine(spm_model, "torch", device="cpu")
    assert engine.mode == "multi" and engine.has_3d and engine.layout.name == "coco17"
    out = engine.infer(random_frames(2), intrinsics=[None, (150.0, 150.0, 45.0, 65.0)])
    assert all(p.xyz is not None and p.xyz.shape == p.xy.shape[:2] + (3,) for p in out)
    assert sum(len(p) for p in out) > 0


def test_cascade_refines_each_spm_person(spm_model, hg_model):
    frames = random_frames(2, seed=3)
    engine = Engine(spm_model, "torch", device="cpu", refiner=hg_model)
    assert engine.mode == "cascade" and engine.layout.name == "mpii16"
    out = engine.infer(frames)
    people = Engine(spm_model, "torch", device="cpu").infer(frames)
    refiner = Engine(hg_model, "torch", device="cpu").stage
    assert [len(p) for p in out] == [len(p) for p in people] and sum(len(p) for p in out) > 1
    for frame, got, found in zip(frames, out, people):
        np.testing.assert_allclose(got.person_score, found.person_score)
        assert got.xyz.shape == (len(found), 16, 3)
        np.testing.assert_array_equal(got.xyz[:, 12], found.xyz[:, 6])  # mpii r_shoulder <- coco r_shoulder
        assert np.all(got.xyz[:, 6] == 0)  # mpii pelvis: coco17 has no such joint
        for p in range(len(found)):
            crop = crop_from_keypoints(found.xy[p], found.score[p], (64, 64), engine.roi)
            want = refiner.run([frame], [crop.matrix])[0]
            np.testing.assert_allclose(got.xy[p], want.xy[0], atol=1e-2)
