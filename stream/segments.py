"""Streaming segments: named CEL conditions over a profile, with enter/exit hysteresis.

A segment definition (``PORTRAIT_SEGMENTS__PATH``, YAML or JSON) names an ``enter`` condition and
an optional ``exit`` condition written in CEL, the Common Expression Language
(https://cel.dev; the rule language of Kubernetes validation rules, Envoy and Firebase), over:

- ``profile``: the profile exactly as ``profile-updates.v1`` carries it (``sentiment_score``,
  ``comment_count``, ``interests``, ``mixed_share``, ``purchase_value_sum``,
  ``last_event_time_ms`` ...); a figure that has no value yet (``sentiment_score`` before the
  first comment) is ``null``;
- ``now_ms``: the worker's wall clock when it evaluates, epoch milliseconds (int). Event times
  say when users acted; "no event for 14 days" means 14 days before *now*, and only a wall clock
  moves while a user is silent;
- ``sum(list)``: the one added function (CEL has no sum), for windowed counts over the
  profile's per-day buckets ``profile.daily`` (30 days, ``stream.profile.DailyCounts``).

Hysteresis: a user not in the segment enters when ``enter`` is true; a member exits when
``exit`` is true (without ``exit``: when ``enter`` is false). A condition that fails for a profile
(a missing field, ``null`` compared with a number, a wrong type) counts in
``portrait_segment_errors_total{segment}`` and decides nothing: no transition either way.

Expressions are compiled once (PyPI ``common-expression-language``, Rust bindings of the ``cel``
crate: 12-14 us per condition on a small dict, measured in the issue; a syntax error names line
and column). Only the profile fields the conditions read (``profile.<field>``) are converted, once
per profile, into one ``cel.Context`` that every condition shares.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import cel

from stream.events import SegmentEvent
from stream.profile import Profile
from stream.segment_definitions import Segment

__all__ = [
    "SegmentEvaluator",
    "SegmentMembers",
    "Transition",
    "segment_events",
]


def _sum(values: list[Any]) -> Any:
    """``sum(list)`` in conditions (CEL has no sum macro): e.g. negative comments of the last 7
    days, ``sum(profile.daily.filter(d, d.day_ms > now_ms - 7 * 86400000).map(d, d.negative))``."""
    return sum(values)


@dataclass(frozen=True)
class Transition:
    """A user entering or leaving a segment.

    Attributes:
        segment: The segment's name.
        transition: ``"entered"`` or ``"exited"``.
        definition_version: The version of the definition that decided it.
        values: The profile fields the segment's conditions read, as they were.
    """

    segment: str
    transition: Literal["entered", "exited"]
    definition_version: str
    values: dict[str, Any]

    def to_stored(self) -> dict[str, Any]:
        """What the profile keeps of it (``Profile.segment_transitions``): the values' field
        names, not the values. The profile stored with it holds those values, so
        :func:`segment_events` reads them back from it; the profile stays small (a window
        condition reads the 30 ``daily`` buckets)."""
        return {"segment": self.segment, "transition": self.transition,
                "definition_version": self.definition_version,
                "fields": list(self.values)}  # fmt: skip

    @classmethod
    def from_stored(cls, data: Mapping[str, Any], state: Mapping[str, Any]) -> Transition:
        """Inverse of :meth:`to_stored`, the values read from ``state`` (the profile stored with
        it, ``Profile.to_dict()``); a transition stored with its ``values`` keeps them."""
        values = data.get("values")
        if values is None:
            values = {k: state.get(k) for k in data["fields"]}
        return cls(data["segment"], data["transition"], data["definition_version"],
                   dict(values))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the fields of ``segment-events.v1`` that describe the transition)."""
        return {"segment": self.segment, "transition": self.transition,
                "definition_version": self.definition_version, "values": self.values}  # fmt: skip


