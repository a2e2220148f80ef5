"""``python -m tools.bench SUBCOMMAND``: benchmarks that print one JSON object per measurement.

Each line is ``{"bench", "case", "value", "unit", ...}`` so that results can be compared by scripts.
Subcommands live in ``tools/bench/<name>.py`` and expose ``main(argv)``.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "codecs": "heatmap/limb/volume encoding and dark/SPM decoding",
    "models": "parameters, GMACs, latency and throughput of every model factory",
    "engine": "per-stage engine times (pre, infer, post, copy) and images/s",
    "transport": "ZeroMQ frame hop rate and latency",
    "pipeline": "end-to-end fps and latency of `posestream video` (--live: `posestream run`)",
    "data": "input-pipeline samples/s and training step time",
    "peers": "posestream's default against MediaPipe Pose on the same frames",
    "accuracy": "a model on held-out synthetic clips, offline and through the pipeline (--live: the live flow)",
    "quant": "int8 (ONNX Runtime static quantisation) against float32: speed and accuracy",
    "view": "does `posestream view` keep up with a live 30 fps stream of 6 people, and the engine's fps beside it",
    "teacher": "the BlazePose teacher's labelling: frames/s, persons per frame, people checked by eye found",
    "fuzz": "hostile messages at serve + render processes, then a normal stream: crashes, rejects counted",
    "chaos": "lossless streams while the engine and renderers are SIGKILLed and restarted: frames lost/duplicated",
    "soak": "live streams and a subscriber for N minutes: the stages' memory growth, files left behind",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print("usage: python -m tools.bench SUBCOMMAND [options]\n\nsubcommands:")
        for name, text in SUBCOMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        module = importlib.import_module(f"tools.bench.{argv[0]}")
    except ModuleNotFoundError as err:
        print(f"tools.bench {argv[0]}: not available ({err})", file=sys.stderr)
        return 2
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
