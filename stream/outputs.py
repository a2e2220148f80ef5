"""The renderer's files, written so that a renderer killed at any moment loses nothing it acknowledged.

* Video: while a stream runs, frames are encoded (no lookahead, no B-frames: each frame's packet comes out at
  once) into ``NAME.partial.mp4`` beside the output, a fragmented MP4 with one fragment per frame, so every
  frame but the last one muxed is on disk and plays; :meth:`VideoWriter.close` remuxes it (no re-encoding)
  into the output and removes it. A renderer started with ``resume`` copies the packets of the partial file
  into a new one and goes on encoding after them.
* Pose file: one JSON line per frame, flushed as it is written; on resume a torn last line is cut off.

What the files hold decides where a restarted renderer resumes (:func:`resume_point`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)
FRAGMENTED = {"movflags": "frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"}


def pick_codec() -> str:
    """H.264 where PyAV's FFmpeg has an encoder for it, else MPEG-4 part 2."""
    import av

    for name in ("libx264", "h264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not built into this FFmpeg
            continue
    raise RuntimeError("PyAV's FFmpeg has neither an H.264 nor an MPEG-4 encoder")


def partial_path(path: str | Path) -> Path:
    """Where the video of a running stream is written: ``out.mp4`` -> ``out.partial.mp4``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial.mp4")


@dataclass
class PartialVideo:
    """What an interrupted run left: a partial video (killed) or the finished output (stopped), with its
    stream, first seq and readable frames."""

    path: Path
    stream: str
    first_seq: int
    frames: int


def read_partial(path: str | Path) -> PartialVideo | None:
    """What a renderer writing ``path`` left: its partial video, else ``path`` itself if a posestream renderer
    wrote it; None when there is neither or it holds no frame."""
    import av

    part = partial_path(path)
    if not part.exists():
        part = Path(path)
    if not part.exists():
        return None
    try:
        with av.open(str(part)) as container:
            tags = dict(t.split("=", 1) for t in container.metadata.get("comment", "").split()[1:] if "=" in t)
            frames = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
    except (av.error.FFmpegError, IndexError, ValueError) as err:
        log.warning("%s: unreadable partial video (%s); starting the video afresh", part, err)
        return None
    if not frames or "first_seq" not in tags:
        return None
    return PartialVideo(part, tags.get("stream", ""), int(tags["first_seq"]), frames)


class VideoWriter:
    """Encodes BGR frames [H, W, 3] with their timestamps; sizes are padded to even numbers for yuv420p.

    ``keep`` (a :class:`PartialVideo` and a frame count) starts the new file with that many frames of an
    interrupted run, copied; ``durable`` is how many frames are on disk (all but the last one muxed)."""

    def __init__(self, path: str, width: int, height: int, rate: tuple[int, int] | None,
                 time_base: tuple[int, int] | None, codec: str | None = None, stream: str = "", first_seq: int = 0,
                 keep: tuple[PartialVideo, int] | None = None):
        import av

        self.path, self.size = path, (width + width % 2, height + height % 2)
        self.part = partial_path(path)
        self.writing = self.part.with_name(self.part.name + ".new") if keep else self.part
        self.container = av.open(str(self.writing), "w", format="mp4", options=FRAGMENTED)
        self.container.metadata["comment"] = f"posestream stream={stream} first_seq={first_seq}"
        rate = Fraction(*rate) if rate else Fraction(30)
        self.stream = self.container.add_stream(codec or pick_codec(), rate=rate)
        if self.stream.codec_context.name == "libx264":  # veryfast: half the CPU of "medium";
            # zerolatency: each frame's packet at once (no lookahead or B-frames), so that it is on disk (and can be
            # acknowledged) at once whatever the core count; CRF 26 keeps the quality of veryfast's default (CRF 23
            # with lookahead) at about twice its bytes (docs/benchmarks.md)
            self.stream.codec_context.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "26"}
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.time_base = Fraction(*time_base) if time_base else 1 / rate
        self.stream.codec_context.time_base = self.time_base
        self.stream.time_base = self.time_base
        self.container.start_encoding()
        self.last_pts, self.frames, self.muxed = None, 0, 0
        if keep:
            self._copy(*keep)

    def _copy(self, old: PartialVideo, count: int) -> None:
        """Mux the first ``count`` packets of ``old`` (H.264 turned to Annex B, as the encoder's own packets)."""
        import av
        from av.bitstream import BitStreamFilterContext

        with av.open(str(old.path)) as src:
            stream = src.streams.video[0]
            bsf = BitStreamFilterContext("h264_mp4toannexb", stream) if stream.codec_context.name == "h264" else None
            for packet in src.demux(stream):
                if not packet.size or self.muxed >= count:
                    continue
                for out in (bsf.filter(packet) if bsf else [packet]):
                    when = out.pts * out.time_base  # the file's own time base may differ (MP4 picks a timescale)
                    out.stream = self.stream
                    self.container.mux(out)
                    self.muxed += 1
                    self.last_pts = round(when / self.time_base)
        if self.muxed < count:
            raise RuntimeError(f"{old.path}: {self.muxed} frames where {count} were read before")

    @property
    def durable(self) -> int:
        """Frames whose bytes are in the file: the muxer writes a frame's fragment when the next one comes."""
        return max(0, self.muxed - 1) if self.container is not None else self.muxed

    def write(self, image: np.ndarray, pts: int | None) -> None:
        import av

        h, w = image.shape[:2]
        if (w, h) != self.size:
            image = cv2.copyMakeBorder(image, 0, self.size[1] - h, 0, self.size[0] - w, cv2.BORDER_REPLICATE) \
                if w <= self.size[0] and h <= self.size[1] else cv2.resize(image, self.size)
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            pts = 0 if self.last_pts is None else self.last_pts + 1
        frame.pts, frame.time_base, self.last_pts = pts, self.time_base, pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
            self.muxed += 1
        self.frames += 1
        if self.writing != self.part and self.muxed > self.frames:  # the copied frames are on disk now
            os.replace(self.writing, self.part)
            self.writing = self.part

    def close(self) -> None:
        """Finish the partial file and remux it into the output; the partial file goes."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
            self.muxed += 1
        self.container.close()
        self.container = None
        if self.writing != self.part:
            os.replace(self.writing, self.part)
        remux(self.part, self.path)
        self.part.unlink()


def remux(src: str | Path, dst: str | Path, limit: int | None = None) -> None:
    """Copy the video packets of ``src`` (the first ``limit``) into ``dst`` (format from its name) without
    re-encoding."""
    import av

    tmp = Path(dst).with_name(f".{Path(dst).name}.tmp")
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        with av.open(str(tmp), "w", format=_format_of(dst)) as out:
            if "comment" in inp.metadata:  # stream and first seq: a stopped renderer resumes from this file
                out.metadata["comment"] = inp.metadata["comment"]
            target = out.add_stream_from_template(stream)
            copied = 0
            for packet in inp.demux(stream):
                if packet.size and (limit is None or copied < limit):
                    packet.stream = target
                    out.mux(packet)
                    copied += 1
    os.replace(tmp, dst)


def _format_of(path: str | Path) -> str | None:
    import av

    suffix = Path(path).suffix.lower().lstrip(".")
    try:
        av.format.ContainerFormat(suffix, "w")
        return suffix
    except (ValueError, av.error.FFmpegError):
        return {"mkv": "matroska", "m4v": "mp4", "mpg": "mpeg", "ts": "mpegts"}.get(suffix)


def finish_kept(output: str | Path, kept: PartialVideo, count: int) -> None:
    """Finish the output of a resumed run that wrote no frame of its own: the first ``count`` frames of what the
    interrupted run left (its partial video, or the output itself)."""
    if kept.path != Path(output) or count < kept.frames:
        remux(kept.path, output, limit=count)
    if kept.path == partial_path(output):
        kept.path.unlink()


class PoseWriter:
    """The JSON Lines pose file: each record flushed as written; ``resume`` keeps the records of an interrupted
    run below a seq (:meth:`keep_below`)."""

    def __init__(self, path: str, resume: bool = False):
        self.path = Path(path)
        self.head, self.records = _read_lines(self.path) if resume else (None, [])
        self.fh = None
        if not resume:
            self.fh = open(self.path, "w")  # noqa: SIM115 - closed in close()

    def header(self, header: dict) -> None:
        """Write the file's header line (stream.posefile) unless it has one."""
        if self.head is None:
            self.head = header
            self.fh.write(json.dumps(header, separators=(",", ":")) + "\n")

    @property
    def next_seq(self) -> int | None:
        """One past the last frame in the file (None when empty)."""
        return self.records[-1]["frame"] + 1 if self.records else None

    def keep_below(self, seq: int | None) -> list[dict]:
        """Keep only the records of frames below ``seq`` (all for None), rewrite the file to them, open it for
        appending; returns them."""
        if seq is not None:
            self.records = [r for r in self.records if r["frame"] < seq]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.head = self.head if self.records else None  # a header without a frame after it goes with them
        with open(tmp, "w") as fh:
            for record in ([self.head] if self.head else []) + self.records:
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        os.replace(tmp, self.path)
        self.fh = open(self.path, "a")  # noqa: SIM115 - closed in close()
        return self.records

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def _read_lines(path: Path) -> tuple[dict | None, list[dict]]:
    """The header and the complete records of a pose file (a torn or malformed line ends it)."""
    head, records = None, []
    if not path.exists():
        return head, records
    with open(path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
                if not records and head is None and record.get("kind") == "header":
                    head = record
                    continue
                int(record["frame"])
            except (ValueError, KeyError, TypeError, AttributeError):
                break
            records.append(record)
    return head, records


def resume_point(poses: PoseWriter | None, video: PartialVideo | None, want_video: bool) -> int | None:
    """The first seq an interrupted run did not write to every file it keeps: the least of the files' ends, or,
    when one of them holds nothing, the first seq of the others (None: nothing written anywhere)."""
    starts, ends = [], []
    if poses is not None:
        ends.append(poses.next_seq)
        if poses.records:
            starts.append(int(poses.records[0]["frame"]))
    if want_video:
        ends.append(video.first_seq + video.frames if video else None)
        if video:
            starts.append(video.first_seq)
    if not starts:
        return None
    return min(starts) if None in ends else min(ends)
