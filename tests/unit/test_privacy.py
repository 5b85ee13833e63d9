"""Pseudonymisation and erasure in the micro-batch logic, with the fakes of test_worker_logic."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from test_worker_logic import (
    BEHAVIOR,
    COMMENTS,
    DictStore,
    FakeClassifier,
    FakeSink,
    Paths,
    behavior,
    comment,
    paths,
    records,
)

from models.contract.errors import ConfigError
from stream.batching import MicroBatch
from stream.events import ErasureRequest, decode_erasure
from stream.metrics import Metrics
from stream.privacy import Pseudonymiser, user_partition
from stream.processing import Outputs, SourceRecord
from stream.settings import PseudonymisationSettings, load_settings

ERASURE = "erasure.v1"
SECRET = "a-secret-of-at-least-16-chars"


class ErasableStore(DictStore):
    """The test table, with deletes recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.deletes: list[tuple[str, int]] = []

    def delete(self, user_id: str, record: SourceRecord) -> None:
        self.states.pop(user_id, None)
        self.deletes.append((user_id, record.partition))


class SetLedger:
    """The erasure ledger: a set of request ids."""

    def __init__(self) -> None:
        self.done: set[str] = set()

    def contains(self, request_id: str, record: SourceRecord) -> bool:
        return request_id in self.done

    def add(self, request_id: str, record: SourceRecord) -> None:
        self.done.add(request_id)


class TombstoneSink(FakeSink):
    """The test topics, with tombstones recorded as updates of value None."""

    def send_tombstone(self, user_id: str) -> asyncio.Future[object]:
        self.updates.append((user_id, None))  # type: ignore[arg-type]  # None = tombstone
        return self._delivery()


def _processor(
    pseudonymise: Pseudonymiser | None = None,
) -> tuple[Paths, ErasableStore, TombstoneSink, Metrics]:
    store, sink, metrics = ErasableStore(), TombstoneSink(), Metrics(CollectorRegistry())
    processor = paths(
        Outputs(store, sink, metrics), FakeClassifier(), ledger=SetLedger(),
        pseudonymise=pseudonymise,
    )  # fmt: skip
    return processor, store, sink, metrics


def _erasure(user_id: str, request_id: str = "r1") -> bytes:
    return ErasureRequest(request_id=request_id, user_id=user_id,
                          requested_at="2024-06-01T00:00:00Z").to_json_bytes()  # fmt: skip


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_pseudonymiser_is_hmac_sha256_hex_and_off_by_default() -> None:
    assert Pseudonymiser(PseudonymisationSettings())("ana") == "ana"
    on = Pseudonymiser(PseudonymisationSettings(secret=SecretStr(SECRET)))
    want = hmac.new(SECRET.encode(), b"ana", hashlib.sha256).hexdigest()
    assert on("ana") == want and len(want) == 64
    assert on("bo") != want
    assert SECRET not in repr(on)
    other = Pseudonymiser(PseudonymisationSettings(secret=SecretStr(SECRET + "x")))
    assert other("ana") != want  # the key matters: no plain hash


def test_short_secret_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_PSEUDONYMISATION__SECRET", "tooshort")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "PORTRAIT_PSEUDONYMISATION__SECRET" in str(info.value)
    assert "tooshort" not in str(info.value)


def test_pseudonymised_events_reach_table_and_updates_as_pseudonyms_only() -> None:
    pseudonym = Pseudonymiser(PseudonymisationSettings(secret=SecretStr(SECRET)))
    processor, store, sink, _ = _processor(pseudonym)
    batch = records(COMMENTS, [(b"ana", comment("c1", "ana", "nice", 0)),
                               (b"ana", comment("c2", "ana", "bad", 5))])  # fmt: skip
    _run(processor.comments.process(MicroBatch(batch, 0.0)))
    assert list(store.states) == [pseudonym("ana")]
    ((key, value),) = sink.updates
    assert key == pseudonym("ana") and b"ana" not in value
    assert json.loads(value)["profile"]["user_id"] == pseudonym("ana")
    assert json.loads(store.states[key])["comment_count"] == 2


