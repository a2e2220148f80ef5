"""Export a posestream network to ONNX, write its manifest beside it and check it against PyTorch.

    python -m tools.export_onnx CHECKPOINT.safetensors -o model.onnx [--with-decode] [--opset 17]
    python -m tools.export_onnx --model spm_small -o spm_small.onnx      # random weights, for benchmarks

Graph inputs: ``input`` float32 [B, 3, H, W] (RGB normalised by the manifest's mean/std; B is dynamic)
and, for SPM graphs with ``--with-decode``, ``intrinsics`` float32 [B, 4] (fx, fy, cx, cy in input pixels).
Graph outputs: the raw maps (``heatmaps`` or ``root``, ``disp``, ``depth``), or with ``--with-decode`` the
decoded keypoints in input pixels: hourglass ``xy`` [B, K, 2], ``score`` [B, K] (DARK); SPM ``xy``
[B, P, K, 2], ``score`` [B, P, K], ``person_score`` [B, P], ``count`` [B], ``xyz`` [B, P, K, 3] (mm).
A checkpoint whose manifest names a 3D refiner (models/refine3d.py) keeps it: a raw-map export names a copy
written beside the .onnx (the engine runs it after decoding), a ``--with-decode`` graph refines ``xyz`` itself.

After export, ONNX Runtime runs the file on a batch of synthetic images (a batch size other than the
traced one, to exercise the dynamic batch) and compares with PyTorch: maps within 1e-4 (plus 1e-4
relative), keypoints within 0.1 px. The result is printed; a failure exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MAP_TOL = 1e-4
PX_TOL = 0.1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.export_onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="checkpoint .safetensors (manifest .json beside it)")
    p.add_argument("--model", help="factory name from models.MODELS: export random weights (benchmarks only)")
    p.add_argument("-o", "--output", required=True, help="output .onnx path; the manifest goes beside it as PATH.onnx.json")
    p.add_argument("--with-decode", action="store_true", help="put the codec's decoding into the graph")
    p.add_argument("--no-refine3d", action="store_true",
                   help="leave out the 3D refiner the checkpoint's manifest names (by default a raw-map export "
                        "names a copy beside it, and --with-decode puts it in the graph)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--verify-batch", type=int, default=3, help="batch size of the ONNX Runtime check (default 3)")
    return p


def load_source(args) -> tuple[object, dict]:
    """(model in eval mode, provenance for the manifest) from a checkpoint or a bare factory name."""
    from models import build_model
    from models.checkpoint import load_checkpoint, read_manifest

    if bool(args.checkpoint) == bool(args.model):
        raise ValueError("give exactly one of CHECKPOINT or --model NAME")
    if args.model:
        print(f"export_onnx: {args.model}: RANDOM WEIGHTS (no checkpoint given); for benchmarks and plumbing only")
        return build_model(args.model).eval(), {"weights": "random", "source": f"random:{args.model}"}
    model = load_checkpoint(args.checkpoint)
    provenance = dict(read_manifest(args.checkpoint).get("provenance", {}))
    provenance["source"] = str(Path(args.checkpoint).resolve())
    return model, provenance


def export_graph(model, with_decode: bool, refine3d=None):
    """The module that is traced: the network's last stage (``infer``), optionally followed by decoding (and by
    the 3D refiner ``refine3d`` on the decoded 3D, as the engine runs it)."""
    import torch

    config = model.config

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.refine3d = refine3d
            self.codec = None
            if with_decode:
                self.codec = config.heatmap_codec() if config.arch == "hourglass" else config.spm_codec()

        def forward(self, x, intrinsics=None):
            maps = self.model.infer(x)
            if self.codec is None:
                return tuple(maps.values())
            if config.arch == "hourglass":
                return self.codec.decode(maps["heatmaps"], method="dark")
            out = self.codec.decode(maps, intrinsics)
            xyz = out.xyz if self.refine3d is None else self.refine3d(out.xyz, out.score)
            return out.xy, out.score, out.person_score, out.count, xyz

    return Graph().eval()


def io_names(config, with_decode: bool) -> tuple[list[str], list[str]]:
    """(input names, output names) of the exported graph."""
    if not with_decode:
        from models.spm_net import output_channels

        return ["input"], ["heatmaps"] if config.arch == "hourglass" else list(output_channels(config))
    if config.arch == "hourglass":
        return ["input"], ["xy", "score"]
    return ["input", "intrinsics"], ["xy", "score", "person_score", "count", "xyz"]


def sample_inputs(config, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic RGB images (gradients, ellipses, noise), normalised: ``{"input": [B,3,H,W], "intrinsics": [B,4]}``."""
    import cv2

    w, h = config.input_size
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(batch):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * (xx / w)[..., None] + rng.uniform(-60, 60, 3) * (
            yy / h)[..., None]
        img = np.ascontiguousarray(base.astype(np.uint8))
        for _ in range(6):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(4, w // 4 + 5)), int(rng.integers(4, h // 3 + 5)))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255)
        images.append((img - np.float32(config.mean)) / np.float32(config.std))
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    f = float(w)
    intrinsics = np.tile(np.float32([f, f, (w - 1) / 2, (h - 1) / 2]), (batch, 1))
    return {"input": np.ascontiguousarray(x), "intrinsics": intrinsics}


def export(graph, path: Path, inputs: list[str], outputs: list[str], opset: int) -> None:
    """The engine's exporter (TorchScript, dynamic batch), traced on two synthetic images; verify() then runs
    another batch size through ONNX Runtime."""
    import torch

    from engine.loading import onnx_export

    example = sample_inputs(graph.model.config, 2)
    onnx_export(graph, tuple(torch.from_numpy(example[name]) for name in inputs), path, inputs, outputs, opset)


def compare(name: str, ref: np.ndarray, got: np.ndarray, with_decode: bool) -> tuple[float, float, bool]:
    """(max difference, tolerance, ok) for one output; keypoints in px, xyz in mm, the rest as maps."""
    if ref.shape != got.shape:
        return float("inf"), 0.0, False
    if ref.dtype.kind in "iu" or got.dtype.kind in "iu":
        diff = float(np.abs(ref.astype(np.int64) - got.astype(np.int64)).max(initial=0))
        return diff, 0.0, diff == 0
    if not np.array_equal(np.isfinite(ref), np.isfinite(got)):
        return float("nan"), 0.0, False
    finite = np.isfinite(ref)
    diff = float(np.abs(ref[finite] - got[finite]).max(initial=0.0))
    scale = float(np.abs(ref[finite]).max(initial=0.0))
    if with_decode and name == "xy":
        tol = PX_TOL
    elif name == "xyz":
        tol = max(1.0, 1e-3 * scale)
    else:
        tol = MAP_TOL * max(1.0, scale)
    return diff, tol, diff <= tol


def verify(graph, path: Path, inputs: list[str], outputs: list[str], batch: int, with_decode: bool) -> bool:
    """Run ONNX Runtime and PyTorch on the same synthetic batch; print one line per output; True if all agree."""
    import onnxruntime as ort
    import torch

    feed = {k: v for k, v in sample_inputs(graph.model.config, batch, seed=1).items() if k in inputs}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(outputs, feed)
    with torch.no_grad():
        ref = graph(*(torch.from_numpy(feed[name]) for name in inputs))
    ok = True
    for name, r, g in zip(outputs, ref, got):
        diff, tol, good = compare(name, r.numpy(), np.asarray(g), with_decode)
        ok &= good
        print(f"export_onnx: verify {name} {list(g.shape)}: max |onnxruntime - torch| = {diff:.3g} "
              f"(tolerance {tol:.3g}) {'ok' if good else 'FAILED'}")
    if "count" in outputs:  # an all-empty decode would agree trivially: show what was compared
        print(f"export_onnx: persons decoded per image: {np.asarray(got[outputs.index('count')]).tolist()}")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.checkpoint import build_manifest, read_manifest, write_manifest
    from models.refine3d import load_refine3d, named_refine3d, place_beside

    if args.opset < 17:
        print(f"export_onnx: --opset must be >= 17, got {args.opset}", file=sys.stderr)
        return 2
    try:
        model, provenance = load_source(args)
    except ValueError as err:
        print(f"export_onnx: {err}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        refiner = None if args.no_refine3d or not args.checkpoint else named_refine3d(
            args.checkpoint, read_manifest(args.checkpoint))
    except ValueError as err:
        print(f"export_onnx: {err}", file=sys.stderr)
        return 2
    in_graph = load_refine3d(refiner) if refiner is not None and args.with_decode else None
    graph = export_graph(model, args.with_decode, in_graph)
    inputs, outputs = io_names(model.config, args.with_decode)
    export(graph, out, inputs, outputs, args.opset)
    ok = verify(graph, out, inputs, outputs, args.verify_batch, args.with_decode)
    info = {"inputs": inputs, "outputs": outputs, "with_decode": args.with_decode, "opset": args.opset,
            "dynamic_batch": True, "verified": ok}
    extra = {}
    if in_graph is not None:
        info["refine3d_in_graph"] = refiner.name
    elif refiner is not None:  # the engine runs it after its own decoding, as for the checkpoint
        extra["refine3d"] = place_beside(refiner, out)
    manifest = write_manifest(out, build_manifest(model.config, "onnx", provenance, export=info, **extra))
    print(f"export_onnx: wrote {out} and {manifest}")
    if not ok:
        print(f"export_onnx: FAILED: ONNX Runtime disagrees with PyTorch for {out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
