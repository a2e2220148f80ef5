"""``python -m tools.pyskl``: a PYSKL data set from a folder of real video files, labels from class folders or a
PYSKL video list, stratified and listed splits, damaged videos named and the rest kept."""

import pickle

import numpy as np
import pytest

from tests.stream.conftest import MODEL, make_video
from tools.pyskl import Video, main, make_split, split_spec

MODEL_FLAGS = ["--model", MODEL, "--model-args", '{"input_size": [64, 64]}', "--backend", "torch", "--no-progress"]


def _load(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def test_class_folders_give_labels_splits_and_annotations(tmp_path, capfd):
    for cls, names in (("wave", ["a", "b", "c"]), ("jump", ["d", "e", "f"])):
        (tmp_path / "videos" / cls).mkdir(parents=True)
        for i, name in enumerate(names):
            make_video(tmp_path / "videos" / cls / f"{name}.mp4", 5 + i)
    out = tmp_path / "set.pkl"
    code = main([str(tmp_path / "videos"), "-o", str(out), "--split", "train=0.67", "--split", "val=0.33",
                 *MODEL_FLAGS])
    assert code == 0, capfd.readouterr().err
    data = _load(out)
    assert set(data) == {"split", "annotations"}
    anns = {a["frame_dir"]: a for a in data["annotations"]}
    assert sorted(anns) == list("abcdef")
    assert (tmp_path / "set.labels.txt").read_text().split() == ["jump", "wave"]  # sorted: label = index
    assert {d: anns[d]["label"] for d in anns} == {"a": 1, "b": 1, "c": 1, "d": 0, "e": 0, "f": 0}
    assert [anns[d]["total_frames"] for d in "abc"] == [5, 6, 7]
    for a in anns.values():
        assert a["keypoint"].shape[1:] == (a["total_frames"], 17, 2) and a["keypoint"].dtype == np.float32
        assert 1 <= a["keypoint"].shape[0] <= 2 and a["img_shape"] == (64, 96)
    train, val = data["split"]["train"], data["split"]["val"]
    assert sorted(train + val) == list("abcdef") and not set(train) & set(val)
    assert sorted(anns[d]["label"] for d in val) == [0, 1]  # stratified: one of each class


def test_video_list_labels_listed_splits_and_a_damaged_video(tmp_path, capfd):
    make_video(tmp_path / "x1.mp4", 6)
    make_video(tmp_path / "x2.mkv", 6)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "list.txt").write_text("x1.mp4 4\nx2.mkv 9\nbad.mp4 2\n")
    (tmp_path / "test.txt").write_text("x2\nbad\n")
    out = tmp_path / "d.pkl"
    code = main([str(tmp_path), "-o", str(out), "--list", str(tmp_path / "list.txt"),
                 "--split", f"test=@{tmp_path / 'test.txt'}", *MODEL_FLAGS])
    err = capfd.readouterr().err
    assert code == 3 and "bad.mp4" in err
    data = _load(out)
    assert {a["frame_dir"]: a["label"] for a in data["annotations"]} == {"x1": 4, "x2": 9}
    assert data["split"] == {"test": ["x2"]}


def test_bad_arguments_are_one_line_errors(tmp_path, capfd):
    assert main([str(tmp_path), "-o", str(tmp_path / "d.pkl"), *MODEL_FLAGS]) == 2
    assert "no videos" in capfd.readouterr().err
    make_video(tmp_path / "a.mp4", 2)
    make_video(tmp_path / "a.v2.mp4", 2)
    assert main([str(tmp_path), "-o", str(tmp_path / "d.pkl"), *MODEL_FLAGS]) == 2
    assert "same PYSKL frame_dir 'a'" in capfd.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "-o", "d.pkl", "--split", "train=1.5"])


def test_fraction_splits_are_stratified_seeded_and_checked():
    videos = [Video(None, label, f"{label}-{i}") for label in (0, 1) for i in range(10)]
    split = make_split(videos, [split_spec("a=0.7"), split_spec("b=0.3")], seed=1)
    assert [sum(d.startswith("0-") for d in split[n]) for n in "ab"] == [7, 3]
    assert [sum(d.startswith("1-") for d in split[n]) for n in "ab"] == [7, 3]
    assert split == make_split(videos, [split_spec("a=0.7"), split_spec("b=0.3")], seed=1)
    assert split != make_split(videos, [split_spec("a=0.7"), split_spec("b=0.3")], seed=2)
    with pytest.raises(ValueError, match="add up"):
        make_split(videos, [split_spec("a=0.7"), split_spec("b=0.7")])
