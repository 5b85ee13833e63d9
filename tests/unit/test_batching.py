"""Micro-batching: size limit, deadline from the first event, no event lost across a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from stream.batching import MicroBatch, micro_batches


async def _from_queue(queue: asyncio.Queue[int | None]) -> AsyncIterator[int]:
    while (item := await queue.get()) is not None:
        yield item


async def _collect(source: AsyncIterator[int], **kwargs: float) -> list[MicroBatch[int]]:
    return [batch async for batch in micro_batches(source, **kwargs)]  # type: ignore[arg-type]


async def _listed(items: list[int]) -> AsyncIterator[int]:
    for item in items:
        yield item


def test_backlog_fills_batches_to_max_batch_size() -> None:
    batches = asyncio.run(_collect(_listed(list(range(10))), max_batch_size=4, max_wait_s=5.0))
    assert [b.items for b in batches] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]


def test_source_end_yields_partial_batch_without_waiting() -> None:
    async def run() -> tuple[list[MicroBatch[int]], float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        batches = await _collect(_listed([1, 2]), max_batch_size=8, max_wait_s=5.0)
        return batches, loop.time() - start

    batches, elapsed_s = asyncio.run(run())
    assert [b.items for b in batches] == [(1, 2)]
    assert elapsed_s < 1.0


def test_batch_closes_max_wait_s_after_its_first_event() -> None:
    """Events 0.25 s apart with max_wait_s 0.6: the batch holds exactly the first three."""

    async def run() -> list[MicroBatch[int]]:
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        batches: list[MicroBatch[int]] = []

        async def consume() -> None:
            async with aclosing(micro_batches(_from_queue(queue), max_batch_size=100,
                                              max_wait_s=0.6)) as stream:  # fmt: skip
                async for batch in stream:
                    batches.append(batch)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)  # an idle source before the first event must not shorten the batch
        for item in range(5):
            await queue.put(item)
            await asyncio.sleep(0.25)
        await queue.put(None)
        await task
        return batches

    batches = asyncio.run(run())
    assert [b.items for b in batches] == [(0, 1, 2), (3, 4)]
    assert 0.55 <= batches[0].wait_s < 1.0


def test_event_in_flight_at_deadline_opens_next_batch() -> None:
    async def run() -> list[tuple[int, ...]]:
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        for item in (1, 2):
            queue.put_nowait(item)
        seen: list[tuple[int, ...]] = []
        async with aclosing(micro_batches(_from_queue(queue), max_batch_size=10,
                                          max_wait_s=0.05)) as stream:  # fmt: skip
            async for batch in stream:
                seen.append(batch.items)
                if len(seen) == 1:
                    queue.put_nowait(3)  # arrives while the pending read of batch 1 is in flight
                    queue.put_nowait(None)
        return seen

    assert asyncio.run(run()) == [(1, 2), (3,)]


def test_source_error_propagates() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("broker gone")

    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(_collect(failing(), max_batch_size=4, max_wait_s=1.0))


def test_closing_cancels_the_read_in_flight() -> None:
    async def run() -> bool:
        blocker: asyncio.Queue[int] = asyncio.Queue()
        cancelled = asyncio.Event()

        async def source() -> AsyncIterator[int]:
            try:
                yield 1
                yield await blocker.get()  # never answered: in flight when the batch closes
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with aclosing(micro_batches(source(), max_batch_size=10, max_wait_s=0.05)) as stream:
            async for _ in stream:
                break
        return cancelled.is_set()

    assert asyncio.run(run())


@pytest.mark.parametrize(("size", "wait_s"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_rejects_bad_limits(size: int, wait_s: float) -> None:
    with pytest.raises(ValueError):
        asyncio.run(_collect(_listed([1]), max_batch_size=size, max_wait_s=wait_s))
