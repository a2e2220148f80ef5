"""``python -m tools.pyskl DIR -o dataset.pkl``: a PYSKL skeleton data set from a folder of videos.

Every video is run through ``engine.Engine`` with tracking (the model loaded once for all videos) and becomes
one PYSKL annotation, exactly as ``posestream video --pyskl`` writes it (see ``stream/pyskl.py`` for the format
and PYSKL's rules it follows); the file is PYSKL's data set ``{"split": {...}, "annotations": [...]}``, ready
for ``PoseDataset(ann_file=..., split=NAME)``.

Labels: videos in subfolders of DIR take the index of their top-level subfolder (sorted by name; the names are
written to ``OUT.labels.txt``, one per line, as PYSKL's label maps); videos directly in DIR get ``--label``. Or
``--list FILE`` in the format of PYSKL's ``custom_2d_skeleton.py``: one ``path`` or ``path label`` per line,
paths relative to DIR.

Splits: ``--split NAME=FRACTION`` (repeatable; each label's videos shuffled with ``--seed`` and cut in these
proportions, so every split gets every class) or ``--split NAME=@FILE`` (the frame_dirs listed in FILE).
Default: ``train=0.8 val=0.2``.

A video that cannot be opened is skipped, a truncated one keeps its decodable frames; both are named on stderr
and the exit code is 3 (the data set holds every other video). Exit 2: bad arguments or no videos.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.posefile import PoseRecord
from stream.pyskl import annotation, frame_dir_of, write_pickle

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
DEFAULT_SPLIT = ("train=0.8", "val=0.2")


@dataclass
class Video:
    path: Path
    label: int
    frame_dir: str


def _from_list(root: Path, list_file: Path) -> list[Video]:
    rows = [line.split() for line in list_file.read_text().splitlines() if line.strip()]
    if any(len(r) not in (1, 2) for r in rows) or len({len(r) for r in rows}) > 1:
        raise ValueError(f"{list_file}: every line must be 'path' or every line 'path label' (PYSKL's video list)")
    try:
        return [Video(root / r[0], int(r[1]) if len(r) == 2 else -1, frame_dir_of(r[0])) for r in rows]
    except ValueError:
        raise ValueError(f"{list_file}: labels must be integers") from None


def find_videos(root: Path, list_file: Path | None = None, label: int = -1) -> tuple[list[Video], list[str] | None]:
    """The videos to process and, when labels come from subfolders, the class names (index = label)."""
    if list_file is not None:
        videos, classes = _from_list(root, list_file), None
    else:
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        in_folders = bool(paths) and all(len(p.relative_to(root).parts) > 1 for p in paths)
        classes = sorted({p.relative_to(root).parts[0] for p in paths}) if in_folders else None
        videos = [Video(p, classes.index(p.relative_to(root).parts[0]) if classes else label, frame_dir_of(p))
                  for p in paths]
    if not videos:
        raise ValueError(f"{root}: no videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
    seen: dict[str, Path] = {}
    for v in videos:
        if v.frame_dir in seen:
            raise ValueError(f"{seen[v.frame_dir]} and {v.path} have the same PYSKL frame_dir {v.frame_dir!r} "
                             "(the name up to its first dot): rename one")
        seen[v.frame_dir] = v.path
    return videos, classes


def split_spec(text: str) -> tuple[str, float | Path]:
    """``NAME=FRACTION`` or ``NAME=@FILE`` -> (name, fraction or path)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=FRACTION or NAME=@FILE, got {text!r}")
    if value.startswith("@"):
        return name, Path(value[1:])
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=FRACTION or NAME=@FILE, got {text!r}") from None
    if not 0 <= fraction <= 1:
        raise argparse.ArgumentTypeError(f"a split fraction must lie in [0, 1], got {text!r}")
    return name, fraction


def make_split(videos: list[Video], specs: list[tuple[str, float | Path]], seed: int = 0) -> dict[str, list[str]]:
    """PYSKL's ``split``: name -> frame_dirs; fractions are cut per label (stratified) after a seeded shuffle.
    Made before the (long) run, so that a mistake in it stops the run at once."""
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"split names repeat: {names}")
    if all(isinstance(v, Path) for _, v in specs):
        known = {v.frame_dir for v in videos}
        split = {}
        for name, path in specs:
            listed = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            unknown = sorted(set(listed) - known)
            if unknown:
                raise ValueError(f"{path}: not among the videos: {', '.join(unknown[:5])}")
            split[name] = listed
        return split
    if any(isinstance(v, Path) for _, v in specs):
        raise ValueError("--split: use all NAME=FRACTION or all NAME=@FILE, not both")
    fractions = np.array([v for _, v in specs], np.float64)
    if fractions.sum() > 1 + 1e-9:
        raise ValueError(f"--split fractions add up to {fractions.sum():g} > 1")
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {name: [] for name in names}
    for label in sorted({v.label for v in videos}):
        dirs = sorted(v.frame_dir for v in videos if v.label == label)
        dirs = [dirs[i] for i in rng.permutation(len(dirs))]
        cuts = np.round(np.concatenate([[0], np.cumsum(fractions)]) * len(dirs)).astype(int)
        for name, lo, hi in zip(names, cuts[:-1], cuts[1:]):
            split[name] += dirs[lo:hi]
    return split


