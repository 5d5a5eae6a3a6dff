"""FairGate: FIFO admission, bounded queue, timeouts and cancellation without leaked slots."""

from __future__ import annotations

import asyncio
import random

import pytest

from app.pools.gate import FairGate, GateFull, GateTimeout


async def test_admits_up_to_capacity_then_queues() -> None:
    gate = FairGate(2, 10)
    await gate.acquire(1)
    await gate.acquire(1)
    assert (gate.in_use, gate.waiting) == (2, 0)
    task = asyncio.create_task(gate.acquire(5))
    await asyncio.sleep(0)
    assert (gate.in_use, gate.waiting) == (2, 1)
    gate.release()
    await task
    assert (gate.in_use, gate.waiting) == (2, 0)
    gate.release()
    gate.release()
    assert (gate.in_use, gate.waiting) == (0, 0)
    assert repr(gate) == "<FairGate in_use=0/2 waiting=0/10>"


async def test_serves_waiters_first_come_first_served() -> None:
    gate = FairGate(1, 100)
    await gate.acquire(1)
    order: list[int] = []

    async def worker(i: int) -> None:
        await gate.acquire(10)
        order.append(i)
        await asyncio.sleep(0)
        gate.release()

    tasks = []
    for i in range(50):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)  # arrival order is creation order
    # A newcomer that arrives while others queue must not overtake them.
    assert not gate.try_acquire()
    gate.release()
    await asyncio.gather(*tasks)
    assert order == list(range(50))
    assert (gate.in_use, gate.waiting) == (0, 0)


async def test_full_queue_fails_at_once() -> None:
    gate = FairGate(1, 2)
    await gate.acquire(1)
    waiters = [asyncio.create_task(gate.acquire(5)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(GateFull):
        await gate.acquire(5)
    assert gate.waiting == 2
    gate.release()
    await waiters[0]
    gate.release()
    await waiters[1]
    gate.release()
    assert (gate.in_use, gate.waiting) == (0, 0)


async def test_zero_max_waiting_never_queues() -> None:
    gate = FairGate(1, 0)
    await gate.acquire(1)
    with pytest.raises(GateFull):
        await gate.acquire(1)


async def test_timeout_leaves_no_trace() -> None:
    gate = FairGate(1, 10)
    await gate.acquire(1)
    with pytest.raises(GateTimeout):
        await gate.acquire(0.05)
    assert (gate.in_use, gate.waiting) == (1, 0)
    gate.release()
    assert gate.in_use == 0


async def test_cancelled_waiter_leaves_queue() -> None:
    gate = FairGate(1, 10)
    await gate.acquire(1)
    task = asyncio.create_task(gate.acquire(10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (gate.in_use, gate.waiting) == (1, 0)
    gate.release()
    assert gate.in_use == 0


async def test_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    gate = FairGate(1, 10)
    await gate.acquire(1)
    first = asyncio.create_task(gate.acquire(10))
    second = asyncio.create_task(gate.acquire(10))
    await asyncio.sleep(0)
    gate.release()  # hands the slot to `first`'s future ...
    first.cancel()  # ... which is cancelled before it could resume
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the slot went on to `second`
    assert (gate.in_use, gate.waiting) == (1, 0)
    gate.release()
    assert gate.in_use == 0


async def test_slot_handed_over_as_timeout_fires_is_not_leaked() -> None:
    gate = FairGate(1, 10)
    await gate.acquire(1)
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(gate.acquire(0.05))
    await asyncio.sleep(0)
    # Release in the same loop iteration as the timeout callback.
    loop.call_at(loop.time() + 0.05, gate.release)
    try:
        await waiter
        gate.release()  # it won the slot: give it back
    except GateTimeout:
        pass
    assert (gate.in_use, gate.waiting) == (0, 0)


async def test_many_tasks_with_random_cancels_and_timeouts_never_leak() -> None:
    gate = FairGate(3, 1000)
    rng = random.Random(7)
    held = 0
    peak = 0

    async def worker() -> None:
        nonlocal held, peak
        try:
            await gate.acquire(rng.choice([0.001, 0.01, 0.05, 1.0]))
        except GateTimeout:
            return
        try:
            held += 1
            peak = max(peak, held)
            assert held <= 3
            await asyncio.sleep(rng.random() * 0.003)
        finally:
            held -= 1
            gate.release()

    tasks = [asyncio.create_task(worker()) for _ in range(400)]
    for _ in range(60):
        await asyncio.sleep(rng.random() * 0.002)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 3
    assert (gate.in_use, gate.waiting, held) == (0, 0, 0)


async def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        FairGate(1, 1).release()


async def test_resize_up_admits_waiters_at_once_in_order() -> None:
    gate = FairGate(1, 10)
    await gate.acquire(1)
    first = asyncio.create_task(gate.acquire(5))
    second = asyncio.create_task(gate.acquire(5))
    await asyncio.sleep(0)
    gate.resize(3)
    await asyncio.gather(first, second)
    assert (gate.in_use, gate.waiting, gate.capacity) == (3, 0, 3)


async def test_resize_down_takes_effect_as_holders_release() -> None:
    gate = FairGate(3, 10)
    for _ in range(3):
        await gate.acquire(1)
    gate.resize(1)
    waiter = asyncio.create_task(gate.acquire(5))
    await asyncio.sleep(0)
    gate.release()  # 3 -> 2 held: still over the new capacity, nobody admitted
    gate.release()  # 2 -> 1
    await asyncio.sleep(0)
    assert not waiter.done() and gate.in_use == 1
    gate.release()  # within capacity now: the slot goes to the waiter
    await waiter
    assert (gate.in_use, gate.waiting) == (1, 0)
    with pytest.raises(ValueError, match="at least 1"):
        gate.resize(0)


async def test_first_waiters_go_ahead_of_requests_and_are_never_refused() -> None:
    gate = FairGate(1, 1)
    await gate.acquire(1)
    order: list[str] = []

    async def take(name: str, first: bool) -> None:
        await gate.acquire(5, first=first)
        order.append(name)
        await asyncio.sleep(0)
        gate.release()

    request = asyncio.create_task(take("request", False))
    await asyncio.sleep(0)
    kills = [asyncio.create_task(take(f"kill{i}", True)) for i in range(2)]
    await asyncio.sleep(0)
    assert gate.waiting == 1  # requests only; the full request queue refused no kill
    assert not gate.try_acquire()
    gate.release()
    await asyncio.gather(request, *kills)
    assert order == ["kill0", "kill1", "request"]
    assert (gate.in_use, gate.waiting) == (0, 0)


async def test_a_first_waiter_timing_out_leaks_nothing() -> None:
    gate = FairGate(1, 1)
    await gate.acquire(1)
    with pytest.raises(GateTimeout):
        await gate.acquire(0.01, first=True)
    gate.release()
    assert gate.try_acquire()
    gate.release()
    assert (gate.in_use, gate.waiting) == (0, 0)
