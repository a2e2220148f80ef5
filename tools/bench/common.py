"""Helpers shared by the benchmark subcommands."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable


def machine() -> str:
    """A short description of this machine for benchmark records."""
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def emit(bench: str, case: str, value: float, unit: str, **extra) -> None:
    """Print one measurement as a JSON line."""
    record = {"bench": bench, "case": case, "value": round(float(value), 6), "unit": unit, **extra}
    print(json.dumps(record), flush=True)


def time_call(fn: Callable[[], object], repeat: int = 20, warmup: int = 3, sync: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
