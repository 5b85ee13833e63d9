"""The worker's micro-batch logic (stream.processing) with fakes: no broker, no faust, no model."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from models.contract.mixed import classify_with_clauses
from stream.aggregate import apply_behavior, apply_comment
from stream.batching import MicroBatch
from stream.erasure import ErasureProcessor
from stream.events import ProfileUpdate, decode_behavior, decode_comment
from stream.inference import RetryPolicy
from stream.metrics import Metrics
from stream.processing import (
    INFERENCE_FAILED,
    KEY_MISMATCH,
    BehaviorProcessor,
    CommentProcessor,
    ErasureLedger,
    Outputs,
    SourceRecord,
    check_key,
    dead_letter_record_headers,
)
from stream.profile import Profile, ScoredComment
from stream.settings import MixedSettings, ProfileSettings

COMMENTS = "comments.v1"
BEHAVIOR = "behavior.v1"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECRET_TEXT = "my secret comment text"


def fake_probabilities(text: str) -> tuple[float, float, float]:
    """Deterministic probabilities of a text (rows sum to 1)."""
    raw = np.array([1 + len(text) % 3, 1 + sum(map(ord, text)) % 5, 1 + len(text) % 7], float)
    p = raw / raw.sum()
    return (float(p[0]), float(p[1]), float(p[2]))


class FakeClassifier:
    labels = ("negative", "neutral", "positive")
    model_version = "fake-model-1"
    provider = "CPUExecutionProvider"

    def __init__(self, *, fail_times: int = 0, poison: str | None = None, delay_s: float = 0.0):
        self.fail_times = fail_times
        self.poison = poison
        self.delay_s = delay_s
        self.calls: list[list[str]] = []

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("onnxruntime exploded")
        if self.poison is not None and any(self.poison in t for t in texts):
            raise RuntimeError("poison text")
        return np.array([fake_probabilities(t) for t in texts], dtype=np.float32)


class DictStore:
    """A profile table: JSON round trip like the faust table's serializer."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.saves: list[tuple[str, int]] = []

    def load(self, user_id: str, record: SourceRecord) -> dict[str, Any] | None:
        raw = self.states.get(user_id)
        return None if raw is None else dict(json.loads(raw))

    def save(self, user_id: str, state: dict[str, Any], record: SourceRecord) -> None:
        self.states[user_id] = json.dumps(state)
        self.saves.append((user_id, record.partition))


