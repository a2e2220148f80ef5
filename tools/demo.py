"""The product's main job on its default (``make demo``).

Makes a sample clip with several people, runs ``posestream video`` through the multi-process
pipeline, writes ``out/demo.mp4`` and ``out/demo.jsonl`` and prints fps, latency and accuracy
against the clip's ground truth. Parts that do not exist yet are reported, not faked.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("posestream demo: the pipeline is not built yet; nothing to run.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
