"""Schema = worker: every payload generated from a source event's JSON Schema is accepted by the
worker's decoder, and a table of near-misses is rejected by both.

Payloads come from hypothesis-jsonschema (``from_schema``) over the committed files in schemas/;
the validator checks ``format`` (``date-time`` through rfc3339-validator) as a strict producer's
would. Rejected means: the schema says invalid and the decoder dead-letters the event, as
``invalid_field`` or, for a well-formed time outside 1970-2999, ``event_time_out_of_range``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from models.contract.errors import EventError
from stream.events import decode_behavior, decode_comment, decode_erasure

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
SOURCES = {
    "comments.v1.json": decode_comment,
    "behavior.v1.json": decode_behavior,
    "erasure.v1.json": decode_erasure,
}
COMMENT = {"event_id": "c1", "user_id": "u1", "text": "great", "event_time": "2026-11-29T18:04:05Z"}
BEHAVIOR = {"event_id": "b1", "user_id": "u1", "action": "view", "event_time": 1795975445000}
ERASURE = {"request_id": "r1", "user_id": "u1", "requested_at": "2026-11-29T18:04:05Z"}


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS_DIR / name).read_text())
    return loaded


def _validator(name: str) -> Draft202012Validator:
    checker = Draft202012Validator.FORMAT_CHECKER
    assert "date-time" in checker.checkers, "pip install rfc3339-validator"
    return Draft202012Validator(_schema(name), format_checker=checker)


def _reason(name: str, payload: Any) -> str | None:
    try:
        SOURCES[name](json.dumps(payload).encode())
    except EventError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_payload_the_schema_allows_is_accepted_by_the_worker(name: str) -> None:
    validator = _validator(name)

    slow_ok = [HealthCheck.too_slow, HealthCheck.filter_too_much]

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=slow_ok)
    @given(from_schema(_schema(name)))
    def accepted(payload: dict[str, Any]) -> None:
        assert validator.is_valid(payload)  # the generator respects format too
        assert _reason(name, payload) is None, payload

    accepted()


def _with(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**event, **fields}


NEAR_MISSES = [  # (schema, payload, what it shows)
    ("comments.v1.json", _with(COMMENT, event_time="2026-11-29T18:04:05"), "no UTC offset"),
    ("comments.v1.json", _with(COMMENT, event_time="2026-11-29"), "date only"),
    ("comments.v1.json", _with(COMMENT, event_time="2026-W48-7"), "ISO week date"),
    ("comments.v1.json", _with(COMMENT, event_time="20261129"), "digits in a string"),
    ("comments.v1.json", _with(COMMENT, event_time="1795975445000"), "epoch ms as a string"),
    ("comments.v1.json", _with(COMMENT, event_time="2026-11-29 18:04:05Z"), "space for T"),
    ("comments.v1.json", _with(COMMENT, event_time="2026-11-29T18:04:05+0800"), "offset colon"),
    ("comments.v1.json", _with(COMMENT, event_time="2026-11-29T18:04:05Z\n"), "final newline"),
    ("comments.v1.json", _with(COMMENT, event_time=" 2026-11-29T18:04:05Z"), "leading space"),
    ("comments.v1.json", _with(COMMENT, event_time="2026-11-31T00:00:00Z"), "31 November"),
    ("comments.v1.json", _with(COMMENT, event_time="2026-11-29T23:59:60Z"), "leap second"),
    ("comments.v1.json", _with(COMMENT, event_time="1969-12-31T23:59:59Z"), "before 1970"),
    ("comments.v1.json", _with(COMMENT, event_time="3000-01-01T00:00:00Z"), "after 2999"),
    ("comments.v1.json", _with(COMMENT, event_time=-1), "negative epoch ms"),
    ("comments.v1.json", _with(COMMENT, event_time=1e300), "huge epoch ms"),
    ("comments.v1.json", _with(COMMENT, event_time=True), "boolean time"),
    ("comments.v1.json", _with(COMMENT, event_time=None), "null time"),
    ("comments.v1.json", _with(COMMENT, user_id="  "), "blank user_id"),
    ("comments.v1.json", _with(COMMENT, event_id="\t"), "blank event_id"),
    ("comments.v1.json", _with(COMMENT, user_id="u" * 129), "user_id too long"),
    ("comments.v1.json", _with(COMMENT, rating=0), "rating below 1"),
    ("comments.v1.json", _with(COMMENT, rating="5"), "rating as a string"),
    ("comments.v1.json", _with(COMMENT, text=None), "null text"),
    ("comments.v1.json", _with(COMMENT, user_id=7), "numeric user_id"),
    ("behavior.v1.json", _with(BEHAVIOR, action="VIEW"), "action in capitals"),
    ("behavior.v1.json", _with(BEHAVIOR, value="9.5"), "value as a string"),
    ("behavior.v1.json", _with(BEHAVIOR, event_time="2026-11-29T18:04:05"), "no UTC offset"),
    ("erasure.v1.json", _with(ERASURE, requested_at="2026-11-29"), "date only"),
    ("erasure.v1.json", _with(ERASURE, user_id=""), "empty user_id"),
]


OUT_OF_RANGE = {"before 1970", "after 2999", "negative epoch ms", "huge epoch ms"}
"""Well-formed times outside 1970-2999: dead-lettered with their own reason."""


@pytest.mark.parametrize(("name", "payload", "shows"), NEAR_MISSES,
                         ids=[f"{n.split('.')[0]}: {s}" for n, _, s in NEAR_MISSES])  # fmt: skip
def test_near_misses_are_rejected_by_schema_and_worker(
    name: str, payload: dict[str, Any], shows: str
) -> None:
    assert not _validator(name).is_valid(payload), shows
    expected = "event_time_out_of_range" if shows in OUT_OF_RANGE else "invalid_field"
    assert _reason(name, payload) == expected, shows


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_near_misses_start_from_valid_events(name: str) -> None:
    base = {"comments.v1.json": COMMENT, "behavior.v1.json": BEHAVIOR, "erasure.v1.json": ERASURE}
    assert _validator(name).is_valid(base[name])
    assert _reason(name, base[name]) is None
