"""The stage commands ``posestream serve | capture | render``: argument parsing, signals, exit codes.

Each stage runs in the foreground until its work ends or SIGINT/SIGTERM, which stops it cleanly (the
capture sends EndOfStream, the renderer finishes its files, the server flushes its batch).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from stream.security import CurveKeys, add_client_options, client_keys
from stream.transport import Policy

log = logging.getLogger("posestream")
EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_TRUNCATED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_FRAMES, DEFAULT_DELIVER, DEFAULT_PUBLISH = "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5560"


class Stop(threading.Event):
    """Set by SIGINT/SIGTERM (or the parent going away); ``reason`` says which, for the summary."""

    reason: str | None = None

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.set()


def stop_on_signals(exit_with_parent: bool = False) -> Stop:
    """An event set by SIGINT/SIGTERM (and, if asked, when the parent process goes away)."""
    stop = Stop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: stop.stop(f"stopped by {signal.Signals(signum).name}"))
    if exit_with_parent:
        parent = os.getppid()

        def watch() -> None:
            while not stop.wait(0.5):
                if os.getppid() != parent:
                    stop.stop("its parent process went away")

        threading.Thread(target=watch, daemon=True).start()
    return stop


def write_summary(path: str | None, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a reader never sees half a summary)."""
    if path:
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary-json", help="also write this stage's closing numbers to this JSON file")
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default",
                        help="zoo NAME, PATH.safetensors, PATH.onnx, PATH.engine or random:NAME (default: default)")
    parser.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default auto)")
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch across streams (default 8)")
    parser.add_argument("--tracking", action="store_true", help="stable track ids per stream")
    parser.add_argument("--smooth", action="store_true",
                        help="One-Euro smoothing of each tracked person's 2D and 3D joints over the frames' own "
                             "times (less jitter, a little lag; implies --tracking)")
    parser.add_argument("--refiner", help="cascade mode: an hourglass spec (e.g. hg_mpii) that refines each person "
                                          "the --model (SPM) finds; poses come out in the refiner's layout")
    parser.add_argument("--flip-test", action="store_true",
                        help="also run each input mirrored and average (more accurate, twice the inference)")
    parser.add_argument("--no-refine3d", action="store_true",
                        help="skip the 3D refiner the model's manifest names (the default's: raw SPM 3D instead)")
    parser.add_argument("--model-args", type=json.loads, default=None,
                        help='JSON build overrides for random:NAME specs, e.g. \'{"input_size": [128, 96]}\'')
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on PORT (at --metrics-bind)")
    parser.add_argument("--metrics-bind", default="127.0.0.1",
                        help="address of the metrics endpoint (default 127.0.0.1; 0.0.0.0 for a Prometheus server on "
                             "another host)")
    parser.add_argument("--batch-budget-ms", type=_budget_ms, default=4.0,
                        help="longest a frame waits for batch-mates before its batch runs anyway (default 4 ms; "
                             "0: run at once, larger: fuller batches across streams for more latency)")


def add_reconnect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reconnect", type=_tries, default=5, metavar="N",
                        help="a URL source whose connection is lost or cannot be made yet (refused, timed out, "
                             "HTTP 5xx) is tried again up to N times in a row, with "
                             "back-off from 0.5 s doubling to 8 s, then the run ends with exit 2 (default 5); a file "
                             "URL resumes where it stopped, or ends with exit 3 where the server cannot resume it")


