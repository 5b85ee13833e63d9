"""Micro-batching of an asynchronous event source, in plain asyncio.

A micro-batch closes when it holds ``max_batch_size`` events or ``max_wait_s`` seconds after its
first event, whichever comes first. The clock of a batch starts when the batcher takes its first
event from the source: an event that arrived while the previous batch was still being processed
starts the next batch at once, and a backlog fills batches to ``max_batch_size`` without waiting.

faust's ``Stream.take(max_, within=)`` does not give this: its ``within`` timer restarts after each
yielded batch rather than at the first event (a batch can close 1 ms after its first event), and it
acks the whole buffer when the consumer of the batch raises. :func:`micro_batches` acks nothing; the
caller acks each event after its effects are written.

The batcher keeps at most one pending read of the source across batch boundaries, so no event is
lost when a batch closes on its deadline while a read is in flight: that read becomes the first
event of the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["MicroBatch", "micro_batches"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MicroBatch(Generic[T]):
    """One micro-batch of events.

    Attributes:
        items: The events, in source order; never empty.
        wait_s: Seconds from the batcher taking the first event to the batch closing.
    """

    items: tuple[T, ...]
    wait_s: float


async def micro_batches(
    source: AsyncIterable[T], *, max_batch_size: int, max_wait_s: float
) -> AsyncGenerator[MicroBatch[T], None]:
    """Group the events of ``source`` into micro-batches.

    Args:
        source: Any async iterable of events (e.g. a faust stream's ``events()``).
        max_batch_size: Events per batch at most, >= 1.
        max_wait_s: Seconds after a batch's first event at which it closes, > 0.

    Yields:
        :class:`MicroBatch` objects with 1..``max_batch_size`` events, in source order. When the
        source ends, the partial batch is yielded and iteration stops.

    Raises:
        ValueError: ``max_batch_size`` < 1 or ``max_wait_s`` <= 0.
        Exception: Whatever the source raises is re-raised at once; events of the open batch are
            not yielded (they are not acknowledged either, so Kafka delivers them again).
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 (got {max_batch_size})")
    if not max_wait_s > 0:
        raise ValueError(f"max_wait_s must be > 0 (got {max_wait_s})")
    loop = asyncio.get_running_loop()
    iterator = aiter(source)
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            try:
                first = await pending
            except StopAsyncIteration:
                return
            pending = None
            started = loop.time()
            deadline = started + max_wait_s
            items = [first]
            exhausted = False
            while len(items) < max_batch_size:
                remaining_s = deadline - loop.time()
                if remaining_s <= 0:
                    break
                pending = asyncio.ensure_future(anext(iterator))
                done, _ = await asyncio.wait({pending}, timeout=remaining_s)
                if not done:
                    break  # keep the read in flight: it opens the next batch
                read, pending = pending, None
                try:
                    items.append(read.result())
                except StopAsyncIteration:
                    exhausted = True
                    break
            yield MicroBatch(tuple(items), loop.time() - started)
            if exhausted:
                return
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
