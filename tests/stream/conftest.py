"""Helpers for the stream tests: videos made with PyAV, a small real engine, polling on real events."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import av
import numpy as np
import pytest

# A real engine kept small so that tests stay fast: a 1-stack hourglass with random weights at 64x64.
MODEL = "random:hg1_64"
MODEL_ARGS = {"input_size": (64, 64)}
MODEL_CLI = ["--model", MODEL, "--model-args", '{"input_size": [64, 64]}', "--backend", "torch"]


def make_video(path, frames: int, size=(96, 64), fps: int = 25) -> list[int]:
    """Write a clip with a moving bright square; returns the frames' pts."""
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if str(path).endswith((".mp4", ".mkv")) else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.full((h, w, 3), 40, np.uint8)
            x = (i * 3) % (w - 16)
            image[20:36, x:x + 16] = (30, 200, 250)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return decoded_pts(path)


def decoded_pts(path) -> list[int]:
    """The pts of every frame PyAV can decode from ``path``."""
    with av.open(str(path)) as container:
        return [f.pts for f in container.decode(container.streams.video[0])]


def decoded_times(path) -> list:
    """The timestamps (Fraction seconds) of every frame PyAV can decode from ``path``."""
    with av.open(str(path)) as container:
        return [f.pts * f.time_base for f in container.decode(container.streams.video[0])]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` (a real event: a counter, a file, a process) until true or fail after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def small_engine(**kw):
    from engine import Engine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Engine(MODEL, "torch", model_args=dict(MODEL_ARGS), **kw)


def start_stage(stage: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream.cli", stage, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def ipc(tmp_path):
    """Private ipc:// endpoints for one test."""
    from stream.transport import ipc_endpoints

    return ipc_endpoints(str(tmp_path / "sock"))
