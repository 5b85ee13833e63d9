"""Event decoding: every poison case of issue 4 gets its reason code; valid edge texts decode."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from models.contract.errors import EventError
from stream.event_time import parse_event_time
from stream.events import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_DETAIL,
    HEADER_ERROR_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    BehaviorEvent,
    CommentEvent,
    ProfileUpdate,
    dead_letter_headers,
    decode_behavior,
    decode_comment,
    replace_lone_surrogates,
)

COMMENT: dict[str, Any] = {
    "event_id": "e-1",
    "user_id": "u-1",
    "item_id": "i-9",
    "category": "books",
    "text": "fine",
    "rating": 4,
    "event_time": "2024-05-01T12:00:00Z",
    "lang": "en",
}
BEHAVIOR: dict[str, Any] = {
    "event_id": "b-1",
    "user_id": "u-1",
    "item_id": "i-9",
    "category": "books",
    "action": "purchase",
    "value": 12.5,
    "event_time": 1714564800000,
}


def _without(data: dict[str, Any], key: str) -> bytes:
    return json.dumps({k: v for k, v in data.items() if k != key}).encode()


def _with(data: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**data, **changes}).encode()


# Issue 4, item 5: each poison event and the reason it must carry on the dead-letter topic.
POISON_COMMENTS = [
    (b"", "empty_value"),
    (None, "tombstone"),
    (b"not json", "not_json"),
    (bytes([0xFF, 0xFE, 0x7B]), "not_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (_without(COMMENT, "user_id"), "invalid_field"),
    (_with(COMMENT, rating="five"), "invalid_field"),
    (_without(COMMENT, "text"), "invalid_field"),
    (_without(COMMENT, "event_time"), "invalid_field"),
    # beyond the issue's list
    (b"   ", "not_json"),
    (b'{"event_id": "e", "rating": NaN}', "not_json"),
    (b"null", "not_an_object"),
    (b"42", "not_an_object"),
    (b"[" * 100_000, "not_json"),  # nesting deeper than the JSON parser's recursion limit
    (_with(COMMENT, rating=6), "invalid_field"),
    (_with(COMMENT, user_id=""), "invalid_field"),
    (_with(COMMENT, user_id="u" * 129), "invalid_field"),
    (_with(COMMENT, user_id=123), "invalid_field"),
    (_with(COMMENT, text=None), "invalid_field"),
    (_with(COMMENT, event_time="yesterday"), "invalid_field"),
    (_with(COMMENT, event_time=True), "invalid_field"),
    (_with(COMMENT, event_time=1e30), "event_time_out_of_range"),
    (_with(COMMENT, event_time="0001-01-01T00:00:00+01:00"), "event_time_out_of_range"),
    (_with(COMMENT, event_time="2024-05-01T12:00:00"), "invalid_field"),
]


@pytest.mark.parametrize(("value", "reason"), POISON_COMMENTS, ids=range(len(POISON_COMMENTS)))
def test_poison_comment_gets_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(EventError) as info:
        decode_comment(value)
    assert info.value.reason == reason
    assert info.value.detail


def test_unknown_action_is_invalid_field() -> None:
    with pytest.raises(EventError) as info:
        decode_behavior(_with(BEHAVIOR, action="dance"))
    assert info.value.reason == "invalid_field"
    assert "action" in info.value.detail


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "tombstone"), (b"", "empty_value"), (b"\xff", "not_utf8"), (b"[]", "not_an_object"),
     (_without(BEHAVIOR, "event_id"), "invalid_field"),
     (_with(BEHAVIOR, value="inf"), "invalid_field")],
)  # fmt: skip
def test_poison_behavior_gets_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(EventError) as info:
        decode_behavior(value)
    assert info.value.reason == reason


def test_detail_names_the_field_but_not_the_text() -> None:
    secret = "my private diary entry"
    with pytest.raises(EventError) as info:
        decode_comment(_with(COMMENT, text=secret, rating="five", user_id=None))
    assert "rating" in info.value.detail and "user_id" in info.value.detail
    assert secret not in info.value.detail and "five" not in info.value.detail


# Issue 4, item 6: valid comments that must be profiled, not dead-lettered.
EDGE_TEXTS = {
    "empty": ("", ""),
    "whitespace": ("   \n\t", "   \n\t"),
    "900 kB": ("x" * 900_000, "x" * 900_000),
    "emoji only": ("😀🎉👍", "😀🎉👍"),
    "Chinese and English": ("质量很好 but shipping was slow", "质量很好 but shipping was slow"),
}


@pytest.mark.parametrize("name", list(EDGE_TEXTS))
def test_edge_text_decodes(name: str) -> None:
    text, expected = EDGE_TEXTS[name]
    event = decode_comment(_with(COMMENT, text=text))
    assert event.text == expected


def test_lone_surrogate_escape_is_replaced_not_dead_lettered() -> None:
    raw = b'{"event_id": "e", "user_id": "u", "text": "ok \\ud83d bye", "event_time": 0}'
    event = decode_comment(raw)
    assert event.text == "ok \ufffd bye"
    event.text.encode("utf-8")  # encodable now


def test_surrogate_pair_escape_decodes_to_the_emoji() -> None:
    raw = b'{"event_id": "e", "user_id": "u", "text": "\\ud83d\\ude00", "event_time": 0}'
    assert decode_comment(raw).text == "😀"


def test_raw_utf8_emoji_and_bom_accepted() -> None:
    raw = "\ufeff" + json.dumps({**COMMENT, "text": "😀"}, ensure_ascii=False)
    assert decode_comment(raw.encode("utf-8")).text == "😀"


def test_full_comment_fields() -> None:
    event = decode_comment(json.dumps({**COMMENT, "unknown_field": 1}).encode())
    assert isinstance(event, CommentEvent)
    assert (event.event_id, event.user_id, event.item_id, event.category) == (
        "e-1",
        "u-1",
        "i-9",
        "books",
    )
    assert event.rating == 4.0 and event.lang == "en"
    assert event.event_time == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_optional_fields_default_to_none() -> None:
    event = decode_comment(b'{"event_id": "e", "user_id": "u", "text": "", "event_time": 0}')
    assert (event.item_id, event.category, event.rating, event.lang) == (None, None, None, None)


def test_behavior_fields() -> None:
    event = decode_behavior(json.dumps(BEHAVIOR).encode())
    assert isinstance(event, BehaviorEvent)
    assert event.action == "purchase" and event.value == 12.5
    assert event.event_time == datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1714564800000, datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (1714564800123.0, datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250Z", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("2024-05-01t20:00:00z", datetime(2024, 5, 1, 20, tzinfo=UTC)),  # RFC 3339 5.6 note
        ("2024-05-01T20:00:00+08:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T12:00:00-00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (
            datetime(2024, 5, 1, 7, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2024, 5, 1, 12, tzinfo=UTC),
        ),
    ],
)
def test_event_time_formats(value: Any, expected: datetime) -> None:
    parsed = parse_event_time(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_event_time_ms_property() -> None:
    event = decode_comment(_with(COMMENT, event_time="2024-05-01T12:00:00.123Z"))
    assert event.event_time_ms == 1714564800123


def test_to_json_bytes_round_trips() -> None:
    event = decode_comment(_with(COMMENT, text="😀 \ud83d"))
    assert decode_comment(event.to_json_bytes()) == event
    behavior = decode_behavior(json.dumps(BEHAVIOR).encode())
    assert decode_behavior(behavior.to_json_bytes()) == behavior


def test_profile_update_json() -> None:
    update = ProfileUpdate(
        user_id="u-1", version=3, updated_at=datetime(2024, 5, 1, tzinfo=UTC),
        model_version="m1", profile={"comment_count": 2},
    )  # fmt: skip
    data = json.loads(update.to_json_bytes())
    assert data == {
        "user_id": "u-1", "version": 3, "updated_at": "2024-05-01T00:00:00Z",
        "model_version": "m1", "profile": {"comment_count": 2},
    }  # fmt: skip


def test_dead_letter_headers_for_event_error() -> None:
    error = EventError("not_json", "value is not JSON")
    headers = dead_letter_headers("comments.v1", 3, 42, error)
    assert headers == [
        (HEADER_SOURCE_TOPIC, b"comments.v1"),
        (HEADER_SOURCE_PARTITION, b"3"),
        (HEADER_SOURCE_OFFSET, b"42"),
        (HEADER_ERROR_CLASS, b"EventError"),
        (HEADER_ERROR_REASON, b"not_json"),
        (HEADER_ERROR_DETAIL, b"value is not JSON"),
    ]
    assert HEADER_SOURCE_TOPIC == "portrait.source.topic"
    assert HEADER_ERROR_REASON == "portrait.error.reason"


def test_dead_letter_headers_for_other_errors_hide_the_message() -> None:
    headers = dict(dead_letter_headers("t", 0, 0, RuntimeError("text: my secret")))
    assert headers[HEADER_ERROR_REASON] == b"internal_error"
    assert headers[HEADER_ERROR_CLASS] == b"RuntimeError"
    assert b"secret" not in headers[HEADER_ERROR_DETAIL]


def test_replace_lone_surrogates() -> None:
    assert replace_lone_surrogates("a\ud83db\udc00") == "a\ufffdb\ufffd"
    text = "no surrogates 😀"
    assert replace_lone_surrogates(text) is text
