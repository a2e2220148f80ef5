"""`--show`: a real OpenCV (Qt) window on a virtual X server (Debian's xvfb), screenshots compared with the
frames, and the window closed the ways a user closes it (q, its close button)."""

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest

from stream.window import display_problem, overlay
from tests.stream.conftest import MODEL_CLI, wait_for

NEEDS_X = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("xdotool") is None,
                             reason="needs Debian's xvfb and xdotool (make test installs them where it runs as "
                                    "root with apt-get, as in CI)")


@pytest.fixture
def display():
    """A fresh virtual X display (Xvfb picks a free number and writes it to the pipe)."""
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    assert number, "Xvfb started"
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


def screenshot(display: str) -> np.ndarray:
    """The whole virtual screen, BGR."""
    from PIL import ImageGrab

    return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))[..., ::-1].copy()


def xdotool(display: str, *args: str, timeout: float = 30) -> str:
    return subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True,
                          timeout=timeout, check=True).stdout


def window_geometry(display: str, title: str = "posestream") -> tuple[int, int, int, int, int]:
    """(window id, x, y, width, height) of the window called ``title``, waiting for it to appear."""
    wid = int(xdotool(display, "search", "--sync", "--onlyvisible", "--name", f"^{title}$", timeout=120).split()[0])
    out = xdotool(display, "getwindowgeometry", "--shell", str(wid))
    g = dict(line.split("=") for line in out.split())
    return wid, int(g["X"]), int(g["Y"]), int(g["WIDTH"]), int(g["HEIGHT"])


def press_close_button(display: str, wid: int) -> None:
    """What a window manager sends when the user clicks a window's close button: WM_DELETE_WINDOW."""
    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("data", ctypes.c_long * 5)]

    class Event(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    x = ctypes.CDLL(ctypes.util.find_library("X11"))
    x.XOpenDisplay.restype, x.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    x.XInternAtom.restype, x.XInternAtom.argtypes = ctypes.c_ulong, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.POINTER(Event)]
    x.XFlush.argtypes = x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x.XOpenDisplay(display.encode())
    event = Event()
    event.xclient.type, event.xclient.window, event.xclient.format = 33, wid, 32  # ClientMessage
    event.xclient.message_type = x.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
    event.xclient.data[0] = x.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
    assert x.XSendEvent(dpy, wid, 0, 0, ctypes.byref(event))
    x.XFlush(dpy)
    x.XCloseDisplay(dpy)


def shown(display: str, x: int, y: int, w: int, h: int, top: int) -> np.ndarray:
    """The window's pixels once something is drawn below the overlay (a mapped window starts black)."""
    shots = []
    wait_for(lambda: shots.append(screenshot(display)[y:y + h, x:x + w]) or shots[-1][top:].any(), what="a frame shown")
    return shots[-1]


def overlay_rows(width: int, height: int) -> int:
    """How many top rows the fps/latency overlay covers on a frame of this size."""
    probe = overlay(np.full((height, width, 3), 255, np.uint8), 99.9, 999.0)
    return int(np.nonzero((probe != 255).any(axis=(1, 2)))[0].max()) + 1


def test_display_problem_names_what_is_missing(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    assert display_problem() == "no display (DISPLAY is not set)"
    monkeypatch.setenv("DISPLAY", ":4242")
    assert display_problem() == "cannot open display ':4242'"


def test_a_headless_opencv_build_is_named_as_the_reason(monkeypatch):
    import cv2

    info = cv2.getBuildInformation()
    assert "GUI:" in info, "the build information names its GUI backend (what display_problem reads)"
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: info.replace("GUI:", "GUI: NONE\n  was:", 1))
    assert display_problem().startswith("this OpenCV has no GUI (opencv-python-headless is installed")


def test_show_without_a_display_says_so_once(monkeypatch, caplog):
    from stream.render import RenderConfig, Renderer

    monkeypatch.delenv("DISPLAY", raising=False)
    with caplog.at_level(logging.WARNING):
        renderer = Renderer(RenderConfig("ipc://unused", show=True))
    assert renderer.window is None
    assert [r.getMessage() for r in caplog.records] == ["--show: no display (DISPLAY is not set); not showing a window"]


