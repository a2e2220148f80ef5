import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import build_model
from models.checkpoint import file_sha256, load_checkpoint, load_matching, read_manifest, save_checkpoint


def _trained_tiny(name="hg2", **overrides):
    """A small network whose weights and BatchNorm statistics differ from a fresh one."""
    torch.manual_seed(3)
    overrides = {"arch_args": {"width": 16}, "input_size": (64, 64), **overrides}
    model = build_model(name, **overrides).train()
    w, h = model.config.input_size
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model(torch.randn(2, 3, h, w))  # moves the BatchNorm running statistics
    return model.eval()


def _rewrite_manifest(path, edit):
    target = path.with_suffix(".json")
    manifest = json.loads(target.read_text())
    edit(manifest)
    target.write_text(json.dumps(manifest))


def test_round_trip_restores_the_network_and_records_everything(tmp_path):
    model = _trained_tiny("spm_small", arch_args={"width": 16, "stages": 2}, input_size=(96, 64))
    path = tmp_path / "net.safetensors"
    manifest_path = save_checkpoint(model, path, provenance={"data": "synth", "epochs": 3, "metrics": {"ap": 0.5}})
    assert manifest_path == tmp_path / "net.json"
    loaded = load_checkpoint(path, expect_layout="coco17")
    assert loaded.config == model.config.resolved() and not loaded.training
    assert loaded.config.codec["root_threshold"] == model.config.spm_codec().params.root_threshold
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want, got = model.infer(x), loaded.infer(x)
    for key in want:
        assert torch.equal(want[key], got[key])
    manifest = read_manifest(path)
    assert manifest["kind"] == "checkpoint" and manifest["layout"] == "coco17" and manifest["num_joints"] == 17
    assert manifest["input_size"] == [96, 64] and manifest["mean"] == list(model.config.mean)
    assert manifest["codec"]["type"] == "SPMCodec" and manifest["codec"]["input_size"] == [96, 64]
    assert manifest["provenance"]["epochs"] == 3 and manifest["provenance"]["metrics"] == {"ap": 0.5}
    assert "code_commit" in manifest["provenance"]
    assert manifest["weights"]["sha256"] == file_sha256(path)


def test_float16_weights_load_as_float32(tmp_path):
    model = _trained_tiny()
    path = tmp_path / "half.safetensors"
    save_checkpoint(model, path, dtype="float16")
    assert load_file(str(path))["scores.0.weight"].dtype == torch.float16
    loaded = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.infer(x)["heatmaps"], loaded.infer(x)["heatmaps"], atol=5e-3)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "hg.safetensors"
    save_checkpoint(_trained_tiny(), path)
    return path


def test_truncated_and_corrupted_files_are_refused(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{saved}.*weights.sha256.*truncated"):
        load_checkpoint(saved)
    flipped = bytearray(data)
    flipped[len(data) - 100] ^= 0xFF
    saved.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=rf"{saved}.*weights.sha256"):
        load_checkpoint(saved)
    saved.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    _rewrite_manifest(saved, lambda m: m["weights"].update(sha256=file_sha256(saved)))
    with pytest.raises(ValueError, match=rf"{saved}: not a readable safetensors file"):
        load_checkpoint(saved)


def _replace_tensors(path, edit):
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    _rewrite_manifest(path, lambda m: m["weights"].update(sha256=file_sha256(path)))


