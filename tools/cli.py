"""Argument types shared by the tools' command lines.

Each is an ``argparse`` ``type=``: it turns the text into a value or raises ``ArgumentTypeError``, which argparse
reports as ``error: argument --persons: ...`` naming the flag, the text and the expected form. String defaults
go through the same function, so ``args.persons`` is always the parsed value.
"""

from __future__ import annotations

import argparse
import json


def _ints(text: str, sep: str, form: str) -> list[int]:
    try:
        return [int(v) for v in text.strip().lower().split(sep)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}") from None


def count_range(text: str) -> tuple[int, int]:
    """``"N"`` or ``"MIN-MAX"`` (e.g. people per frame) -> ``(MIN, MAX)`` with ``0 <= MIN <= MAX``."""
    form = "N or MIN-MAX with 0 <= MIN <= MAX (e.g. 2-5)"
    values = _ints(text, "-", form)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
    return values[0], values[1]


def frame_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(W, H)``, both positive."""
    form = "WxH with positive integers (e.g. 640x480)"
    values = _ints(text, "x", form)
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
    return values[0], values[1]


def seed_list(text: str) -> list[int]:
    """``"A,B,C"`` or an inclusive range ``"A-B"`` -> a list of non-negative seeds."""
    form = "seeds as A,B,C or A-B (e.g. 31,32,33 or 1000-1199)"
    if "-" in text:
        values = _ints(text, "-", form)
        if len(values) != 2 or not 0 <= values[0] <= values[1]:
            raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
        return list(range(values[0], values[1] + 1))
    values = _ints(text, ",", form)
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
    return values


def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with a JSON value (``--codec root_threshold=0.3``, ``--note 'recipe="x.toml"'``)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not JSON (quote strings: KEY='\"text\"')") from None