def extract(engine, video: Video, batch: int) -> tuple[list[PoseRecord], tuple[int, int], str | None]:
    """Tracked pose records of every decodable frame of ``video``, its frame shape (h, w) and its source error."""
    from stream.sources import open_source

    source = open_source(str(video.path))
    records: list[PoseRecord] = []
    shape = None
    chunk: list[np.ndarray] = []

    def flush() -> None:
        for poses in engine.infer(chunk, stream_ids=[video.frame_dir] * len(chunk)):
            records.append(PoseRecord(stream=video.frame_dir, frame=len(records), layout=poses.layout, poses=poses))
        chunk.clear()

    try:
        for frame in source.frames():
            shape = shape or frame.image.shape[:2]
            chunk.append(frame.image)
            if len(chunk) == batch:
                flush()
        if chunk:
            flush()
    finally:
        source.close()
        engine.reset(video.frame_dir)
    if shape is None:
        return records, (0, 0), source.error or f"{video.path}: no decodable frame"
    return records, shape, source.error


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.pyskl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, metavar="DIR", help="folder of videos (class subfolders give labels)")
    p.add_argument("-o", "--output", type=Path, required=True, help="PYSKL data set to write, e.g. dataset.pkl")
    p.add_argument("--list", type=Path, help="PYSKL video list: 'path' or 'path label' per line, relative to DIR")
    p.add_argument("--label", type=int, default=-1, help="label of videos directly in DIR (default -1: unknown)")
    p.add_argument("--split", type=split_spec, action="append", metavar="NAME=FRACTION|NAME=@FILE",
                   help="a split (repeatable; default train=0.8 val=0.2)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of fractional splits (default 0)")
    p.add_argument("--max-persons", type=int, default=2, help="tracks kept per video, most frames first (default 2)")
    p.add_argument("--model", default="default", help="zoo NAME, PATH.safetensors, PATH.onnx, PATH.engine or random:NAME")
    p.add_argument("--model-args", type=json.loads, default=None, help="build overrides for random:NAME")
    p.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default auto)")
    p.add_argument("--max-batch", type=int, default=8, help="frames per inference batch (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _engine(args):
    import warnings

    from engine import Engine
    from stream.stages import model_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: model_spec says so loudly
        return Engine(model_spec(args.model), args.backend, max_batch=args.max_batch, tracking=True,
                      model_args=args.model_args)


def run(args) -> int:
    from tqdm import tqdm

    from stream.sources import SourceError

    videos, classes = find_videos(args.root, args.list, args.label)
    split = make_split(videos, args.split or [split_spec(s) for s in DEFAULT_SPLIT], args.seed)
    if not args.output.resolve().parent.is_dir():
        raise ValueError(f"cannot write {args.output}: no such folder")
    if args.max_persons < 1:
        raise ValueError(f"--max-persons must be >= 1, got {args.max_persons}")
    engine = _engine(args)
    anns, done, problems = [], [], []
    try:
        for video in tqdm(videos, unit="video", disable=args.no_progress, file=sys.stderr, dynamic_ncols=True):
            try:
                records, shape, error = extract(engine, video, args.max_batch)
            except SourceError as err:
                problems.append(str(err))
                continue
            if error:
                problems.append(error)
            if records:
                anns.append(annotation(records, video.frame_dir, shape, video.label, args.max_persons))
                done.append(video)
    finally:
        engine.close()
    if not anns:
        raise ValueError(f"{args.root}: no video could be read")
    kept = {v.frame_dir for v in done}
    split = {name: [d for d in dirs if d in kept] for name, dirs in split.items()}
    write_pickle({"split": split, "annotations": anns}, args.output)
    if classes is not None:
        args.output.with_suffix(".labels.txt").write_text("\n".join(classes) + "\n")
    for problem in problems:
        print(f"tools.pyskl: {problem}", file=sys.stderr)
    frames = sum(a["total_frames"] for a in anns)
    print(f"tools.pyskl: wrote {args.output}: {len(anns)} videos, {frames} frames"
          + (f", {len(classes)} classes" if classes else "") + (f"; {len(problems)} with problems" if problems else ""),
          file=sys.stderr)
    return 3 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as err:
        print(f"tools.pyskl: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
