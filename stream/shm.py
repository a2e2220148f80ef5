"""Shared-memory pixels for captures on the engine's own machine (ipc:// endpoints).

The capture owns a ring of ``slots`` frame buffers in one file under /dev/shm; a frame's pixels are copied
once into slot ``seq % slots`` and the message carries only the file and offset (``Frame.encoding ==
"shm"``). A slot is reused only ``slots`` frames later; the capture keeps at most ``window`` frames
unacknowledged, so ``slots > window`` keeps every slot stable while the engine reads it.

The engine trusts nothing in a message: it reads only a ring its sender announced on the same connection
(``Heartbeat.shm_path``/``shm_size``), opens it once without following links or blocking, checks that it is a
regular file of the announced size owned by this user, and copies each frame out with ``pread`` into a buffer
of its own, so a ring that shrinks, vanishes or is swapped under it costs that frame (a clear reject), never
the process (no SIGBUS from a mapping). Rings of processes that died are removed by the next capture or
engine to start on the machine (:func:`sweep_stale`).
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
import tempfile

import numpy as np

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
PREFIX = "posestream-"
log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine's pid namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ShmRing:
    """Sender side: ``put(seq, image)`` -> (path, offset) of the slot now holding ``image`` (BGR [H, W, 3])."""

    def __init__(self, stream: str, slot_bytes: int, slots: int):
        safe = "".join(c if c.isalnum() else "_" for c in stream)[:40]
        self.path = os.path.join(SHM_DIR, f"{PREFIX}{safe}-{os.getpid()}-{os.urandom(4).hex()}")
        self.slot_bytes, self.slots = slot_bytes, slots
        self.size = slot_bytes * slots
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, self.size)
            self.map = mmap.mmap(fd, self.size)
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


def sweep_stale(directory: str = SHM_DIR) -> list[str]:
    """Remove this user's rings whose creating process is gone (a capture killed before it could clean up);
    returns the paths removed."""
    removed = []
    try:
        names = [n for n in os.listdir(directory) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        fields = name[len(PREFIX):].split("-")
        if len(fields) != 3 or not fields[1].isdigit():
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode) or pid_alive(int(fields[1])):
                continue
            os.unlink(path)
            removed.append(path)
        except OSError:
            continue
    if removed:
        log.info("removed %d shared-memory ring(s) left by processes that died", len(removed))
    return removed


class _Ring:
    def __init__(self, path: str, size: int, fd: int):
        self.path, self.size, self.fd = path, size, fd


class ShmReader:
    """Receiver side: rings announced per peer (the sender's connection identity), read by ``pread``."""

    def __init__(self, max_size: int = 1 << 30):
        self.max_size = max_size
        self.rings: dict[bytes, _Ring] = {}

    def announce(self, peer: bytes, path: str, size: int) -> None:
        """Let ``peer`` send frames from the ring ``path`` of ``size`` bytes; ValueError naming the problem when
        it is not a regular posestream file of that size owned by this user, in the shared-memory folder."""
        ring = self.rings.get(peer)
        if ring is not None and (ring.path, ring.size) == (path, size):
            return
        name = os.path.basename(path)
        if os.path.dirname(path) != SHM_DIR or not name.startswith(PREFIX) or name in (".", ".."):
            raise ValueError(f"shared-memory path {path[:200]!r} is not a posestream ring in {SHM_DIR}")
        if not 0 < size <= self.max_size:
            raise ValueError(f"shared-memory ring {path!r}: {size} bytes (limit {self.max_size})")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise ValueError(f"shared-memory ring {path!r}: {err.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"shared-memory ring {path!r} is not a regular file")
            if st.st_uid != os.geteuid():
                raise ValueError(f"shared-memory ring {path!r} belongs to uid {st.st_uid}, not to this user")
            if st.st_size != size:
                raise ValueError(f"shared-memory ring {path!r} has {st.st_size} bytes, announced {size}")
        except ValueError:
            os.close(fd)
            raise
        self.forget(peer)
        self.rings[peer] = _Ring(path, size, fd)

    def read(self, peer: bytes, path: str, offset: int, nbytes: int) -> np.ndarray:
        """A copy (uint8 [nbytes]) of a slot of ``peer``'s announced ring; ValueError naming the problem."""
        ring = self.rings.get(peer)
        if ring is None or ring.path != path:
            raise ValueError(f"shared-memory ring {str(path)[:200]!r} was not announced on this connection")
        if offset < 0 or nbytes <= 0 or offset + nbytes > ring.size:
            raise ValueError(f"slot {offset}+{nbytes} beyond the ring's {ring.size} bytes")
        out = np.empty(nbytes, np.uint8)
        try:
            got = os.preadv(ring.fd, [out], offset)
        except OSError as err:
            raise ValueError(f"shared-memory ring {path!r}: {err.strerror}") from None
        if got != nbytes:
            raise ValueError(f"shared-memory ring {path!r} shrank: {got} of {nbytes} bytes at offset {offset}")
        return out

    def forget(self, peer: bytes) -> None:
        ring = self.rings.pop(peer, None)
        if ring is not None:
            os.close(ring.fd)

    def close(self) -> None:
        for peer in list(self.rings):
            self.forget(peer)
