"""Dynamic batcher: budget, max batch and per-stream order, with a hand-advanced clock."""

from __future__ import annotations

import pytest

from engine.batcher import DynamicBatcher


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def test_full_batch_leaves_at_once():
    clock = FakeClock()
    b = DynamicBatcher(max_batch=3, budget_s=0.005, clock=clock)
    for i in range(3):
        b.push(f"s{i}", i)
    assert b.time_until_deadline() == 0.0
    batch = b.pop_ready()
    assert [p.item for p in batch] == [0, 1, 2]
    assert len(b) == 0 and b.time_until_deadline() is None


def test_partial_batch_waits_for_budget():
    clock = FakeClock()
    b = DynamicBatcher(max_batch=8, budget_s=0.005, clock=clock)
    b.push("a", 1)
    clock.advance(0.002)
    b.push("b", 2)
    assert b.time_until_deadline() == pytest.approx(0.003)
    assert b.pop_ready() == []
    clock.advance(0.0029)
    assert b.pop_ready() == []
    clock.advance(0.0002)
    assert [p.item for p in b.pop_ready()] == [1, 2]


def test_explicit_now_without_clock_calls():
    b = DynamicBatcher(max_batch=4, budget_s=0.01, clock=lambda: pytest.fail("clock must not be read"))
    b.push("a", "x", now=1.0)
    assert b.time_until_deadline(1.004) == pytest.approx(0.006)
    assert b.pop_ready(now=1.009) == []
    assert [p.item for p in b.pop_ready(now=1.010)] == ["x"]


def test_per_stream_order_kept_across_batches():
    clock = FakeClock()
    b = DynamicBatcher(max_batch=4, budget_s=0.001, clock=clock)
    for i in range(10):
        b.push("ab"[i % 3 == 0], i)
        clock.advance(0.0001)
    out = []
    while len(b):
        clock.advance(0.01)
        out.append(b.pop_ready())
    assert [len(x) for x in out] == [4, 4, 2]
    for stream in "ab":
        seq = [p.item for batch in out for p in batch if p.stream_id == stream]
        assert seq == sorted(seq)


def test_one_per_stream_defers_second_frame():
    clock = FakeClock()
    b = DynamicBatcher(max_batch=4, budget_s=0.002, one_per_stream=True, clock=clock)
    for sid, item in [("a", 0), ("a", 1), ("b", 2), ("c", 3), ("d", 4)]:
        b.push(sid, item)
    first = b.pop_ready()
    assert [p.item for p in first] == [0, 2, 3, 4]
    assert b.pop_ready() == []  # "a"'s second frame still within its budget
    clock.advance(0.002)
    assert [p.item for p in b.pop_ready()] == [1]


def test_force_pop_and_bad_input():
    b = DynamicBatcher(max_batch=2, budget_s=1.0, clock=FakeClock())
    b.push("a", 1)
    assert [p.item for p in b.pop(force=True)] == [1]
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(max_batch=0)
    b.push("a", 1, now=5.0)
    with pytest.raises(ValueError, match="backwards"):
        b.push("a", 2, now=4.0)