def _tries(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a number of tries, 0 or more")
    return int(text)


def _budget_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: a batch budget in ms from 0 to 10000")
    return value


def model_spec(spec: str) -> str:
    """``spec``, or ``random:spm_small`` with a loud warning while the zoo has no ``default`` model."""
    if spec != "default":
        return spec
    from engine.loading import zoo_dir

    if (zoo_dir() / "default.safetensors").is_file():
        return spec
    print("posestream: WARNING: no trained 'default' model in the zoo yet; using random:spm_small "
          "(RANDOM WEIGHTS: the poses are meaningless)", file=sys.stderr)
    return "random:spm_small"


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posestream serve", description="Engine server: frames in (captures "
                                     "connect to --frames), poses out on --publish (PUB) and --deliver (reliable).")
    parser.add_argument("--frames", default=DEFAULT_FRAMES, help=f"bind for captures (default {DEFAULT_FRAMES})")
    parser.add_argument("--publish", default=DEFAULT_PUBLISH, help=f"pose stream bind (default {DEFAULT_PUBLISH})")
    parser.add_argument("--deliver", default=DEFAULT_DELIVER,
                        help=f"delivery channel bind for renderers (default {DEFAULT_DELIVER}; 'none' to disable: "
                             "lossless frames are then acknowledged once published)")
    parser.add_argument("--publish-frames", metavar="ENDPOINT",
                        help="also publish poses with their frames here, for `posestream view` (default: off)")
    parser.add_argument("--curve-secret", metavar="FILE", help="CURVE: the engine's key pair (NAME.key_secret from "
                        "`posestream keys`); every tcp endpoint then admits only --curve-clients, encrypted")
    parser.add_argument("--curve-clients", metavar="DIR", help="CURVE: folder of the allowed clients' public keys")
    add_model(parser)
    add_common(parser)
    args = parser.parse_args(argv)
    if bool(args.curve_secret) != bool(args.curve_clients):
        parser.error("--curve-secret and --curve-clients go together")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from stream.metrics import Metrics
    from stream.serve import EngineServer, ServeConfig

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # random weights: model_spec already said so loudly
            from engine import Engine

            engine = Engine(model_spec(args.model), args.backend, max_batch=args.max_batch, tracking=args.tracking,
                            smoothing=args.smooth,
                            model_args=args.model_args, refiner=args.refiner, flip_test=args.flip_test,
                            refine3d=not args.no_refine3d)
    except (ValueError, OSError) as err:
        print(f"posestream serve: cannot load model {args.model!r}: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_INPUT
    stop = stop_on_signals(args.exit_with_parent)
    try:
        metrics = Metrics(args.metrics_port, args.metrics_bind)
    except OSError as err:
        print(f"posestream serve: cannot serve metrics on {args.metrics_bind}:{args.metrics_port} ({err})",
              file=sys.stderr)
        return EXIT_INPUT
    keys = CurveKeys(args.curve_secret, clients=args.curve_clients) if args.curve_secret else None
    config = ServeConfig(frames=args.frames, publish=args.publish or None,
                         deliver=None if args.deliver in (None, "", "none") else args.deliver,
                         publish_frames=args.publish_frames, max_batch=args.max_batch,
                         budget_s=args.batch_budget_ms / 1000, keys=keys)
    server = EngineServer(engine, config, metrics)
    import zmq

    try:
        stats = server.run(stop)
    except (ValueError, zmq.ZMQError) as err:  # a bad key, an endpoint in use
        print(f"posestream serve: {err}", file=sys.stderr)
        metrics.close()
        return EXIT_INPUT
    write_summary(args.summary_json, {**metrics.summary(), "model": engine.model_id, "duplicates": stats.duplicates,
                                      "out_of_order": stats.out_of_order, "undelivered": stats.undelivered,
                                      "streams_freed": stats.streams_freed, "renderers_lost": stats.renderers_lost,
                                      "rejects": dict(stats.rejects), "rejected": list(server.rejects.recent),
                                      "engine_errors": stats.engine_errors, "failed_frames": list(stats.failed_frames),
                                      "stopped": stop.reason})
    metrics.close()
    return EXIT_OK


def capture_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posestream capture", description="Capture a source and send its "
                                     "frames to an engine server.")
    parser.add_argument("--source", required=True, help="webcam:N, /dev/videoN, a video file, an image folder or a URL")
    parser.add_argument("--engine", default=DEFAULT_FRAMES, help=f"the server's --frames (default {DEFAULT_FRAMES})")
    parser.add_argument("--stream", help="stream id (default: derived from the source)")
    parser.add_argument("--lossless", action="store_true", help="never drop: back-pressure and resends")
    parser.add_argument("--realtime", action="store_true", help="pace files and folders at their frame rate")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of an image folder (default 30)")
    parser.add_argument("--jpeg", type=int, metavar="QUALITY", help="send JPEG instead of raw pixels")
    parser.add_argument("--shm", action="store_true",
                        help="pass pixels through shared memory (the engine runs on this machine)")
    parser.add_argument("--intrinsics", help="fx,fy,cx,cy in frame pixels (3D models)")
    add_reconnect(parser)
    parser.add_argument("--timeout", type=float, default=60.0, help="lossless: fail when the engine is silent or "
                        "acknowledges nothing for this many seconds, e.g. no renderer (default 60)")
    add_client_options(parser)
    add_common(parser)
    args = parser.parse_args(argv)
    keys = client_keys(parser, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    stop = stop_on_signals(args.exit_with_parent)
    from stream.capture import Capture, CaptureConfig
    from stream.sources import SourceError, open_source

    try:
        source = open_source(args.source, realtime=args.realtime, fps=args.fps, reconnect=args.reconnect)
    except SourceError as err:
        print(f"posestream capture: {err}", file=sys.stderr)
        return EXIT_INPUT
    intrinsics = tuple(float(v) for v in args.intrinsics.split(",")) if args.intrinsics else None
    if intrinsics is not None and len(intrinsics) != 4:
        parser.error(f"--intrinsics {args.intrinsics!r}: expected fx,fy,cx,cy")
    name = args.stream or Path(args.source.rstrip("/")).stem.replace(":", "") or "stream"
    config = CaptureConfig(args.engine, name, args.lossless, Policy(), jpeg_quality=args.jpeg, intrinsics=intrinsics,
                           shm=args.shm, give_up_s=args.timeout, keys=keys)
    stats = Capture(source, config).run(stop)
    write_summary(args.summary_json, {**stats.to_json(), "stopped": stop.reason})
    if stats.error:
        print(f"posestream capture: {stats.error}", file=sys.stderr)
        if getattr(source, "gave_up", False):  # a network source that stayed unreachable
            return EXIT_INPUT
        return EXIT_TRUNCATED if stats.read else EXIT_FAIL
    return EXIT_INTERRUPTED if stop.is_set() else EXIT_OK


def render_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posestream render", description="Draw poses onto the frames of an "
                                     "engine's reliable channel; write video, pose file and COCO results.")
    parser.add_argument("--deliver", default=DEFAULT_DELIVER, help=f"the server's --deliver (default {DEFAULT_DELIVER})")
    parser.add_argument("-o", "--output", help="annotated video (.mp4)")
    parser.add_argument("--poses", help="JSON Lines pose file")
    parser.add_argument("--coco", help="COCO keypoint results JSON")
    parser.add_argument("--show", action="store_true", help="show a window when a display exists")
    parser.add_argument("--stream", help="stream to render (default: the first one without a renderer)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the files a killed or stopped renderer left (-o's partial video, --poses) "
                             "from where they end; without it they are started afresh")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at the stream's end (a later run of "
                        "the stream goes to OUT.2.mp4, ... and on in the pose file)")
    parser.add_argument("--ready-file", help="create this file once the engine has taken this renderer's claim (for "
                                             "a supervisor that starts the capture only then)")
    add_client_options(parser)
    add_common(parser)
    args = parser.parse_args(argv)
    keys = client_keys(parser, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    stop = stop_on_signals(args.exit_with_parent)
    from stream.render import RenderConfig, Renderer

    config = RenderConfig(args.deliver, args.output, args.poses, args.coco, args.show, args.stream,
                          exit_at_end=not args.keep_going, ready_file=args.ready_file, resume=args.resume,
                          summary=args.summary_json, keys=keys)
    try:
        renderer = Renderer(config)
    except (ValueError, OSError) as err:
        print(f"posestream render: {err}", file=sys.stderr)
        return EXIT_INPUT
    stats = renderer.run(stop)
    write_summary(args.summary_json, {**stats.to_json(), "stream": renderer.stream, "stopped": stop.reason})
    return EXIT_OK if stats.ended or args.keep_going else EXIT_INTERRUPTED
