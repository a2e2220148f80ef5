"""MediaPipe Pose timing, run by ``python -m tools.bench peers`` inside the teacher virtual environment.

Usage: ``PYTHON _mediapipe_child.py FRAMES.npy WARMUP``. FRAMES.npy holds uint8 [N,H,W,3] BGR frames; the first
WARMUP go through the model untimed, then each of the other N - WARMUP is timed (BGR->RGB + ``Pose.process``).
Prints one JSON object on stdout: ``{"frames", "total_s", "median_ms", "p90_ms", "detected", "mediapipe"}``.

MediaPipe Pose "full" (``model_complexity=1``, the only bundled model that works offline), tracking mode
(``static_image_mode=False``), one person. Imports only numpy, mediapipe, cv2, json, sys and time: this file runs
in an environment without posestream.
"""

import json
import sys
import time

import cv2
import mediapipe as mp
import numpy as np


def run(frames, warmup):
    """Seconds per timed frame (list of N - warmup floats) and how many of them had landmarks."""
    times, detected = [], 0
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                                enable_segmentation=False, min_detection_confidence=0.5,
                                min_tracking_confidence=0.5) as pose:
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            result = pose.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
                detected += result.pose_landmarks is not None
    return times, detected


def main(argv):
    if len(argv) != 2:
        print("usage: _mediapipe_child.py FRAMES.npy WARMUP", file=sys.stderr)
        return 2
    frames = np.load(argv[0], allow_pickle=False)
    warmup = int(argv[1])
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8 or len(frames) <= warmup:
        print(f"{argv[0]}: expected uint8 [N>{warmup},H,W,3], got {frames.dtype} {frames.shape}", file=sys.stderr)
        return 2
    times, detected = run(frames, warmup)
    ordered = sorted(times)
    print(json.dumps({"frames": len(times), "total_s": sum(times), "median_ms": ordered[len(ordered) // 2] * 1e3,
                      "p90_ms": ordered[int(len(ordered) * 0.9)] * 1e3, "detected": detected,
                      "mediapipe": mp.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