class FakeSink:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.updates: list[tuple[str, bytes]] = []
        self.dead_letters: list[tuple[SourceRecord, list[tuple[str, bytes]]]] = []
        self.rerouted: list[tuple[SourceRecord, int, list[tuple[str, bytes]]]] = []

    def _delivery(self) -> asyncio.Future[object]:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.fail:
            fut.set_exception(OSError("broker refused the record"))
        else:
            fut.set_result(None)
        return fut

    def send_profile_update(self, user_id: str, value: bytes) -> asyncio.Future[object]:
        self.updates.append((user_id, value))
        return self._delivery()

    def send_dead_letter(
        self, record: SourceRecord, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[object]:
        self.dead_letters.append((record, list(headers)))
        return self._delivery()

    def send_rerouted(
        self, record: SourceRecord, partition: int, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[object]:
        self.rerouted.append((record, partition, list(headers)))
        return self._delivery()


def comment(event_id: str, user_id: str, text: str, minutes: int, **extra: Any) -> bytes:
    event = {"event_id": event_id, "user_id": user_id, "text": text,
             "event_time": (T0 + timedelta(minutes=minutes)).isoformat(), **extra}  # fmt: skip
    return json.dumps(event).encode()


def behavior(event_id: str, user_id: str, action: str, minutes: int, **extra: Any) -> bytes:
    event = {"event_id": event_id, "user_id": user_id, "action": action,
             "event_time": (T0 + timedelta(minutes=minutes)).isoformat(), **extra}  # fmt: skip
    return json.dumps(event).encode()


def records(topic: str, rows: list[tuple[bytes | None, bytes | None]], start: int = 0,
            partition: int = 0) -> tuple[SourceRecord, ...]:  # fmt: skip
    return tuple(
        SourceRecord(topic, partition, start + i, key, value, headers=(("trace", b"abc"),))
        for i, (key, value) in enumerate(rows)
    )


@dataclass(frozen=True)
class Paths:
    """The worker's three source paths on the same outputs, as stream.app builds them."""

    comments: CommentProcessor
    behaviors: BehaviorProcessor
    erasures: ErasureProcessor | None


def paths(outputs: Outputs, classifier: Any, *, ledger: ErasureLedger | None = None,
          **options: Any) -> Paths:  # fmt: skip
    """The three processors; ``options``: log_user_ids, clock, pseudonymise (all paths),
    retry and mixed (comments)."""
    shared = ("log_user_ids", "clock", "pseudonymise", "partitions", "reroute_from")
    common = {k: v for k, v in options.items() if k in shared}
    comments = CommentProcessor(outputs, classifier, profile_settings=ProfileSettings(), **options)
    behaviors = BehaviorProcessor(outputs, profile_settings=ProfileSettings(),
                                  model_version=classifier.model_version, **common)  # fmt: skip
    pseudonymise = options.get("pseudonymise")
    erasures = (
        None if ledger is None else ErasureProcessor(outputs, ledger, pseudonymise=pseudonymise)
    )
    return Paths(comments, behaviors, erasures)


def make(classifier: Any = None, *, sink: FakeSink | None = None,
         store: DictStore | None = None, log_user_ids: bool = False,
         mixed: MixedSettings | None = None,
         ) -> tuple[Paths, DictStore, FakeSink, Metrics]:  # fmt: skip
    store = store or DictStore()
    sink = sink or FakeSink()
    metrics = Metrics(CollectorRegistry())
    processor = paths(
        Outputs(store, sink, metrics), classifier or FakeClassifier(),
        retry=RetryPolicy(attempts=3, backoff_s=0.0), log_user_ids=log_user_ids,
        clock=lambda: T0 + timedelta(hours=1), mixed=mixed or MixedSettings(),
    )  # fmt: skip
    return processor, store, sink, metrics


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def offline_profiles(recs: Sequence[SourceRecord], classifier: Any = None) -> dict[str, Profile]:
    """The reference: the same models.contract.mixed and stream.profile functions, one event at a
    time."""
    settings = ProfileSettings()
    profiles: dict[str, Profile] = {}
    for r in recs:
        where = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
        if r.topic == COMMENTS:
            event = decode_comment(r.value)
            profile = profiles.setdefault(event.user_id, Profile(user_id=event.user_id))
            model = classifier or FakeClassifier()
            result = classify_with_clauses(model, [event.text])[0]
            scored = ScoredComment(event, result.probabilities, result.mixed, model.model_version,
                                   result.clause_labels)  # fmt: skip
            apply_comment(profile, scored, settings=settings, **where)  # type: ignore[arg-type]
        else:
            b = decode_behavior(r.value)
            profile = profiles.setdefault(b.user_id, Profile(user_id=b.user_id))
            apply_behavior(profile, b, settings=settings, **where)  # type: ignore[arg-type]
    return profiles


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_comment_batch_matches_offline_profiles_with_one_update_per_user() -> None:
    processor, store, sink, metrics = make()
    batch = records(COMMENTS, [
        (b"u1", comment("e1", "u1", "great product", 0, category="books", rating=5)),
        (b"u2", comment("e2", "u2", "awful", 1)),
        (b"u1", comment("e3", "u1", "meh", 2, category="books")),
        (b"u1", comment("e4", "u1", "older one", -30, category="toys")),  # out of event-time order
    ])  # fmt: skip
    result = run(processor.comments.process(MicroBatch(batch, 0.01)))

    assert (result.consumed, result.applied, result.dead_lettered, result.updates) == (4, 4, 0, 2)
    expected = offline_profiles(batch)
    assert [user for user, _ in sink.updates] == ["u1", "u2"]
    for user_id, raw in sink.updates:
        update = ProfileUpdate.model_validate_json(raw)
        assert update.version == expected[user_id].version
        assert update.model_version == "fake-model-1"
        assert update.profile == expected[user_id].to_dict()
        assert json.loads(store.states[user_id]) == expected[user_id].to_dict()
    assert value(metrics, "portrait_events_consumed_total", topic=COMMENTS) == 4
    assert value(metrics, "portrait_profile_updates_total") == 2
    assert value(metrics, "portrait_batch_size_count") == 1
    assert value(metrics, "portrait_end_to_end_latency_seconds_count") == 4
    labels = ("negative", "neutral", "positive")
    assert sum(value(metrics, "portrait_predictions_total", label=la) for la in labels) == 4


def test_one_classifier_call_per_batch_in_input_order() -> None:
    classifier = FakeClassifier()
    processor, *_ = make(classifier)
    batch = records(COMMENTS, [(f"u{i}".encode(), comment(f"e{i}", f"u{i}", f"t{i}", i))
                               for i in range(5)])  # fmt: skip
    run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert classifier.calls == [["t0", "t1", "t2", "t3", "t4"]]


class LexiconClassifier(FakeClassifier):
    """Confidently positive for "great"/"好", negative for "price"/"贵", neutral otherwise."""

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        rows = [(0.2, 0.6, 0.2)] * len(texts)
        for i, text in enumerate(texts):
            good, bad = ("great" in text.lower() or "好" in text), ("price" in text or "贵" in text)
            if good != bad:
                rows[i] = (0.05, 0.05, 0.9) if good else (0.9, 0.05, 0.05)
        return np.array(rows, dtype=np.float32).reshape(len(texts), 3)


MIXED_ZH = "这个产品很好用，但是价格有点贵"
MIXED_EN = "Great to use, but the price is a bit high"


def test_mixed_comments_are_flagged_in_the_profile_update() -> None:
    classifier = LexiconClassifier()
    processor, _, sink, metrics = make(classifier)
    batch = records(COMMENTS, [
        (b"u1", comment("e1", "u1", MIXED_ZH, 0, category="home")),
        (b"u2", comment("e2", "u2", MIXED_EN, 1, category="home")),
        (b"u2", comment("e3", "u2", "great", 2, category="home")),
        (b"u2", comment("e4", "u2", "the price", 3, category="home")),
    ])  # fmt: skip
    run(processor.comments.process(MicroBatch(batch, 0.0)))

    assert classifier.calls == [[
        MIXED_ZH, MIXED_EN, "great", "the price",  # the comments, then their clauses
        "这个产品很好用", "但是价格有点贵", "Great to use", "but the price is a bit high",
    ]]  # fmt: skip
    profiles = {user: ProfileUpdate.model_validate_json(raw).profile for user, raw in sink.updates}
    assert (profiles["u1"]["mixed_count"], profiles["u1"]["mixed_share"]) == (1, 1.0)
    assert (profiles["u2"]["mixed_count"], profiles["u2"]["mixed_share"]) == (1, 1 / 3)
    home = profiles["u2"]["categories"]["home"]
    # counted by the whole-comment label: the mixed one is neutral overall here
    assert (home["positive_count"], home["negative_count"]) == (1, 1)
    assert profiles["u2"]["interests"][0]["positive_count"] == 1
    assert [c["mixed"] for c in profiles["u2"]["recent_comments"]] == [True, False, False]
    # a mixed comment keeps its clauses' labels (what the profile page highlights), no text
    assert profiles["u1"]["recent_comments"][0]["clause_labels"] == ["positive", "negative"]
    assert profiles["u2"]["recent_comments"][1]["clause_labels"] == []
    assert value(metrics, "portrait_mixed_comments_total") == 2
    expected = offline_profiles(batch, LexiconClassifier())
    assert profiles == {user: profile.to_dict() for user, profile in expected.items()}


def test_mixed_detection_off_classifies_only_the_comments() -> None:
    classifier = LexiconClassifier()
    processor, _, sink, metrics = make(classifier, mixed=MixedSettings(enabled=False))
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", MIXED_EN, 0))])
    run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert classifier.calls == [[MIXED_EN]]
    assert ProfileUpdate.model_validate_json(sink.updates[0][1]).profile["mixed_count"] == 0
    assert value(metrics, "portrait_mixed_comments_total") == 0


def test_behavior_batch_matches_offline_profiles() -> None:
    processor, store, sink, metrics = make()
    batch = records(BEHAVIOR, [
        (b"u1", behavior("b1", "u1", "view", 0, category="books")),
        (b"u1", behavior("b2", "u1", "purchase", 1, value=12.5, category="books")),
        (b"u3", behavior("b3", "u3", "click", 2)),
    ])  # fmt: skip
    result = run(processor.behaviors.process(MicroBatch(batch, 0.0)))
    assert (result.applied, result.updates) == (3, 2)
    expected = offline_profiles(batch)
    for user_id, raw in sink.updates:
        assert ProfileUpdate.model_validate_json(raw).profile == expected[user_id].to_dict()
    assert value(metrics, "portrait_events_consumed_total", topic=BEHAVIOR) == 3


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        (b"u1", b"not json", "not_json"),
        (b"u1", None, "tombstone"),
        (b"u1", b"", "empty_value"),
        (b"u1", b"\xff\xfe{", "not_utf8"),
        (b"u1", b"[1, 2]", "not_an_object"),
        (b"u1", json.dumps({"event_id": "x", "user_id": "u1"}).encode(), "invalid_field"),
        (b"someone-else", comment("e9", "u1", "hi", 0), KEY_MISMATCH),
        (None, comment("e9", "u1", "hi", 0), KEY_MISMATCH),
    ],
)
def test_bad_record_goes_to_dead_letter_with_original_bytes(
    key: bytes | None, raw: bytes | None, reason: str
) -> None:
    processor, _, sink, metrics = make()
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", "ok", 0)), (key, raw),
                               (b"u1", comment("e2", "u1", "ok too", 1))], start=40)  # fmt: skip
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))

    assert (result.applied, result.dead_lettered, result.updates) == (2, 1, 1)
    [(record, headers)] = sink.dead_letters
    assert record.key is key and record.value is raw  # the very bytes, untouched
    names = dict(headers)
    assert names["portrait.source.topic"] == COMMENTS.encode()
    assert names["portrait.source.partition"] == b"0"
    assert names["portrait.source.offset"] == b"41"
    assert names["portrait.error.reason"] == reason.encode()
    assert names["portrait.error.class"] == b"EventError"
    assert names["portrait.error.detail"]
    assert names["trace"] == b"abc"  # the original record's headers follow
    assert value(metrics, "portrait_events_dead_lettered_total", topic=COMMENTS, reason=reason) == 1
    assert ProfileUpdate.model_validate_json(sink.updates[0][1]).version == 2


