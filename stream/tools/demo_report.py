"""The demo's figures and its printed summary (see :mod:`stream.tools.demo`).

End-to-end latency of one profile update = the wall time it was received minus the wall time the
latest source event it covers was sent: the profile's ``applied_offsets`` name the last applied
offset per source partition, and the demo remembers when it sent the record at each offset.
Percentiles are over profile updates (nearest-rank), in seconds.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.tools.bench.stats import nearest_rank
from stream.tools.fidelity import Fidelity
from stream.tools.follow import ProfileReceipt
from stream.tools.simulate import LABELS, Population

__all__ = ["DemoResult", "format_summary", "latency_percentiles", "scrape_consumed"]

_PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured.

    Attributes:
        produced: events the broker acknowledged (valid and malformed).
        failed_sends: events the broker did not acknowledge.
        comments: comment events among the valid ones.
        malformed: malformed events sent on purpose.
        users: simulated users.
        profiled: events reflected in the final profiles (comments + behaviour events).
        dead_by_reason: dead-lettered events by reason code.
        worker_consumed: the worker's ``portrait_events_consumed_total`` (None if not readable).
        accounted: profiled + dead-lettered == produced before the timeout.
        process_s: seconds from the first send to the moment all events were accounted for.
        latency_s: percentile -> end-to-end latency, seconds (empty if nothing was measured).
        fidelity: profile fidelity against the simulation's true label shares.
        population: the simulated population.
        latest: user id -> latest profile-update dict.
        profiles_path: where the final profiles were written.
        rate_per_s: the replay rate asked for, events per second (0 = as fast as possible).
        fidelity_by_language: the same as ``fidelity``, for the users of each language.
        segment_events: the ``segment-events.v1`` values the run produced, one per (user,
            segment, version).
        page_url: the profile page of :func:`page_example` while ``portrait demo
            --keep-serving`` serves it; ``None`` otherwise.
    """

    produced: int
    failed_sends: int
    comments: int
    malformed: int
    users: int
    profiled: int
    dead_by_reason: dict[str, int]
    worker_consumed: int | None
    accounted: bool
    process_s: float
    latency_s: dict[int, float]
    fidelity: Fidelity
    population: Population
    latest: dict[str, dict[str, Any]]
    profiles_path: Path
    rate_per_s: float = 0.0
    fidelity_by_language: dict[str, Fidelity] = field(default_factory=dict)
    segment_events: list[dict[str, Any]] = field(default_factory=list)
    page_url: str | None = None

    @property
    def dead_lettered(self) -> int:
        """Dead-lettered events (all reasons)."""
        return sum(self.dead_by_reason.values())

    @property
    def events_per_s(self) -> float:
        """Accounted-for events per second of :attr:`process_s`."""
        return (self.profiled + self.dead_lettered) / self.process_s


def latency_percentiles(
    receipts: Sequence[ProfileReceipt], produce_times: Mapping[tuple[str, int, int], float]
) -> dict[int, float]:
    """End-to-end latency percentiles (p50, p95, p99), seconds, nearest-rank over updates.

    Args:
        receipts: profile updates as received.
        produce_times: (topic, partition, offset) -> wall time the record was sent, epoch s.

    Returns:
        {50: s, 95: s, 99: s}; empty when no update covers a known record.
    """
    latencies = []
    for receipt in receipts:
        sent = []
        for key, offset in receipt.applied_offsets.items():
            topic, _, partition = key.rpartition(":")
            if partition.isdigit():
                sent_s = produce_times.get((topic, int(partition), int(offset)))
                if sent_s is not None:
                    sent.append(sent_s)
        if sent:
            latencies.append(receipt.received_s - max(sent))
    if not latencies:
        return {}
    ranks = nearest_rank(latencies, _PERCENTILES)
    return {p: ranks[f"p{p}"] for p in _PERCENTILES}


def scrape_consumed(port: int, timeout_s: float = 1.0) -> int | None:
    """Sum of ``portrait_events_consumed_total`` on a local metrics endpoint.

    Args:
        port: the worker's metrics port (0 = none).
        timeout_s: HTTP timeout, seconds.

    Returns:
        The total over all topics; 0 when the endpoint answers without that counter yet; None when
        the endpoint cannot be read.
    """
    from prometheus_client.parser import text_string_to_metric_families

    if port <= 0:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as rsp:
            text = rsp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "portrait_events_consumed":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def _shares(counts: Mapping[str, Any]) -> str:
    values = [float(counts.get(label, 0)) for label in LABELS]
    total = sum(values) or 1.0
    return "/".join(f"{v / total:.2f}" for v in values)


def _example(user: str, result: DemoResult) -> str:
    update = result.latest[user]
    profile = update.get("profile", {})
    interests = ", ".join(
        f"{i['category']}({i['sentiment_score']:+.2f})" if i.get("sentiment_score") is not None
        else str(i["category"]) for i in (profile.get("interests") or [])[:3]
    )  # fmt: skip
    score = profile.get("sentiment_score")
    behaviour = profile.get("behavior_counts") or {}
    true = result.population.true_shares[user]
    return (
        f"  {user}  v{update.get('version')}  comments {profile.get('comment_count', 0)}  "
        f"true neg/neu/pos {_shares(true)}  profile {_shares(profile.get('label_counts', {}))}  "
        f"score {'n/a' if score is None else f'{score:+.2f}'}\n"
        f"      interests {interests or '-'}  views {behaviour.get('view', 0)}  "
        f"purchases {behaviour.get('purchase', 0)} ({profile.get('purchase_value_sum', 0.0):.2f})"
    )


