"""Replay events from a file (JSONL or CSV) into the source topics: ``portrait replay FILE``.

Each row becomes one Kafka record with key = the event's ``user_id`` (UTF-8) and value = the row's
JSON bytes (JSONL: the line exactly as given; CSV: the row as a JSON object, empty cells left out,
``rating`` and ``value`` as numbers). Rows are validated with the worker's own decoders
(:func:`stream.events.decode_comment`, :func:`~stream.events.decode_behavior`) before sending;
invalid rows are reported with their line number and reason and skipped, never sent.

Topic routing with ``topic="auto"`` (the default): a row with an ``action`` field is a
``behavior.v1`` event, any other row a ``comments.v1`` event (names from
:class:`~stream.settings.TopicSettings`). An explicit topic validates every row against that
topic's schema (the comments schema for a topic that is neither source topic).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from models.contract.errors import EventError
from stream.events import decode_behavior, decode_comment
from stream.publish import (
    InvalidRow,
    Producer,
    ReplayRecord,
    ReplayReport,
    format_report,
    make_producer,
    publish,
)
from stream.records import check_event_time
from stream.settings import Settings, TopicSettings

__all__ = [
    "AUTO_TOPIC",
    "InvalidRow",
    "Producer",
    "ReplayRecord",
    "ReplayReport",
    "check_file",
    "count_rows",
    "format_check",
    "format_report",
    "make_producer",
    "publish",
    "read_file",
    "records_from_events",
    "replay_file",
    "route",
]

logger = logging.getLogger(__name__)

AUTO_TOPIC = "auto"
"""Route each row by its fields: ``action`` present -> behaviour topic, else comments topic."""

_NUMERIC_CSV_FIELDS = ("rating", "value")
_MAX_CSV_FIELD_CHARS = 16 * 1024 * 1024
FileFormat = Literal["auto", "jsonl", "csv"]


def route(event: Mapping[str, Any], topics: TopicSettings, topic: str = AUTO_TOPIC) -> str:
    """The destination topic of one event.

    Args:
        event: the decoded JSON object.
        topics: topic names from the settings.
        topic: an explicit topic, or :data:`AUTO_TOPIC` to route by the ``action`` field.

    Returns:
        The topic name.
    """
    if topic != AUTO_TOPIC:
        return topic
    return topics.behavior if "action" in event else topics.comments


def _validate(value: bytes, topic: str, has_action: bool, topics: TopicSettings) -> str:
    """Validate with the worker's decoder for ``topic`` and its clock check (an event time far
    from this machine's clock, :func:`stream.records.check_event_time`); returns the user id.
    Raises EventError."""
    behaviour = topic == topics.behavior or (topic != topics.comments and has_action)
    event = decode_behavior(value) if behaviour else decode_comment(value)
    check_event_time(event.event_time, datetime.now(UTC))
    return event.user_id


def _to_record(
    line: int, value: bytes, topics: TopicSettings, topic: str
) -> ReplayRecord | InvalidRow:
    """One row's JSON bytes -> a record, or the reason it is invalid."""
    try:
        loaded = json.loads(value.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        return InvalidRow(line, "not_utf8", f"not UTF-8 ({exc.reason} at byte {exc.start})")
    except ValueError as exc:
        return InvalidRow(line, "not_json", f"not JSON ({exc})")
    if not isinstance(loaded, dict):
        return InvalidRow(line, "not_an_object", f"JSON {type(loaded).__name__}, expected object")
    destination = route(loaded, topics, topic)
    try:
        user_id = _validate(value, destination, "action" in loaded, topics)
    except EventError as exc:
        return InvalidRow(line, exc.reason, exc.detail)
    return ReplayRecord(line, destination, user_id.encode("utf-8", "replace"), value)


def _jsonl_values(path: Path) -> Iterator[tuple[int, bytes | InvalidRow]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            value = raw.rstrip(b"\r\n")
            if value.strip():
                yield number, value


def _csv_cell(name: str, cell: str) -> Any:
    if name == "event_time" and cell.isascii() and cell.isdigit():
        return int(cell)  # CSV has no numbers: a time of digits is epoch milliseconds
    if name in _NUMERIC_CSV_FIELDS:
        try:
            return float(cell)
        except ValueError:
            return cell  # left as text: validation reports the field
    return cell


def _csv_values(path: Path) -> Iterator[tuple[int, bytes | InvalidRow]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_CSV_FIELD_CHARS))
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        line = 2  # the first data row, after the header
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield line, InvalidRow(line, "invalid_csv", str(exc))
                line = reader.line_num + 1
                continue
            event = {k: _csv_cell(k, v) for k, v in row.items() if k and v not in (None, "")}
            if event:
                text = json.dumps(event, ensure_ascii=False)
                yield line, text.encode("utf-8", "surrogateescape")
            line = reader.line_num + 1


def _format_of(path: Path, file_format: FileFormat) -> Literal["jsonl", "csv"]:
    if file_format != "auto":
        return file_format
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"


def read_file(
    path: Path,
    topics: TopicSettings,
    *,
    topic: str = AUTO_TOPIC,
    file_format: FileFormat = "auto",
) -> Iterator[ReplayRecord | InvalidRow]:
    """Read and validate the rows of a JSONL or CSV/TSV file, lazily, in file order.

    Blank lines are skipped silently. CSV needs a header row naming the event fields.

    Args:
        path: the file.
        topics: topic names from the settings.
        topic: destination topic, or :data:`AUTO_TOPIC`.
        file_format: ``"jsonl"``, ``"csv"`` or ``"auto"`` (``.csv``/``.tsv`` -> CSV, else JSONL).

    Yields:
        A :class:`ReplayRecord` per valid row and an :class:`InvalidRow` per invalid one.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    kind = _format_of(path, file_format)
    values = _csv_values(path) if kind == "csv" else _jsonl_values(path)
    for line, value in values:
        yield value if isinstance(value, InvalidRow) else _to_record(line, value, topics, topic)


def records_from_events(
    events: Iterable[Mapping[str, Any]], topics: TopicSettings, *, topic: str = AUTO_TOPIC
) -> Iterator[ReplayRecord]:
    """Records for in-memory events (e.g. the simulated demo population), without validation.

    Args:
        events: JSON-serialisable event dicts with a ``user_id``.
        topics: topic names from the settings.
        topic: destination topic, or :data:`AUTO_TOPIC`.

    Yields:
        One :class:`ReplayRecord` per event (``line`` = 1-based position in ``events``).
    """
    for number, event in enumerate(events, start=1):
        value = json.dumps(event, ensure_ascii=False).encode("utf-8")
        key = str(event["user_id"]).encode("utf-8")
        yield ReplayRecord(number, route(event, topics, topic), key, value)


def check_file(
    path: Path,
    topics: TopicSettings,
    *,
    topic: str = AUTO_TOPIC,
    file_format: FileFormat = "auto",
) -> ReplayReport:
    """Validate every row as :func:`replay_file` would, without a broker (``replay --dry-run``).

    Returns:
        A report with nothing produced: ``by_topic`` counts the valid rows per destination
        topic, ``invalid`` lists the others with their line numbers and reasons (the reasons
        the worker would dead-letter them with).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    report = ReplayReport()
    for row in read_file(path, topics, topic=topic, file_format=file_format):
        if isinstance(row, InvalidRow):
            report.invalid.append(row)
        else:
            report.by_topic[row.topic] += 1
    return report


def format_check(report: ReplayReport, *, max_invalid: int = 50) -> str:
    """A dry run's report as text: invalid rows (at most ``max_invalid``), then a summary."""
    lines = [f"invalid {row}" for row in report.invalid[:max_invalid]]
    if len(report.invalid) > max_invalid:
        lines.append(f"... and {len(report.invalid) - max_invalid} more invalid rows")
    per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(report.by_topic.items())) or "none"
    valid = sum(report.by_topic.values())
    lines.append(f"dry run: {valid} valid events ({per_topic}); invalid rows: "
                 f"{len(report.invalid)}; nothing sent")  # fmt: skip
    return "\n".join(lines)


