"""The synthetic generator: deterministic, exact projection, occlusion and frame-edge visibility, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from models.layouts import COCO17, MPII16, PANOPTIC19, index_map
from stream.posefile import read_pose_file
from tools.synth import body as B
from tools.synth import generate_clip, generate_sample, render_scene, sample_scene
from tools.synth.__main__ import main as synth_main
from tools.synth.scene import Camera, Clothing, Person


def _project(xyz: np.ndarray, k: dict) -> np.ndarray:
    return np.stack([k["fx"] * xyz[..., 0] / xyz[..., 2] + k["cx"], k["fy"] * xyz[..., 1] / xyz[..., 2] + k["cy"]], -1)


def test_deterministic_from_seed():
    f1, r1 = generate_sample(11, size=(320, 240))
    f2, r2 = generate_sample(11, size=(320, 240))
    f3, _ = generate_sample(12, size=(320, 240))
    assert np.array_equal(f1, f2)
    assert r1.to_json() == r2.to_json()
    assert not np.array_equal(f1, f3)
    c1 = [r.to_json() for _, r in generate_clip(5, frames=4, size=(160, 120))]
    c2 = [r.to_json() for _, r in generate_clip(5, frames=4, size=(160, 120))]
    assert c1 == c2


@pytest.mark.parametrize("layout", ["coco17", "mpii16", "panoptic19"])
def test_projection_of_3d_equals_2d(layout):
    seen = 0
    for seed in range(6):
        frame, rec = generate_sample(seed, size=(320, 240), layout=layout)
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
        p = rec.poses
        k = {"coco17": 17, "mpii16": 16, "panoptic19": 19}[layout]
        assert p.xy.shape[1:] == (k, 2) and p.score.shape[1:] == (k,) and p.xyz.shape[1:] == (k, 3)
        if len(p):
            np.testing.assert_allclose(_project(p.xyz.astype(np.float64), rec.intrinsics), p.xy, atol=1e-3)
            assert np.all(p.xyz[..., 2] > 0)
            seen += len(p)
    assert seen > 0


def test_visibility_matches_frame_edge_and_id_buffer():
    for seed in range(8):
        scene = sample_scene(seed, persons=(3, 6), size=(200, 150))
        r = render_scene(scene, 0.7)
        w, h = scene.size
        inside = (r.uv[..., 0] >= -0.5) & (r.uv[..., 0] < w - 0.5) & (r.uv[..., 1] >= -0.5) & (r.uv[..., 1] < h - 0.5)
        assert np.array_equal(r.visibility > 0, inside)
        px = np.floor(r.uv + 0.5).astype(int)
        for n, k in zip(*np.nonzero(r.visibility == 2)):
            assert r.labels[px[n, k, 1], px[n, k, 0]] in (0, n + 1)
        for n, k in zip(*np.nonzero(r.visibility == 1)):
            if k not in (1, 15, 16, 17, 18):  # body joints: covered by someone else
                assert r.labels[px[n, k, 1], px[n, k, 0]] not in (0, n + 1)


def _standing(track_id: int, x: float, z: float, yaw: float = 0.0) -> Person:
    base = np.zeros(len(B.ANGLES))
    base[B.A["yaw"]] = yaw
    clothing = Clothing.sample(np.random.default_rng(track_id))
    zeros = np.zeros(len(B.ANGLES))
    return Person(track_id=track_id, props=B.Proportions(), clothing=clothing, activity="stand", base=base,
                  amp=zeros, freq=zeros, phase=zeros, start=np.array([x, z]))


def test_person_behind_another_is_occluded():
    scene = sample_scene(0, persons=(0, 0), size=(320, 240))
    scene.camera = Camera(fx=300.0, fy=300.0, cx=159.5, cy=119.5, height=1200.0, pitch=0.0)
    scene.persons = [_standing(0, 0.0, 6000.0), _standing(1, 0.0, 3000.0)]
    r = render_scene(scene, 0.0)
    far, near = r.visibility
    torso = [0, 2, 3, 6, 9, 12]  # neck, body centre, shoulders, hips
    assert np.all(far[torso] == 1), far
    assert np.all(near[torso] == 2), near
    # Next to each other, nobody covers anybody's torso.
    scene.persons = [_standing(0, -1500.0, 6000.0), _standing(1, 1200.0, 3000.0)]
    r = render_scene(scene, 0.0)
    assert np.all(r.visibility[:, torso] == 2)


def test_joints_beyond_the_frame_edge_are_flagged():
    scene = sample_scene(0, persons=(0, 0), size=(320, 240))
    scene.camera = Camera(fx=300.0, fy=300.0, cx=159.5, cy=119.5, height=1200.0, pitch=0.0)
    scene.persons = [_standing(0, 2133.0, 4000.0)]  # body centre on the right edge: 300 * 2133 / 4000 + 159.5 px
    r = render_scene(scene, 0.0)
    out = r.uv[0, :, 0] >= 319.5
    assert out.any() and (~out).any()
    assert np.all(r.visibility[0, out] == 0) and np.all(r.visibility[0, ~out] > 0)
    _, rec = _record_of(scene)
    assert len(rec.poses) == 1 and np.all(rec.poses.score[0][out[index_map(PANOPTIC19, COCO17)]] == 0)


def _record_of(scene):
    from tools.synth.generate import to_record

    r = render_scene(scene, 0.0)
    return r, to_record(r, "coco17", 0, "t", scene.camera.intrinsics)


def test_bones_are_rigid_and_motion_smooth():
    scene = sample_scene(3, persons=(4, 4), size=(320, 240), duration=2.0)
    frames = [render_scene(scene, i / 30.0) for i in range(30)]
    thigh = np.array([np.linalg.norm(f.xyz[:, 7] - f.xyz[:, 6], axis=-1) for f in frames])
    np.testing.assert_allclose(thigh, thigh[:1].repeat(30, 0), rtol=1e-9)
    step = np.array([np.linalg.norm(b.xyz - a.xyz, axis=-1).max() for a, b in zip(frames, frames[1:])])
    assert step.max() < 150.0  # mm per 1/30 s: no jumps


def test_joint_limits_are_enforced():
    angles = np.full(len(B.ANGLES), 500.0)
    clipped = B.clip_angles(angles)
    assert clipped[B.A["l_knee"]] == 150.0 and clipped[B.A["r_elbow"]] == 150.0
    straight = B.forward_kinematics(np.zeros(len(B.ANGLES)), B.Proportions())
    bent = B.forward_kinematics(np.where(np.arange(len(B.ANGLES)) == B.A["l_knee"], -90.0, 0.0), B.Proportions())
    np.testing.assert_allclose(bent, straight)  # a knee cannot bend forwards


def test_mpii_points_come_from_the_extended_body():
    _, rec = generate_sample(2, persons=(1, 1), size=(320, 240), layout="mpii16")
    xyz = rec.poses.xyz[0]
    head = np.linalg.norm(xyz[MPII16.head_segment[1]] - xyz[MPII16.head_segment[0]])
    assert 150.0 < head < 300.0  # upper neck to head top, mm


def test_cli_writes_video_and_ground_truth(tmp_path):
    video, gt = tmp_path / "clip.mp4", tmp_path / "clip.jsonl"
    assert synth_main(["--seed", "4", "--persons", "2-3", "--frames", "5", "--size", "96x64", "--layout", "mpii16",
                       "-o", str(video), "--gt", str(gt)]) == 0
    records = list(read_pose_file(gt))
    assert [r.frame for r in records] == list(range(5))
    assert all(r.layout == "mpii16" and set(r.intrinsics) == {"fx", "fy", "cx", "cy"} for r in records)
    import av

    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    with pytest.raises(SystemExit):
        synth_main(["--size", "big"])