SHOW = textwrap.dedent("""
    import sys, time
    import numpy as np
    from stream.window import Window
    image = np.load(sys.argv[1])
    window = Window()
    deadline = time.monotonic() + 60
    while window.show(image, time.time_ns()) and time.monotonic() < deadline:
        time.sleep(0.02)
    print("closed" if time.monotonic() < deadline else "timed out")
""")


@NEEDS_X
@pytest.mark.parametrize("close", ["q", "Escape", "close button"])
def test_window_shows_the_frame_and_closes_as_a_user_closes_it(display, tmp_path, close):
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), 8, 0), 8, 1)  # 320x240 blocks
    np.save(tmp_path / "frame.npy", image)
    proc = subprocess.Popen([sys.executable, "-c", SHOW, str(tmp_path / "frame.npy")], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "DISPLAY": display})
    try:
        wid, x, y, w, h = window_geometry(display)
        assert (w, h) == (320, 240), "the window is the frame's size"
        top = overlay_rows(w, h)
        shot = shown(display, x, y, w, h, top)
        assert np.array_equal(shot[top:], image[top:]), "below the overlay: the frame itself, pixel for pixel"
        assert (shot[:top] != image[:top]).any() and (shot[:top] > 200).any(), "the fps/latency text is drawn"
        if close == "close button":
            press_close_button(display, wid)
        else:
            xdotool(display, "windowfocus", "--sync", str(wid), "key", close)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.strip() == "closed" and proc.returncode == 0


def _still_clip(path, frames: int, size=(320, 240), fps: int = 25) -> np.ndarray:
    """A lossless clip of one still, textured frame (so a screenshot can be told from other pictures); returns it."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 255 // (w + h))], -1).astype(np.uint8)
    image[60:180, 100:220] = (30, 200, 250)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qp": "0"}  # lossless: every frame decodes to the same pixels
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return image


@NEEDS_X
@pytest.mark.slow
def test_run_show_displays_the_rendered_frames_and_q_stops_the_pipeline_like_ctrl_c(display, tmp_path):
    from stream.posefile import read_pose_file
    from stream.render import draw_poses
    from stream.sources import open_source

    clip, out, poses = tmp_path / "still.mp4", tmp_path / "out.mp4", tmp_path / "out.jsonl"
    _still_clip(clip, 1500)  # 60 s at its own pace: q comes long before its end
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "--source", str(clip), "--realtime", "--show",
                             "-o", str(out), "--poses", str(poses), "--no-progress", *MODEL_CLI],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "DISPLAY": display})
    try:
        wid, x, y, w, h = window_geometry(display)
        top = overlay_rows(w, h)
        shot = shown(display, x, y, w, h, top)
        xdotool(display, "windowfocus", "--sync", str(wid), "key", "q")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    with av.open(str(out)) as container:  # finished and playable, as after Ctrl-C
        assert sum(1 for _ in container.decode(container.streams.video[0])) > 0
    records = list(read_pose_file(poses))
    source = open_source(str(clip))
    decoded = [f.image for f, _ in zip(source.frames(), range(records[-1].frame + 1))]  # as the capture decoded them
    source.close()
    # the clip is lossless, so every frame decodes the same, the model sees the same input and the renderer draws
    # the same picture each time (to a batch's float rounding): a screenshot holds it whichever frames the window
    # was painting
    assert all(np.array_equal(image, decoded[0]) for image in decoded)
    drawn = [draw_poses(decoded[r.frame].copy(), r.poses) for r in records]  # coordinates rounded to 0.001 px
    skeleton = np.abs(drawn[0][top:].astype(int) - decoded[0][top:].astype(int)).max(axis=2) > 2
    assert skeleton.mean() > 0.001, "the renderer draws a skeleton on this frame"
    differ = min((np.abs(shot[top:].astype(int) - image[top:].astype(int)).max(axis=2) > 2).mean() for image in drawn)
    assert differ < 0.001, f"the window shows the rendered frame ({differ:.2%} of pixels differ)"
