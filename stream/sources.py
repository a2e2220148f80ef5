"""Frame sources: cameras (OpenCV), video files and network streams (PyAV), image folders.

``open_source(spec)`` checks that the source exists and raises :class:`SourceError` (one line naming it)
when it does not. ``source.frames()`` yields :class:`SourceFrame` (BGR [H, W, 3] uint8 plus timestamps);
frames that do not decode are skipped and counted in ``source.corrupt``; a source that ends early (a
truncated file, a lost camera) sets ``source.error`` to a message naming it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(RuntimeError):
    """A source that cannot be opened; the message is one line naming it. ``lasting``: trying again will not help
    (a missing file, an HTTP 4xx answer, a stream without video) rather than a server or network that may come
    back."""

    def __init__(self, message: str, lasting: bool = True):
        super().__init__(message)
        self.lasting = lasting


@dataclass
class SourceFrame:
    image: np.ndarray                   # BGR [H, W, 3] uint8
    pts: int | None = None
    time_base: tuple[int, int] | None = None


def _ratio(value) -> tuple[int, int] | None:
    if value is None or value == 0:
        return None
    value = Fraction(value).limit_denominator(1_000_000)
    return value.numerator, value.denominator


class _Pacer:
    """Sleeps so that frames leave at their timestamps (``--realtime``)."""

    def __init__(self, enabled: bool):
        self.enabled, self.t0, self.start = enabled, None, None

    def wait(self, seconds: float | None) -> None:
        if not self.enabled or seconds is None:
            return
        now = time.monotonic()
        if self.t0 is None:
            self.t0, self.start = seconds, now
            return
        delay = self.start + (seconds - self.t0) - now
        if delay > 0:
            time.sleep(delay)


def yuv_to_bgr(frame) -> np.ndarray:
    """BGR [H, W, 3] of a PyAV VideoFrame (I420 + cv2 when possible: 2-3x faster than to_ndarray('bgr24'))."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


class Source:
    """Base: ``name``, ``rate`` (frames/s as a ratio or None), ``corrupt`` count, ``error`` or None."""

    live = False

    def __init__(self, name: str):
        self.name, self.rate, self.corrupt, self.error = name, None, 0, None

    def frames(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class VideoFile(Source):
    """A video file decoded by PyAV with threaded decoding."""

    def __init__(self, path: str, realtime: bool = False):
        super().__init__(path)
        import av

        self.realtime = realtime
        try:
            self.container = av.open(path)
        except (av.error.FFmpegError, OSError) as err:
            raise SourceError(f"{path}: cannot open video ({err})") from None
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"{path}: no video stream (not a video, or truncated before its index)")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.rate = _ratio(self.stream.average_rate or self.stream.guessed_rate)
        self.declared = int(self.stream.frames or 0)
        self.duration = (self.container.duration or 0) / 1e6   # seconds, 0 when unknown

    def frames(self) -> Iterator[SourceFrame]:
        import av

        tb = _ratio(self.stream.time_base)
        pacer, count, last_time = _Pacer(self.realtime), 0, 0.0
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as err:
                self.error = f"{self.name}: stopped reading after {count} frames ({err})"
                packet = None  # flush the decoder: frames its threads hold are still good
            if packet is not None and packet.is_corrupt:  # a truncated or damaged packet: with frame threading its
                self.corrupt += 1                          # error would surface at the flush and take the frames
                continue                                   # decoded before it along (PyAV drops a failing call's)
            try:
                decoded = self.stream.decode(packet)
            except av.error.FFmpegError:
                self.corrupt += 1
                continue
            for frame in decoded:
                pacer.wait(None if frame.time is None else float(frame.time))
                last_time = max(last_time, float(frame.time or 0.0))
                count += 1
                yield SourceFrame(yuv_to_bgr(frame), frame.pts, tb)
            if packet is None:
                break
        period = 1 / (self.rate[0] / self.rate[1]) if self.rate else 0.0
        short = self.duration > 0 and last_time + period < 0.9 * self.duration
        if self.error is None and (self.corrupt or short or (self.declared and count < self.declared)):
            self.error = (f"{self.name}: truncated or corrupt: {count} frames decoded"
                          + (f" of {self.declared} declared" if self.declared else "")
                          + (f", last at {last_time:.2f} s of {self.duration:.2f} s" if short else "")
                          + (f", {self.corrupt} packets undecodable" if self.corrupt else ""))

    def close(self) -> None:
        self.container.close()


