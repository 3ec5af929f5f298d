"""Admission: at most per_turn joins run per event-loop iteration, first come first served."""

from __future__ import annotations

import asyncio

import pytest

from sfu.admission import Admission


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
