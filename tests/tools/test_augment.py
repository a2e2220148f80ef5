"""Augmentation: square crops with the margin recipe, flips with the left/right swap, frames and intrinsics,
occluders, and the codec targets made from them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.factory import model_config
from models.layouts import MPII, MPII16, PANOPTIC19
from tools.data.augment import AugmentParams, add_occluders, augment_frame, augment_person, color_jitter, person_box
from tools.data.dataset import Targets, synthetic_sample


def test_person_box_margin_recipe_is_square():
    xy = np.array([[100.0, 50.0], [200.0, 250.0]])
    vis = np.array([2.0, 2.0])
    centre, side = person_box(xy, vis, 0.2)  # body height = larger side of the joints' box = 200
    np.testing.assert_allclose(centre, [150.0, 150.0])
    assert side == pytest.approx(200 + 2 * 0.2 * 200)
    centre, side = person_box(xy, vis, 0.1, scale=1.5)  # MPII: body height = 1.5 x 200 px
    assert side == pytest.approx(200 + 2 * 0.1 * 300)
    assert person_box(xy, np.zeros(2), 0.2) is None


def _dots(rng):
    image = np.full((240, 320, 3), 90, np.uint8)
    xy = np.zeros((1, 16, 2))
    xy[0] = rng.uniform(80, 200, (16, 2))
    xy[0, MPII.L_WRIST] = (100.0, 120.0)
    xy[0, MPII.R_WRIST] = (200.0, 130.0)
    cv2.circle(image, (100, 120), 6, (0, 0, 255), -1)   # red dot on the left wrist
    cv2.circle(image, (200, 130), 6, (255, 0, 0), -1)   # blue dot on the right wrist
    return image, xy, np.full((1, 16), 2.0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_points_follow_the_pixels_through_crop_rotation_and_flip(seed, flip):
    rng = np.random.default_rng(seed)
    image, xy, vis = _dots(rng)
    params = AugmentParams(input_size=(128, 128), jitter=0.0, occluder_prob=0.0, rotation_prob=1.0, flip_prob=flip)
    img, out_xy, out_vis, crop = augment_person(image, xy, vis, 0, MPII16, params, rng)
    assert img.shape == (128, 128, 3)
    # Mirrored, the person's left wrist is the one that was on the right (the blue dot).
    left, right = ("blue", "red") if flip else ("red", "blue")
    for joint, color in ((MPII.L_WRIST, left), (MPII.R_WRIST, right)):
        x, y = np.round(out_xy[0, joint]).astype(int)
        b, _, r = img[y, x].astype(int)
        assert (r > 150 and b < 100) if color == "red" else (b > 150 and r < 100), (joint, img[y, x])


def test_validation_crop_keeps_the_aspect_ratio():
    rng = np.random.default_rng(0)
    image, xy, vis = _dots(rng)
    _, out_xy, _, crop = augment_person(image, xy, vis, 0, MPII16, AugmentParams(input_size=(96, 96), train=False),
                                        rng)
    a, b = xy[0, 0], xy[0, 5]
    ratio = np.abs(out_xy[0, 0] - out_xy[0, 5]) / np.abs(a - b)
    assert ratio[0] == pytest.approx(ratio[1], rel=1e-6)  # same scale on both axes
    np.testing.assert_allclose(crop.forward(xy), out_xy, atol=1e-4)


def test_frame_augmentation_keeps_3d_and_intrinsics_consistent():
    sample, image = synthetic_sample(3, "panoptic19", (320, 240), (2, 3))
    rng = np.random.default_rng(1)
    params = AugmentParams(input_size=(256, 192), flip_prob=1.0, occluder_prob=0.0)
    img, xy, vis, k, xyz, _ = augment_frame(image, sample.xy, sample.vis, PANOPTIC19, params, rng, sample.intrinsics,
                                         sample.xyz)
    assert img.shape == (192, 256, 3)
    fx, fy, cx, cy = k
    proj = np.stack([fx * xyz[..., 0] / xyz[..., 2] + cx, fy * xyz[..., 1] / xyz[..., 2] + cy], -1)
    np.testing.assert_allclose(proj, xy, atol=1e-2)


def test_occluders_and_jitter():
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 128, np.uint8)
    xy = rng.uniform(0, 63, (3, 16, 2))
    vis = np.full((3, 16), 2.0)
    new = add_occluders(img, xy, vis, 2, rng)
    changed = (img != 128).any(-1)
    px = np.round(xy).astype(int)
    covered = changed[px[..., 1], px[..., 0]]
    assert np.array_equal(new == 1, covered) and covered.any()
    out = color_jitter(img, 0.3, rng)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


def test_heatmap_targets_peak_at_the_keypoints():
    cfg = model_config("hg1", input_size=(128, 128))
    targets = Targets(cfg, AugmentParams(input_size=(128, 128), train=False))
    items = [it for seed in range(5) for it in targets(*synthetic_sample(seed, "mpii16", (320, 240), (1, 1)),
                                                       np.random.default_rng(0))]
    assert items
    item = items[0]
    assert item["image"].shape == (128, 128, 3) and item["heatmaps"].shape == (16, 32, 32)
    hm, kp, vis = item["heatmaps"].numpy(), item["keypoints"].numpy(), item["vis"].numpy()
    for j in np.flatnonzero((vis > 0) & (kp >= 0).all(-1) & (kp < 127).all(-1)):
        y, x = np.unravel_index(hm[j].argmax(), hm[j].shape)
        assert abs((x + 0.5) * 4 - 0.5 - kp[j, 0]) <= 2.5 and abs((y + 0.5) * 4 - 0.5 - kp[j, 1]) <= 2.5
    assert item["head_size"] > 0


def test_spm_targets():
    cfg = model_config("spm_small", input_size=(256, 192), layout="panoptic19")
    targets = Targets(cfg, AugmentParams(input_size=(256, 192)))
    sample, image = synthetic_sample(2, "panoptic19", (320, 240), (2, 3))
    (item,) = targets(sample, image, np.random.default_rng(0))
    assert item["root"].shape == (1, 48, 64) and item["disp"].shape == (38, 48, 64)
    assert item["root"].max() > 0.5 and item["disp_mask"].sum() > 0 and item["depth_mask"].sum() > 0


def test_decode_factor_keeps_crops_at_input_resolution():
    from tools.data.sample import Sample

    cfg = model_config("hg1", input_size=(128, 128))
    targets = Targets(cfg, AugmentParams(input_size=(128, 128), train=False))
    xy = np.zeros((1, 16, 2))
    xy[0, :, 1] = np.linspace(0, 700, 16)  # a 700 px tall person: box side 700 * 1.4 = 980 px
    sample = Sample(image=b"", key="k", layout="mpii16", xy=xy, vis=np.full((1, 16), 2.0))
    assert targets.decode_factor(sample) == 4  # 980 / 4 = 245 >= 128 > 980 / 8
    xy[0, :, 1] = np.linspace(0, 100, 16)
    assert targets.decode_factor(Sample(image=b"", key="k", layout="mpii16", xy=xy, vis=np.full((1, 16), 2.0))) == 1
