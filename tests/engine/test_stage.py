"""Stage plumbing: pre/post-processing on the calling thread on the CPU, torch's thread count restored."""

from __future__ import annotations

import pytest
import torch

from engine.stage import Stage, host_threads
from tests.engine.conftest import random_frames


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_host_threads_limits_and_restores(two_threads):
    with host_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), host_threads(torch.device("cpu")):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with host_threads(torch.device("cuda")):  # only the CPU pool is touched
        assert torch.get_num_threads() == 2


def test_stage_run_keeps_callers_thread_count(spm_model, onnx_cache, two_threads):
    stage = Stage(spm_model, "onnxruntime", "cpu", max_batch=2, cache_dir=onnx_cache)
    poses = stage.run(random_frames(2))
    assert len(poses) == 2 and torch.get_num_threads() == 2
