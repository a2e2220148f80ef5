"""The product's main job on its default (``make demo``).

1. makes a short sample clip with several people (``tools.synth``, a seed never used in training) and its
   ground truth: ``out/sample.mp4`` + ``out/sample.gt.jsonl``;
2. runs ``posestream video`` on it through the full multi-process pipeline (capture, engine and renderer
   processes over ipc://, lossless), writing ``out/demo.mp4`` and ``out/demo.jsonl`` and printing the
   pipeline's summary (frames, fps, latency percentiles, drops, errors);
3. prints the accuracy of ``out/demo.jsonl`` against the ground truth (``tools.evaluate``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from stream.posefile import read_pose_file, write_record
from tools.cli import count_range
from tools.synth.__main__ import write_video
from tools.synth.generate import generate_clip

DEMO_SEED = 20261123  # held out: training draws seeds from 10**10 upwards (tools/train/loop.py)


def make_sample(out: Path, seed: int, frames: int, persons: tuple[int, int], layout: str,
                size: tuple[int, int] = (640, 480)) -> tuple[Path, Path]:
    """Write the sample clip and its ground truth under ``out`` (kept if already there for the same settings)."""
    video, gt = out / "sample.mp4", out / "sample.gt.jsonl"
    stamp = out / "sample.json"
    settings = {"seed": seed, "frames": frames, "persons": list(persons), "layout": layout, "size": list(size)}
    if video.is_file() and gt.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return video, gt
    records = []

    def frames_of_clip():
        for image, record in generate_clip(seed, persons=persons, frames=frames, size=size, layout=layout):
            records.append(record)
            yield image

    write_video(video, frames_of_clip(), fps=30.0)
    with gt.open("w") as fh:
        for record in records:
            write_record(fh, record)
    stamp.write_text(json.dumps(settings))
    return video, gt


def clip_intrinsics(gt: Path) -> str:
    """``fx,fy,cx,cy`` of the clip's camera (fixed for a clip) from its ground truth, for ``--intrinsics``."""
    k = next(iter(read_pose_file(gt))).intrinsics
    return ",".join(f"{k[name]:.4f}" for name in ("fx", "fy", "cx", "cy"))


def headline(summary: dict) -> dict:
    """The few figures worth a line: OKS AP, MPJPE, PCKh and joint F1 where the summary has them."""
    out = {"frames": summary["frames"], "people": summary["gt_persons"]}
    if "oks" in summary:
        out["oks_ap"] = round(summary["oks"]["AP"], 4)
    for key in ("mpjpe_mm", "pa_mpjpe_mm", "mpjpe_image_plane_mm", "pck3d@150mm", "pckh@0.5"):
        if key in summary:
            out[key] = round(summary[key], 4)
    out["joint_f1"] = round(summary["joints"]["f1"], 4)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out", help="output folder (default out/)")
    p.add_argument("--model", default="default", help="model spec passed to posestream video (default: default)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"sample clip seed (default {DEMO_SEED}, held out)")
    p.add_argument("--frames", type=int, default=150, help="sample clip length in frames (default 150, 5 s)")
    p.add_argument("--persons", type=count_range, default="3-5", help="people in the sample clip, N or MIN-MAX (default 3-5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = args.persons
    print(f"posestream demo: making a {args.frames}-frame sample clip with {lo}-{hi} people "
          f"(seed {args.seed}) in {out}/", flush=True)
    video, gt = make_sample(out, args.seed, args.frames, args.persons, "panoptic19")
    cmd = [sys.executable, "-m", "stream.cli", "video", str(video), "-o", str(out / "demo.mp4"),
           "--poses", str(out / "demo.jsonl"), "--model", args.model, "--intrinsics", clip_intrinsics(gt)]
    print("posestream demo: $ posestream " + " ".join(cmd[3:]), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        print(f"posestream demo: the pipeline exited with status {rc}", file=sys.stderr)
        return rc
    from tools.evaluate import evaluate

    summary = evaluate(read_pose_file(out / "demo.jsonl"), read_pose_file(gt))
    (out / "demo.accuracy.json").write_text(json.dumps(summary, indent=2))
    print("posestream demo: accuracy against the clip's ground truth: " + json.dumps(headline(summary)))
    print(f"posestream demo: wrote {out}/demo.mp4 (annotated video) and {out}/demo.jsonl (poses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