def test_unknown_action_on_behavior_goes_to_dead_letter() -> None:
    processor, _, sink, _ = make()
    batch = records(BEHAVIOR, [(b"u1", behavior("b1", "u1", "teleport", 0))])
    result = run(processor.behaviors.process(MicroBatch(batch, 0.0)))
    assert (result.dead_lettered, result.updates) == (1, 0)
    assert dict(sink.dead_letters[0][1])["portrait.error.reason"] == b"invalid_field"


def test_redelivered_batch_changes_nothing_and_reemits_the_same_version() -> None:
    processor, store, sink, metrics = make()
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", "a", 0)),
                               (b"u1", comment("e2", "u1", "b", 1))])  # fmt: skip
    run(processor.comments.process(MicroBatch(batch, 0.0)))
    state = store.states["u1"]
    again = run(processor.comments.process(MicroBatch(batch, 0.0)))

    assert (again.applied, again.duplicates, again.updates) == (0, 2, 1)
    assert store.states["u1"] == state
    first, second = (ProfileUpdate.model_validate_json(raw) for _, raw in sink.updates)
    assert first.version == second.version == 2
    assert first.profile == second.profile
    assert value(metrics, "portrait_duplicate_events_skipped_total", topic=COMMENTS,
                 reason="offset") == 2  # fmt: skip