def count_rows(path: Path) -> int:
    """Lines in a file (an upper bound on its rows, for the progress bar)."""
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def replay_file(
    path: Path,
    settings: Settings,
    *,
    topic: str = AUTO_TOPIC,
    rate_per_s: float = 0.0,
    file_format: FileFormat = "auto",
    progress: bool = True,
    producer: Producer | None = None,
) -> ReplayReport:
    """Validate and publish every row of a JSONL or CSV file.

    Args:
        path: the file.
        settings: Portrait settings (broker connection, topic names).
        topic: destination topic, or :data:`AUTO_TOPIC`.
        rate_per_s: events per second; 0 = as fast as possible.
        file_format: ``"jsonl"``, ``"csv"`` or ``"auto"`` (by suffix).
        progress: show a progress bar.
        producer: a producer to use (closed by the caller); default: a new one, closed here.

    Returns:
        The report (invalid rows with line numbers, counts per topic, failed sends).

    Raises:
        FileNotFoundError: the file does not exist.
        BrokerUnavailableError: no broker configured, or it cannot be reached.
        ValueError: ``rate_per_s`` is negative.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    own = producer is None
    active = make_producer(settings) if producer is None else producer
    try:
        rows = read_file(path, settings.topics, topic=topic, file_format=file_format)
        total = count_rows(path) - (1 if _format_of(path, file_format) == "csv" else 0)
        return publish(rows, active, rate_per_s=rate_per_s, progress=progress, total=total)
    finally:
        if own:
            active.close()