class SegmentMembers:
    """Members per segment in the partitions this worker owns (``portrait_segment_members``).

    Exact after each re-evaluation of a partition (:meth:`count_partition`: every stored
    profile is read), kept up to date by the transitions in between (:meth:`transition`).

    Args:
        names: The defined segments' names (a gauge per name, 0 without members).
        publish: Called with ``{segment: members}`` for the segments whose count may have changed
            (every segment after a re-count or a rebalance; one after a transition); sets the
            gauge.
    """

    def __init__(self, names: Iterable[str], publish: Callable[[dict[str, int]], None]) -> None:
        self._names = list(names)
        self._publish = publish
        self._counts: dict[int, Counter[str]] = {}
        self._total: Counter[str] = Counter()

    def count_partition(self, partition: int, members: Counter[str]) -> None:
        """Set a partition's member counts (from a full re-evaluation of it)."""
        self._counts[partition] = Counter(members)
        self._recount()

    def transition(self, partition: int, transition: Transition) -> None:
        """Count one transition decided in ``partition``."""
        step = 1 if transition.transition == "entered" else -1
        self._counts.setdefault(partition, Counter())[transition.segment] += step
        self._total[transition.segment] += step
        if transition.segment in self._names:
            self._publish({transition.segment: max(0, self._total[transition.segment])})

    def retain(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (after a rebalance)."""
        keep = set(partitions)
        self._counts = {p: c for p, c in self._counts.items() if p in keep}
        self._recount()

    def totals(self) -> dict[str, int]:
        """``{segment: members}`` over the owned partitions, for every defined segment."""
        return {name: max(0, self._total[name]) for name in self._names}

    def _recount(self) -> None:
        self._total = Counter()
        for counts in self._counts.values():
            self._total.update(counts)
        self._publish(self.totals())


class SegmentEvaluator:
    """Evaluates every segment on a profile and updates its memberships.

    Args:
        segments: Compiled segments (:func:`compile_segments`).
        on_error: Called with the segment's name when a condition fails for a profile.
        members: Counts members per segment (``None``: not counted).
        on_transition: Called with each transition :meth:`decide` decides (counts
            ``portrait_segment_transitions_total``).
    """

    def __init__(
        self,
        segments: Iterable[Segment],
        on_error: Callable[[str], None] = lambda name: None,
        members: SegmentMembers | None = None,
        on_transition: Callable[[Transition], None] = lambda transition: None,
    ) -> None:
        self.segments = list(segments)
        self.members = members
        self._on_error = on_error
        self._on_transition = on_transition
        wanted: set[str] = set()
        self._whole = False
        for segment in self.segments:
            if segment.fields is None:
                self._whole = True
            else:
                wanted |= segment.fields
        self._wanted = tuple(sorted(wanted))
        self._names = frozenset(segment.definition.name for segment in self.segments)
        # (name, version, condition for non-members, for members, does true mean "leave"?,
        # the fields a transition reports (None: the whole view)), per segment, in order
        self._plan = [
            (s.definition.name, s.version, s.enter, s.exit if s.exit is not None else s.enter,
             s.exit is not None, None if s.fields is None else tuple(sorted(s.fields)))
            for s in self.segments
        ]  # fmt: skip

    def evaluate(
        self, profile: Mapping[str, Any], memberships: dict[str, str], now_ms: int
    ) -> list[Transition]:
        """Decide the transitions of one profile and apply them to ``memberships``.

        Args:
            profile: The profile as ``profile-updates.v1`` carries it (``Profile.to_dict()``).
            memberships: Segment name -> definition version the user is a member under; updated
                in place (entered: added; exited: removed; a member under an older version of a
                definition that still holds: its version updated). A segment no longer defined
                is left alone (see :meth:`removed`).
            now_ms: The worker's wall clock, epoch ms (``now_ms`` in the conditions).

        Returns:
            The transitions, in definition order.
        """
        if not self._plan:
            return []
        view = dict(profile) if self._whole else {k: profile.get(k) for k in self._wanted}
        context = cel.Context()
        context.add_variable("profile", view)
        context.add_variable("now_ms", now_ms)
        context.add_function("sum", _sum)
        transitions = []
        for name, version, enter, stay, exit_when_true, fields in self._plan:
            member = name in memberships
            try:
                # a member leaves when ``exit`` is true, or (no ``exit``) when ``enter`` is false
                decided = (bool(stay.execute(context)) == exit_when_true if member
                           else bool(enter.execute(context)))  # fmt: skip
            except Exception:  # a CEL runtime error (missing key, no such overload, ...)
                self._on_error(name)
                continue
            if not decided:
                if member:
                    memberships[name] = version
                continue
            values = {k: view.get(k) for k in (sorted(view) if fields is None else fields)}
            if member:
                del memberships[name]
                transitions.append(Transition(name, "exited", version, values))
            else:
                memberships[name] = version
                transitions.append(Transition(name, "entered", version, values))
        return transitions

    def decide(
        self, profile: Profile, state: dict[str, Any], now_ms: int, partition: int | None = None
    ) -> list[Transition]:
        """Decide a changed profile's transitions and record them in the profile.

        Memberships of segments no longer defined end first (``exited``), then every segment is
        evaluated on ``state``. The profile's ``segments`` and ``segment_transitions`` (and the
        same keys of ``state``) are updated, so the decision is stored with the profile and a
        redelivered batch re-emits it instead of deciding again.

        Args:
            profile: The profile, after its events were applied.
            state: ``profile.to_dict()`` of that profile (what the conditions read).
            now_ms: The worker's wall clock, epoch ms.
            partition: The profile's partition: its transitions are counted in :attr:`members`
                (``None``: not counted, e.g. while a whole partition is re-counted).

        Returns:
            The transitions decided.
        """
        transitions = self.removed(profile.segments) if profile.segments else []
        transitions += self.evaluate(state, profile.segments, now_ms)
        for transition in transitions:
            self._on_transition(transition)
            if self.members is not None and partition is not None:
                self.members.transition(partition, transition)
        profile.segment_transitions = [t.to_stored() for t in transitions]
        state["segments"] = dict(profile.segments)
        state["segment_transitions"] = list(profile.segment_transitions)
        return transitions

    def removed(self, memberships: dict[str, str]) -> list[Transition]:
        """``exited`` transitions for memberships of segments that are no longer defined
        (removed from the file), applied to ``memberships``."""
        gone = [name for name in memberships if name not in self._names]
        transitions = [Transition(name, "exited", memberships.pop(name), {}) for name in gone]
        return transitions


def segment_events(profile: Profile, state: Mapping[str, Any]) -> list[bytes]:
    """The ``segment-events.v1`` values of the transitions decided at the profile's version.

    Args:
        profile: A profile whose ``segment_transitions`` were set by
            :meth:`SegmentEvaluator.decide` (possibly in an earlier run: a redelivery).
        state: ``profile.to_dict()`` as stored at that version: the values the transitions
            report are read from it.

    Returns:
        One UTF-8 JSON value per transition (:class:`stream.events.SegmentEvent`), in order.
    """
    if not profile.segment_transitions:
        return []
    when = None
    if profile.last_event_time_ms is not None:
        when = datetime.fromtimestamp(profile.last_event_time_ms / 1000, UTC)
    return [
        SegmentEvent(user_id=profile.user_id, version=profile.version, event_time=when,
                     **Transition.from_stored(t, state).to_dict()).to_json_bytes()
        for t in profile.segment_transitions
    ]  # fmt: skip
