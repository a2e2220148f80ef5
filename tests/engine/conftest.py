"""Tiny random models shared by the engine tests (small widths and inputs so that CPU tests stay fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_model

HG_ARGS = dict(arch_args={"width": 32, "depth": 2}, input_size=(64, 64))
SPM_ARGS = dict(arch_args={"width": 32, "depth": 2}, input_size=(96, 64), codec={"max_persons": 5})


@pytest.fixture(scope="session")
def hg_model():
    torch.manual_seed(0)
    return build_model("hg1", **HG_ARGS).eval()


def random_spm(seed: int, **overrides):
    """A random spm_small (SPM_ARGS + overrides) whose last heads are shifted so that random weights give root
    peaks and positive depths."""
    torch.manual_seed(seed)
    model = build_model("spm_small", **{**SPM_ARGS, **overrides}).eval()
    with torch.no_grad():
        model.heads[-1]["root"].bias += 0.8
        model.heads[-1]["depth"].bias += 1.0
    return model


@pytest.fixture(scope="session")
def spm_model():
    return random_spm(1)


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


def random_frames(n: int, seed: int = 0, sizes=((160, 120), (90, 130), (200, 100))) -> list[np.ndarray]:
    """n uint8 BGR frames of mixed (w, h) sizes with smooth blobs (so networks see structure, not noise)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        ys, xs = np.mgrid[0:h, 0:w]
        img = np.zeros((h, w, 3), np.float64)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 30)
            img += rng.uniform(60, 200, 3) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))[..., None]
        frames.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
    return frames