def test_partly_redelivered_batch_applies_only_the_new_events() -> None:
    processor, _, sink, _ = make()
    batch = records(COMMENTS, [(b"u1", comment(f"e{i}", "u1", str(i), i)) for i in range(4)])
    run(processor.comments.process(MicroBatch(batch[:2], 0.0)))
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert (result.applied, result.duplicates) == (2, 2)
    last = ProfileUpdate.model_validate_json(sink.updates[-1][1])
    assert last.profile == offline_profiles(batch)["u1"].to_dict()


def test_transient_inference_failure_is_retried() -> None:
    classifier = FakeClassifier(fail_times=2)
    processor, _, sink, metrics = make(classifier)
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", "a", 0)),
                               (b"u2", comment("e2", "u2", "b", 0))])  # fmt: skip
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert (result.applied, result.dead_lettered) == (2, 0)
    assert len(classifier.calls) == 3
    assert value(metrics, "portrait_inference_failures_total") == 2


def test_poison_text_is_isolated_and_dead_lettered_after_bounded_retries() -> None:
    classifier = FakeClassifier(poison="POISON")
    processor, _, sink, metrics = make(classifier)
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", "fine", 0)),
                               (b"u1", comment("e2", "u1", "POISON", 1)),
                               (b"u2", comment("e3", "u2", "also fine", 2))])  # fmt: skip
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))

    assert (result.applied, result.dead_lettered, result.updates) == (2, 1, 2)
    assert len(classifier.calls) == 3 + 3  # 3 attempts on the batch, then one call per text
    [(record, headers)] = sink.dead_letters
    assert record.offset == 1
    names = dict(headers)
    assert names["portrait.error.reason"] == INFERENCE_FAILED.encode()
    assert names["portrait.error.class"] == b"InferenceError"
    assert b"POISON" not in names["portrait.error.detail"]
    assert value(metrics, "portrait_events_dead_lettered_total", topic=COMMENTS,
                 reason=INFERENCE_FAILED) == 1  # fmt: skip


