"""``python -m tools.data``: write a dataset's samples into shards (see tools.data.shards for the format).

Examples::

    python -m tools.data --format mpii --annotations mpii/train.json --images mpii/images \\
        --out data/mpii --prefix train --shards 64
    python -m tools.data --format coco --annotations coco/person_keypoints_train2017.json \\
        --images coco/train2017 --out data/coco --prefix train --shards 64
    python -m tools.data --format panoptic --annotations 160224_haggling1/hdPose3d_stage1_coco19 \\
        --calibration 160224_haggling1/calibration_160224_haggling1.json \\
        --images 160224_haggling1/hdImgs --cameras 00_00,00_01 --out data/panoptic --shards 16
    python -m tools.data --format synth --count 5000 --layout mpii16 --out data/synth --shards 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.data.sample import Sample


def _samples(args) -> list[Sample]:
    if args.format == "mpii":
        from tools.data.mpii import read_mpii

        return read_mpii(args.annotations, args.images)
    if args.format == "coco":
        from tools.data.coco import read_coco

        return read_coco(args.annotations, args.images)
    if args.format == "panoptic":
        from tools.data.panoptic import panoptic_samples, read_calibration

        if args.calibration is None:
            raise ValueError("--format panoptic needs --calibration")
        cameras = read_calibration(args.calibration)
        names = args.cameras.split(",") if args.cameras else None
        out = []
        for body in sorted(Path(args.annotations).glob("body3DScene_*.json")):
            out += panoptic_samples(body, cameras, args.images, names)
        return out
    import cv2

    from tools.data.dataset import synthetic_sample

    out = []
    for seed in range(args.count):
        sample, image = synthetic_sample(seed, args.layout, (640, 480), (1, 4))
        sample.image = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        out.append(sample)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=("mpii", "coco", "panoptic", "synth"))
    p.add_argument("--annotations", type=Path, help="annotation file (mpii, coco) or body folder (panoptic)")
    p.add_argument("--images", type=Path, help="image folder")
    p.add_argument("--calibration", type=Path, help="Panoptic calibration JSON")
    p.add_argument("--cameras", help="Panoptic camera names, comma-separated (default: all)")
    p.add_argument("--count", type=int, default=1000, help="synthetic images (--format synth)")
    p.add_argument("--layout", default="mpii16", help="synthetic layout (--format synth)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--prefix", default="shard", help="shard file prefix (train, validation, ...)")
    p.add_argument("--shards", type=int, default=8, help="number of shard files")
    p.add_argument("--workers", type=int, default=None, help="writer processes (default: CPU count)")
    args = p.parse_args(argv)
    from tools.data.shards import write_shards

    try:
        if args.format != "synth" and args.annotations is None:
            raise ValueError(f"--format {args.format} needs --annotations")
        stats = write_shards(_samples(args), args.out, args.shards, args.prefix, args.workers)
    except (ValueError, FileNotFoundError) as err:
        print(f"tools.data: {err}", file=sys.stderr)
        return 2
    print(f"tools.data: wrote {stats.written} samples into {len(stats.files)} shards under {args.out}; "
          f"skipped {len(stats.skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
