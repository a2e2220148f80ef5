"""``tools.bench accuracy --live / --per-clip``: dropped frames scored as misses or holding the last poses."""

import json

import pytest
import torch

from models import build_model
from models.checkpoint import save_checkpoint
from tools.bench import accuracy
from tools.bench._live import hold_last
from tools.evaluate import evaluate
from tools.synth import generate_clip


def test_hold_last_fills_dropped_frames_with_the_poses_published_before():
    truth = [r for _, r in generate_clip(7, persons=(1, 1), frames=12, size=(320, 240), layout="mpii16")]
    published = [r for r in truth if r.frame not in (0, 4, 5, 6, 10)]  # the first frame too: nothing to hold
    held = hold_last(published, len(truth))
    assert [r.frame for r in held] == list(range(1, 12))
    for r in held:
        source = max(p.frame for p in published if p.frame <= r.frame)
        assert (r.poses.xy == truth[source].poses.xy).all()
    miss, hold = evaluate(published, truth), evaluate(held, truth)
    assert miss["pckh@0.5"] == pytest.approx(7 / 12, abs=1e-6), "a perfect prediction, 5 of 12 frames dropped"
    assert miss["pckh@0.5"] < hold["pckh@0.5"] < 1.0, "held poses are near the truth, not on it"


def test_live_and_per_clip_report_each_clip_and_the_worst(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("hg1_64", arch_args={"width": 16}, input_size=(64, 64)).eval()
    ckpt = tmp_path / "hg.safetensors"
    save_checkpoint(model, ckpt, provenance={"data": "none"})
    code = accuracy.main(["--model", str(ckpt), "--layout", "mpii16", "--seeds", "3,4", "--frames", "8",
                          "--persons", "1", "--live"])
    assert code == 0
    rows = {r["case"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for mode in ("offline", "live_miss", "live_hold"):
        row = rows[f"{mode}_pckh@0.5"]
        assert set(row["per_clip"]) == {"3", "4"} and row["frames"] == 16
        assert row["worst_value"] == min(row["per_clip"].values()) == row["per_clip"][str(row["worst_clip"])]
        assert row["clip_mean"] == pytest.approx(sum(row["per_clip"].values()) / 2, abs=1e-4)
    published = rows["live_published"]
    assert 0 < published["value"] <= 1 and set(published["per_clip"]) == {"3", "4"}
    if published["value"] == 1:  # nothing dropped: the two live scorings agree
        assert rows["live_miss_pckh@0.5"]["value"] == rows["live_hold_pckh@0.5"]["value"]


def test_no_refine3d_reaches_the_live_run(tmp_path):
    """``--no-refine3d`` scores the first stage's own 3D in the live flow too, not only offline."""
    import numpy as np

    from stream.posefile import read_pose_file
    from tools.bench._live import run_live
    from tools.demo import make_sample
    from tools.evaluate import _intrinsics, _video_frames, predict

    video, gt_file = make_sample(tmp_path, 5, 6, (2, 2), "panoptic19", size=(320, 240))
    cams = _intrinsics(list(read_pose_file(gt_file)))
    plain = predict("default", _video_frames(video), cams, refine3d=False)
    refined = predict("default", _video_frames(video), cams, refine3d=True)
    records, _ = run_live("default", video, gt_file, tmp_path, refine3d=False)
    to_plain, to_refined = [], []
    for r in records:  # each live person against the nearest person of the same frame run offline each way
        for xy, xyz in zip(r.poses.xy, r.poses.xyz):
            for runs, out in ((plain, to_plain), (refined, to_refined)):
                other = runs[r.frame].poses
                near = int(np.abs(other.xy - xy).sum((1, 2)).argmin())
                out.append(np.linalg.norm(xyz - other.xyz[near], axis=-1).mean())
    assert to_plain, "the live run published poses"
    # the pipeline decodes frames its own way (a few mm of 3D apart); the refiner moves joints by tens of mm
    assert np.mean(to_plain) * 3 < np.mean(to_refined), (np.mean(to_plain), np.mean(to_refined))