def _examples(result: DemoResult, count: int = 3) -> list[str]:
    """The most active user, then the most negative and most positive of the well-observed ones."""
    users = [u for u in result.latest if u in result.population.true_shares]
    if not users:
        return []
    by_activity = sorted(users, key=lambda u: -result.population.comment_counts[u])
    observed = [u for u in by_activity if result.population.comment_counts[u] >= 5] or by_activity
    score = {u: result.latest[u].get("profile", {}).get("sentiment_score") or 0.0 for u in observed}
    picks = [by_activity[0], min(observed, key=score.__getitem__),
             max(observed, key=score.__getitem__)]  # fmt: skip
    return [_example(u, result) for u in dict.fromkeys(picks)][:count]


def _latency_note(result: DemoResult) -> list[str]:
    if result.rate_per_s > 0:
        return [f"{' ' * 23}replayed at {result.rate_per_s:g} events/s"]
    pad = " " * 23
    return [f"{pad}all events were sent at once, so this includes waiting behind the",
            f"{pad}backlog; --rate N (below the throughput) shows the steady state"]  # fmt: skip


def _language_lines(result: DemoResult) -> list[str]:
    """One fidelity line per language (Chinese reviews carry no neutral label: its share is 0)."""
    return [
        f"  {lang}: {fid.users} users, error {fid.mean_absolute_error:.3f} "
        f"(reference {fid.baseline_mae:.3f})"
        for lang, fid in result.fidelity_by_language.items()
    ]


def _segment_lines(result: DemoResult) -> list[str]:
    """Entered and exited per segment, and one user's story (the user with most transitions)."""
    if not result.segment_events:
        return []
    counts: dict[str, Counter[str]] = {}
    by_user: dict[str, list[dict[str, Any]]] = {}
    for event in result.segment_events:
        counts.setdefault(event["segment"], Counter())[event["transition"]] += 1
        by_user.setdefault(event["user_id"], []).append(event)
    lines = ["SEGMENTS (segment-events.v1)"]
    lines += [f"  {name:<30} entered {c['entered']:>4}  exited {c['exited']:>4}"
              for name, c in sorted(counts.items())]  # fmt: skip
    user, story = max(by_user.items(), key=lambda kv: (len(kv[1]), kv[0]))
    lines.append(f"  one user's story: {user}")
    for event in sorted(story, key=lambda e: e["version"]):
        values = ", ".join(f"{k}={_brief(v)}" for k, v in event["values"].items())
        lines.append(f"    version {event['version']:>3}: {event['transition']} "
                     f"{event['segment']} ({values})")  # fmt: skip
    return lines


def _brief(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return f"[{len(value)} items]"
    return str(value)


def format_summary(result: DemoResult) -> str:
    """The demo's summary as printable text."""
    fid = result.fidelity
    status = ("all accounted for (consumed = profiled + dead-lettered)" if result.accounted
              else "INCOMPLETE: events still missing at the timeout")  # fmt: skip
    consumed = "n/a" if result.worker_consumed is None else str(result.worker_consumed)
    latency = "  ".join(f"p{p} {v:.3f} s" for p, v in result.latency_s.items()) or "n/a"
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(result.dead_by_reason.items())) or "none"
    lines = [
        "",
        "== Portrait demo summary ==",
        "Texts are REAL (held-out test split of the datasets, never seen in training);",
        "users, items, event times and behaviour are SIMULATED.",
        f"events produced        {result.produced}  ({result.comments} comments, "
        f"{result.produced - result.comments - result.malformed} behaviour, "
        f"{result.malformed} malformed on purpose); failed sends {result.failed_sends}",
        f"events processed       {result.profiled + result.dead_lettered}  = profiled "
        f"{result.profiled} + dead-lettered {result.dead_lettered}",
        f"                       {status}",
        f"dead-letter reasons    {reasons}",
        f"worker consumed        {consumed}  (portrait_events_consumed_total)",
        f"throughput             {result.events_per_s:.0f} events/s  "
        f"(first event sent -> all accounted for: {result.process_s:.1f} s)",
        f"end-to-end latency     {latency}  (event sent -> its profile update received)",
        *_latency_note(result),
        f"profiles               {len(result.latest)} users -> {result.profiles_path}",
        "example profiles (label shares neg/neu/pos):",
        *_examples(result),
        f"PROFILE FIDELITY       users with >= {fid.min_comments} comments: {fid.users}",
        f"  mean absolute error of label shares (true vs profile): {fid.mean_absolute_error:.3f}  "
        + "  ".join(f"{label} {fid.per_label_mae[label]:.3f}" for label in LABELS),
        f"  reference: every user given the population's shares: {fid.baseline_mae:.3f}",
        *_language_lines(result),
        *_segment_lines(result),
        *_page_lines(result),
    ]
    return "\n".join(lines)


def page_example(latest: dict[str, dict[str, Any]]) -> str | None:
    """The user whose profile page the demo shows: one with a mixed recent comment and the most
    comments (ties: the smallest id), else the user with the most comments; ``None`` without any.
    """

    def rank(user: str) -> tuple[bool, int, str]:
        profile = latest[user]["profile"]
        mixed = any(c.get("mixed") for c in profile.get("recent_comments") or [])
        return (not mixed, -int(profile.get("comment_count", 0)), user)

    users = [u for u in latest if latest[u]["profile"].get("comment_count", 0) > 0]
    return min(users, key=rank) if users else None


def _page_lines(result: DemoResult) -> list[str]:
    if result.page_url is not None:
        return [f"PROFILE PAGE           {result.page_url}  (served until Ctrl-C)"]
    user = page_example(result.latest)
    if user is None:
        return []
    return [
        f"PROFILE PAGE           run `portrait demo --keep-serving` and open the page of "
        f"{user}: /users/{user}"
    ]
