"""Single-person relock: the ROI tracker checks itself with sweeps of search windows and leaves a wrong lock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import Engine, RoiParams
from engine.roi import Relock, search_windows


def _corners(crop) -> np.ndarray:
    (cx, cy), (w, h) = crop.center, crop.size
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@pytest.mark.parametrize("frame_size", [(640, 480), (480, 640), (1280, 720), (100, 100)])
def test_search_windows_cover_the_frame_at_each_scale_in_the_input_aspect(frame_size):
    fw, fh = frame_size
    windows = search_windows(frame_size, (192, 256), (1.0, 0.75, 0.5))
    whole = _corners(windows[0])
    assert whole[0] <= 0 and whole[1] <= 0 and whole[2] >= fw and whole[3] >= fh  # the letterboxed frame
    for crop in windows:
        assert crop.size[0] / crop.size[1] == pytest.approx(192 / 256) and crop.dst_size == (192, 256)
    for scale in (0.75, 0.5):
        tiles = search_windows(frame_size, (192, 256), (scale,))
        assert min(tiles[0].size) == pytest.approx(scale * min(fw, fh) * min(1.0, 192 / 256))
        ys, xs = np.mgrid[0:fh:7, 0:fw:7]
        covered = np.zeros(xs.shape, bool)
        for c in tiles:
            x0, y0, x1, y1 = _corners(c)
            covered |= (xs >= x0 - 1e-6) & (xs <= x1 + 1e-6) & (ys >= y0 - 1e-6) & (ys <= y1 + 1e-6)
        assert covered.all(), f"scale {scale}: some of the frame is in no window"
    assert len(windows) == 1 + len(search_windows(frame_size, (192, 256), (0.75,))) + len(
        search_windows(frame_size, (192, 256), (0.5,)))


def test_a_confident_lock_is_swept_now_and_then_a_doubtful_one_at_once():
    params = RoiParams(check_every=12, doubt_every=3, sweep_looks=2, scales=(1.0, 0.5))
    n = len(search_windows((640, 480), (192, 192), params.scales))
    frames_per_sweep = math.ceil(n / params.sweep_looks)
    confident = Relock(params)
    looks = [len(confident.windows((640, 480), 0.9, (192, 192))) for _ in range(60)]
    started = [i for i, k in enumerate(looks) if k and (i == 0 or not looks[i - 1])]
    assert started and started[0] > 0, "a confident first frame does not sweep"
    assert np.diff(started).tolist() == [params.check_every + frames_per_sweep - 1] * (len(started) - 1)
    assert sum(looks[started[0]:started[0] + frames_per_sweep]) == n and max(looks) == params.sweep_looks
    doubtful = Relock(params)
    assert len(doubtful.windows((640, 480), 0.5, (192, 192))) == params.sweep_looks  # at once
    dropped = Relock(RoiParams(check_every=50, doubt_every=3, doubt_below=0.5, doubt_drop=0.2))
    assert [dropped.windows((640, 480), score, (192, 192)) for score in (0.95,) * 5 + (0.9,)] == [[]] * 6
    assert dropped.windows((640, 480), 0.65, (192, 192)), "a fall of 0.25 (> doubt_drop) starts a sweep"
    assert Relock(RoiParams(check_every=0)).windows((640, 480), 0.1, (192, 192)) == []


def test_relocked_ends_the_sweep():
    state = Relock(RoiParams(doubt_every=4))
    assert state.windows((640, 480), 0.2, (192, 192))
    state.relocked()
    assert [state.windows((640, 480), 0.2, (192, 192)) for _ in range(3)] == [[], [], []]
    assert state.windows((640, 480), 0.2, (192, 192))  # doubt_every frames later, sweeping again


def test_a_lock_on_the_background_recovers_within_a_sweep():
    """Held-out clip 4242 (one person before a striped background): hg_mpii's first whole-frame look settles on
    the background with a mean joint score of 0.58, above the drop threshold (0.3), so without relock the tracker
    never looks at the whole frame again (PCKh 0.005 over 100 frames)."""
    from tools.synth import generate_clip

    pairs = list(generate_clip(4242, (1, 1), 24, (640, 480), "mpii16"))
    frames = [f for f, _ in pairs]
    truth = [r.poses.xy[0] for _, r in pairs]
    params = RoiParams()
    bound = params.doubt_every + math.ceil(len(search_windows((640, 480), (192, 192), params.scales))
                                           / params.sweep_looks)

    def errors(roi: RoiParams) -> list[float]:
        out = Engine("hg_mpii", roi=roi).infer(frames, stream_ids=["clip"] * len(frames))
        return [float(np.median(np.linalg.norm(p.xy[0] - t, axis=-1))) for p, t in zip(out, truth)]

    locked = errors(RoiParams(check_every=0))
    assert locked[0] > 50 and min(locked) > 50, "the lock-in case: the first look is wrong and stays wrong"
    relocked = errors(params)
    assert relocked[0] == pytest.approx(locked[0], abs=1.0)  # the same first look
    assert max(relocked[bound:]) < 8.0, f"not recovered within {bound} frames: {np.round(relocked)}"
