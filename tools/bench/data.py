"""``python -m tools.bench data``: input-pipeline samples/s and training step time per model.

Cases:
* ``synth_frame``: rendering one synthetic 640x480 frame with up to 6 people (ms);
* ``pipeline_shards``: shard records (JPEG 640x480) -> decode -> square person crop with augmentation ->
  hourglass targets, through a DataLoader with ``--workers`` processes (samples/s; goal >= 400 on 2 cores
  at 256x256);
* ``pipeline_synth``: the same from synthetic images generated on the fly (samples/s);
* ``train_step``: one optimiser step (forward, loss, backward, Adam) per model at its input size (ms).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader

from tools.bench.common import emit, machine, time_call


def _shards(folder: Path, count: int) -> list[str]:
    from tools.data.dataset import synthetic_sample
    from tools.data.shards import write_shards

    samples = []
    for i in range(count):
        sample, image = synthetic_sample(i, "mpii16", (640, 480), (1, 3))
        sample.image = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        samples.append(sample)
    return write_shards(samples, folder, 2, workers=0, use_ray=False).files


def _rate(dataset, workers: int, batch: int, limit: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers)
    it = iter(loader)
    next(it)  # start-up (worker processes, first images) is not counted
    n, t0 = 0, time.perf_counter()
    for b in it:
        n += len(b["image"])
        if n >= limit:
            break
    return n / (time.perf_counter() - t0)


def bench_pipeline(args) -> None:
    from models.factory import model_config
    from tools.data.augment import AugmentParams
    from tools.data.dataset import ShardDataset, SynthDataset, Targets

    cfg = model_config("hg1", input_size=(args.size, args.size))
    targets = Targets(cfg, AugmentParams(input_size=cfg.input_size), max_persons=3)
    with tempfile.TemporaryDirectory() as tmp:
        files = _shards(Path(tmp), args.images)
        rate = _rate(ShardDataset(targets, files, shuffle_buffer=64), args.workers, 32, args.samples)
    emit("data", "pipeline_shards", rate, "samples/s", workers=args.workers, input=args.size, machine=machine())
    rate = _rate(SynthDataset(targets, 10**6, size=(320, 240), persons=(1, 3)), args.workers, 32, args.samples)
    emit("data", "pipeline_synth", rate, "samples/s", workers=args.workers, input=args.size, synth_size="320x240")


def bench_synth() -> None:
    from tools.synth import render_scene, sample_scene

    scene = sample_scene(1, (6, 6), (640, 480))
    t = [0.0]

    def step():
        t[0] += 1 / 30
        render_scene(scene, t[0])

    emit("data", "synth_frame", time_call(step, repeat=30) * 1e3, "ms", persons=6, size="640x480")


def bench_steps(models: list[str], batch: int) -> None:
    from models.factory import build_model
    from tools.train.losses import heatmap_loss, spm_loss

    for name in models:
        model = build_model(name)
        w, h = model.config.input_size
        x = torch.randn(batch, 3, h, w)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        with torch.no_grad():
            shapes = {k: v.shape for k, v in model(x)[-1].items()}
        if model.config.arch == "hourglass":
            target = torch.rand(shapes["heatmaps"])

            def loss_fn(out, target=target):
                return heatmap_loss(out, target)
        else:
            maps = {k: torch.rand(s) for k, s in shapes.items()}
            maps.update({f"{k}_mask": torch.ones(shapes[k]) for k in ("disp", "depth") if k in shapes})

            def loss_fn(out, maps=maps):
                return spm_loss(out, maps)

        def step(model=model, opt=opt, x=x, loss_fn=loss_fn):
            opt.zero_grad()
            loss_fn(model(x)).backward()
            opt.step()

        ms = time_call(step, repeat=3, warmup=1) * 1e3
        emit("data", f"train_step/{name}", ms, "ms", batch=batch, input=f"{w}x{h}", threads=torch.get_num_threads())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--size", type=int, default=256, help="square network input size (default 256)")
    p.add_argument("--images", type=int, default=64, help="images written to the benchmark shards")
    p.add_argument("--samples", type=int, default=400, help="samples timed per pipeline case")
    p.add_argument("--models", default="hg1_64,hg1_128,hg1,spm_small", help="comma-separated models for train_step")
    p.add_argument("--batch", type=int, default=4, help="batch size of train_step")
    p.add_argument("--skip", default="", help="comma-separated cases to skip: synth,pipeline,steps")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if "synth" not in skip:
        bench_synth()
    if "pipeline" not in skip:
        bench_pipeline(args)
    if "steps" not in skip:
        bench_steps([m for m in args.models.split(",") if m], args.batch)
    return 0
