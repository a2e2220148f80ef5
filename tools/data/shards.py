"""Sharded datasets: samples with their image bytes in N files written in parallel, streamed back shuffled.

Shard file layout (little endian)::

    b"PSSHARD1"
    repeated: u32 header_len, u32 image_len, u32 crc32(header + image), header, image

``header`` is a msgpack map (msgspec) of the sample's annotations with arrays as raw float32 bytes; ``image``
is the encoded image (JPEG kept as is; other formats or non-3-channel images re-encoded as JPEG, quality
95). A record whose checksum, annotation or image does not decode is skipped, counted and named in a
warning; a truncated file stops at the damage with a warning. No pickle is involved in the file format.
"""

from __future__ import annotations

import random
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import msgspec
import numpy as np

from tools.data.sample import Sample

MAGIC = b"PSSHARD1"
RECORD = struct.Struct("<III")
JPEG_QUALITY = 95


class _Header(msgspec.Struct, frozen=True):
    key: str
    layout: str
    n: int
    xy: bytes
    vis: bytes
    xyz: bytes | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    center: bytes | None = None
    scale: bytes | None = None
    bbox: bytes | None = None
    size: tuple[int, int] | None = None


def _raw(a: np.ndarray | None) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, np.float32).tobytes()


def _arr(b: bytes | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, np.float32).reshape(shape).copy()


def encode_record(sample: Sample, image: bytes) -> bytes:
    """One shard record (framing + header + image) for ``sample`` with encoded ``image``."""
    header = msgspec.msgpack.encode(_Header(
        key=sample.key, layout=sample.layout, n=sample.num_persons, xy=_raw(sample.xy), vis=_raw(sample.vis),
        xyz=_raw(sample.xyz), intrinsics=None if sample.intrinsics is None else tuple(map(float, sample.intrinsics)),
        center=_raw(sample.center), scale=_raw(sample.scale), bbox=_raw(sample.bbox),
        size=None if sample.size is None else tuple(map(int, sample.size))))
    return RECORD.pack(len(header), len(image), zlib.crc32(header + image)) + header + image


def decode_header(header: bytes, image: bytes) -> Sample:
    """The Sample (image = its encoded bytes) of a record's header; ValueError when malformed."""
    try:
        h = msgspec.msgpack.decode(header, type=_Header)
        from models.layouts import get_layout

        k = get_layout(h.layout).num_joints
        return Sample(image=image, key=h.key, layout=h.layout, xy=_arr(h.xy, (h.n, k, 2)), vis=_arr(h.vis, (h.n, k)),
                      xyz=_arr(h.xyz, (h.n, k, 3)), intrinsics=h.intrinsics, center=_arr(h.center, (h.n, 2)),
                      scale=_arr(h.scale, (h.n,)), bbox=_arr(h.bbox, (h.n, 4)), size=h.size)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as err:
        raise ValueError(f"bad annotation ({err})") from None


def prepare_image(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """(JPEG bytes, (w, h)) of an encoded image: JPEG colour images kept, others re-encoded at quality 95.

    ValueError when the bytes do not decode.
    """
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("image does not decode")
    size = (img.shape[1], img.shape[0])
    if data[:3] == b"\xff\xd8\xff" and img.ndim == 3 and img.shape[2] == 3:
        return data, size
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(img.max())))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("image does not re-encode")
    return buf.tobytes(), size


def _write_one(path: Path, samples: Sequence[Sample]) -> tuple[str, int, list[str]]:
    """Write one shard; returns (path, records written, 'key: problem' for each sample skipped)."""
    skipped, written = [], 0
    with path.open("wb") as fh:
        fh.write(MAGIC)
        for s in samples:
            try:
                image, size = prepare_image(s.read_image_bytes())
            except (OSError, ValueError) as err:
                skipped.append(f"{s.key}: {err}")
                continue
            if s.size is None:
                s.size = size
            fh.write(encode_record(s, image))
            written += 1
    return str(path), written, skipped


