"""Device post-processing equals the codec's decode followed by each frame's inverse transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.postprocess import PostProcessor, frame_intrinsics, input_intrinsics
from engine.stage import Stage
from models.codecs import Crop, Letterbox
from models.layouts import get_layout
from tests.engine.conftest import random_frames, random_spm


def test_hourglass_postprocess_equals_codec_decode(hg_model):
    config = hg_model.config
    post = PostProcessor(config)
    torch.manual_seed(3)
    heatmaps = torch.rand(3, config.num_joints, 16, 16) ** 8  # sharp random peaks
    boxes = [Letterbox((160, 120), (64, 64)), Letterbox((90, 130), (64, 64)), Crop((40, 50), (30, 45), (64, 64), 20)]
    inverse = torch.tensor(np.stack([b.inverse_matrix for b in boxes]), dtype=torch.float32)
    poses = post({"heatmaps": heatmaps}, inverse)
    xy, score = config.heatmap_codec().decode(heatmaps, method="dark")
    for i, box in enumerate(boxes):
        assert poses[i].xy.shape == (1, config.num_joints, 2) and poses[i].layout == "mpii16"
        np.testing.assert_allclose(poses[i].xy[0], box.inverse(xy[i].double().numpy()), atol=1e-3)
        np.testing.assert_allclose(poses[i].score[0], score[i].numpy(), atol=1e-6)
        assert poses[i].person_score[0] == pytest.approx(float(score[i].mean()), abs=1e-6)
        assert poses[i].xyz is None


def test_exactly_one_device_to_host_copy(hg_model, monkeypatch):
    stage = Stage(hg_model, "torch", "cpu")
    frames = random_frames(3)
    batch, inverse = stage.prepare(frames, stage.letterboxes(frames))
    decoded = stage.decode(stage.infer(batch), inverse)
    calls = []
    real = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append(self.shape) or real(self, *a, **k))
    poses = stage.fetch(decoded)
    assert len(calls) == 1 and calls[0] == (3, 16 * 2 + 16 + 1) and len(poses) == 3


def test_intrinsics_follow_the_letterbox():
    box = Letterbox((640, 360), (256, 256))
    k = frame_intrinsics((640, 360), (500.0, 510.0, 320.0, 180.0))
    fx, fy, cx, cy = input_intrinsics(box.matrix, k)
    assert (fx, fy) == pytest.approx((500 * box.scale, 510 * box.scale))
    np.testing.assert_allclose([cx, cy], box.forward(np.array([320.0, 180.0])))
    # a 3D point projects to the same place whichever pixels it is seen in
    X, Y, Z = 120.0, -40.0, 2000.0
    u, v = k[0] * X / Z + k[2], k[1] * Y / Z + k[3]
    np.testing.assert_allclose(box.forward(np.array([u, v])), [fx * X / Z + cx, fy * Y / Z + cy], atol=1e-9)
    assert frame_intrinsics((640, 360), None) == (640.0, 640.0, 319.5, 179.5)
    with pytest.raises(ValueError, match="intrinsics"):
        frame_intrinsics((640, 360), (0, 1, 2, 3))
    with pytest.raises(ValueError, match="axis-aligned"):
        input_intrinsics(Crop((5, 5), (10, 10), (8, 8), 30.0).matrix, k)


def test_spm_postprocess_equals_codec_decode(spm_model):
    config = spm_model.config
    post = PostProcessor(config)
    codec = config.spm_codec()
    torch.manual_seed(4)
    k, (w, h) = config.num_joints, config.output_size
    outputs = {"root": torch.rand(2, 1, h, w) ** 4, "disp": torch.randn(2, 2 * k, h, w) * 0.05,
               "depth": torch.rand(2, k, h, w) * 0.1 + 1.0}
    boxes = [Letterbox((160, 120), config.input_size), Letterbox((90, 130), config.input_size)]
    frame_k = [frame_intrinsics((160, 120), None), frame_intrinsics((90, 130), (100.0, 100.0, 40.0, 60.0))]
    k_in = torch.tensor([input_intrinsics(b.matrix, kk) for b, kk in zip(boxes, frame_k)], dtype=torch.float32)
    inverse = torch.tensor(np.stack([b.inverse_matrix for b in boxes]), dtype=torch.float32)
    poses = post(outputs, inverse, k_in)
    want = codec.decode(outputs, k_in)
    assert post.has_3d
    for i, box in enumerate(boxes):
        n = int(want.count[i])
        assert n > 0 and len(poses[i]) == n
        np.testing.assert_allclose(poses[i].xy, box.inverse(want.xy[i, :n].double().numpy()), atol=1e-3)
        np.testing.assert_allclose(poses[i].person_score, want.person_score[i, :n].numpy(), atol=1e-6)
        np.testing.assert_allclose(poses[i].xyz, want.xyz[i, :n].numpy(), rtol=1e-5, atol=1e-2)
        # the camera points project back onto the frame-pixel keypoints through the frame's intrinsics
        fx, fy, cx, cy = frame_k[i]
        xyz = poses[i].xyz.astype(np.float64)
        proj = np.stack([fx * xyz[..., 0] / xyz[..., 2] + cx, fy * xyz[..., 1] / xyz[..., 2] + cy], -1)
        np.testing.assert_allclose(proj, poses[i].xy, atol=1e-2)


def _mirror(poses, width: int, flip: np.ndarray):
    """Poses of the mirrored frame as the un-mirrored ones should predict them: x -> W - 1 - x, joints swapped."""
    xy = poses.xy[:, flip].copy()
    xy[..., 0] = width - 1 - xy[..., 0]
    xyz = None if poses.xyz is None else poses.xyz[:, flip] * np.array([-1.0, 1.0, 1.0], np.float32)
    return xy, poses.score[:, flip], xyz


def _equivariance_gap(stage, frames):
    """Largest |difference| between the poses of mirrored frames and the mirrored poses of the frames."""
    flip = get_layout(stage.config.layout).flip_index
    gap = 0.0
    for plain, mirrored, frame in zip(stage.run(frames), stage.run([f[:, ::-1].copy() for f in frames]), frames):
        assert len(plain.xy) == len(mirrored.xy) > 0
        order_p, order_m = np.argsort(-plain.person_score), np.argsort(-mirrored.person_score)
        xy, score, xyz = _mirror(plain, frame.shape[1], flip)
        gap = max(gap, float(np.abs(mirrored.xy[order_m] - xy[order_p]).max()),
                  float(np.abs(mirrored.score[order_m] - score[order_p]).max()))
        if xyz is not None and "depth" not in stage.post._unmirrorable:  # mm, relative to the depth
            gap = max(gap, float((np.abs(mirrored.xyz[order_m] - xyz[order_p]) / np.abs(xyz[order_p, :, 2:])).max()))
    return gap


@pytest.mark.parametrize("arch", ["hourglass", "spm", "spm_heatmaps"])  # mpii16, coco17 (2D), panoptic19 (3D)
def test_flip_test_makes_the_poses_mirror_equivariant(arch, hg_model, spm_model):
    """With the flip test, a mirrored frame gives exactly the mirrored poses (left and right joints swapped, x
    and X mirrored), whatever the weights: this holds only if every output map is mirrored back correctly
    (a wrong swap or displacement sign breaks it). Without it, random weights are far from symmetric."""
    if arch == "spm_heatmaps":
        model = random_spm(5, layout="panoptic19", codec={"max_persons": 5, "heatmap_sigma": 1.5})
    else:
        model = hg_model if arch == "hourglass" else spm_model
    # SPM persons must not tie: one frame size, root peaks decided by the weights
    frames = random_frames(3, seed=7) if arch == "hourglass" else random_frames(2, seed=7, sizes=((192, 128),))
    assert _equivariance_gap(Stage(model, "torch", "cpu", flip_test=True), frames) < 1e-3
    assert _equivariance_gap(Stage(model, "torch", "cpu"), frames) > 0.5
