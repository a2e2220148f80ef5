"""``posestream``: the command line (console script ``posestream = stream.cli:main``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.stages import DEFAULT_PUBLISH, EXIT_INPUT, add_model, add_reconnect, capture_main, render_main, serve_main

EPILOG = """\
flows:
  posestream video IN.mp4 -o OUT.mp4 --poses OUT.jsonl     a file, lossless, three processes over ipc://
  posestream video IN.mp4 -o OUT.mp4 --pyskl IN.pkl --label 3 --volumes IN.npz     + skeleton-action export
  posestream run --source webcam:0 --publish tcp://127.0.0.1:5560 --show     live
  posestream serve | capture | render | subscribe          one stage each, over tcp (loopback by default)
  posestream view tcp://127.0.0.1:5560                     a live 2D + 3D viewer of a pose stream (Rerun)
  posestream teacher setup; posestream label IN.mp4 -o labels.jsonl     the BlazePose teacher labels footage
  posestream keys DIR --name NAME                          a CURVE key pair for tcp endpoints (see serve --help)
  posestream adapt clip.mp4 --name mycam --budget-min 60   your camera: teacher labels + fine-tuning, then --model mycam

exit codes:
  0    done
  1    a stage failed: a stage died (the closing summary's errors.crashed names it), the engine stopped
       answering, or the stream's end never reached the renderer
  2    an input cannot be opened: missing file or camera, unreadable model, a URL still unreachable after
       --reconnect tries (one line on stderr names it and the reason)
  3    the input ended early (truncated or corrupt video, a file URL whose server cannot resume it): every
       decodable frame was processed and the outputs are complete for those frames; stderr names the file
       and what happened
  130  interrupted (Ctrl-C / SIGTERM); output files are finished and playable
"""


def _video_parser(sub) -> None:
    p = sub.add_parser("video", help="annotate a video file (lossless)",
                       description="Run capture, engine and renderer as separate processes over ipc:// in "
                                   "lossless mode: every input frame becomes an output frame and a pose record.")
    p.add_argument("input", help="video file (or image folder)")
    p.add_argument("-o", "--output", required=True, help="annotated video, e.g. OUT.mp4")
    p.add_argument("--poses", help="JSON Lines pose file (one object per frame)")
    p.add_argument("--coco", help="COCO keypoint results JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--intrinsics", help="camera fx,fy,cx,cy in frame pixels, for 3D in millimetres (default: "
                                        "f = frame width, c = frame centre)")
    p.add_argument("--show", action="store_true", help="also show the annotated frames in a window")
    _add_view(p)
    add_reconnect(p)
    add_model(p)
    from stream.pyskl import add_arguments

    add_arguments(p)


def _add_view(p) -> None:
    p.add_argument("--view", nargs="?", const="window", metavar="FILE.rrd|web",
                   help="also open the live 2D + 3D viewer (posestream view) on the frames and poses in a window; "
                        "`--view web`: serve it to a browser instead (http://127.0.0.1:9090); `--view FILE.rrd`: "
                        "record them to that Rerun file")


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="live: camera, stream or file with the newest frame winning",
                       description="Live mode: frames the engine cannot keep up with are dropped (counted) so "
                                   "latency stays bounded. Ctrl-C stops.")
    p.add_argument("--source", required=True, help="webcam:N, /dev/videoN, rtsp://..., a video file or a folder")
    p.add_argument("--publish", default=None,
                   help=f"also publish the pose stream here, e.g. {DEFAULT_PUBLISH} (default: private ipc://)")
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window (q or Esc closes "
                                                       "it and stops, as Ctrl-C does)")
    _add_view(p)
    p.add_argument("-o", "--output", help="also write the annotated video")
    p.add_argument("--poses", help="also write a JSON Lines pose file")
    p.add_argument("--realtime", action="store_true", help="pace files at their frame rate (cameras always are)")
    p.add_argument("--no-progress", action="store_true", help="no frame counter")
    p.add_argument("--intrinsics", help="camera fx,fy,cx,cy in frame pixels, for 3D in millimetres (default: "
                                        "f = frame width, c = frame centre)")
    add_reconnect(p)
    add_model(p)


def _probe(source: str) -> int | None:
    """Frames the source declares (for the progress bar); raises SourceError when it cannot be opened."""
    from stream.sources import VideoFile, open_source

    src = open_source(source)
    try:
        if isinstance(src, VideoFile):
            return src.declared or (int(src.duration * src.rate[0] / src.rate[1]) if src.rate else None)
        return len(getattr(src, "files", [])) or None
    finally:
        src.close()


def plugin_commands() -> dict:
    """Commands that other packages of posestream provide (``adapt`` from tools, which stream must not import):
    the ``posestream.commands`` entry points of the installed distribution, name -> EntryPoint."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="posestream.commands")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stages = {"serve": serve_main, "capture": capture_main, "render": render_main}
    if argv and argv[0] in stages:
        return stages[argv[0]](argv[1:])
    plugins = plugin_commands()
    if argv and argv[0] in plugins:
        return plugins[argv[0]].load()(argv[1:])
    if argv and argv[0] == "subscribe":
        from stream.subscribe import main as subscribe_main

        return subscribe_main(argv[1:])
    if argv and argv[0] == "view":
        from stream.view import main as view_main

        return view_main(argv[1:])
    if argv and argv[0] in ("label", "teacher"):
        from stream.label import label_main, teacher_main

        return (label_main if argv[0] == "label" else teacher_main)(argv[1:])
    if argv and argv[0] == "keys":
        from stream.security import main as keys_main

        return keys_main(argv[1:])
    parser = argparse.ArgumentParser(prog="posestream", epilog=EPILOG, formatter_class=argparse.RawTextHelpFormatter,
                                     description="Realtime streaming pose estimation over ZeroMQ.")
    sub = parser.add_subparsers(dest="command", required=True)
    _video_parser(sub)
    _run_parser(sub)
    sub.add_parser("serve", help="engine server alone (tcp, loopback by default)", add_help=False)
    sub.add_parser("capture", help="one capture alone, sending to an engine server", add_help=False)
    sub.add_parser("render", help="renderer alone, reading an engine's reliable channel", add_help=False)
    sub.add_parser("subscribe", help="print an engine's pose stream as JSON lines", add_help=False)
    sub.add_parser("view", help="a live 2D + 3D viewer of an engine's pose stream (Rerun)", add_help=False)
    sub.add_parser("label", help="the BlazePose teacher labels a video's people (resumable)", add_help=False)
    sub.add_parser("teacher", help="make (setup) or inspect (check) the teacher's environment", add_help=False)
    sub.add_parser("keys", help="make a CURVE key pair (authentication + encryption over tcp)", add_help=False)
    helps = {"adapt": "fine-tune a multi-person model on your own footage, labelled by a teacher"}
    for name in sorted(plugins):
        sub.add_parser(name, help=helps.get(name, f"see posestream {name} --help"), add_help=False)
    args = parser.parse_args(argv)
    from stream.pipeline import run_pipeline
    from stream.sources import SourceError

    source = args.input if args.command == "video" else args.source
    view_file = args.view if args.view not in (None, "window", "web") else None
    extra = (getattr(args, "coco", None), getattr(args, "pyskl", None), getattr(args, "volumes", None), view_file)
    for path in (args.output, args.poses, *extra):
        if path and not Path(path).resolve().parent.is_dir():
            print(f"posestream {args.command}: cannot write {path}: no such folder", file=sys.stderr)
            return EXIT_INPUT
    try:
        total = _probe(source)
    except SourceError as err:
        print(f"posestream {args.command}: {err}", file=sys.stderr)
        return EXIT_INPUT
    if args.command == "video" and (args.pyskl or args.volumes):
        from stream.pyskl import run_with_export

        return run_with_export(source, args, total)
    return run_pipeline(source, args.command == "video", args, total)


if __name__ == "__main__":
    sys.exit(main())
