"""`--no-refine3d` reaches the engine process: `video`/`run` forward it and `serve` knows it."""

import argparse

from stream.pipeline import _model_args
from stream.stages import add_model


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_model(parser)
    return parser.parse_args(argv)


def test_no_refine3d_is_forwarded_to_the_engine_process():
    assert "--no-refine3d" in _model_args(_parse(["--no-refine3d"]))
    assert "--no-refine3d" not in _model_args(_parse([]))
    forwarded = _parse(_model_args(_parse(["--model", "default", "--no-refine3d"])))  # as serve parses them
    assert forwarded.no_refine3d and forwarded.model == "default"
