"""Trailing transaction markers are acknowledged only when nothing is in flight and the
consumer's position stood past them for a whole interval."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import TP

from stream.committed_reads import MarkerCommitter, trailing_offsets

SOURCE = TP("comments.v1", 0)
CHANGELOG = TP("app-profiles-changelog", 0)


@pytest.mark.parametrize(
    ("committed", "read", "position", "in_flight", "expected"),
    [
        (110, 109, 111, False, range(110, 111)),  # all processed, one marker after
        (110, 110, 111, False, range(110, 111)),  # after a seek to 110, nothing delivered
        (110, 109, 110, False, range(0)),  # at the end already
        (110, 109, 111, True, range(0)),  # a record in flight
        (None, None, 5, False, range(0)),  # nothing committed yet
        (110, 109, None, False, range(0)),  # position unknown
        (110, 112, 113, False, range(0)),  # a record past the committed one was handed out
    ],
)
def test_trailing_offsets(
    committed: int | None, read: int | None, position: int | None, in_flight: bool,
    expected: range,
) -> None:  # fmt: skip
    assert trailing_offsets(committed, read, position, in_flight) == expected


@dataclass(frozen=True)
class _Message:
    tp: Any


@dataclass
class _Consumer:
    position_of: dict[Any, int]
    _committed_offset: dict[Any, int] = field(default_factory=dict)
    _read_offset: dict[Any, int] = field(default_factory=dict)
    _acked: defaultdict[Any, list[int]] = field(default_factory=lambda: defaultdict(list))
    _acked_index: defaultdict[Any, set[int]] = field(default_factory=lambda: defaultdict(set))
    _unacked_messages: set[Any] = field(default_factory=set)
    commits: list[dict[Any, int]] = field(default_factory=list)

    def assignment(self) -> set[Any]:
        return set(self.position_of)

    def highwater(self, tp: Any) -> int:
        return self.position_of[tp]

    async def position(self, tp: Any) -> int:
        return self.position_of[tp]

    async def commit(self, tps: set[Any]) -> bool:
        for tp in tps:  # as faust does: the contiguous acked run after the committed offset
            self.commits.append({tp: max(self._acked[tp]) + 1})
            self._committed_offset[tp] = max(self._acked[tp]) + 1
            self._acked[tp].clear()
        return True


@dataclass
class _Monitor:
    ends: dict[Any, int] = field(default_factory=dict)

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        self.ends[tp] = offset


def test_markers_are_acknowledged_on_the_second_unchanged_tick() -> None:
    consumer = _Consumer({SOURCE: 121, CHANGELOG: 50}, {SOURCE: 120, CHANGELOG: 40},
                         {SOURCE: 119, CHANGELOG: 39})  # fmt: skip
    monitor = _Monitor()
    committer = MarkerCommitter(sources=("comments.v1",))

    first = asyncio.run(committer.tick(consumer, monitor))
    second = asyncio.run(committer.tick(consumer, monitor))
    third = asyncio.run(committer.tick(consumer, monitor))

    assert (first, second, third) == (0, 1, 0)
    assert consumer.commits == [{SOURCE: 121}]  # the changelog partition is left alone
    assert monitor.ends == {SOURCE: 121}


def test_a_record_delivered_between_ticks_resets_the_wait() -> None:
    consumer = _Consumer({SOURCE: 121}, {SOURCE: 119}, {SOURCE: 118})
    committer = MarkerCommitter(sources=("comments.v1",))

    asyncio.run(committer.tick(consumer, _Monitor()))
    consumer._unacked_messages.add(_Message(SOURCE))  # record 119 delivered, not yet processed
    consumer._read_offset[SOURCE] = 119
    in_flight = asyncio.run(committer.tick(consumer, _Monitor()))
    consumer._unacked_messages.clear()
    consumer._committed_offset[SOURCE] = 120  # processed and committed: one marker left
    changed = asyncio.run(committer.tick(consumer, _Monitor()))
    acknowledged = asyncio.run(committer.tick(consumer, _Monitor()))

    assert (in_flight, changed, acknowledged) == (0, 0, 1)
    assert consumer.commits == [{SOURCE: 121}]