def test_erasure_deletes_profile_sends_tombstone_and_next_event_starts_new_profile() -> None:
    processor, store, sink, _ = _processor()
    _run(processor.behaviors.process(MicroBatch(
        records(BEHAVIOR, [(b"ana", behavior("b1", "ana", "view", 0)),
                           (b"bo", behavior("b2", "bo", "view", 1))]), 0.0)))  # fmt: skip
    result = _run(
        processor.erasures.process(
            MicroBatch(records(ERASURE, [(b"ana", _erasure("ana"))], partition=0), 0.0)
        )
    )
    assert (result.applied, result.updates, result.dead_lettered) == (1, 1, 0)
    assert set(store.states) == {"bo"} and store.deletes == [("ana", 0)]
    assert sink.updates[-1] == ("ana", None)
    _run(
        processor.behaviors.process(
            MicroBatch(
                records(BEHAVIOR, [(b"ana", behavior("b3", "ana", "like", 9))], start=2), 0.0
            )
        )
    )
    profile = json.loads(store.states["ana"])
    assert profile["version"] == 1 and profile["behavior_counts"] == {"like": 1}


def test_redelivered_erasure_is_skipped_and_keeps_the_new_profile() -> None:
    processor, store, sink, _ = _processor()
    erasure = MicroBatch(records(ERASURE, [(b"ana", _erasure("ana", "req-1"))]), 0.0)
    _run(
        processor.behaviors.process(
            MicroBatch(records(BEHAVIOR, [(b"ana", behavior("b1", "ana", "view", 0))]), 0.0)
        )
    )
    _run(processor.erasures.process(erasure))
    _run(
        processor.behaviors.process(
            MicroBatch(
                records(BEHAVIOR, [(b"ana", behavior("b2", "ana", "like", 5))], start=1), 0.0
            )
        )
    )
    tombstones = sum(value is None for _, value in sink.updates)
    result = _run(processor.erasures.process(erasure))  # a crash before the commit: again
    assert (result.applied, result.duplicates) == (0, 1)
    assert json.loads(store.states["ana"])["behavior_counts"] == {"like": 1}
    assert sum(value is None for _, value in sink.updates) == tombstones  # no second tombstone


def test_erasure_with_pseudonymisation_erases_the_pseudonym() -> None:
    pseudonym = Pseudonymiser(PseudonymisationSettings(secret=SecretStr(SECRET)))
    processor, store, sink, _ = _processor(pseudonym)
    _run(
        processor.behaviors.process(
            MicroBatch(records(BEHAVIOR, [(b"ana", behavior("b1", "ana", "view", 0))]), 0.0)
        )
    )
    _run(processor.erasures.process(MicroBatch(records(ERASURE, [(b"ana", _erasure("ana"))]),
                                               0.0)))  # fmt: skip
    assert store.states == {} and sink.updates[-1] == (pseudonym("ana"), None)


def test_invalid_erasure_requests_are_dead_lettered_not_executed() -> None:
    processor, store, sink, metrics = _processor()
    _run(
        processor.behaviors.process(
            MicroBatch(records(BEHAVIOR, [(b"ana", behavior("b1", "ana", "view", 0))]), 0.0)
        )
    )
    bad = records(ERASURE, [(b"ana", b"not json"), (b"zed", _erasure("ana")),
                            (b"ana", json.dumps({"user_id": "ana"}).encode())])  # fmt: skip
    result = _run(processor.erasures.process(MicroBatch(bad, 0.0)))
    assert (result.applied, result.dead_lettered) == (0, 3)
    assert "ana" in store.states and len(sink.dead_letters) == 3
    reasons = [dict(h)["portrait.error.reason"] for _, h in sink.dead_letters]
    assert reasons == [b"not_json", b"key_mismatch", b"invalid_field"]


def test_decode_erasure_round_trip() -> None:
    request = decode_erasure(_erasure("ana", "req-7"))
    assert (request.user_id, request.request_id) == ("ana", "req-7")
    assert request.requested_at.tzinfo is not None


def test_user_partition_is_stable_and_in_range() -> None:
    parts = {user_partition(f"u{i}", 4) for i in range(100)}
    assert parts == {0, 1, 2, 3}
    assert user_partition("ana", 4) == user_partition("ana", 4)
