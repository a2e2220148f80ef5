"""posestream adapt: argument checks, the fine-tuning config, the user's model folder, and the command found by
`posestream` through its entry point."""

from __future__ import annotations

import ast

import pytest

from engine.loading import resolve_model, user_models_dir
from stream.cli import main as cli_main
from stream.cli import plugin_commands
from tools.adapt import adapted_input, build_parser, check_args, train_config


def test_adapt_is_a_posestream_command_without_stream_importing_tools(capsys):
    assert "adapt" in plugin_commands()
    with pytest.raises(SystemExit) as exit_:
        cli_main(["adapt", "--help"])
    assert exit_.value.code == 0 and "--budget-min" in capsys.readouterr().out
    import pathlib

    stream_dir = pathlib.Path(__file__).resolve().parents[2] / "stream"
    for path in stream_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "tools" or n.startswith("tools.") for n in names), f"{path} imports {names}"


def test_adapted_input_is_the_camera_size_capped_and_rounded():
    assert adapted_input((768, 576), 32) == (768, 576)
    assert adapted_input((640, 480), 32) == (640, 480)
    assert adapted_input((1280, 720), 32) == (960, 544)
    assert adapted_input((1920, 1080), 32) == (960, 544)


def test_check_args_names_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("POSESTREAM_MODELS", str(tmp_path / "models"))
    parse = build_parser().parse_args
    with pytest.raises(ValueError, match="shipped model's name"):
        check_args(parse(["clip.mp4", "--name", "default"]))
    with pytest.raises(ValueError, match="--name 'a/b'"):
        check_args(parse(["clip.mp4", "--name", "a/b"]))
    with pytest.raises(ValueError, match="--base 'hg_mpii'"):
        check_args(parse(["clip.mp4", "--name", "mine", "--base", "hg_mpii"]))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="--force replaces it"):
        check_args(parse(["clip.mp4", "--name", "mine"]))
    check_args(parse(["clip.mp4", "--name", "mine", "--force"]))


def test_fine_tuning_keeps_the_base_network_and_its_displacement_scale(tmp_path):
    args = build_parser().parse_args(["clip.mp4", "--name", "mine", "--stop", "550"])
    base = resolve_model("default")
    cfg = train_config(args, base, tmp_path / "labels.jsonl", tmp_path, (768, 576), 30.0)
    over = cfg.model_overrides
    assert over["input_size"] == (768, 576) and cfg.train_size == (256, 192)
    assert over["arch_args"] == base.config.arch_args and cfg.init == str(base.path)
    assert over["codec"]["disp_norm"] == pytest.approx(base.config.spm_codec().params.z)
    recipe = base.manifest["provenance"]["train_config"]
    assert (cfg.heatmap_weight, cfg.disp_weight) == (recipe["heatmap_weight"], recipe["disp_weight"]) == (10.0, 5.0)
    assert cfg.footage[0]["stop"] == 550 and cfg.budget_min == 30.0 and cfg.source == "footage"


def test_models_are_found_in_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("POSESTREAM_MODELS", str(tmp_path))
    assert user_models_dir() == tmp_path
    with pytest.raises(ValueError, match=f"nor one of yours in {tmp_path}"):
        resolve_model("mine")
    import shutil

    from engine.loading import zoo_dir

    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo_dir() / f"default{suffix}", tmp_path / f"mine{suffix}")
    assert resolve_model("mine").path == tmp_path / "mine.safetensors"


def test_adapt_end_to_end_on_real_footage(tmp_path, monkeypatch, teacher_python, capsys):
    """Flow 5 on a real 24-frame excerpt: the teacher labels it, the default is fine-tuned for a minute, the
    result is scored against the teacher on the held-out tail and saved where --model NAME finds it."""
    import json
    from pathlib import Path

    import numpy as np

    from engine import Engine
    from models.checkpoint import read_manifest
    from tools.adapt import main as adapt_main

    monkeypatch.setenv("POSESTREAM_MODELS", str(tmp_path / "models"))
    clip = Path(__file__).resolve().parents[1] / "data" / "vtest_40-63.mp4"
    code = adapt_main([str(clip), "--name", "tiny", "--budget-min", "3", "--teacher", "full", "--teacher-python",
                       str(teacher_python), "--val-fraction", "0.25", "--workdir", str(tmp_path / "work"),
                       "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["model"] == "tiny" and Path(out["path"]) == tmp_path / "models" / "tiny.safetensors"
    adapt = read_manifest(out["path"])["provenance"]["adapt"]
    assert adapt["teacher"] == "blazepose_full" and adapt["frames"]["labelled"] == 24
    assert adapt["frames"]["held_out"] == [18, 23] and adapt["frames"]["trained_on"] == 18
    assert adapt["labelled_persons"] > 24 and adapt["minutes"]["total"] < 3 + 1.0
    for name in ("adapted", "base"):
        figures = adapt["held_out_vs_teacher"][name]
        assert figures["teacher_persons"] > 0 and 0.0 <= figures["found"] <= 1.0 and figures["engine_fps"] > 0
    assert 0.0 <= adapt["held_out_vs_teacher"]["adapted"]["person_threshold"] < 1.0
    assert read_manifest(out["path"])["refine3d"]["file"] == "tiny.refine3d.safetensors"  # the default's refiner
    with Engine("tiny") as engine:  # --model tiny finds it, at the camera's resolution
        assert engine.input_size == (768, 576)
        poses = engine.infer([np.zeros((576, 768, 3), np.uint8)])[0]
    assert poses.layout == "panoptic19"
