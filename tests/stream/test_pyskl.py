"""Skeleton-action export: ``posestream video --pyskl/--volumes`` end to end, PYSKL's ranking and box rules,
the pickle's numpy-version-neutral arrays, chunked volume files."""

import pickle

import numpy as np
import pytest

from engine.results import Poses
from models.codecs import PYSKL_LIMBS, heatmap_volume
from models.layouts import COCO17, MPII16, convert, get_layout
from stream.cli import main
from stream.posefile import PoseRecord, read_pose_file
from stream.pyskl import VolumeSpec, annotation, compact_box, volume_keypoints, write_pickle, write_volumes
from tests.stream.conftest import MODEL_CLI, make_video
from tools.bench.codecs import loop_volume

KEYS = {"frame_dir", "label", "img_shape", "original_shape", "total_frames", "keypoint", "keypoint_score"}


def _expected_order(records):
    """Track ids by PYSKL's pose_tracking rule, written out plainly: sort tracks (in creation order) by frame count."""
    tracks = []  # creation order
    count = {}
    for r in records:
        for tid in r.poses.track_id.tolist():
            if tid not in count:
                tracks.append(tid)
                count[tid] = 0
            count[tid] += 1
    tracks.sort(key=lambda tid: -count[tid])  # stable, as PYSKL's tracks.sort(key=lambda x: -len(x['data']))
    return tracks


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One ``posestream video --pyskl --volumes`` run (three real processes) shared by the round-trip tests."""
    tmp = tmp_path_factory.mktemp("export")
    make_video(tmp / "clip.v1.mp4", 24)
    paths = {"pkl": tmp / "clip.pkl", "npz": tmp / "clip.npz", "poses": tmp / "clip.jsonl"}
    code = main(["video", str(tmp / "clip.v1.mp4"), "-o", str(tmp / "out.mp4"), "--poses", str(paths["poses"]),
                 "--pyskl", str(paths["pkl"]), "--label", "7", "--volumes", str(paths["npz"]), "--volume-kind", "both",
                 "--no-progress", *MODEL_CLI])
    assert code == 0
    with open(paths["pkl"], "rb") as fh:  # the standard library's pickle, as PYSKL's mmcv.load
        paths["anns"] = pickle.load(fh)
    return paths


def test_annotation_loads_with_pickle_and_matches_the_pose_file(exported):
    anns = exported["anns"]
    assert isinstance(anns, list) and len(anns) == 1
    ann = anns[0]
    assert set(ann) == KEYS
    assert ann["frame_dir"] == "clip" and ann["label"] == 7 and ann["total_frames"] == 24
    assert ann["img_shape"] == ann["original_shape"] == (64, 96)
    kp, sc = ann["keypoint"], ann["keypoint_score"]
    assert kp.dtype == np.float32 and sc.dtype == np.float32 and kp.flags.writeable
    records = list(read_pose_file(exported["poses"]))
    order = _expected_order(records)[:2]
    assert kp.shape == (len(order), 24, 17, 2) and sc.shape == (len(order), 24, 17) and len(order) >= 1
    for t, r in enumerate(records):
        xy, score = convert(r.poses.xy, r.poses.score, get_layout(r.layout), COCO17)
        ids = r.poses.track_id.tolist()
        for m, tid in enumerate(order):
            if tid in ids:  # the pose file rounds to 3 decimals: so was the export's input
                np.testing.assert_array_equal(kp[m, t], xy[ids.index(tid)])
                np.testing.assert_array_equal(sc[m, t], score[ids.index(tid)])
            else:
                assert not kp[m, t].any() and not sc[m, t].any()
    assert sc.max() > 0.01  # real content: the volumes are not empty maps


def test_volumes_from_the_annotation_match_the_loop_algorithm(exported):
    ann = exported["anns"][0]
    mapped, box = volume_keypoints(ann, (64, 64))
    sc = ann["keypoint_score"]
    with np.load(exported["npz"], allow_pickle=False) as vol:
        assert vol["keypoints"].shape == vol["limbs"].shape == (24, 17, 64, 64)
        np.testing.assert_array_equal(vol["limb_pairs"], PYSKL_LIMBS)
        np.testing.assert_array_equal(vol["box"], box)
        for name, limbs in (("keypoints", None), ("limbs", PYSKL_LIMBS)):
            loop = loop_volume(mapped, sc, (64, 64), 0.6, limbs)
            assert loop.max() > 0.01
            np.testing.assert_allclose(heatmap_volume(mapped, sc, (64, 64), 0.6, limbs), loop, rtol=0, atol=1e-5)
            np.testing.assert_allclose(vol[name], loop, rtol=0, atol=1e-5)


def _record(frame, tracks, layout=COCO17):
    """A pose record whose persons are ``tracks`` (ids), each at a position that encodes (frame, id)."""
    k = layout.num_joints
    xy = np.array([[[10.0 * tid + j, frame + 0.5] for j in range(k)] for tid in tracks], np.float32).reshape(-1, k, 2)
    score = np.full((len(tracks), k), 0.5, np.float32) + 0.01 * np.arange(len(tracks))[:, None]
    poses = Poses(layout=layout.name, xy=xy, score=score, person_score=np.ones(len(tracks), np.float32),
                  track_id=np.asarray(tracks, np.int64))
    return PoseRecord(stream="s", frame=frame, layout=layout.name, poses=poses)


def test_tracks_are_ranked_by_frames_seen_then_first_appearance():
    # track 5: 2 frames; 9 and 3: 3 frames each (9 seen first, in frame 0 before 3 appears); 7: 1 frame
    records = [_record(0, [5, 9]), _record(1, [9, 3]), _record(2, []), _record(3, [3, 7, 9]), _record(4, [5, 3])]
    ann = annotation(records, "v", (480, 640), label=2, max_persons=3)
    assert _expected_order(records)[:3] == [9, 3, 5]
    kp = ann["keypoint"]
    assert kp.shape == (3, 5, 17, 2)
    assert kp[0, 0, 0, 0] == 90 and kp[1, 1, 0, 0] == 30 and kp[2, 4, 0, 0] == 50  # slots 0, 1, 2 = tracks 9, 3, 5
    assert not kp[2, 1:4].any() and not ann["keypoint_score"][:, 2].any()  # absent: zeros
    assert annotation(records, "v", (480, 640), max_persons=1)["keypoint"].shape == (1, 5, 17, 2)


def test_other_layouts_are_converted_to_coco17_with_missing_joints_zero():
    ann = annotation([_record(0, [1], layout=MPII16)], "v", (100, 100))
    index = {name: i for i, name in enumerate(COCO17.names)}
    kp, sc = ann["keypoint"][0, 0], ann["keypoint_score"][0, 0]
    assert kp[index["l_knee"], 0] == 10 + MPII16.names.index("l_knee")
    assert not kp[index["nose"]].any() and sc[index["nose"]] == 0 and sc[index["l_knee"]] > 0


def test_untracked_records_are_refused():
    rec = _record(0, [1])
    rec.poses.track_id[:] = -1
    with pytest.raises(ValueError, match="track"):
        annotation([rec], "v", (10, 10))


def test_compact_box_is_pyskls_posecompact():
    kp = np.zeros((1, 2, 17, 2), np.float32)
    kp[0, 0, :2] = [[100, 200], [140, 230]]  # box 40 x 30 around (120, 215); padding 0.25 -> 50 x 37.5
    kp[0, 1, 0] = [130, 0]  # a zero y is "no keypoint" for y only, as PoseCompact's kp_y != 0
    # hw_ratio 1: half height = max(1 * 25, 18.75) = 25, half width = 25; int() truncates toward zero
    assert compact_box(kp, (480, 640)) == (95, 190, 145, 240)
    assert compact_box(kp[..., :1, :], (480, 640)) == (0, 0, 640, 480)  # less than 10 px: the whole frame
    mapped, box = volume_keypoints({"keypoint": kp, "img_shape": (480, 640)}, (64, 32))
    np.testing.assert_allclose(mapped[0, 0, 0], [(100 - 95) * 64 / 50, (200 - 190) * 32 / 50])
    assert mapped[0, 1, 0, 1] == 0 and not mapped[0, 0, 5:].any()


def test_pickle_names_only_numpy_ndarray_and_bytearray(tmp_path):
    """numpy 2 pickles arrays through numpy._core, which numpy 1.x (PYSKL's) cannot import: ours name neither."""
    ann = annotation([_record(0, [1]), _record(1, [1])], "v", (10, 20))
    write_pickle({"split": {"train": ["v"]}, "annotations": [ann]}, tmp_path / "d.pkl")
    found = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    with open(tmp_path / "d.pkl", "rb") as fh:
        back = Recording(fh).load()
    assert found == {("numpy", "ndarray"), ("builtins", "bytearray")}
    np.testing.assert_array_equal(back["annotations"][0]["keypoint"], ann["keypoint"])
    assert back["annotations"][0]["keypoint"].dtype == np.float32
    assert back["split"] == {"train": ["v"]} and not (tmp_path / "d.pkl.part").exists()


@pytest.mark.parametrize("kind", ["keypoints", "limbs"])
def test_volume_file_written_in_chunks_equals_one_volume(tmp_path, kind):
    rng = np.random.default_rng(3)
    kp = rng.uniform(50, 300, (2, 11, 17, 2)).astype(np.float32)
    ann = {"keypoint": kp, "keypoint_score": rng.uniform(0, 1, (2, 11, 17)).astype(np.float32),
           "img_shape": (360, 480)}
    write_volumes(tmp_path / "v.npz", ann, VolumeSpec(kind, (48, 56), 1.0, chunk=4), device="cpu")
    mapped, _ = volume_keypoints(ann, (48, 56))
    with np.load(tmp_path / "v.npz") as vol:
        assert set(vol.files) == {kind, "box", "sigma"} | ({"limb_pairs"} if kind == "limbs" else set())
        want = loop_volume(mapped, ann["keypoint_score"], (48, 56), 1.0, PYSKL_LIMBS if kind == "limbs" else None)
        assert vol[kind].shape == (11, 17, 56, 48) and want.max() > 0.1
        np.testing.assert_allclose(vol[kind], want, rtol=0, atol=1e-5)


def test_bad_export_options_are_one_line_errors(tmp_path, capfd):
    make_video(tmp_path / "in.mp4", 3)
    args = ["video", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), "--no-progress", *MODEL_CLI]
    assert main([*args, "--pyskl", str(tmp_path / "nope" / "x.pkl")]) == 2
    assert "cannot write" in capfd.readouterr().err
    assert main([*args, "--pyskl", str(tmp_path / "x.pkl"), "--max-persons", "0"]) == 2
    assert "--max-persons" in capfd.readouterr().err
    with pytest.raises(ValueError, match="volume kind"):
        VolumeSpec("joints")
