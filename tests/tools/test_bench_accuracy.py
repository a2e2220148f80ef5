import json

import pytest
import torch

from models import build_model
from models.checkpoint import save_checkpoint
from models.layouts import get_layout
from tools.bench import accuracy


def test_crops_protocol_splits_visible_and_occluded_joints_consistently(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("hg1_64", arch_args={"width": 16}, input_size=(64, 64)).eval()
    ckpt = tmp_path / "hg.safetensors"
    save_checkpoint(model, ckpt, provenance={"data": "none"})
    assert accuracy.main(["--model", str(ckpt), "--protocol", "crops", "--seeds", "3-10", "--persons", "3-5"]) == 0
    rows = {r["case"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    every, visible, occluded = (rows[f"crops_pckh@0.5{s}"] for s in ("_all", "_visible", "_occluded"))
    share = occluded["share"]
    assert every["seeds"] == "3-10"
    assert 0 < share < 1 and every["crops"] >= 8  # people overlap in 3-5-person scenes: some joints are hidden
    assert every["value"] == pytest.approx((1 - share) * visible["value"] + share * occluded["value"], abs=1e-4)
    assert list(every["per_joint"]) == list(get_layout(model.config.layout).names)
