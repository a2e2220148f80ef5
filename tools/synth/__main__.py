"""``python -m tools.synth``: write a synthetic clip (video) and its exact ground truth (pose JSON Lines)."""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from models.layouts import LAYOUTS
from stream.posefile import write_record
from tools.cli import count_range, frame_size
from tools.synth.generate import generate_clip


def write_video(path: Path, frames, fps: float) -> tuple[int, str]:
    """Encode BGR frames (an iterable of uint8 [H,W,3]) with PyAV; H.264 when available, else MPEG-4 Part 2.

    Returns (frames written, codec name).
    """
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    count = 0
    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18"} if codec == "libx264" else {}
                if codec == "mpeg4":
                    stream.bit_rate = 8_000_000
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count, codec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.synth",
        description="Render a synthetic multi-person clip with exact ground truth: 2D keypoints with visibility "
                    "(2 visible, 1 occluded, 0 outside the frame) in place of the score, 3D camera millimetres "
                    "and intrinsics, one JSON line per frame (the pose file schema of stream.posefile).")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same clip")
    p.add_argument("--persons", type=count_range, default="1-6",
                   help="number of people, N or MIN-MAX (default 1-6)")
    p.add_argument("--frames", type=int, default=300, help="number of frames (default 300)")
    p.add_argument("--size", type=frame_size, default="640x480",
                   help="frame size WIDTHxHEIGHT (default 640x480)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="coco17", help="keypoint layout of the ground truth")
    p.add_argument("-o", "--output", type=Path, help="video file to write (.mp4, .mkv, ...)")
    p.add_argument("--gt", type=Path, help="ground truth JSON Lines file to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.output is None and args.gt is None:
        print("tools.synth: nothing to do: give -o VIDEO and/or --gt FILE.jsonl", file=sys.stderr)
        return 2
    clip = generate_clip(args.seed, args.persons, args.frames, args.size, args.layout, args.fps)
    gt = args.gt.open("w") if args.gt else None

    def frames():
        for frame, record in clip:
            if gt is not None:
                write_record(gt, record)
            yield frame

    try:
        if args.output is not None:
            count, codec = write_video(args.output, frames(), args.fps)
            print(f"tools.synth: wrote {count} frames to {args.output} ({codec})")
        else:
            count = sum(1 for _ in frames())
    finally:
        if gt is not None:
            gt.close()
    if gt is not None:
        print(f"tools.synth: wrote {count} ground truth records to {args.gt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