def test_model_that_always_fails_dead_letters_every_comment() -> None:
    classifier = FakeClassifier(fail_times=10**6)
    processor, _, sink, _ = make(classifier)
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", "a", 0))])
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert (result.dead_lettered, result.updates) == (1, 0)
    assert len(classifier.calls) == 3


def test_non_probabilities_from_the_model_are_an_inference_failure() -> None:
    class NaNClassifier(FakeClassifier):
        def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
            return np.full((len(texts), 3), np.nan, dtype=np.float32)

    processor, _, sink, _ = make(NaNClassifier())
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", "a", 0))])
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert result.dead_lettered == 1


def test_failed_delivery_raises_so_the_batch_is_not_acked() -> None:
    processor, *_ = make(sink=FakeSink(fail=True))
    batch = records(COMMENTS, [(b"u1", comment("e1", "u1", "a", 0))])
    with pytest.raises(OSError, match="refused"):
        run(processor.comments.process(MicroBatch(batch, 0.0)))


def test_updates_of_one_user_leave_in_version_order_across_both_agents() -> None:
    """A slow inference call must not let the comment batch's update overtake a newer one."""
    store, sink = DictStore(), FakeSink()
    slow, _, _, _ = make(FakeClassifier(delay_s=0.2), store=store, sink=sink)
    fast, _, _, _ = make(store=store, sink=sink)

    async def both() -> None:
        comments = records(COMMENTS, [(b"u1", comment("e1", "u1", "a", 0))])
        actions = records(BEHAVIOR, [(b"u1", behavior("b1", "u1", "view", 1))])
        slow_task = asyncio.create_task(slow.comments.process(MicroBatch(comments, 0.0)))
        await asyncio.sleep(0.05)  # the comment batch is now inside inference
        await fast.behaviors.process(MicroBatch(actions, 0.0))
        await slow_task

    run(both())
    versions = [ProfileUpdate.model_validate_json(raw).version for _, raw in sink.updates]
    assert versions == [1, 2]


def test_logs_carry_no_comment_text_and_no_user_id_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="stream")  # a CLI test may have set it to INFO
    processor, *_ = make(FakeClassifier(fail_times=1))
    batch = records(COMMENTS, [(b"user-42", comment("e1", "user-42", SECRET_TEXT, 0)),
                               (b"user-42", b"{broken " + SECRET_TEXT.encode())])  # fmt: skip
    run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert caplog.records
    assert SECRET_TEXT not in caplog.text
    assert "user-42" not in caplog.text


def test_user_ids_are_logged_only_when_allowed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stream")
    processor, *_ = make(log_user_ids=True)
    batch = records(COMMENTS, [(b"user-42", comment("e1", "user-42", SECRET_TEXT, 0))])
    run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert "user-42" in caplog.text
    assert SECRET_TEXT not in caplog.text


def test_check_key_accepts_the_user_id_as_utf8() -> None:
    record = SourceRecord(COMMENTS, 0, 0, "usér".encode(), b"{}")
    check_key(record, "usér")