@dataclass
class ShardStats:
    """What ``write_shards`` did: files, records written, and the samples skipped with their problems."""

    files: list[str] = field(default_factory=list)
    written: int = 0
    skipped: list[str] = field(default_factory=list)


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def write_shards(samples: Sequence[Sample], out_dir: str | Path, num_shards: int, prefix: str = "shard",
                 workers: int | None = None, use_ray: bool | None = None) -> ShardStats:
    """Write ``samples`` round-robin into ``num_shards`` files ``out_dir/prefix-00000-of-N.pshard`` in parallel
    (Ray tasks when Ray is installed and ``use_ray`` is not False, else a process pool of ``workers``).
    Samples whose image is missing or does not decode are skipped, counted and named in one warning.
    """
    if num_shards < 1:
        raise ValueError(f"write_shards: num_shards must be >= 1, got {num_shards}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out / f"{prefix}-{i:05d}-of-{num_shards:05d}.pshard", list(samples[i::num_shards]))
            for i in range(num_shards)]
    if use_ray is None:
        use_ray = _ray_available()
    if use_ray:
        import ray

        ray.init(ignore_reinit_error=True, include_dashboard=False)
        task = ray.remote(_write_one)
        results = ray.get([task.remote(p, s) for p, s in jobs])
    elif workers == 0 or num_shards == 1:
        results = [_write_one(p, s) for p, s in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_write_one, *zip(*jobs)))
    stats = ShardStats()
    for path, written, skipped in results:
        stats.files.append(path)
        stats.written += written
        stats.skipped += skipped
    if stats.skipped:
        warnings.warn(f"write_shards: skipped {len(stats.skipped)} sample(s): {'; '.join(stats.skipped[:10])}",
                      stacklevel=2)
    return stats


def iter_shard(path: str | Path, counts: dict | None = None) -> Iterator[Sample]:
    """Samples (image = encoded bytes) of one shard in order; corrupt records are skipped with a warning
    and counted in ``counts["corrupt"]`` when a dict is given."""
    path = Path(path)
    counts = counts if counts is not None else {}
    with path.open("rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path}: not a posestream shard (bad magic)")
        index = 0
        while head := fh.read(RECORD.size):
            if len(head) < RECORD.size:
                warnings.warn(f"{path}: truncated after record {index}", stacklevel=2)
                counts["corrupt"] = counts.get("corrupt", 0) + 1
                return
            hlen, ilen, crc = RECORD.unpack(head)
            body = fh.read(hlen + ilen)
            if len(body) < hlen + ilen:
                warnings.warn(f"{path}: record {index} truncated", stacklevel=2)
                counts["corrupt"] = counts.get("corrupt", 0) + 1
                return
            try:
                if zlib.crc32(body) != crc:
                    raise ValueError("checksum mismatch")
                yield decode_header(body[:hlen], body[hlen:])
            except ValueError as err:
                warnings.warn(f"{path}: record {index} skipped: {err}", stacklevel=2)
                counts["corrupt"] = counts.get("corrupt", 0) + 1
            index += 1


def shuffled(items: Iterator, buffer: int, rng: random.Random) -> Iterator:
    """Items of ``items`` in a random order drawn through a buffer of ``buffer`` items (1 = no shuffle)."""
    pool = []
    for item in items:
        pool.append(item)
        if len(pool) >= buffer:
            yield pool.pop(rng.randrange(len(pool)))
    rng.shuffle(pool)
    yield from pool


REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
           8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(sample: Sample, factor: int = 1) -> np.ndarray | None:
    """BGR uint8 [H,W,3] of a shard sample's image bytes shrunk ``factor`` (1, 2, 4 or 8) times while decoding
    (cheap for JPEG), or None when they do not decode."""
    if factor not in REDUCED:
        raise ValueError(f"decode_image: factor must be 1, 2, 4 or 8, got {factor}")
    return cv2.imdecode(np.frombuffer(sample.read_image_bytes(), np.uint8), REDUCED[factor])


def stream_samples(files: Sequence[str | Path], shuffle_buffer: int = 256, seed: int = 0,
                   transform: Callable[[Sample, np.ndarray], object] | None = None,
                   counts: dict | None = None, decode_factor: Callable[[Sample], int] | None = None) -> Iterator:
    """``transform(sample, image)`` (default: ``(sample, image)``) for every sample of ``files``, shard order
    and samples shuffled by ``seed``; images that do not decode are skipped, counted and warned about.

    ``decode_factor(sample)`` may ask for a smaller decode (2, 4, 8: JPEG reduced decoding); the sample is then
    rescaled to match (``Sample.scaled``).
    """
    rng = random.Random(seed)
    files = list(files)
    rng.shuffle(files)
    counts = counts if counts is not None else {}

    def records():
        for f in files:
            yield from iter_shard(f, counts)

    for sample in shuffled(records(), max(1, shuffle_buffer), rng):
        factor = decode_factor(sample) if decode_factor is not None else 1
        image = decode_image(sample, factor)
        if factor > 1 and image is not None:
            sample = sample.scaled(factor)
        if image is None:
            warnings.warn(f"sample {sample.key}: image does not decode, skipped", stacklevel=2)
            counts["corrupt"] = counts.get("corrupt", 0) + 1
            continue
        yield transform(sample, image) if transform is not None else (sample, image)