class Camera(Source):
    """``webcam:N`` or ``/dev/videoN`` through OpenCV; timestamps are capture times in microseconds."""

    live = True

    def __init__(self, spec: str):
        super().__init__(spec)
        device = spec.split(":", 1)[1] if spec.startswith("webcam:") else spec
        if not device.startswith("/dev/") and not device.isdigit():
            raise SourceError(f"{spec}: not a camera (use webcam:N or /dev/videoN)")
        path = device if device.startswith("/dev/") else f"/dev/video{device}"
        if sys.platform.startswith("linux") and not os.path.exists(path):
            raise SourceError(f"{spec}: no such camera ({path} does not exist)")
        self.cap = cv2.VideoCapture(int(device) if device.isdigit() else device)
        if not self.cap.isOpened():
            raise SourceError(f"{spec}: cannot open camera {path} (busy or not a capture device)")
        self.rate = _ratio(self.cap.get(cv2.CAP_PROP_FPS))

    def frames(self) -> Iterator[SourceFrame]:
        failures, t0 = 0, time.monotonic_ns()
        while failures < 30:
            ok, image = self.cap.read()
            if not ok or image is None:
                failures += 1
                self.corrupt += 1
                continue
            failures = 0
            yield SourceFrame(image, (time.monotonic_ns() - t0) // 1000, (1, 1_000_000))
        self.error = f"{self.name}: camera stopped delivering frames"

    def close(self) -> None:
        self.cap.release()


class NetworkStream(Source):
    """``rtsp://``, ``http(s)://`` etc. through PyAV.

    A lost connection is reopened after an exponential back-off (``backoff_s``, doubling up to 8 s), at most
    ``reconnect`` times in a row (a decoded frame resets the count); then ``error`` gives the reason and
    ``gave_up`` is set (``posestream capture`` exits 2). The first connection is tried as often, so a camera or
    server that is still starting is waited for; an answer that will not change (HTTP 4xx but 429, a stream
    without video) raises :class:`SourceError` at once, as does the last failed try. A finite source (a file URL:
    its duration is known) is never replayed: after a reconnect it seeks back to its last delivered frame and
    skips what was delivered; where the server does not allow that (no range requests), it ends with ``error``
    set (exit 3). A live stream (no duration) simply continues with whatever the server sends.
    """

    live = True

    def __init__(self, url: str, reconnect: int = 5, backoff_s: float = 0.5):
        super().__init__(url)
        if reconnect < 0 or backoff_s < 0:
            raise ValueError(f"NetworkStream: reconnect and backoff_s must be >= 0, got {reconnect}, {backoff_s}")
        self.reconnect, self.backoff_s = reconnect, backoff_s
        self.gave_up = False
        self.reconnects = 0                       # reopened connections, for the record
        self._closing = threading.Event()
        self.container = self._open_first()
        self.finite = bool(self.container.duration)

    def _open_first(self):
        attempt = 1
        while True:
            try:
                return self._open()
            except SourceError as err:
                if err.lasting or attempt > self.reconnect:
                    raise (SourceError(f"{err}, {attempt} tries") if attempt > 1 else err) from None
                delay = self._backoff(attempt)
                log.warning("%s; trying again in %.1f s (try %d of %d)", err, delay, attempt, self.reconnect)
                self._closing.wait(delay)
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` (1, 2, ...): ``backoff_s`` doubling, at most 8 s."""
        return min(self.backoff_s * 2 ** (attempt - 1), 8.0)

    def _open(self):
        import av

        options = {"rtsp_transport": "tcp"} if self.name.startswith("rtsp") else {}
        try:
            container = av.open(self.name, options=options, timeout=(5.0, 5.0))
        except (av.error.FFmpegError, OSError) as err:
            lasting = isinstance(err, av.error.HTTPClientError) and not isinstance(err, av.error.HTTPTooManyRequestsError)
            raise SourceError(f"{self.name}: cannot open stream ({err})", lasting=lasting) from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.name}: no video stream")
        self.rate = _ratio(container.streams.video[0].average_rate)
        return container

    def frames(self) -> Iterator[SourceFrame]:
        import av

        attempt, count, last_pts, resumed = 0, 0, None, False
        while True:
            stream = self.container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = _ratio(stream.time_base)
            try:
                for frame in self._decoded(stream):
                    if resumed and frame.pts is not None:
                        resumed = False
                        if frame.pts > last_pts + self._period(stream) * 1.5:
                            self.error = (f"{self.name}: connection lost after {count} frames; the server resumed "
                                          f"later in the file (its seeking skipped frames: no range requests?); "
                                          "ended without replaying or skipping")
                            return
                    if self.finite and last_pts is not None and frame.pts is not None and frame.pts <= last_pts:
                        continue  # delivered before the reconnect
                    attempt, count, last_pts = 0, count + 1, frame.pts
                    yield SourceFrame(yuv_to_bgr(frame), frame.pts, tb)
                return
            except (av.error.FFmpegError, OSError) as err:
                if self._at_end(stream, last_pts):
                    return  # a finite source read to its end: some servers close with an error, not an end
                reason = f"{err}"
            attempt = self._reopen(attempt, reason, count, last_pts)
            if attempt is None:
                return
            resumed = self.finite and last_pts is not None

    def _decoded(self, stream) -> Iterator:
        """The frames of this connection; when reading fails, the frames the decoder still holds (frame threading
        keeps a few) come out before the error is raised."""
        import av

        packets = self.container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError):
                try:
                    yield from stream.codec_context.decode(None)
                except av.error.FFmpegError:
                    pass
                raise
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                self.corrupt += 1  # a packet that does not decode: skipped and counted

    def _period(self, stream) -> float:
        """One frame's duration in ``stream``'s time base (0 when unknown)."""
        if not self.rate or not stream.time_base:
            return 0.0
        return float(self.rate[1] / self.rate[0] / stream.time_base)

    def _at_end(self, stream, last_pts: int | None) -> bool:
        """Whether a finite source's last delivered frame is its last one (by the duration it declares)."""
        if not self.finite or last_pts is None or not stream.time_base or not self.rate:
            return False
        start = (self.container.start_time or 0) / 1e6
        period = self.rate[1] / self.rate[0]
        return float(last_pts * stream.time_base) - start + 1.5 * period >= self.container.duration / 1e6

    def _reopen(self, attempt: int, reason: str, count: int, last_pts: int | None) -> int | None:
        """Reconnect after a failure (with back-off, up to ``reconnect`` tries in a row); resume a finite source
        after ``last_pts``. The try count, or None when the stream ends here (``error`` says why)."""
        import av

        if self.finite and count and last_pts is None:
            self.error = f"{self.name}: connection lost after {count} frames ({reason}); frames without timestamps " \
                         "cannot be resumed, ended without replaying"
            return None
        while True:
            attempt += 1
            if attempt > self.reconnect:
                self.gave_up = True
                hint = "; a file whose index is at its end (mp4) needs a server that allows range requests" \
                    if self.finite and not count else ""
                self.error = f"{self.name}: gave up after {self.reconnect} reconnects ({reason}){hint}"
                return None
            delay = self._backoff(attempt)
            log.warning("%s: stream error (%s); reconnecting in %.1f s (try %d of %d)", self.name, reason, delay,
                        attempt, self.reconnect)
            if self._closing.wait(delay):
                return None
            try:
                self.container.close()
                self.container = self._open()
            except SourceError as err:
                reason = str(err)
                continue
            self.reconnects += 1
            if not (self.finite and last_pts is not None):
                return attempt
            try:
                stream = self.container.streams.video[0]
                self.container.seek(last_pts, stream=stream, backward=True)
                return attempt
            except (av.error.FFmpegError, OSError) as err:
                self.error = (f"{self.name}: connection lost after {count} frames and the server does not let it "
                              f"resume there ({err}; no range requests?); ended without replaying")
                return None

    def close(self) -> None:
        self._closing.set()
        self.container.close()


class ImageFolder(Source):
    """The images of a folder in name order, at ``fps`` (pts = index, time base 1/fps)."""

    def __init__(self, path: str, fps: float = 30.0, realtime: bool = False):
        super().__init__(path)
        self.files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        self.rate, self.realtime = _ratio(fps), realtime

    def frames(self) -> Iterator[SourceFrame]:
        pacer = _Pacer(self.realtime)
        tb = (self.rate[1], self.rate[0])
        for index, path in enumerate(self.files):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.corrupt += 1
                log.warning("%s: unreadable image, skipped", path)
                continue
            pacer.wait(index * tb[0] / tb[1])
            yield SourceFrame(image, index, tb)


def open_source(spec: str, realtime: bool = False, fps: float = 30.0, reconnect: int = 5) -> Source:
    """The source named by ``spec``: webcam:N, /dev/videoN, a URL (``reconnect``: tries in a row after a lost
    connection), an image folder or a video file."""
    if spec.startswith("webcam:") or spec.startswith("/dev/video"):
        return Camera(spec)
    if "://" in spec:
        return NetworkStream(spec, reconnect=reconnect)
    if os.path.isdir(spec):
        return ImageFolder(spec, fps=fps, realtime=realtime)
    if not os.path.exists(spec):
        raise SourceError(f"{spec}: no such file")
    return VideoFile(spec, realtime=realtime)