def test_dead_letter_headers_drop_spoofed_portrait_headers() -> None:
    from models.contract.errors import EventError

    record = SourceRecord(COMMENTS, 2, 7, b"k", b"v",
                          headers=(("portrait.error.reason", b"forged"), ("x", b"1")))  # fmt: skip
    headers = dead_letter_record_headers(record, EventError("not_json", "value is not JSON"))
    assert [v for k, v in headers if k == "portrait.error.reason"] == [b"not_json"]
    assert headers[-1] == ("x", b"1")


# --- the faust glue (stream.app) with fake streams and tables: the acknowledgement contract ---


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = COMMENTS, 1, offset
        self.key, self.value, self.timestamp = b"u1", b"{}", 1714564800.0
        self.headers = [("trace", b"abc")]


class FakeEvent:
    def __init__(self, offset: int) -> None:
        self.message = FakeMessage(offset)


class FakeStream:
    """What consume_in_batches uses of a faust stream: noack(), events(), ack()."""

    def __init__(self, count: int) -> None:
        self.events_ = [FakeEvent(i) for i in range(count)]
        self.acked: list[int] = []
        self.log: list[str] = []

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> Any:
        for event in self.events_:
            yield event

    async def ack(self, event: FakeEvent) -> bool:
        self.acked.append(event.message.offset)
        self.log.append(f"ack {event.message.offset}")
        return True


def test_events_are_acked_only_after_their_batch_is_processed() -> None:
    from stream.faust_adapters import consume_in_batches
    from stream.settings import BatchSettings

    stream = FakeStream(5)
    seen: list[list[int]] = []

    async def process(batch: MicroBatch[SourceRecord]) -> Any:
        stream.log.append("process")
        seen.append([r.offset for r in batch.items])
        assert all(r.handle is not None and r.headers == (("trace", b"abc"),) for r in batch.items)
        return None

    run(consume_in_batches(stream, process, BatchSettings(max_batch_size=2, max_wait_s=1.0)))
    assert seen == [[0, 1], [2, 3], [4]]
    assert stream.log == ["process", "ack 0", "ack 1", "process", "ack 2", "ack 3", "process",
                          "ack 4"]  # fmt: skip


def test_a_failing_batch_is_never_acked() -> None:
    from stream.faust_adapters import consume_in_batches
    from stream.settings import BatchSettings

    stream = FakeStream(4)

    async def process(batch: MicroBatch[SourceRecord]) -> Any:
        if batch.items[0].offset == 2:
            raise RuntimeError("table write failed")
        return None

    with pytest.raises(RuntimeError):
        run(consume_in_batches(stream, process, BatchSettings(max_batch_size=2, max_wait_s=1.0)))
    assert stream.acked == [0, 1]


def test_table_store_binds_each_record_as_fausts_current_event() -> None:
    import faust

    from stream.faust_adapters import TableProfileStore

    class FakeTable(dict[bytes, Any]):
        def __init__(self) -> None:
            super().__init__()
            self.bound: list[Any] = []

        def get(self, key: bytes, default: Any = None) -> Any:
            self.bound.append(faust.current_event())
            return super().get(key, default)

        def __setitem__(self, key: bytes, value: Any) -> None:
            self.bound.append(faust.current_event())
            super().__setitem__(key, value)

    table = FakeTable()
    store = TableProfileStore(table)
    first, second = FakeEvent(1), FakeEvent(2)
    record = SourceRecord(COMMENTS, 1, 1, b"u1", b"{}", handle=first)
    assert store.load("u1", record) is None
    store.save("u1", {"a": 1}, SourceRecord(COMMENTS, 1, 2, b"u1", b"{}", handle=second))
    assert store.load("u1", record) == {"a": 1}
    assert table.bound == [first, second, first]
    assert faust.current_event() is None  # the binding does not leak out
    assert list(table) == [b"u1"]


