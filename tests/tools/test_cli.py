"""The tools' shared argument types: what they accept, and the error argparse prints for what they refuse."""

import argparse

import pytest

from tools import demo, evaluate
from tools.bench import accuracy, engine, peers, pipeline, quant
from tools.cli import count_range, frame_size, seed_list
from tools.synth import __main__ as synth


def test_values():
    assert count_range("3") == (3, 3)
    assert count_range(" 2-5 ") == (2, 5)
    assert count_range("0-0") == (0, 0)
    assert frame_size("640x480") == (640, 480)
    assert frame_size("320X240") == (320, 240)
    assert seed_list("31,32,33") == [31, 32, 33]
    assert seed_list("1000-1003") == [1000, 1001, 1002, 1003]
    assert seed_list("7") == [7]


@pytest.mark.parametrize("fn, text", [
    (count_range, "5-3"), (count_range, "2-"), (count_range, "a-b"), (count_range, "1-2-3"), (count_range, "1,3"),
    (frame_size, "640"), (frame_size, "640x0"), (frame_size, "640x480x3"), (frame_size, "wide"),
    (seed_list, "9-3"), (seed_list, "1,x"), (seed_list, "1-2-3"), (seed_list, ""),
])
def test_refused(fn, text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected .*got {text!r}"):
        fn(text)


@pytest.mark.parametrize("name, parse, argv, flag", [
    ("demo", lambda a: demo.build_parser().parse_args(a), ["--persons", "5-3"], "--persons"),
    ("evaluate", lambda a: evaluate.build_parser().parse_args(["--model", "default"] + a), ["--size", "640"], "--size"),
    ("quant", lambda a: quant.build_parser().parse_args(a), ["--persons", "x"], "--persons"),
    ("peers", lambda a: peers.build_parser().parse_args(a), ["--persons", "3-1"], "--persons"),
    ("accuracy", accuracy.main, ["--seeds", "33-31"], "--seeds"),
    ("pipeline", pipeline.main, ["--size", "640by480"], "--size"),
    ("synth", lambda a: synth.build_parser().parse_args(a), ["--persons", "6-1"], "--persons"),
    ("engine", engine.main, ["--model", "default", "--frame-size", "0x0"], "--frame-size"),
])
def test_tools_name_the_flag(capsys, name, parse, argv, flag):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected" in err and repr(argv[-1]) in err, (name, err)


def test_string_defaults_are_parsed():
    args = demo.build_parser().parse_args([])
    assert args.persons == (3, 5)
    args = evaluate.build_parser().parse_args(["--model", "default"])
    assert (args.persons, args.size) == ((1, 4), (640, 480))
