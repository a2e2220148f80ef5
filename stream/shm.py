"""Shared-memory pixels for captures on the engine's own machine (ipc:// endpoints).

The capture owns a ring of ``slots`` frame buffers in one file under /dev/shm; a frame's pixels are copied
once into slot ``seq % slots`` and the message carries only the file and offset (``Frame.encoding ==
"shm"``), so a 1080p hop costs one memcpy instead of two kernel copies. A slot is reused only ``slots``
frames later; the capture keeps at most ``window`` frames unacknowledged and the engine finishes with a
frame's pixels (inference, and a copy for the reliable channel) before acknowledging it, so ``slots >
window`` keeps every slot stable while in use.
"""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
PREFIX = "posestream-"


class ShmRing:
    """Sender side: ``put(seq, image)`` -> (path, offset) of the slot now holding ``image`` (BGR [H, W, 3])."""

    def __init__(self, stream: str, slot_bytes: int, slots: int):
        safe = "".join(c if c.isalnum() else "_" for c in stream)[:40]
        self.path = os.path.join(SHM_DIR, f"{PREFIX}{safe}-{os.getpid()}-{os.urandom(4).hex()}")
        self.slot_bytes, self.slots = slot_bytes, slots
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, slot_bytes * slots)
            self.map = mmap.mmap(fd, slot_bytes * slots)
        finally:
            os.close(fd)
        self.array = np.frombuffer(self.map, np.uint8)

    def fits(self, image: np.ndarray) -> bool:
        return image.nbytes <= self.slot_bytes

    def put(self, seq: int, image: np.ndarray) -> tuple[str, int]:
        offset = (seq % self.slots) * self.slot_bytes
        self.array[offset:offset + image.nbytes] = image.reshape(-1)
        return self.path, offset

    def close(self) -> None:
        del self.array
        self.map.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class ShmReader:
    """Receiver side: maps rings by path (only posestream's own files under SHM_DIR) and returns views."""

    def __init__(self):
        self.maps: dict[str, mmap.mmap] = {}

    def view(self, path: str, offset: int, nbytes: int) -> np.ndarray:
        """uint8 [nbytes] view of a slot; ValueError naming the problem for anything out of bounds."""
        real = os.path.realpath(path)
        if os.path.dirname(real) != os.path.realpath(SHM_DIR) or not os.path.basename(real).startswith(PREFIX):
            raise ValueError(f"shared-memory path {path!r} is not a posestream ring")
        if real not in self.maps:
            try:
                with open(real, "rb") as fh:
                    self.maps[real] = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
            except (OSError, ValueError) as err:
                raise ValueError(f"shared-memory ring {path!r}: {err}") from None
        ring = self.maps[real]
        if offset < 0 or nbytes < 0 or offset + nbytes > len(ring):
            raise ValueError(f"shared-memory ring {path!r}: slot {offset}+{nbytes} beyond its {len(ring)} bytes")
        return np.frombuffer(ring, np.uint8, nbytes, offset)

    def forget(self, path: str) -> None:
        ring = self.maps.pop(os.path.realpath(path), None)
        if ring is not None:
            try:
                ring.close()
            except BufferError:  # a view still alive: the mapping goes when it does
                pass

    def close(self) -> None:
        for path in list(self.maps):
            self.forget(path)
