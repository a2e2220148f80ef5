"""``posestream label``: the BlazePose teacher labels a video's frames into a labels file.

A labels file is a pose file (``stream.posefile``: JSON Lines) whose first line is a header::

    {"kind": "header", "format": "posestream.labels", "format_version": 1, "source": "/abs/clip.mp4",
     "teacher": "blazepose_heavy", "layout": "blazepose33", "frame_size": [w, h], "rate": [num, den],
     "every": N, "start": F, "intrinsics": {"fx", "fy", "cx", "cy"}, "proposals": "none",
     "search": {...SearchParams...}, "created": "ISO time"}

then one record per labelled frame (frames ``start, start + every, ...`` before ``stop``, numbered in decoding
order from 0): layout ``blazepose33``, keypoints ``[x, y, confidence]``, ``keypoints_3d`` in camera
millimetres, ``"teacher"`` and ``"ignore"`` (boxes where the teacher saw a person it could not label).

Resumable: run the same command again and it continues after the last complete record (a torn last line, from a
killed run, is cut); a file made with another source, teacher, ``every`` or ``start`` is refused, naming the
field. Exit codes as ``posestream video``: 0 done, 1 the teacher failed mid-way (the file is complete up to the
last frame), 2 the input, the output or the teacher cannot be opened, 3 the input ended early (every decodable
frame labelled), 130 interrupted (the file is complete up to the last frame).

The teacher runs in its own environment: make it once with ``posestream teacher setup`` (``engine.teacher``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.blazepose import SearchParams
from stream.posefile import PoseRecord, is_header
from stream.stages import EXIT_FAIL, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_TRUNCATED

LABELS_FORMAT, LABELS_VERSION = "posestream.labels", 1
RESUME_KEYS = ("source", "teacher", "every", "start")


class LabelError(ValueError):
    """The labelling cannot start (input, output or teacher); the message names the problem."""


@dataclass
class LabelConfig:
    """Settings of one labelling run (``posestream label``'s options).

    Attributes:
        teacher: "auto" (heavy where present, else full), "heavy" or "full".
        every: label every n-th frame.
        start, stop: label frames start <= i < stop (decoding order from 0; stop None: to the end).
        proposals: a posestream model spec whose detections are extra proposals, or "none".
        intrinsics: (fx, fy, cx, cy) frame pixels for 3D, or None (f = frame width, c = frame centre).
        threads: the teacher's LiteRT threads.
        python: a teacher environment's Python (default: ``.venv-teacher``).
        search: how the teacher looks for people (tiles, detector cadence, ...).
        progress: show a progress bar on stderr.
    """

    teacher: str = "auto"
    every: int = 1
    start: int = 0
    stop: int | None = None
    proposals: str = "none"
    intrinsics: tuple[float, float, float, float] | None = None
    threads: int = 2
    python: str | None = None
    search: SearchParams = field(default_factory=SearchParams)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.every < 1 or self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise ValueError(f"label: need every >= 1, start >= 0, stop > start, got every={self.every} "
                             f"start={self.start} stop={self.stop}")


@dataclass
class LabelSummary:
    """What a run did: ``labelled`` frames this run (``resumed`` ones were already in the file), ``persons`` and
    ``ignore`` regions written this run, ``seconds`` of the run after the teacher's start (decoding, labelling,
    writing), ``error`` (the input ended early, or the teacher failed), ``interrupted``, and the exit code."""

    output: str
    teacher: str = ""
    labelled: int = 0
    resumed: int = 0
    persons: int = 0
    ignore: int = 0
    seconds: float = 0.0
    error: str | None = None
    interrupted: bool = False
    exit_code: int = EXIT_OK

    @property
    def fps(self) -> float:
        return self.labelled / self.seconds if self.seconds > 0 else 0.0


def _source_id(source: str) -> str:
    return str(Path(source).resolve()) if os.path.exists(source) else source


def scan_labels(path: Path) -> tuple[dict | None, int | None, int]:
    """(header, last complete frame, bytes up to the end of that record) of an existing labels file; a torn or
    malformed last line is left out (the caller cuts it); a malformed line before the last one is an error."""
    header, last, good = None, None, 0
    with path.open("rb") as fh:
        lines = fh.readlines()
    for lineno, raw in enumerate(lines, 1):
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("no line end")
            obj = json.loads(raw) if raw.strip() else None
        except ValueError as err:
            if lineno == len(lines):
                break
            raise LabelError(f"{path}:{lineno}: malformed line ({err}); not a labels file this command can "
                             f"resume") from None
        if obj is not None:
            if lineno == 1 and is_header(obj):
                header = obj
            elif header is None:
                raise LabelError(f"{path}: no labels header on the first line (not made by posestream label)")
            else:
                last = int(obj["frame"])
        good += len(raw)
    return header, last, good


def _check_resume(path: Path, header: dict | None, expected: dict) -> None:
    if header is None:
        return
    if header.get("format") != LABELS_FORMAT:
        raise LabelError(f"{path}: format {header.get('format')!r}, not {LABELS_FORMAT!r}")
    for key in RESUME_KEYS:
        if header.get(key) != expected[key]:
            raise LabelError(f"{path}: was made with {key} {header.get(key)!r}, this run has {expected[key]!r}; "
                             f"use another -o, or delete the file to start again")


def _wanted(index: int, config: LabelConfig) -> bool:
    return index >= config.start and (index - config.start) % config.every == 0 and \
        (config.stop is None or index < config.stop)


def _total(source, config: LabelConfig, resumed_after: int | None) -> int | None:
    """Frames this run will label (for the progress bar), or None when the source does not say."""
    declared = getattr(source, "declared", 0) or len(getattr(source, "files", [])) or 0
    end = min(declared, config.stop) if declared and config.stop is not None else (declared or config.stop)
    if not end:
        return None
    first = config.start if resumed_after is None else max(config.start, resumed_after + 1)
    return sum(1 for i in range(first, end) if _wanted(i, config))


class _Proposer:
    """Person boxes [M, 4] from a posestream model (``--proposals MODEL``)."""

    def __init__(self, spec: str):
        import warnings

        from engine import Engine

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.engine = Engine(spec, "auto", max_batch=1)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        from engine.tracking import keypoint_boxes

        poses = self.engine.infer([frame])[0]
        keep = poses.person_score >= 0.3
        return keypoint_boxes(poses.xy[keep], poses.score[keep] >= 0.2).reshape(-1, 4)


def label_video(source: str, output: str | Path, config: LabelConfig | None = None,
                progress: Callable[[int, int | None], None] | None = None,
                stop: threading.Event | None = None) -> LabelSummary:
    """Label ``source`` (a video file, image folder, camera or URL) into the labels file ``output``, resuming it
    when it exists. ``progress(done, total)`` is called after each labelled frame (``total`` None when unknown);
    ``stop`` ends the run after the current frame. Raises LabelError when the input, the output or the teacher
    cannot be opened; any other outcome is in the returned summary (``exit_code``)."""
    from engine.teacher import Teacher, TeacherError
    from stream.sources import SourceError, open_source

    config = config or LabelConfig()
    output = Path(output)
    if not output.resolve().parent.is_dir():
        raise LabelError(f"cannot write {output}: no such folder")
    header, last, good = scan_labels(output) if output.exists() and output.stat().st_size else (None, None, 0)
    try:
        src = open_source(source)
    except SourceError as err:
        raise LabelError(str(err)) from None
    try:
        teacher = Teacher(kind=config.teacher, python=config.python, threads=config.threads, params=config.search,
                          intrinsics=config.intrinsics)
    except (TeacherError, ValueError) as err:
        src.close()
        raise LabelError(str(err)) from None
    try:
        expected = {"source": _source_id(source), "teacher": teacher.name, "every": config.every,
                    "start": config.start}
        _check_resume(output, header, expected)
        proposer = _Proposer(config.proposals) if config.proposals != "none" else None
        return _label_loop(src, teacher, proposer, output, config, (header, last, good), expected,
                           progress, stop or threading.Event())
    except (ValueError, OSError) as err:
        raise LabelError(str(err).splitlines()[0]) from None
    finally:
        teacher.close()
        src.close()


def _header(src, teacher, config: LabelConfig, expected: dict, frame: np.ndarray) -> dict:
    from engine.postprocess import frame_intrinsics

    h, w = frame.shape[:2]
    fx, fy, cx, cy = frame_intrinsics((w, h), config.intrinsics)
    return {"kind": "header", "format": LABELS_FORMAT, "format_version": LABELS_VERSION, **expected,
            "layout": "blazepose33", "frame_size": [w, h], "rate": list(src.rate) if src.rate else None,
            "intrinsics": {"fx": fx, "fy": fy, "cx": cx, "cy": cy},
            "proposals": config.proposals, "search": asdict(config.search),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _label_loop(src, teacher, proposer, output: Path, config: LabelConfig, existing: tuple, expected: dict,
                progress, stop: threading.Event) -> LabelSummary:
    """Label the wanted frames after the file's last one, appending records; ``existing``: scan_labels' answer."""
    import time

    from tqdm import tqdm

    from engine.teacher import TeacherError
    from stream.posefile import write_record

    header, last, good = existing
    summary = LabelSummary(str(output), teacher.name)
    resumed = 0 if last is None else sum(1 for i in range(config.start, last + 1) if _wanted(i, config))
    summary.resumed = resumed
    total = _total(src, config, last)
    bar = tqdm(total=total, unit="frame", disable=not config.progress, file=sys.stderr, dynamic_ncols=True,
               desc=f"label {teacher.name}")
    name = Path(str(src.name).rstrip("/")).stem or "stream"
    if output.exists():
        os.truncate(output, good)                      # a torn last line (a killed run) is cut
    t0 = time.perf_counter()
    with open(output, "a", encoding="utf-8", newline="\n") as fh:
        for index, item in enumerate(src.frames()):
            if stop.is_set():
                summary.interrupted = True
                break
            if config.stop is not None and index >= config.stop:
                break
            if not _wanted(index, config) or (last is not None and index <= last):
                continue
            if header is None:
                header = _header(src, teacher, config, expected, item.image)
                fh.write(json.dumps(header) + "\n")
            try:
                result = teacher.label(item.image, proposer(item.image) if proposer else None)
            except TeacherError as err:
                summary.error, summary.exit_code = str(err), EXIT_FAIL
                break
            record = PoseRecord(name, index, "blazepose33", result.poses, pts=item.pts, teacher=teacher.name,
                                ignore=result.ignore)
            write_record(fh, record)
            fh.flush()                                 # whole lines only, should the run be killed
            summary.labelled += 1
            summary.persons += len(result.poses)
            summary.ignore += len(result.ignore)
            bar.update(1)
            if progress:
                progress(summary.labelled, total)
    summary.seconds = time.perf_counter() - t0
    bar.close()
    if summary.exit_code == EXIT_OK:
        if summary.interrupted:
            summary.exit_code = EXIT_INTERRUPTED
        elif src.error:
            summary.error, summary.exit_code = src.error, EXIT_TRUNCATED
    return summary


def intrinsics_arg(text: str) -> tuple[float, ...]:
    """``--intrinsics fx,fy,cx,cy``: four numbers, or an argparse error naming the option."""
    return _floats(text, 4, "--intrinsics")


def _floats(text: str, count: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{what}: expected {count} comma-separated numbers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posestream label", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 1)[1])
    p.add_argument("source", help="video file, image folder, webcam:N or URL")
    p.add_argument("-o", "--output", required=True, help="labels file (JSON Lines), resumed when it exists")
    p.add_argument("--teacher", default="auto", choices=("auto", "heavy", "full"),
                   help="BlazePose landmark model: heavy (more accurate; labelling takes ~1.6x as long), full, or "
                        "auto (heavy where the teacher environment has it; default)")
    p.add_argument("--every", type=int, default=1, help="label every n-th frame (default 1)")
    p.add_argument("--start", type=int, default=0, help="first frame to label (default 0)")
    p.add_argument("--stop", type=int, default=None, help="label frames before this one (default: to the end)")
    p.add_argument("--proposals", default="none",
                   help="a posestream model (zoo NAME, PATH, ...) whose detections the teacher also looks at, or "
                        "none (default)")
    p.add_argument("--intrinsics", type=intrinsics_arg,
                   help="camera fx,fy,cx,cy in frame pixels for 3D (default: f = frame width, c = frame centre)")
    p.add_argument("--threads", type=int, default=2, help="the teacher's threads (default 2)")
    p.add_argument("--teacher-python", help="a teacher environment's Python (default: .venv-teacher/bin/python)")
    d = SearchParams()
    p.add_argument("--tiles", type=lambda t: tuple(int(v) for v in t.split(",")), default=d.tiles,
                   help=f"detector passes, tiles across the frame's shorter side, e.g. 2,3 (default "
                        f"{','.join(map(str, d.tiles))}); fewer or smaller numbers: faster, small people missed")
    p.add_argument("--detect-every", type=int, default=d.detect_every,
                   help=f"run the detector on every n-th labelled frame, tracks in between (default "
                        f"{d.detect_every}); 2-3 is faster, people who appear are found a little later")
    p.add_argument("--max-tilt", type=lambda t: None if t == "none" else float(t), default=d.max_tilt,
                   help=f"people tilted more than this many degrees from upright become ignore regions (default "
                        f"{d.max_tilt:g}; 'none' labels people lying down, and coats on the grass)")
    p.add_argument("--no-refine", action="store_true", help="no second look at a person whose first landmarks "
                   "moved its region (faster, less accurate on new people)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def label_main(argv: list[str]) -> int:
    from stream.stages import stop_on_signals

    args = build_parser().parse_args(argv)
    try:
        search = replace(SearchParams(), tiles=args.tiles, detect_every=args.detect_every, max_tilt=args.max_tilt,
                         refine=not args.no_refine)
        config = LabelConfig(teacher=args.teacher, every=args.every, start=args.start, stop=args.stop,
                             proposals=args.proposals, intrinsics=args.intrinsics, threads=args.threads,
                             python=args.teacher_python, search=search, progress=not args.no_progress)
    except ValueError as err:
        print(f"posestream label: {err}", file=sys.stderr)
        return EXIT_INPUT
    stop = stop_on_signals()
    try:
        summary = label_video(args.source, args.output, config, stop=stop)
    except LabelError as err:
        print(f"posestream label: {err}", file=sys.stderr)
        return EXIT_INPUT
    print(f"posestream label: {summary.labelled} frames labelled ({summary.resumed} already in {args.output}), "
          f"{summary.persons} persons, {summary.ignore} ignore regions, {summary.teacher}, "
          f"{summary.fps:.2f} frames/s", file=sys.stderr)
    if summary.error:
        print(f"posestream label: {summary.error}", file=sys.stderr)
    return summary.exit_code


def teacher_main(argv: list[str]) -> int:
    """``posestream teacher setup|check``: make or inspect the teacher's environment."""
    from engine.teacher import TeacherError, check_teacher, default_venv, setup_teacher, teacher_python

    p = argparse.ArgumentParser(prog="posestream teacher", description="The BlazePose teacher's own environment "
                                "(its packages clash with posestream's): `setup` makes it once (PyPI; npm for the "
                                "heavy model), `check` says what it offers.")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("setup", help="make or complete the teacher environment")
    s.add_argument("--venv", default=str(default_venv()), help="where (default: %(default)s)")
    s.add_argument("--python", default=sys.executable, help="the Python that makes the venv (default: this one)")
    s.add_argument("--no-heavy", action="store_true", help="no heavy model (no npm download): full only")
    s.add_argument("--heavy-from", help="take pose_landmark_heavy.tflite from this file or folder (e.g. an "
                                        "unpacked @mediapipe/pose) instead of npm")
    s.add_argument("--solution", action="store_true", help="also MediaPipe's solution API with all its "
                                                           "dependencies (~400 MB; tools.bench peers needs it)")
    c = sub.add_parser("check", help="say what the teacher environment offers")
    c.add_argument("--venv", default=str(default_venv()), help="which (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        if args.action == "setup":
            info = setup_teacher(args.venv, args.python, heavy=not args.no_heavy, heavy_from=args.heavy_from,
                                 solution=args.solution, log=lambda m: print(m, file=sys.stderr))
        else:
            info = check_teacher(teacher_python(venv=args.venv))
    except TeacherError as err:
        print(f"posestream teacher {args.action}: {err}", file=sys.stderr)
        return EXIT_INPUT
    print(json.dumps({"python": str(info.python), "kinds": list(info.kinds), "litert": info.litert,
                      "models": str(info.models), "solution": info.solution}))
    return EXIT_OK