def test_uncommitted_source_partitions_are_the_ones_to_rewind() -> None:
    from faust.types import TP

    from stream.rebalance import uncommitted_source_partitions

    source = [TP("comments", 0), TP("comments", 1), TP("behavior", 0), TP("behavior", 1)]
    changelog = TP("app-profiles-changelog", 0)
    committed = {source[0]: 12, source[1]: None, source[2]: 0, source[3]: 7, changelog: None}
    rewind = uncommitted_source_partitions(committed, lambda tp: tp.topic.endswith("-changelog"))
    assert rewind == [source[1], source[2]]  # none committed, or 0: from the first offset


def _offline_app_settings(tmp_path: Any) -> Any:
    """Settings for building the app without a broker (nothing connects until it starts)."""
    from stream.settings import load_settings

    return load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"}, state_dir=tmp_path, metrics_port=0
    )


def test_the_app_consumes_through_the_seek_first_consumer(tmp_path: Any) -> None:
    from stream.app import create_app
    from stream.rebalance import SeekFirstConsumer

    settings = _offline_app_settings(tmp_path)
    app = create_app(settings, classifier=FakeClassifier())
    assert app.transport.Consumer is SeekFirstConsumer


def test_source_partitions_deliver_nothing_until_seeked_to_their_committed_offsets(
    tmp_path: Any,
) -> None:
    from faust.types import TP

    from stream.app import changelog_topic_name, create_app

    settings = _offline_app_settings(tmp_path)
    consumer = create_app(settings, classifier=FakeClassifier()).consumer
    committed, never = TP("comments", 0), TP("behavior", 1)
    changelog = TP(changelog_topic_name(settings.app_id), 0)

    class FakeConsumerThread:  # what perform_seek reaches of aiokafka
        def __init__(self) -> None:
            self.active_while_seeking: set[TP] | None = None
            self.seeks: list[tuple[TP, int]] = []

        def assignment(self) -> set[TP]:
            return {committed, never, changelog}

        async def seek_to_committed(self) -> dict[TP, int | None]:
            self.active_while_seeking = set(consumer._get_active_partitions())
            return {committed: 5, never: None, changelog: None}

        def seek(self, tp: TP, offset: int) -> None:
            self.seeks.append((tp, offset))

    thread = FakeConsumerThread()
    consumer._thread = thread
    consumer.resume_partitions({committed, never})  # what recovery does just before the seek
    asyncio.run(consumer.perform_seek())
    assert thread.active_while_seeking == set()  # read-ahead records are not handed out
    assert {committed, never} <= consumer._get_active_partitions()
    assert thread.seeks == [(never, 0)]  # no committed offset: from the first offset
    assert consumer._read_offset[committed] == 5 and consumer._read_offset[never] is None


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2024-05-02T13:00:01Z", 0]
)
def test_event_times_far_from_the_clock_are_dead_lettered_with_their_own_reason(
    when: str | int,
) -> None:
    """The clock is T0 + 1 h: 1 day + 1 s ahead, 10 years back and beyond are refused."""
    processor, store, sink, metrics = make()
    far = json.dumps({"event_id": "far", "user_id": "u", "text": "great",
                      "event_time": when}).encode()  # fmt: skip
    batch = records(COMMENTS, [(b"u", far), (b"u", comment("ok", "u", "awful", 1))])
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert (result.dead_lettered, result.applied) == (1, 1)
    headers = dict(sink.dead_letters[0][1])
    assert headers["portrait.error.reason"] == b"event_time_out_of_range"
    assert value(metrics, "portrait_events_dead_lettered_total", topic=COMMENTS,
                 reason="event_time_out_of_range") == 1  # fmt: skip
    # the accepted event alone sets the score; the refused one left no trace in the profile
    profile = Profile.from_dict(json.loads(store.states["u"]))
    negative, _, positive = fake_probabilities("awful")
    assert profile.comment_count == 1
    assert profile.sentiment_score == pytest.approx(positive - negative)


def test_the_same_event_id_resent_at_a_new_offset_is_counted_once() -> None:
    processor, store, sink, metrics = make()
    resend = comment("c-1", "u", "great", 1)
    batch = records(COMMENTS, [(b"u", resend), (b"u", resend)])  # offsets 0 and 1
    result = run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert (result.applied, result.duplicates) == (1, 1)
    again = run(processor.comments.process(MicroBatch(records(COMMENTS, [(b"u", resend)], 5), 0.0)))
    assert (again.applied, again.duplicates) == (0, 1)
    profile = Profile.from_dict(json.loads(store.states["u"]))
    assert profile.comment_count == 1 and profile.applied_offsets == {f"{COMMENTS}:0": 5}
    assert value(metrics, "portrait_duplicate_events_skipped_total", topic=COMMENTS,
                 reason="event_id") == 2  # fmt: skip


