"""The ``--show`` window: annotated frames in an OpenCV HighGUI window, with fps and latency drawn on them.

posestream depends on ``opencv-python`` (Qt HighGUI) rather than the headless build so that a desktop gets a
window. Nothing else needs a display: the engine, capture and renderer run on servers and in CI as before, and
the window is opened only after :func:`display_problem` found a display that can be opened (Qt would abort
the process on an unreachable one). Where none can, the renderer says so once and carries on without it.

The window closes on ``q``, ``Esc`` or its close button; the renderer then stops as on Ctrl-C.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import os
import sys
import time

import cv2
import numpy as np

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q, Q, Esc


def _gui_backend() -> str | None:
    """OpenCV's HighGUI backend (e.g. ``QT5``, ``GTK3``, ``WIN32UI``), or None for a build without one."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            value = value.strip()
            return None if value in ("", "NONE") else value
    return None


def display_problem() -> str | None:
    """Why no OpenCV window can be opened here, or None when one can."""
    if _gui_backend() is None:
        return ("this OpenCV has no GUI (opencv-python-headless is installed in place of opencv-python); "
                "pip install opencv-python for --show")
    return x_display_problem()


def x_display_problem(wayland_ok: bool = False) -> str | None:
    """Why no window can be opened here, or None when one can: on Linux, an X display must answer (OpenCV's Qt
    reaches a Wayland desktop through XWayland; the Rerun Viewer, ``wayland_ok``, talks Wayland too);
    elsewhere the platform's own windows are assumed."""
    if not sys.platform.startswith("linux") or (wayland_ok and os.environ.get("WAYLAND_DISPLAY")):
        return None
    display = os.environ.get("DISPLAY")
    if not display:
        return "no display (DISPLAY is not set)"
    name = ctypes.util.find_library("X11")
    if name is None:
        return "no display library (libX11)"
    xlib = ctypes.CDLL(name)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = xlib.XOpenDisplay(display.encode())
    if not handle:
        return f"cannot open display {display!r}"
    xlib.XCloseDisplay(handle)
    return None


def bind_system_xlib() -> None:
    """Make OpenCV's Qt use the system's libX11 and libX11-xcb, a matched pair, before it loads its xcb plugin.

    The opencv-python wheel bundles its own libX11-xcb, built against an older libX11 whose private ``Display``
    layout differs from the system's (the wheel's ``XSetEventQueueOwner`` writes offset 0x40, Debian 12's libX11
    1.8 reads the owner at 0x48). Qt's ``XSetEventQueueOwner(XCBOwnsEventQueue)`` then misses, Xlib still owns
    the X event queue, and every ``XFlush`` on Qt's GUI thread can move pending events into Xlib's queue, where
    Qt never reads them. Whenever Qt's event-reader thread is slower than its GUI thread (a loaded machine) the
    window loses its MapNotify and stays black for good, or a key press or the close button goes unheard.
    Libraries loaded with RTLD_GLOBAL come first when the plugin's symbols are bound, so it then takes both
    halves from the system."""
    if not sys.platform.startswith("linux"):
        return
    for lib in ("X11", "X11-xcb"):
        name = ctypes.util.find_library(lib)
        if name:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)


def overlay(image: np.ndarray, fps: float | None, latency_ms: float | None) -> np.ndarray:
    """``image`` (BGR, in place) with "fps, latency" drawn in its top-left corner."""
    parts = [f"{fps:.1f} fps" if fps is not None else "-- fps"]
    if latency_ms is not None:
        parts.append(f"latency {latency_ms:.0f} ms")
    text = "   ".join(parts)
    scale = max(0.4, image.shape[1] / 1280)
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    scale *= min(1.0, 0.9 * image.shape[1] / tw)  # a small frame gets smaller text
    thick = max(1, round(scale * 1.5))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, th // 3)
    cv2.rectangle(image, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(image, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return image


class FpsMeter:
    """Frames per second over a sliding window of the last ``span_s`` seconds."""

    def __init__(self, span_s: float = 1.0, clock=time.monotonic):
        self.span_s, self.clock, self.times = span_s, clock, collections.deque()

    def tick(self, now: float | None = None) -> float | None:
        """Count a frame at ``now`` (default: the clock's time); the rate, once there are two frames."""
        now = self.clock() if now is None else now
        self.times.append(now)
        while self.times[0] < now - self.span_s:
            self.times.popleft()
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else None


class Window:
    """One HighGUI window. ``show(image, capture_ns)`` draws fps and capture -> shown latency onto a copy and
    shows it; it returns False once the user closed the window (q, Esc or the close button)."""

    def __init__(self, title: str = "posestream"):
        self.title, self.fps, self.opened = title, FpsMeter(), False
        bind_system_xlib()

    def show(self, image: np.ndarray, capture_ns: int | None = None) -> bool:
        if not self.opened:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            self.opened = True
        latency = None if capture_ns is None else (time.time_ns() - capture_ns) / 1e6
        cv2.imshow(self.title, overlay(image.copy(), self.fps.tick(), latency))
        return self.poll()

    def poll(self) -> bool:
        """Handle the window's events (call it while no frame comes too); False once the user closed it."""
        if not self.opened:
            return True
        key = cv2.waitKey(1) & 0xFF
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:  # Qt destroyed the window when its close button was pressed
            self.opened, visible = False, False
        if key in QUIT_KEYS or not visible:
            self.close()
            return False
        return True

    def close(self) -> None:
        if self.opened:
            self.opened = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:  # already gone
                pass
