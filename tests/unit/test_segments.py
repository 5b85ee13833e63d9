"""Streaming segments: definitions, CEL evaluation with hysteresis, errors, and the decisions
stored with the profile (so a redelivered batch re-emits them instead of deciding again)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

from models.contract.errors import ConfigError
from stream.batching import MicroBatch
from stream.metrics import Metrics
from stream.processing import BehaviorProcessor, Outputs
from stream.profile import DAY_MS, Profile
from stream.segment_definitions import (
    MAX_SEGMENTS,
    SegmentDefinition,
    compile_segments,
    load_segments,
)
from stream.segments import SegmentEvaluator, SegmentMembers, segment_events
from stream.settings import ProfileSettings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

UNHAPPY = SegmentDefinition(
    name="unhappy-customer", description="negative and talkative",
    enter="profile.sentiment_score != null && profile.sentiment_score < -0.5 && "
          "profile.comment_count >= 3",
    exit="profile.sentiment_score > -0.2",
)  # fmt: skip
ELECTRONICS = SegmentDefinition(
    name="loves-electronics-not-prices", description="likes the category, complains about prices",
    enter='profile.interests.exists(i, i.category == "electronics" && i.sentiment_score > 0.5) '
          "&& profile.mixed_share > 0.3",
)  # fmt: skip
QUIET = SegmentDefinition(
    name="big-spender-gone-quiet", description="spent a lot, silent for 14 days",
    enter="profile.purchase_value_sum > 500.0 && "
          "now_ms - profile.last_event_time_ms > 14 * 86400000",
)  # fmt: skip


def _evaluator(*definitions: SegmentDefinition) -> tuple[SegmentEvaluator, list[str]]:
    errors: list[str] = []
    return SegmentEvaluator(compile_segments(definitions), errors.append), errors


def test_enter_and_exit_with_hysteresis() -> None:
    evaluator, errors = _evaluator(UNHAPPY)
    members: dict[str, str] = {}
    profile = {"sentiment_score": -0.7, "comment_count": 3}

    entered = evaluator.evaluate(profile, members, 0)
    between = evaluator.evaluate({**profile, "sentiment_score": -0.3}, members, 0)
    left = evaluator.evaluate({**profile, "sentiment_score": -0.1}, members, 0)

    [enter] = entered
    assert (enter.segment, enter.transition) == ("unhappy-customer", "entered")
    assert enter.values == {"comment_count": 3, "sentiment_score": -0.7}  # the fields it read
    assert between == []  # -0.3: not above the exit bound, still a member
    assert [t.transition for t in left] == ["exited"] and members == {} and errors == []


def test_without_exit_a_member_leaves_when_enter_turns_false() -> None:
    evaluator, _ = _evaluator(ELECTRONICS)
    members: dict[str, str] = {}
    fan = {"interests": [{"category": "electronics", "sentiment_score": 0.8}], "mixed_share": 0.4}
    assert [t.transition for t in evaluator.evaluate(fan, members, 0)] == ["entered"]
    assert evaluator.evaluate(fan, members, 0) == []
    calmer = {**fan, "mixed_share": 0.1}
    assert [t.transition for t in evaluator.evaluate(calmer, members, 0)] == ["exited"]


def test_recency_reads_the_wall_clock() -> None:
    evaluator, _ = _evaluator(QUIET)
    spender = {"purchase_value_sum": 900.0, "last_event_time_ms": 10 * DAY_MS}
    members: dict[str, str] = {}
    assert evaluator.evaluate(spender, members, 20 * DAY_MS) == []  # 10 days quiet
    assert [t.transition for t in evaluator.evaluate(spender, members, 25 * DAY_MS)] == ["entered"]


@pytest.mark.parametrize(
    "profile", [{"comment_count": 3}, {"sentiment_score": "low", "comment_count": 3}]
)
def test_a_condition_that_fails_counts_and_decides_nothing(profile: dict[str, Any]) -> None:
    bad = SegmentDefinition(name="bad", description="x", enter="profile.sentiment_score < -0.5")
    evaluator, errors = _evaluator(bad)
    members = {"bad": bad.version}
    assert evaluator.evaluate(profile, members, 0) == []
    assert errors == ["bad"] and members == {"bad": bad.version}  # no exit either


def test_null_guard_short_circuits() -> None:
    evaluator, errors = _evaluator(UNHAPPY)
    assert evaluator.evaluate({"sentiment_score": None, "comment_count": 0}, {}, 0) == []
    assert errors == []


def test_a_syntax_error_names_the_segment_and_the_column() -> None:
    bad = SegmentDefinition(name="typo", description="x", enter="profile.comment_count >= ")
    with pytest.raises(ConfigError) as info:
        compile_segments([bad])
    message = str(info.value)
    assert "segment 'typo', enter condition does not compile" in message
    assert "1:26" in message and "^" in message


def test_definitions_file_yaml_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "segments.yaml"
    good.write_text(
        "segments:\n"
        "  - name: unhappy-customer\n"
        "    description: negative and talkative\n"
        "    enter: profile.sentiment_score < -0.5 && profile.comment_count >= 3\n"
        "    exit: profile.sentiment_score > -0.2\n"
    )
    [loaded] = load_segments(good)
    assert loaded.name == "unhappy-customer" and loaded.exit == "profile.sentiment_score > -0.2"

    twice = tmp_path / "twice.json"
    entry = {"name": "a", "description": "x", "enter": "true"}
    twice.write_text(json.dumps({"segments": [entry, entry]}))
    too_many = tmp_path / "many.json"
    too_many.write_text(json.dumps({"segments": [{**entry, "name": f"s{i}"}
                                                 for i in range(MAX_SEGMENTS + 1)]}))  # fmt: skip
    bad_name = tmp_path / "name.json"
    bad_name.write_text(json.dumps({"segments": [{**entry, "name": "Not A Slug"}]}))
    broken = tmp_path / "broken.yaml"
    broken.write_text("segments: [\n")
    for path, expected in ((twice, "repeated: a"), (too_many, "at most 100"),
                           (bad_name, "segments.0.name"), (broken, "not valid YAML"),
                           (tmp_path / "missing.yaml", "cannot read it")):  # fmt: skip
        with pytest.raises(ConfigError) as info:
            load_segments(path)
        assert expected in str(info.value) and "PORTRAIT_SEGMENTS__PATH" in str(info.value)


def test_a_removed_segment_ends_its_memberships() -> None:
    evaluator, _ = _evaluator(UNHAPPY)
    profile = Profile(user_id="u", segments={"retired": "0123456789ab"})
    transitions = evaluator.decide(profile, profile.to_dict(), 0)
    assert [(t.segment, t.transition, t.definition_version) for t in transitions] == [
        ("retired", "exited", "0123456789ab")
    ]
    assert profile.segments == {}


class _Sink:
    def __init__(self) -> None:
        self.updates: list[bytes] = []
        self.segment_events: list[bytes] = []

    def _done(self) -> asyncio.Future[object]:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def send_profile_update(self, user_id: str, value: bytes) -> asyncio.Future[object]:
        self.updates.append(value)
        return self._done()

    def send_segment_event(self, user_id: str, value: bytes) -> asyncio.Future[object]:
        self.segment_events.append(value)
        return self._done()

    def send_dead_letter(self, *args: Any) -> asyncio.Future[object]:
        raise AssertionError("nothing should be dead-lettered")

    send_tombstone = send_rerouted = send_dead_letter


class _Store:
    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def load(self, user_id: str, record: Any) -> dict[str, Any] | None:
        return self.states.get(user_id)

    def save(self, user_id: str, state: dict[str, Any], record: Any) -> None:
        self.states[user_id] = json.loads(json.dumps(state))

    def delete(self, user_id: str, record: Any) -> None:
        self.states.pop(user_id, None)


def test_in_the_stream_a_transition_is_stored_and_re_emitted_on_redelivery() -> None:
    from stream.records import SourceRecord

    spender = SegmentDefinition(name="spender", description="x",
                                enter="profile.purchase_value_sum > 100.0")  # fmt: skip
    metrics, sink, store = Metrics(CollectorRegistry()), _Sink(), _Store()
    evaluator = SegmentEvaluator(compile_segments([spender]), on_transition=lambda t: (
        metrics.count_segment_transition(t.segment, t.transition)))  # fmt: skip
    path = BehaviorProcessor(Outputs(store, sink, metrics), profile_settings=ProfileSettings(),
                             model_version="m1", segments=evaluator)  # fmt: skip
    event = {"event_id": "b1", "user_id": "ana", "action": "purchase", "value": 150.0,
             "event_time": "2026-11-29T18:04:05Z"}  # fmt: skip
    record = SourceRecord("behavior.v1", 0, 7, b"ana", json.dumps(event).encode())

    asyncio.run(path.process(MicroBatch((record,), 0.0)))
    asyncio.run(path.process(MicroBatch((record,), 0.0)))  # redelivered after a crash

    first, again = (json.loads(v) for v in sink.segment_events)
    assert first == again  # the same decision, the same version
    assert (first["transition"], first["version"], first["segment"]) == ("entered", 1, "spender")
    assert first["values"] == {"purchase_value_sum": 150.0}
    assert first["event_time"] == "2026-11-29T18:04:05Z"
    assert store.states["ana"]["segments"] == {"spender": spender.version}
    assert json.loads(sink.updates[-1])["profile"]["segments"] == {"spender": spender.version}
    schema = json.loads((SCHEMAS / "segment-events.v1.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors(first)) == []
    assert (
        metrics.registry.get_sample_value(
            "portrait_segment_transitions_total", {"segment": "spender", "transition": "entered"}
        )
        == 1
    )  # decided once


def test_segment_events_of_a_profile_without_transitions_is_empty() -> None:
    assert segment_events(Profile(user_id="u"), {}) == []


def test_the_readme_segments_compile_and_decide(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = re.findall(r"cat > segments.yaml <<'EOF'\n(.*?)\nEOF\n", readme, re.S)
    path = tmp_path / "segments.yaml"
    path.write_text(block)
    evaluator, errors = _evaluator(*load_segments(path))
    unhappy = Profile(user_id="u", comment_count=3, sentiment_weight_sum=1.0, sentiment_sum=-0.8)
    members: dict[str, str] = {}
    transitions = evaluator.evaluate(unhappy.to_dict(), members, 0)
    assert [t.segment for t in transitions] == ["unhappy-customer"] and errors == []


def test_a_sweep_decides_once_per_tick_and_re_emits_on_redelivery() -> None:
    from stream.records import SourceRecord
    from stream.segment_sweep import SegmentSweep, tick_value

    rule = "now_ms - profile.last_event_time_ms > 14 * 86400000"
    quiet = SegmentDefinition(name="quiet", description="x", enter=rule)
    metrics, sink, store = Metrics(CollectorRegistry()), _Sink(), _Store()
    store.states["ana"] = Profile(user_id="ana", version=3, last_event_time_ms=0).to_dict()

    class Users:
        def user_ids(self, record: SourceRecord) -> list[str]:
            return sorted(store.states)

    published: list[dict[str, int]] = []
    evaluator = SegmentEvaluator(compile_segments([quiet]), members=SegmentMembers(
        ["quiet"], published.append))  # fmt: skip
    sweep = SegmentSweep(Outputs(store, sink, metrics), Users(), evaluator, model_version="m1")

    def tick(offset: int, days: int) -> MicroBatch[SourceRecord]:
        value = tick_value(days * DAY_MS)
        return MicroBatch((SourceRecord("app-segment-ticks", 0, offset, None, value),), 0.0)

    early = asyncio.run(sweep.process(tick(0, 10)))  # 10 days quiet: nothing
    late = asyncio.run(sweep.process(tick(1, 20)))  # 20 days: enters, version 4
    again = asyncio.run(sweep.process(tick(1, 20)))  # the same tick redelivered
    later = asyncio.run(sweep.process(tick(2, 30)))  # still a member: nothing

    assert (early.applied, late.applied, again.duplicates, later.applied) == (0, 1, 1, 0)
    first, repeat = (json.loads(v) for v in sink.segment_events)
    assert first == repeat and (first["transition"], first["version"]) == ("entered", 4)
    assert store.states["ana"]["applied_offsets"] == {"app-segment-ticks:0": 1}
    assert [json.loads(u)["version"] for u in sink.updates] == [4, 4]
    assert published == [{"quiet": 0}, {"quiet": 1}, {"quiet": 1}, {"quiet": 1}]  # per sweep


def test_members_are_recounted_per_partition_and_follow_transitions() -> None:
    from collections import Counter

    from stream.segments import SegmentMembers, Transition

    published: list[dict[str, int]] = []
    members = SegmentMembers(["a", "b"], published.append)
    members.count_partition(0, Counter({"a": 3}))
    members.count_partition(1, Counter({"a": 1, "b": 2}))
    members.transition(1, Transition("b", "exited", "v", {}))
    members.transition(0, Transition("b", "entered", "v", {}))
    assert published[-2:] == [{"b": 1}, {"b": 2}]  # a transition publishes its segment only
    assert members.totals() == {"a": 4, "b": 2}
    members.retain([0])  # partition 1 moved to another worker
    assert published[-1] == {"a": 3, "b": 1}
    members.count_partition(0, Counter({"a": 2}))  # a sweep recounts it
    assert members.totals() == {"a": 2, "b": 0}


def test_windowed_counts_from_the_daily_buckets() -> None:
    from datetime import UTC, datetime, timedelta

    from stream.aggregate import apply_comment
    from stream.events import CommentEvent
    from stream.profile import DAILY_DAYS, ScoredComment

    week = SegmentDefinition(
        name="complained-this-week",
        description="x",
        enter=(
            "sum(profile.daily.filter(d, d.day_ms > now_ms - 7 * 86400000).map(d, d.negative)) >= 3"
        ),
    )
    evaluator, errors = _evaluator(week)
    start = datetime(2026, 11, 1, 12, tzinfo=UTC)
    days = [0, 20, 26, 27, 40]  # the last one moves the 30-day window past day 0
    events = [CommentEvent(event_id=f"c{d}", user_id="u", text="", event_time=start + timedelta(d))
              for d in days]  # fmt: skip

    def profile_of(order: list[CommentEvent]) -> Profile:
        profile = Profile(user_id="u")
        for offset, event in enumerate(order):
            apply_comment(profile, ScoredComment(event, (0.8, 0.1, 0.1)), topic="c", partition=0,
                          offset=offset, settings=ProfileSettings())  # fmt: skip
        return profile

    forward, backward = profile_of(events), profile_of(events[::-1])
    assert forward.daily == backward.daily  # the same whatever the arrival order
    assert [b.day_ms for b in forward.daily] == [
        int((start + timedelta(d)).timestamp() * 1000) // DAY_MS * DAY_MS for d in (20, 26, 27, 40)
    ] and len(forward.daily) <= DAILY_DAYS
    at = int((start + timedelta(27)).timestamp() * 1000)  # days 26 and 27 within 7 days: 2
    assert evaluator.evaluate(profile_of(events[:4]).to_dict(), {}, at) == []
    three = [*events[:4], CommentEvent(event_id="x", user_id="u", text="",
                                       event_time=start + timedelta(25))]  # fmt: skip
    [entered] = evaluator.evaluate(profile_of(three).to_dict(), {}, at)
    assert entered.transition == "entered" and errors == []