def test_a_record_off_its_keys_partition_is_dead_lettered_as_wrong_partition() -> None:
    from stream.partitioner import user_partition

    store, sink, metrics = DictStore(), FakeSink(), Metrics(CollectorRegistry())
    processor = paths(Outputs(store, sink, metrics), FakeClassifier(), partitions=4)
    home = user_partition("ana", 4)
    right = records(COMMENTS, [(b"ana", comment("c1", "ana", "great", 1))], partition=home)
    wrong = records(COMMENTS, [(b"ana", comment("c2", "ana", "awful", 2))], start=7,
                    partition=(home + 1) % 4)  # fmt: skip
    result = run(processor.comments.process(MicroBatch(right + wrong, 0.0)))
    assert (result.applied, result.dead_lettered) == (1, 1)
    assert dict(sink.dead_letters[0][1])["portrait.error.reason"] == b"wrong_partition"
    assert json.loads(store.states["ana"])["comment_count"] == 1  # one profile, not two


def test_a_record_off_its_keys_partition_is_rerouted_once_when_its_topic_allows() -> None:
    from stream.partitioner import user_partition

    store, sink, metrics = DictStore(), FakeSink(), Metrics(CollectorRegistry())
    repartition = "app-comments.v1-repartition"
    processor = paths(Outputs(store, sink, metrics), FakeClassifier(), partitions=4,
                      reroute_from={COMMENTS})  # fmt: skip
    home = user_partition("ana", 4)
    wrong = records(COMMENTS, [(b"ana", comment("c2", "ana", "awful", 2))], start=7,
                    partition=(home + 1) % 4)  # fmt: skip
    result = run(processor.comments.process(MicroBatch(wrong, 0.0)))

    assert (result.applied, result.dead_lettered) == (0, 0) and sink.dead_letters == []
    [(record, partition, headers)] = sink.rerouted
    assert record == wrong[0] and partition == home
    assert headers == [
        ("trace", b"abc"),
        ("portrait.rerouted.from", f"{COMMENTS}:{(home + 1) % 4}:7".encode()),
    ]
    assert value(metrics, "portrait_events_rerouted_total", topic=COMMENTS) == 1
    # on the repartition topic, at its key's partition: profiled
    moved = records(repartition, [(record.key, record.value)], start=0, partition=home)
    assert run(processor.comments.process(MicroBatch(moved, 0.0))).applied == 1
    # a record of a topic that is not re-routed (the repartition topic itself) is dead-lettered
    stray = records(repartition, [(b"ana", comment("c3", "ana", "ok", 3))], start=1,
                    partition=(home + 1) % 4)  # fmt: skip
    assert run(processor.comments.process(MicroBatch(stray, 0.0))).dead_lettered == 1
    assert dict(sink.dead_letters[0][1])["portrait.error.reason"] == b"wrong_partition"
    assert len(sink.rerouted) == 1


def test_a_swapped_model_scores_from_the_next_micro_batch() -> None:
    class Second(FakeClassifier):
        model_version = "fake-model-2"

    first, second = FakeClassifier(), Second()
    processor, _, sink, _ = make(first)
    run(processor.comments.process(MicroBatch(records(COMMENTS, [
        (b"u1", comment("e1", "u1", "one", 0))]), 0.0)))  # fmt: skip
    processor.comments.swap_model(second)
    assert processor.comments.model_version == "fake-model-2"
    run(processor.comments.process(MicroBatch(records(COMMENTS, [
        (b"u1", comment("e2", "u1", "two", 1))], start=1), 0.0)))  # fmt: skip
    assert first.calls == [["one"]] and second.calls == [["two"]]  # one model per batch
    updates = [ProfileUpdate.model_validate_json(raw) for _, raw in sink.updates]
    assert [u.model_version for u in updates] == ["fake-model-1", "fake-model-2"]
    recent = updates[-1].profile["recent_comments"]
    assert [c["model_version"] for c in recent] == ["fake-model-1", "fake-model-2"]
