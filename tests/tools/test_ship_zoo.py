"""tools.ship_zoo: float16 copy into the zoo, provenance notes, codec overrides (and the head they drop)."""

import torch

from models import build_model
from models.checkpoint import load_checkpoint, read_manifest, save_checkpoint
from tools import ship_zoo


def _spm(tmp_path, **codec):
    torch.manual_seed(2)
    model = build_model("spm_small", arch_args={"width": 16}, input_size=(64, 64), codec=codec).eval()
    path = tmp_path / "run.safetensors"
    save_checkpoint(model, path, provenance={"data": "synth", "epochs": 3})
    return model, path


def test_ship_with_notes_and_a_codec_override_that_drops_the_heatmap_head(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ship_zoo, "ZOO", tmp_path / "zoo")
    source, path = _spm(tmp_path, heatmap_sigma=1.5)
    args = [str(path), "--name", "plain", "--codec", "heatmap_sigma=0", "--codec", "root_threshold=0.3",
            "--note", 'training="2 min"']
    assert ship_zoo.main(args) == 0
    shipped = tmp_path / "zoo" / "plain.safetensors"
    manifest = read_manifest(shipped)
    assert manifest["provenance"]["training"] == "2 min" and manifest["provenance"]["epochs"] == 3
    assert manifest["config"]["codec"]["root_threshold"] == 0.3
    model = load_checkpoint(shipped)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, want = model.infer(x), source.infer(x)
    assert set(got) == {"root", "disp", "depth"}
    for name in got:  # float16 weights: close, not equal
        torch.testing.assert_close(got[name], want[name], atol=2e-2, rtol=2e-2)


def test_an_override_that_needs_new_tensors_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ship_zoo, "ZOO", tmp_path / "zoo")
    _, path = _spm(tmp_path)
    assert ship_zoo.main([str(path), "--name", "grown", "--codec", "heatmap_sigma=1.5"]) == 2
    assert "lacks tensors" in capsys.readouterr().err and not (tmp_path / "zoo" / "grown.safetensors").exists()
