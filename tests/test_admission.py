"""Admission: at most per_turn joins run per event-loop iteration, first come first served."""

from __future__ import annotations

import asyncio

import pytest

from sfu.admission import Admission

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


class IterationCounter:
    """Counts event-loop iterations with a callback that re-schedules itself."""

    def __init__(self) -> None:
        self.iteration = 0
        self._running = True
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.iteration += 1
        if self._running:
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._running = False


async def test_joins_are_spread_over_iterations_in_order() -> None:
    admission = Admission(per_turn=4)
    counter = IterationCounter()
    admitted: list[tuple[int, int]] = []

    async def join(number: int) -> None:
        await admission.turn()
        admitted.append((number, counter.iteration))

    await asyncio.gather(*(join(number) for number in range(40)))
    counter.stop()
    assert [number for number, _ in admitted] == list(range(40)), "first come, first served"
    per_iteration: dict[int, int] = {}
    for _, iteration in admitted:
        per_iteration[iteration] = per_iteration.get(iteration, 0) + 1
    assert max(per_iteration.values()) <= 4
    assert len(per_iteration) >= 10
    assert len(admission) == 0


async def test_a_cancelled_join_gives_its_place_away() -> None:
    admission = Admission(per_turn=1)
    order: list[int] = []

    async def join(number: int) -> None:
        await admission.turn()
        order.append(number)

    tasks = [asyncio.ensure_future(join(number)) for number in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 1, 3, 4]


def test_per_turn_is_validated() -> None:
    with pytest.raises(ValueError):
        Admission(0)


@pytest.mark.asyncio_loop_internals
@pytest.mark.parametrize(("per_turn", "burst", "arriving"), [(1, 3, 1), (2, 5, 3), (4, 5, 3)])
async def test_joins_arriving_every_iteration_stay_within_the_budget(
    per_turn: int, burst: int, arriving: int
) -> None:
    """A burst, then new joins in every iteration: the waiters released in
    one iteration run in the next, and count against it (they did not, and
    up to twice the budget ran in one iteration). Counted per turn of the
    loop itself (``_run_once``, asyncio's iteration)."""
    loop = asyncio.get_running_loop()
    iteration = [0]
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counting() -> None:
        iteration[0] += 1
        run_once()

    loop._run_once = counting  # type: ignore[attr-defined]
    admission = Admission(per_turn)
    passed: dict[int, int] = {}

    async def join() -> None:
        await admission.turn()
        passed[iteration[0]] = passed.get(iteration[0], 0) + 1

    try:
        tasks = [asyncio.ensure_future(join()) for _ in range(burst)]
        for _ in range(8):
            tasks += [asyncio.ensure_future(join()) for _ in range(arriving)]
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
    finally:
        loop._run_once = run_once  # type: ignore[attr-defined]
    assert sum(passed.values()) == burst + 8 * arriving
    assert max(passed.values()) <= per_turn, passed


async def test_a_join_arriving_while_woken_ones_wait_to_run_queues_behind_them() -> None:
    """A waiter released by a new turn runs only in the next iteration; a join
    that arrives in between must not take the fast path ahead of it."""
    admission = Admission(per_turn=1)
    order: list[str] = []

    async def join(name: str) -> None:
        await admission.turn()
        order.append(name)

    first = asyncio.ensure_future(join("A"))
    second = asyncio.ensure_future(join("B"))
    await asyncio.sleep(0)  # A runs, B waits; the turn that wakes B comes next
    # D's first step runs after that turn and before B's task wakes.
    late = asyncio.ensure_future(join("D"))
    await asyncio.gather(first, second, late)
    assert order == ["A", "B", "D"]
