"""Shards: parallel write, streamed read back, re-encoding, corrupt records skipped and counted."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tools.data.dataset import ShardDataset
from tools.data.sample import Sample
from tools.data.shards import iter_shard, stream_samples, write_shards


def _samples(tmp_path, n=10):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_CUBIC)
        ext = ".png" if i % 4 == 1 else ".jpg"
        if i % 4 == 2:
            img = img[..., 0]  # grayscale
            ext = ".png"
        path = tmp_path / f"img{i}{ext}"
        cv2.imwrite(str(path), img)
        k = 16
        out.append(Sample(image=path, key=f"s{i}", layout="mpii16", xy=rng.uniform(0, 60, (2, k, 2)),
                          vis=rng.integers(0, 3, (2, k)), xyz=rng.uniform(1000, 3000, (2, k, 3)),
                          intrinsics=(500.0, 501.0, 31.5, 23.5), center=rng.uniform(0, 60, (2, 2)),
                          scale=[1.5, 2.0]))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out.append(Sample(image=tmp_path / "broken.jpg", key="broken", layout="mpii16", xy=np.zeros((0, 16, 2)),
                      vis=np.zeros((0, 16))))
    out.append(Sample(image=tmp_path / "missing.jpg", key="missing", layout="mpii16", xy=np.zeros((0, 16, 2)),
                      vis=np.zeros((0, 16))))
    return out


def test_write_and_read_back(tmp_path):
    samples = _samples(tmp_path)
    with pytest.warns(UserWarning, match="skipped 2 sample"):
        stats = write_shards(samples, tmp_path / "shards", 3, workers=2, use_ray=False)
    assert stats.written == 10 and len(stats.files) == 3
    assert sorted(s.split(":")[0] for s in stats.skipped) == ["broken", "missing"]
    got = {s.key: s for f in stats.files for s in iter_shard(f)}
    assert sorted(got) == sorted(f"s{i}" for i in range(10))
    for want in samples[:10]:
        s = got[want.key]
        for name in ("xy", "vis", "xyz", "center", "scale"):
            np.testing.assert_array_equal(getattr(s, name), getattr(want, name))
        assert s.intrinsics == want.intrinsics and s.size == (64, 48)
        image = cv2.imdecode(np.frombuffer(s.image, np.uint8), cv2.IMREAD_COLOR)
        source = cv2.imread(str(want.image), cv2.IMREAD_COLOR)
        if str(want.image).endswith(".jpg"):
            assert s.image == want.image.read_bytes()  # JPEG bytes are kept as they are
        else:
            assert s.image[:3] == b"\xff\xd8\xff"  # re-encoded as JPEG, quality 95
            assert np.abs(image.astype(int) - source).mean() < 12


def test_corrupt_record_is_skipped_counted_and_named(tmp_path):
    stats = write_shards(_samples(tmp_path)[:10], tmp_path / "shards", 1, workers=0, use_ray=False)
    path = stats.files[0]
    clean = open(path, "rb").read()
    data = bytearray(clean)
    data[-20] ^= 0xFF  # inside the last record's image
    open(path, "wb").write(bytes(data))
    counts = {}
    with pytest.warns(UserWarning, match=r"record \d+ skipped: checksum"):
        keys = [s.key for s in iter_shard(path, counts)]
    assert len(keys) == 9 and counts["corrupt"] == 1
    open(path, "wb").write(clean[:-10])  # truncated file
    with pytest.warns(UserWarning, match="truncated"):
        assert len(list(iter_shard(path))) == 9
    with pytest.raises(ValueError, match="bad magic"):
        (tmp_path / "x.pshard").write_bytes(b"nope")
        list(iter_shard(tmp_path / "x.pshard"))


def test_shuffled_stream_is_a_permutation(tmp_path):
    stats = write_shards(_samples(tmp_path)[:10], tmp_path / "shards", 2, workers=0, use_ray=False)
    plain = [s.key for s, _ in stream_samples(stats.files, shuffle_buffer=1, seed=0)]
    a = [s.key for s, _ in stream_samples(stats.files, shuffle_buffer=8, seed=1)]
    b = [s.key for s, _ in stream_samples(stats.files, shuffle_buffer=8, seed=1)]
    assert sorted(a) == sorted(plain) and a == b and a != plain
    _, image = next(stream_samples(stats.files))
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8


def _key_item(sample, image, rng):
    return [{"index": torch.tensor(int(sample.key[1:]))}]


def test_worker_processes_read_every_sample_once(tmp_path):
    stats = write_shards(_samples(tmp_path)[:10], tmp_path / "shards", 4, workers=0, use_ray=False)
    ds = ShardDataset(_key_item, stats.files, shuffle_buffer=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = [int(i) for batch in DataLoader(ds, batch_size=3, num_workers=2) for i in batch["index"]]
    assert sorted(got) == list(range(10))


def test_reduced_decoding_rescales_the_annotations(tmp_path):
    image = np.full((480, 640, 3), 60, np.uint8)
    cv2.circle(image, (401, 151), 9, (0, 0, 255), -1)
    xy = np.zeros((1, 16, 2))
    xy[0, :] = (401.0, 151.0)
    sample = Sample(image=cv2.imencode(".jpg", image)[1].tobytes(), key="dot", layout="mpii16", xy=xy,
                    vis=np.full((1, 16), 2.0), center=[[401.0, 151.0]], scale=[2.0], intrinsics=(500, 500, 319.5, 239.5))
    files = write_shards([sample], tmp_path, 1, workers=0, use_ray=False).files
    (got, img), = stream_samples(files, decode_factor=lambda s: 4)
    assert img.shape == (120, 160, 3) and got.size == (160, 120)
    x, y = np.round(got.xy[0, 0]).astype(int)
    assert img[y, x, 2] > 200 and img[y, x, 0] < 60  # still on the red dot
    assert got.scale[0] == 0.5 and got.intrinsics == (125.0, 125.0, 79.5, 59.5)


def test_cli_converts_an_mpii_file(tmp_path):
    import json

    from tools.data.__main__ import main

    (tmp_path / "images").mkdir()
    records = []
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), np.full((40, 50, 3), 30 * i, np.uint8))
        records.append({"image": f"{i}.jpg", "joints": [[5.0, 6.0]] * 16, "joints_vis": [1] * 16,
                        "center": [20.0, 20.0], "scale": 0.2})
    (tmp_path / "train.json").write_text(json.dumps(records))
    assert main(["--format", "mpii", "--annotations", str(tmp_path / "train.json"), "--images",
                 str(tmp_path / "images"), "--out", str(tmp_path / "shards"), "--shards", "2", "--workers", "0"]) == 0
    keys = sorted(s.key for f in sorted((tmp_path / "shards").glob("*.pshard")) for s in iter_shard(f))
    assert keys == ["mpii/0.jpg", "mpii/1.jpg", "mpii/2.jpg"]
    assert main(["--format", "coco", "--out", str(tmp_path / "x")]) == 2
