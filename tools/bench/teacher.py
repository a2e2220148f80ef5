"""``python -m tools.bench teacher``: the labelling pipeline's speed and coverage (``posestream label``'s work).

For each ``--kind``, runs ``stream.label.label_video`` on ``--frames`` frames of ``--video`` from ``--start`` into a
temporary labels file (decoding, the teacher process's start and warm-up, labelling and writing, all of it) and
prints JSON lines:

* ``label_fps``: labelled frames / wall seconds of the whole run, start-up included (what a user waits);
* ``steady_fps``: frames / seconds from the first labelled frame's end to the last's (start-up excluded);
* ``cpu_s_per_frame``: CPU seconds of this process and the teacher's per labelled frame (less sensitive to other
  work on the machine than wall time);
* ``persons_per_frame`` and ``ignore_per_frame``;
* with ``--checked FILE`` (person boxes drawn by eye, as ``tests/data/vtest_40-63.persons.json``; its frame
  numbers are the video's): ``checked_found``, the share of those people labelled with 80% of their confident
  joints inside the box (``checked_found_visible``: of those not marked hard), and ``checked_extra``, labelled
  people where no box was drawn, per checked frame.

Examples::

    python -m tools.bench teacher --video vtest.avi --start 550 --frames 245 --kind heavy --kind full
    python -m tools.bench teacher --video vtest.avi --start 550 --frames 100 --tiles 3 --detect-every 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.blazepose import SearchParams
from tools.bench.common import emit, machine


def joints_inside(xy: np.ndarray, score: np.ndarray, box, grow: float = 0.15, min_score: float = 0.5) -> float:
    """Share of one person's confident joints (score >= ``min_score``, at least 5) inside ``box`` (x0, y0, x1, y1)
    grown by ``grow`` of its size each side; 0 when fewer than 5 are confident."""
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) * grow, (y1 - y0) * grow
    p = xy[score >= min_score]
    if len(p) < 5:
        return 0.0
    return float(((p[:, 0] >= x0 - gx) & (p[:, 0] <= x1 + gx) & (p[:, 1] >= y0 - gy) & (p[:, 1] <= y1 + gy)).mean())


def match_checked(poses, boxes, least: float = 0.8) -> list[int]:
    """For each checked box in turn, the index of the first unused labelled person with ``least`` of its confident
    joints inside it (the one with the most), or -1."""
    used, out = set(), []
    for box in boxes:
        best = max(((joints_inside(poses.xy[n], poses.score[n], box), n) for n in range(len(poses))
                    if n not in used), default=(0.0, -1))
        out.append(best[1] if best[0] >= least else -1)
        used.add(out[-1])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench teacher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="the footage")
    p.add_argument("--start", type=int, default=0, help="first frame (default 0)")
    p.add_argument("--frames", type=int, default=60, help="frames to label (default 60)")
    p.add_argument("--every", type=int, default=1, help="label every n-th frame (default 1)")
    p.add_argument("--kind", action="append", choices=("heavy", "full"), help="teacher model, repeatable "
                   "(default: heavy)")
    p.add_argument("--tiles", type=lambda t: tuple(int(v) for v in t.split(",")), default=SearchParams().tiles)
    p.add_argument("--detect-every", type=int, default=SearchParams().detect_every)
    p.add_argument("--checked", help="person boxes drawn by eye (JSON, the video's frame numbers)")
    p.add_argument("--keep", help="also keep the labels file of the last kind here")
    return p


def _checked(labels: Path, checked: dict) -> dict:
    from stream.posefile import read_pose_file

    records = {r.frame: r for r in read_pose_file(labels)}
    out = dict.fromkeys(("found", "total", "found_visible", "visible", "extra", "frames"), 0)
    for frame, people in checked["frames"].items():
        if int(frame) not in records:
            continue
        poses = records[int(frame)].poses
        match = match_checked(poses, [q["box"] for q in people])
        out["found"] += sum(m >= 0 for m in match)
        out["total"] += len(match)
        out["found_visible"] += sum(m >= 0 for m, q in zip(match, people) if not q.get("hard"))
        out["visible"] += sum(not q.get("hard") for q in people)
        out["extra"] += len(poses) - sum(m >= 0 for m in match)
        out["frames"] += 1
    return out


def run(args, kind: str, out: Path) -> dict:
    from stream.label import LabelConfig, label_video

    search = replace(SearchParams(), tiles=args.tiles, detect_every=args.detect_every)
    config = LabelConfig(teacher=kind, every=args.every, start=args.start,
                         stop=args.start + args.frames * args.every, search=search, progress=False)
    marks: list[float] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    summary = label_video(args.video, out, config, progress=lambda done, total: marks.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(cpu0, cpu1))
    steady = (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else 0.0
    return {"summary": summary, "wall": wall, "cpu": cpu, "steady": steady}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from stream.label import LabelError

    checked = json.loads(Path(args.checked).read_text()) if args.checked else None
    for kind in args.kind or ["heavy"]:
        load0 = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="posestream-bench-teacher-") as tmp:
            out = Path(args.keep) if args.keep else Path(tmp) / "labels.jsonl"
            if out.exists():
                out.unlink()
            try:
                r = run(args, kind, out)
            except LabelError as err:
                print(f"tools.bench teacher: {err}", file=sys.stderr)
                return 2
            s = r["summary"]
            common = dict(machine=machine(), video=os.path.basename(args.video), start=args.start, every=args.every,
                          frames=s.labelled, teacher=s.teacher, tiles=list(args.tiles),
                          detect_every=args.detect_every, load_avg_before=[round(v, 2) for v in load0],
                          load_avg_after=[round(v, 2) for v in os.getloadavg()])
            emit("teacher", "label_fps", s.labelled / r["wall"], "frames/s", **common, wall_s=round(r["wall"], 1))
            emit("teacher", "steady_fps", r["steady"], "frames/s", **common)
            emit("teacher", "cpu_s_per_frame", r["cpu"] / max(s.labelled, 1), "s", **common)
            emit("teacher", "persons_per_frame", s.persons / max(s.labelled, 1), "persons", **common)
            emit("teacher", "ignore_per_frame", s.ignore / max(s.labelled, 1), "boxes", **common)
            if checked:
                c = _checked(out, checked)
                emit("teacher", "checked_found", c["found"] / max(c["total"], 1), "share", **common,
                     found=c["found"], total=c["total"], checked_frames=c["frames"])
                emit("teacher", "checked_found_visible", c["found_visible"] / max(c["visible"], 1), "share",
                     **common, found=c["found_visible"], total=c["visible"])
                emit("teacher", "checked_extra", c["extra"] / max(c["frames"], 1), "persons/frame", **common)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
