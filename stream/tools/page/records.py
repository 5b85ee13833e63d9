"""Comment texts read back from their source topic by ``topic:partition:offset``.

The profile never stores a comment's text; a recent comment names its record
(``RecentComment.source``). The page reads that one record when it is asked for, and says plainly
why when it cannot: the topic no longer keeps it (retention), or the record is not the user's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.tools.follow import group_less_consumer

__all__ = ["CommentRecord", "RecordReader", "parse_source"]

_READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CommentRecord:
    """What the source record said, or why it cannot be read.

    Attributes:
        text: The comment's text; ``None`` when ``gone`` says why not.
        lang: The event's ``lang`` when it had one.
        gone: Why the text cannot be shown, for people; ``None`` when it can.
    """

    text: str | None
    lang: str | None = None
    gone: str | None = None


def parse_source(source: str) -> tuple[str, int, int]:
    """``"topic:partition:offset"`` -> ``(topic, partition, offset)``.

    Raises:
        ValueError: Not of that form.
    """
    topic, partition, offset = source.rsplit(":", 2)
    if not topic:
        raise ValueError(f"no topic in {source!r}")
    return topic, int(partition), int(offset)


class RecordReader:
    """Reads single records by offset with one group-less consumer (one read at a time).

    Args:
        client_config: kafka-python client settings.
        owner: Maps a source event's ``user_id`` to the id its profile is keyed by (the
            pseudonymiser, or the identity): a record of another user is not shown.
    """

    def __init__(self, client_config: dict[str, Any], owner: Callable[[str], str]) -> None:
        self._consumer = group_less_consumer(client_config)
        self._owner = owner
        self._lock = threading.Lock()

    def read(self, source: str | None, user_id: str) -> CommentRecord:
        """The comment at ``source``, if it is still there and ``user_id``'s.

        Args:
            source: ``RecentComment.source`` (``None`` for states written before it was kept).
            user_id: The profile's user id (as keyed).

        Returns:
            The text, or ``gone`` with the reason.
        """
        if source is None:
            return CommentRecord(None, gone="this profile was written before comments named "
                                             "their record")  # fmt: skip
        from kafka import TopicPartition

        topic, partition, offset = parse_source(source)
        tp = TopicPartition(topic, partition)
        with self._lock:
            self._consumer.assign([tp])
            first = self._consumer.beginning_offsets([tp])[tp]
            if offset < first:
                gone = f"{topic} no longer keeps this record (retention removed offsets < {first})"
                return CommentRecord(None, gone=gone)
            value = self._fetch(tp, offset)
        return self._comment(value, user_id, topic)

    def _fetch(self, tp: Any, offset: int) -> bytes | None:
        # no end-offset check: the local Tansu broker reports end offsets one batch short
        self._consumer.seek(tp, offset)
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while time.monotonic() < deadline:
            for records in self._consumer.poll(timeout_ms=200, max_records=1).values():
                for record in records:
                    if record.offset == offset:
                        return bytes(record.value) if record.value is not None else None
                    return None  # compacted or deleted away: the next one came back
        return None

    def _comment(self, value: bytes | None, user_id: str, topic: str) -> CommentRecord:
        if value is None:
            return CommentRecord(None, gone=f"{topic} has no record at this offset")
        try:
            event = json.loads(value)
            text, owner = str(event["text"]), self._owner(str(event["user_id"]))
        except (ValueError, KeyError, TypeError):
            return CommentRecord(None, gone="the record is not a comment event")
        if owner != user_id:
            return CommentRecord(None, gone="the record at this offset is another user's")
        lang = event.get("lang")
        return CommentRecord(text, lang if isinstance(lang, str) else None)

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()
