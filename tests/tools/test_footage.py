"""tools.data.footage: labelled footage as SPM training data (teacher confidences, ignore regions, a held-out
tail by time) and a short fine-tuning run on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.factory import model_config
from models.layouts import PANOPTIC19
from tools.data.augment import AugmentParams
from tools.data.footage import Footage, FootageTargets, read_labels, split_tail
from tools.synth.__main__ import write_video
from tools.synth.generate import generate_clip
from tools.train.config import TrainConfig, load_config
from tools.train.loop import Trainer
from tools.train.losses import spm_loss

SIZE = (320, 256)


def make_footage(folder, frames: int = 24, seed: int = 5, drop_person: bool = True):
    """A generated clip as a video plus 'teacher labels' from its truth: confidence 0.9, the left wrist at 0.3
    (unsure), and the first person of each frame replaced by an ignore box (a person the teacher missed)."""
    pairs = list(generate_clip(seed, persons=(2, 2), frames=frames, size=SIZE, layout="panoptic19", fps=10.0))
    video = folder / "clip.mp4"
    write_video(video, (f for f, _ in pairs), 10.0)
    lines = [json.dumps({"kind": "header", "format": "posestream.labels", "teacher": "truth", "layout": "panoptic19",
                         "frame_size": list(SIZE), "intrinsics": pairs[0][1].intrinsics})]
    for _, rec in pairs:
        obj = rec.to_json()
        obj["ignore"] = []
        for q in obj["persons"]:
            for j, kp in enumerate(q["keypoints"]):
                kp[2] = 0.3 if j == PANOPTIC19.joints.L_WRIST else (0.9 if kp[2] > 0 else 0.0)
        if drop_person and obj["persons"]:
            gone = np.asarray(obj["persons"].pop(0)["keypoints"])[:, :2]
            obj["ignore"].append([*(gone.min(0) - 4).tolist(), *(gone.max(0) + 4).tolist()])
        lines.append(json.dumps(obj))
    labels = folder / "labels.jsonl"
    labels.write_text("\n".join(lines) + "\n")
    return video, labels


def small_spm():
    return model_config("spm_small", layout="panoptic19", input_size=SIZE, codec={"heatmap_sigma": 1.5},
                        arch_args={"width": 16, "stages": 1, "depth": 3, "blocks": 1, "stem": "light"})


def test_split_tail_is_by_time_with_a_gap():
    train, val = split_tail(range(100), 0.2, gap=5)
    assert val == list(range(80, 100)) and train == list(range(0, 75))
    train, val = split_tail([30, 10, 20, 0], 0.25, gap=0)
    assert val == [30] and train == [0, 10, 20]
    with pytest.raises(ValueError, match="leave none for training"):
        split_tail(range(4), 0.5, gap=10)


def test_read_labels_skips_the_header_and_names_bad_lines(tmp_path):
    _, labels = make_footage(tmp_path, frames=3)
    got = read_labels(labels)
    assert got.teacher == "truth" and got.layout == "panoptic19" and [f.frame for f in got.frames] == [0, 1, 2]
    assert got.intrinsics is not None and got.frames[0].ignore.shape == (1, 4)
    with labels.open("a") as fh:
        fh.write('{"frame": 3, "layout": "panoptic19", "persons": [{"keypoints": [[1, 2]]}]}\n')
    with pytest.raises(ValueError, match=r"labels\.jsonl:5: malformed"):
        read_labels(labels)


def test_targets_honour_confidence_and_ignore_regions(tmp_path):
    video, labels = make_footage(tmp_path, frames=12)
    cfg = small_spm()
    footage = Footage(video, labels, "panoptic19", tmp_path / "cache.npy", val_fraction=0.25, gap=1)
    assert footage.val == [9, 10, 11] and footage.train == list(range(8))
    targets = FootageTargets(cfg, AugmentParams(input_size=SIZE, train=False), side=1.0)
    frame = footage.labels.frames[0]
    missed = frame.ignore[0].copy()
    kept = frame.xy[0][frame.conf[0] > 0]  # the labelled person, also inside an ignore box of its own
    frame.ignore = np.stack([missed, [*(kept.min(0) - 4), *(kept.max(0) + 4)]]).astype(np.float32)
    item = targets.footage_item(footage, 0, np.random.default_rng(0))
    frame.ignore = missed[None]
    stride = 4
    x0, y0, x1, y1 = (frame.ignore[0] + 0.5) / stride - 0.5
    ys, xs = np.mgrid[0:SIZE[1] // stride, 0:SIZE[0] // stride]
    inside = (xs >= np.ceil(x0)) & (xs <= np.floor(x1)) & (ys >= np.ceil(y0)) & (ys <= np.floor(y1))
    root_w = item["root_weight_map"][0].numpy()
    assert inside.any() and (root_w[inside] == 0).all()
    positive = item["root"][0].numpy() > 0.01  # the labelled person's root stays a positive inside its box
    assert positive.any() and (root_w[positive] == 1).all() and (root_w[~inside & ~positive] == 0).any()
    # the unsure left wrist (0.3) is neither labelled nor a negative; sure joints carry their 0.9 as loss weight
    wrist = int(PANOPTIC19.joints.L_WRIST)
    heat_w = item["heatmap_weight_map"].numpy()
    assert item["heatmaps"][wrist].max() == 0 and (heat_w[wrist] == 0).sum() > (heat_w[0] == 0).sum()
    assert item["disp_mask"][2 * wrist].max() == 0
    np.testing.assert_allclose(np.unique(item["disp_mask"][0].numpy()), [0.0, 0.9], rtol=1e-6)
    # a prediction that differs from the target only where the teacher could not say costs nothing
    maps = {k: v[None] for k, v in item.items() if k != "image"}
    exact = {"root": maps["root"].clone(), "disp": maps["disp"].clone(), "depth": maps["depth"].clone(),
             "heatmaps": maps["heatmaps"].clone()}
    wrong = {k: v.clone() for k, v in exact.items()}
    wrong["root"][0, 0][torch.from_numpy(inside)] = 1.0
    wrong["heatmaps"][0, wrist][torch.from_numpy(heat_w[wrist] == 0)] = 1.0
    assert spm_loss([wrong], maps).item() == pytest.approx(spm_loss([exact], maps).item(), abs=1e-7)
    wrong["root"][0, 0][torch.from_numpy(~inside)] = 1.0
    assert spm_loss([wrong], maps).item() > 0.1


def test_fine_tuning_on_footage_keeps_a_time_tail_for_validation(tmp_path):
    video, labels = make_footage(tmp_path, frames=20)
    conf = tmp_path / "ft.toml"
    conf.write_text(f'''[model]
name = "spm_small"
layout = "panoptic19"
input_size = [{SIZE[0]}, {SIZE[1]}]
codec = {{ heatmap_sigma = 1.5 }}
arch_args = {{ width = 16, stages = 1, depth = 3, blocks = 1, stem = "light" }}
[data]
source = "footage"
footage = [{{ video = "{video}", labels = "{labels}", stop = 18 }}]
footage_ratio = 0.5
train_size = [192, 160]
val_fraction = 0.2
val_gap = 2
train_samples = 8
batch_size = 4
workers = 0
synth_size = [320, 240]
[optim]
epochs = 2
lr = 1e-3
amp = false
[output]
dir = "{tmp_path / 'run'}"
tensorboard = false
''')
    cfg = load_config(conf)
    assert cfg.source == "footage" and cfg.train_size == (192, 160)
    trainer = Trainer(cfg, device="cpu")
    assert trainer.footage[0].val == [14, 15, 16, 17] and trainer.footage[0].train == list(range(12))
    batch = next(iter(trainer._loader(True, 0)))
    assert batch["image"].shape == (4, 160, 192, 3) and batch["heatmap_weight_map"].shape == (4, 19, 40, 48)
    val = next(iter(trainer._loader(False, 0)))
    assert val["image"].shape[1:] == (SIZE[1], SIZE[0], 3)
    rows = trainer.fit()
    assert [r["epoch"] for r in rows] == [0, 1] and all(np.isfinite(r["val_loss"]) for r in rows)
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_footage_config_errors():
    with pytest.raises(ValueError, match="needs data.footage"):
        TrainConfig(source="footage")
    with pytest.raises(ValueError, match=r"footage\[0\] must have video and labels"):
        TrainConfig(source="footage", footage=[{"video": "a.mp4"}])
    with pytest.raises(ValueError, match="footage_ratio"):
        TrainConfig(source="footage", footage=[{"video": "a", "labels": "b"}], footage_ratio=1.5)


def test_time_budget_stops_training(tmp_path):
    video, labels = make_footage(tmp_path, frames=16, drop_person=False)
    cfg = TrainConfig(model="spm_small", model_overrides=dict(layout="panoptic19", input_size=SIZE,
                                                              codec={"heatmap_sigma": 1.5},
                                                              arch_args={"width": 16, "depth": 3, "stem": "light"}),
                      source="footage", footage=[{"video": str(video), "labels": str(labels)}], train_samples=4,
                      batch_size=2, workers=0, epochs=1000, budget_min=0.02, amp=False, val_fraction=0.25,
                      val_gap=1, out=str(tmp_path / "run"), tensorboard=False, lr=1e-3)
    rows = Trainer(cfg, device="cpu").fit()
    assert 1 <= len(rows) < 1000 and rows[-1]["lr"] < 1e-3
