"""Readers on small fixture files in the exact real formats (MPII JSON, COCO keypoints, CMU Panoptic)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tools.data.coco import read_coco
from tools.data.mpii import read_mpii
from tools.data.panoptic import frame_number, panoptic_samples, read_calibration

COCO_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
              "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
              "right_knee", "left_ankle", "right_ankle"]


def test_mpii_json(tmp_path):
    rng = np.random.default_rng(0)
    people = []
    for image in ("a.jpg", "b.jpg", "a.jpg"):
        joints = rng.uniform(10, 300, (16, 2)).round(1)
        vis = np.ones(16, int)
        people.append({"image": image, "joints": joints.tolist(), "joints_vis": vis.tolist(),
                       "center": joints.mean(0).tolist(), "scale": 1.7})
    people[0]["joints"][9] = [-1.0, -1.0]  # missing head top
    people[1]["joints_vis"][3] = 0
    (tmp_path / "train.json").write_text(json.dumps(people))
    samples = read_mpii(tmp_path / "train.json")
    assert [s.key for s in samples] == ["mpii/a.jpg", "mpii/b.jpg"]
    a, b = samples
    assert a.num_persons == 2 and b.num_persons == 1 and a.layout == "mpii16"
    np.testing.assert_allclose(a.xy[1], people[2]["joints"], atol=1e-4)
    assert a.vis[0, 9] == 0 and a.vis[0].sum() == 2 * 15 and b.vis[0, 3] == 0
    np.testing.assert_allclose(a.scale, [1.7, 1.7])
    assert a.image == tmp_path / "images" / "a.jpg"
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "x.jpg", "joints": [[1, 2]] * 15}]))
    with pytest.raises(ValueError, match="bad.json: record 0"):
        read_mpii(tmp_path / "bad.json")


def _coco_fixture(path):
    rng = np.random.default_rng(1)

    def kps(labelled):
        xy = rng.uniform(0, 200, (17, 2)).round()
        v = rng.integers(1, 3, 17) * labelled
        return np.concatenate([xy * (v[:, None] > 0), v[:, None]], 1).reshape(-1).astype(int).tolist(), int(
            (v > 0).sum())

    anns, aid = [], 1
    for image_id, labelled in ((1, [1, 1]), (2, [0]), (3, [1])):
        for lab in labelled:
            k, n = kps(np.ones(17, int) * lab)
            anns.append({"id": aid, "image_id": image_id, "category_id": 1, "iscrowd": 0, "keypoints": k,
                         "num_keypoints": n, "bbox": [5.0, 6.0, 100.0, 150.0], "area": 9000.0,
                         "segmentation": [[5, 6, 105, 6, 105, 156]]})
            aid += 1
    anns.append({"id": aid, "image_id": 3, "category_id": 1, "iscrowd": 1, "keypoints": [0] * 51,
                 "num_keypoints": 0, "bbox": [0, 0, 50, 50], "area": 2500.0,
                 "segmentation": {"counts": [0, 2500], "size": [240, 320]}})
    data = {"info": {"description": "fixture"}, "licenses": [],
            "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 320, "height": 240} for i in (1, 2, 3)],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": COCO_NAMES,
                            "skeleton": [[16, 14], [14, 12], [17, 15]]}]}
    path.write_text(json.dumps(data))
    return data


def test_coco_keypoints(tmp_path):
    data = _coco_fixture(tmp_path / "person_keypoints_val.json")
    samples = read_coco(tmp_path / "person_keypoints_val.json", image_root=tmp_path / "val2017")
    assert [s.key for s in samples] == ["coco/1", "coco/3"]  # image 2 has no labelled person; crowd skipped
    s = samples[0]
    assert s.num_persons == 2 and s.size == (320, 240) and s.image == tmp_path / "val2017" / "000000000001.jpg"
    raw = np.asarray(data["annotations"][0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(s.xy[0], raw[:, :2])
    np.testing.assert_allclose(s.vis[0], raw[:, 2])
    np.testing.assert_allclose(s.bbox[0], [5, 6, 100, 150])
    assert samples[1].num_persons == 1
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="bad.json"):
        read_coco(tmp_path / "bad.json")


def _rotation(yaw_deg):
    rvec = np.array([0.1, np.radians(yaw_deg), 0.05])
    return cv2.Rodrigues(rvec)[0]


def _panoptic_fixture(tmp_path):
    k = [[1400.0, 0.0, 960.5], [0.0, 1398.0, 540.2], [0.0, 0.0, 1.0]]
    dist = [-0.22, 0.17, 0.0012, -0.0007, -0.03]
    cams = []
    for name, yaw, t in (("00_00", 0.0, [10.0, 60.0, 400.0]), ("00_01", 180.0, [0.0, 0.0, -100.0])):
        cams.append({"name": name, "type": "hd", "resolution": [1920, 1080], "panel": 0, "node": int(name[-1]),
                     "K": k, "distCoef": dist, "R": _rotation(yaw).tolist(), "t": [[v] for v in t]})
    (tmp_path / "calibration_160224_haggling1.json").write_text(json.dumps({"calibration_type": "hd",
                                                                            "cameras": cams}))
    rng = np.random.default_rng(2)
    bodies = []
    for pid, x in ((0, -60.0), (3, 70.0)):
        joints = np.concatenate([rng.uniform(-40, 40, (19, 3)) + [x, -100.0, 0.0], rng.uniform(0.2, 1, (19, 1))], 1)
        bodies.append({"id": pid, "joints19": joints.reshape(-1).round(4).tolist()})
    bodies[0]["joints19"][4 * 5 + 3] = -1.0  # l_wrist not reconstructed
    body = {"version": 1.0, "univTime": 123.456, "fpsType": "hd_29_97", "bodies": bodies}
    body_file = tmp_path / "hdPose3d_stage1_coco19" / "body3DScene_00000123.json"
    body_file.parent.mkdir()
    body_file.write_text(json.dumps(body))
    return body_file, body, cams


def test_panoptic_coco19_with_calibration(tmp_path):
    body_file, body, cams = _panoptic_fixture(tmp_path)
    cameras = read_calibration(tmp_path / "calibration_160224_haggling1.json")
    assert frame_number(body_file) == 123
    front, back = panoptic_samples(body_file, cameras, tmp_path / "hdImgs")
    assert front.image == tmp_path / "hdImgs" / "00_00" / "00_00_00000123.jpg"
    assert front.num_persons == 2 and back.num_persons == 0  # the second camera looks away from everybody
    cam = cams[0]
    world = np.ascontiguousarray(np.asarray(body["bodies"][1]["joints19"]).reshape(19, 4)[:, :3])
    r, t = np.asarray(cam["R"]), np.asarray(cam["t"]).reshape(3)
    np.testing.assert_allclose(front.xyz[1], (world @ r.T + t) * 10.0, rtol=1e-5, atol=1e-2)
    expected, _ = cv2.projectPoints(world, cv2.Rodrigues(r)[0], t, np.asarray(cam["K"]), np.asarray(cam["distCoef"]))
    np.testing.assert_allclose(front.xy[1], expected.reshape(19, 2), atol=1e-3)
    assert front.intrinsics == (1400.0, 1398.0, 960.5, 540.2)
    assert front.vis[0, 5] == 0 and front.vis[1].min() == 2
    assert front.extra["ids"] == [0, 3]
    with pytest.raises(ValueError, match="camera '99_99'"):
        panoptic_samples(body_file, cameras, tmp_path, names=["99_99"])