def test_missing_extra_and_misshapen_tensors_are_named(saved):
    _replace_tensors(saved, lambda t: t.pop("scores.1.bias"))
    with pytest.raises(ValueError, match=r"missing \['scores.1.bias'\], unexpected \[\]"):
        load_checkpoint(saved)
    _replace_tensors(saved, lambda t: t.update({"scores.1.bias": torch.zeros(16), "head.extra": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['head.extra'\]"):
        load_checkpoint(saved)
    _replace_tensors(saved, lambda t: (t.pop("head.extra"), t.update({"scores.1.bias": torch.zeros(17)})))
    with pytest.raises(ValueError, match=r"tensor 'scores.1.bias' has shape \(17,\), expected \(16,\)"):
        load_checkpoint(saved)


def test_manifest_problems_name_the_file_and_field(saved):
    manifest = saved.with_suffix(".json")
    with pytest.raises(ValueError, match=rf"{manifest}: field 'layout' is 'mpii16', expected 'coco17'"):
        load_checkpoint(saved, expect_layout="coco17")
    _rewrite_manifest(saved, lambda m: (m.update(layout="coco17"), m["config"].update(layout="coco17")))
    with pytest.raises(ValueError, match=rf"{saved}: tensor 'scores.0.weight' has shape \(16, 16, 1, 1\), expected \(17,"):
        load_checkpoint(saved)
    _rewrite_manifest(saved, lambda m: m["config"].update(arch="transformer"))
    with pytest.raises(ValueError, match=rf"{manifest}: field 'config'.*unknown arch 'transformer'"):
        load_checkpoint(saved)
    _rewrite_manifest(saved, lambda m: m.pop("std"))
    with pytest.raises(ValueError, match=rf"{manifest}: manifest lacks field 'std'"):
        load_checkpoint(saved)
    manifest.write_text('{"format": "posestream.model", ')
    with pytest.raises(ValueError, match=rf"{manifest}: manifest is not valid JSON"):
        load_checkpoint(saved)
    manifest.unlink()
    with pytest.raises(ValueError, match=rf"{manifest}: manifest not found"):
        load_checkpoint(saved)


def test_layout_field_must_agree_with_the_config(saved):
    _rewrite_manifest(saved, lambda m: m.update(layout="coco17"))
    with pytest.raises(ValueError, match=r"field 'layout' \('coco17'\) disagrees with config.layout"):
        read_manifest(saved)


def test_a_grown_network_starts_from_the_matching_tensors(tmp_path):
    small = _trained_tiny("spm_small")
    path = tmp_path / "small.safetensors"
    save_checkpoint(small, path)
    torch.manual_seed(9)
    grown = build_model("spm_small", arch_args={"width": 16}, input_size=(64, 64), codec={"heatmap_sigma": 1.5})
    assert load_matching(grown, path) == ["heads.0.heatmaps.bias", "heads.0.heatmaps.weight"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, want = grown.eval().infer(x), small.infer(x)
    assert set(got) == {"root", "disp", "depth", "heatmaps"}
    for name in want:
        torch.testing.assert_close(got[name], want[name])
    with pytest.raises(ValueError, match="no tensor matches"):
        load_matching(torch.nn.Linear(2, 2), path)


@pytest.mark.parametrize("name, small_args, grown_args, back", [
    ("hg1", {"depth": 2}, {"stacks": 4, "depth": 2}, ("scores_back", "features_back")),
    ("spm_small", {"stages": 1}, {"stages": 3}, ("maps_back", "features_back")),
])
def test_a_network_grown_by_stacks_starts_as_its_smaller_self_and_learns(tmp_path, name, small_args, grown_args, back):
    small = _trained_tiny(name, arch_args={"width": 16, **small_args})
    path = tmp_path / "small.safetensors"
    save_checkpoint(small, path)
    torch.manual_seed(9)
    grown = build_model(name, arch_args={"width": 16, **grown_args}, input_size=(64, 64))
    fresh = load_matching(grown, path)
    assert any(n.startswith("hourglasses.2.") for n in fresh) and any(n.startswith(f"{back[0]}.1.") for n in fresh)
    assert grown.grow(fresh) == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = small.infer(x)
        for out in grown.eval()(x):  # every stack starts as the trained one
            for key in want:
                torch.testing.assert_close(out[key], want[key])
    # the zeroed projections are not a dead end: one step's gradient reaches them
    grown.train()
    loss = sum(m.square().mean() for out in grown(x) for m in out.values())
    loss.backward()
    for name_back in back:
        assert getattr(grown, name_back)[0].weight.grad.abs().sum() > 0
    # a network that loaded no stack is left alone; a gap in the loaded stacks is refused
    names = sorted(grown.state_dict())
    assert grown.grow(names) == names
    with pytest.raises(ValueError, match="not the first ones"):
        grown.grow([n for n in names if n.startswith("hourglasses.0.")])


@pytest.mark.parametrize("name, args", [("hg1", {"depth": 2}), ("spm_small", {"stages": 2, "stem": "light"})])
def test_a_network_built_wider_starts_as_its_narrower_self_and_learns(tmp_path, name, args):
    narrow = _trained_tiny(name, arch_args={"width": 32, **args})
    path = tmp_path / "narrow.safetensors"
    save_checkpoint(narrow, path)
    torch.manual_seed(9)
    wide = build_model(name, arch_args={"width": 48, **args}, input_size=(64, 64))
    # without widen the wider layers are not loaded; with it, every tensor is
    assert "hourglasses.0.up.0.conv1.weight" in load_matching(wide, path)
    assert load_matching(wide, path, widen=True) == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = narrow.infer(x)
        got = wide.eval().infer(x)
    for key in want:
        torch.testing.assert_close(got[key], want[key])
    # the new channels carry signal, and the zeroed weights that read them get gradients
    conv = wide.hourglasses[0].up[0].conv1
    assert conv.weight[:16, 32:].abs().sum() == 0 and conv.weight[16:].abs().sum() > 0
    wide.train()
    loss = sum(m.square().mean() for out in wide(x) for m in out.values())
    loss.backward()
    assert conv.weight.grad[:16, 32:].abs().sum() > 0
    # narrower is not wider: a network narrower than the checkpoint takes nothing of the differing layers
    narrower = build_model(name, arch_args={"width": 16, **args}, input_size=(64, 64))
    assert "hourglasses.0.up.0.conv1.weight" in load_matching(narrower, path, widen=True)
