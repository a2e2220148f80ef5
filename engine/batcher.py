"""Dynamic batcher: gathers frames of many streams into one batch until ``max_batch`` or a latency budget.

Non-blocking and clock-injected, for a server's poll loop::

    batcher.push(stream_id, frame, now)
    wait = batcher.time_until_deadline(now)   # poll sockets at most this long (None: nothing pending)
    batch = batcher.pop_ready(now)            # a list of Pending when full or when the oldest frame's budget ran out

A batch is taken in arrival order, so frames of one stream always leave in the order they came, and a
later batch never holds a frame older than one in an earlier batch of the same stream. With
``one_per_stream=True`` a batch holds at most one frame per stream (needed when a stream's next input
depends on its previous result, as in ROI tracking); the others wait for the next batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pending:
    """One queued item: its stream, payload and arrival time (seconds on the batcher's clock)."""

    stream_id: str
    item: Any
    arrival: float


class DynamicBatcher:
    """Collects ``Pending`` items; releases a batch when it is full or the oldest item waited ``budget_s``."""

    def __init__(
        self,
        max_batch: int = 8,
        budget_s: float = 0.004,
        *,
        one_per_stream: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"DynamicBatcher: max_batch must be >= 1, got {max_batch}")
        if budget_s < 0:
            raise ValueError(f"DynamicBatcher: budget_s must be >= 0, got {budget_s}")
        self.max_batch = max_batch
        self.budget_s = budget_s
        self.one_per_stream = one_per_stream
        self.clock = clock
        self._queue: deque[Pending] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def push(self, stream_id: str, item: Any, now: float | None = None) -> None:
        """Queue ``item`` of ``stream_id`` arriving at ``now`` (default: the clock)."""
        now = self._now(now)
        if self._queue and now < self._queue[-1].arrival:
            raise ValueError(f"DynamicBatcher.push: time went backwards ({now} < {self._queue[-1].arrival})")
        self._queue.append(Pending(stream_id, item, now))

    def _candidates(self) -> list[int]:
        """Queue positions of the next batch (arrival order, at most one per stream if asked)."""
        picked, streams = [], set()
        for i, pending in enumerate(self._queue):
            if len(picked) == self.max_batch:
                break
            if self.one_per_stream:
                if pending.stream_id in streams:
                    continue
                streams.add(pending.stream_id)
            picked.append(i)
        return picked

    def deadline(self) -> float | None:
        """Clock time at which the oldest queued item's budget runs out, or None when empty."""
        return self._queue[0].arrival + self.budget_s if self._queue else None

    def time_until_deadline(self, now: float | None = None) -> float | None:
        """Seconds until a batch is due (0 when one is ready now), or None when nothing is queued."""
        if not self._queue:
            return None
        if len(self._candidates()) == self.max_batch:
            return 0.0
        return max(0.0, self.deadline() - self._now(now))

    def ready(self, now: float | None = None) -> bool:
        return self.time_until_deadline(now) == 0.0

    def pop_ready(self, now: float | None = None) -> list[Pending]:
        """The next batch if it is full or due at ``now``; an empty list otherwise."""
        return self.pop(force=False, now=now)

    def pop(self, force: bool = True, now: float | None = None) -> list[Pending]:
        """The next batch; with ``force`` (flush at end of input) even if neither full nor due."""
        if not self._queue or not (force or self.ready(now)):
            return []
        picked = self._candidates()
        batch = [self._queue[i] for i in picked]
        keep = set(range(len(self._queue))) - set(picked)
        self._queue = deque(p for i, p in enumerate(self._queue) if i in keep)
        return batch
