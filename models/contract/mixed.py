"""Mixed sentiment: comments whose clauses carry confident opposite polarities.

"Great to use, but the price is a bit high" and "这个产品很好用，但是价格有点贵" are neither simply
positive nor simply negative. The whole-comment prediction settles on one label; the clauses keep
both sides. Plain Python and numpy: no faust, Kafka or onnxruntime import.

Clauses (:func:`split_clauses`)
-------------------------------
A comment is cut

- at punctuation, which is dropped: ``, ; . ! ?`` (a ``.`` or ``,`` between two digits, as in
  ``3.5`` or ``1,000``, is no cut), the full-width ``，。！？；、``, the ellipsis ``…`` and line
  breaks;
- just before a contrastive marker, which stays at the start of the clause it opens: English
  ``but``, ``however``, ``although``, ``(even) though``, ``yet`` as whole words in any case;
  Chinese ``但是``, ``但`` (not in ``不但``, "not only"), ``可是``, ``不过``, ``然而``, ``虽然``,
  ``就是`` (not in ``就是说``, "that is to say") anywhere.

So ``虽然便宜，但是质量差`` and ``虽然便宜但是质量差`` both give ``虽然便宜`` and
``但是质量差``, and "Although cheap, it broke" gives "Although cheap" and "it broke". The marker
is kept: every clause is then a contiguous piece of the comment, text of the kind the model was
trained on, and the marker is a polarity cue the model has learnt ("but ..." leans to the
complaint).

Pieces of only whitespace and punctuation are dropped. A piece with fewer than 2 CJK characters
*and* fewer than 2 other words, a leading marker included, is too short to judge on its own
("ok", "好", "yet", "🙂"; but "但贵" and "but pricey" are clauses): it is merged into the clause
before it, or into the one after it when it starts with a marker ("However, the price ...") or
has no clause before it. Merging widens the clause's span, so it stays a piece of the comment.
Only the first ``max_clauses`` clauses are kept, and only the first 4,096 characters are split
(:data:`MAX_SCAN_CHARS`: the work per comment stays under a few milliseconds on the event loop
whatever its length; the model reads only the first tokens of a text anyway). A comment with
fewer than 2 clauses gets none: its whole-comment prediction says all there is.

Rule (:class:`MixedRule`)
-------------------------
A clause is *confidently positive* when ``p_positive`` is its largest probability (ties count)
and at least ``threshold``; likewise negative. A comment is mixed when one of its clauses is
confidently positive and *another* confidently negative. The default threshold, 0.4, asks a
clause's label to be its arg-max and clearly above the uniform 1/3, so a pair of near-neutral
clauses (0.38/0.34/0.28) never makes a comment mixed. Hedged complaints ("but the price is a bit
high": 0.49 negative / 0.42 neutral / 0.09 positive with the English model) are weak negatives by
nature; a threshold of 0.5 or more (a strict majority of the 3 classes) trades their recall for
precision. On the hand-labelled English set (``models/mixed/``, ``portrait evaluate-mixed``) the
English model scored precision 0.80 / recall 0.68 at 0.4 and 0.81 / 0.64 at 0.5; 0.4 was chosen
after seeing those figures, so the figures at 0.4 are not an unbiased estimate. The whole comment
keeps its own arg-max label either way. With an int8 model (dynamic quantisation: activation
scales are computed per batch), a clause's probabilities move by about 0.01-0.02 with the batch
it is in, so a clause that close to the threshold may be judged differently by the worker and by
an offline run.

Batching (:class:`ClauseBatch`, :func:`classify_with_clauses`)
--------------------------------------------------------------
The whole comments come first, then all their clauses, in one flat list: one ``predict_proba``
call per micro-batch classifies both, so clauses ride in the comments' micro-batch. A comment
adds between 0 and ``max_clauses`` rows (2 for each example above).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.contract.protocol import Classifier

__all__ = [
    "DEFAULT_MAX_CLAUSES",
    "DEFAULT_THRESHOLD",
    "LABEL_ORDER",
    "MAX_SCAN_CHARS",
    "MIN_THRESHOLD",
    "ClauseBatch",
    "MixedResult",
    "MixedRule",
    "classify_with_clauses",
    "split_clauses",
]

from models.contract.labels import LABELS

LABEL_ORDER = LABELS  # the name this module has exported
"""Probability columns the rule reads: ``p_negative`` is column 0, ``p_positive`` column 2."""

DEFAULT_THRESHOLD = 0.4
"""Default of :attr:`MixedRule.threshold` (``PORTRAIT_MIXED__THRESHOLD``)."""

MIN_THRESHOLD = 0.35
"""Lowest threshold accepted: above 1/3, so a clause with uniform probabilities never counts."""

DEFAULT_MAX_CLAUSES = 8
"""Default of :attr:`MixedRule.max_clauses` (``PORTRAIT_MIXED__MAX_CLAUSES``)."""

MAX_SCAN_CHARS = 4096
"""Characters of a comment that :func:`split_clauses` looks at (the rest is never a clause)."""

_NEGATIVE, _POSITIVE = 0, 2
_MIN_CJK_CHARS = 2
_MIN_WORDS = 2
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_MARKER = (
    r"\b(?:but|however|although|even\s+though|(?<!even\s)though|yet)\b"
    r"|但是|(?<!不)但|可是|不过|然而|虽然|就是(?!说)"
)
# one alternation: a punctuation cut (consumed) or the zero-width position before a marker
_CUT = re.compile(
    r"(?P<sep>[;!?\n\r\u2026\uff0c\u3002\uff01\uff1f\uff1b\u3001]|(?<!\d)[.,]|[.,](?!\d))"
    rf"|(?=(?:{_MARKER}))",
    re.IGNORECASE,
)
_STARTS_WITH_MARKER = re.compile(rf"\s*(?:{_MARKER})", re.IGNORECASE)
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WORD = re.compile(rf"[^\W_{_CJK}]+")


def _pieces(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` spans between cuts, in order; punctuation cuts excluded, may be empty."""
    start = 0
    for match in _CUT.finditer(text):
        if match.group("sep") is not None:
            yield start, match.start()
            start = match.end()
        elif match.start() > start:
            yield start, match.start()
            start = match.start()
    yield start, len(text)


def _has_content(piece: str) -> bool:
    """False for a piece of only whitespace and punctuation."""
    return any(not ch.isspace() and not unicodedata.category(ch).startswith("P") for ch in piece)


def _size(piece: str) -> tuple[int, int]:
    """``(CJK characters, other words)`` of a piece."""
    return len(_CJK_CHAR.findall(piece)), len(_WORD.findall(piece))


def split_clauses(text: str, *, max_clauses: int = DEFAULT_MAX_CLAUSES) -> list[str]:
    """Cut a comment into clauses at punctuation and contrastive markers (see the module doc).

    Args:
        text: A comment text; any string (empty, emoji, 900 kB...). Only its first
            :data:`MAX_SCAN_CHARS` characters are split; the work stops after ``max_clauses + 1``
            clauses.
        max_clauses: Most clauses returned (the first ones), >= 2; default 8.

    Returns:
        The clauses, in text order, stripped of surrounding whitespace; each a contiguous piece of
        ``text`` that may include inner punctuation where a short piece was merged in. ``[]`` when
        the text yields fewer than 2 clauses.

    Raises:
        ValueError: ``max_clauses`` < 2.
    """
    if max_clauses < 2:
        raise ValueError(f"max_clauses must be >= 2 (got {max_clauses})")
    text = text[:MAX_SCAN_CHARS]
    spans: list[list[int]] = []  # [start, end] of each clause so far
    pending: tuple[int, int, int, int] | None = None  # start, end, size of a short run to carry
    for start, end in _pieces(text):
        piece = text[start:end]
        if not _has_content(piece):
            continue
        cjk, words = _size(piece)
        if pending is not None:  # a short run before this piece: widen this piece over it
            start, cjk, words = pending[0], pending[2] + cjk, pending[3] + words
            pending = None
        if cjk >= _MIN_CJK_CHARS or words >= _MIN_WORDS:
            spans.append([start, end])
            if len(spans) > max_clauses:
                break
        elif spans and not _STARTS_WITH_MARKER.match(piece):
            spans[-1][1] = end  # a short tail: part of the clause before it
        else:
            pending = (start, end, cjk, words)  # a short head or a lone marker: the next clause's
    if pending is not None and spans:  # a short run at the very end: the last clause's after all
        spans[-1][1] = pending[1]
    clauses = [text[start:end].strip() for start, end in spans[:max_clauses]]
    return clauses if len(clauses) >= 2 else []


@dataclass(frozen=True)
class MixedRule:
    """When a comment counts as mixed (see the module docstring for the reasoning).

    Attributes:
        threshold: A clause is confidently positive (negative) when its ``p_positive``
            (``p_negative``) is its largest probability and at least this; in [0.35, 1],
            default 0.4.
        max_clauses: Most clauses classified per comment, >= 2, default 8.

    Raises:
        ValueError: ``threshold`` outside [0.35, 1] or ``max_clauses`` < 2.
    """

    threshold: float = DEFAULT_THRESHOLD
    max_clauses: int = DEFAULT_MAX_CLAUSES

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and MIN_THRESHOLD <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be in [{MIN_THRESHOLD}, 1] (got {self.threshold})")
        if self.max_clauses < 2:
            raise ValueError(f"max_clauses must be >= 2 (got {self.max_clauses})")

    def is_mixed(self, clause_proba: NDArray[np.float32]) -> bool:
        """Whether one clause is confidently positive and another confidently negative.

        Args:
            clause_proba: float32 probabilities of one comment's clauses, shape
                (n_clauses, 3), columns :data:`LABEL_ORDER`; ``n_clauses`` may be 0 or 1 (then
                never mixed).

        Returns:
            True when some clause ``i`` has ``p_positive`` as its largest probability and
            ``>= threshold``, and some clause ``j != i`` the same for ``p_negative``.

        Raises:
            ValueError: ``clause_proba`` is not of shape (n_clauses, 3).
        """
        proba = np.asarray(clause_proba)
        if proba.ndim != 2 or proba.shape[1] != len(LABEL_ORDER):
            raise ValueError(f"clause_proba must have shape (n_clauses, 3), not {proba.shape}")
        if len(proba) == 0:
            return False
        top = proba.max(axis=1)
        positive = np.flatnonzero(
            (proba[:, _POSITIVE] >= self.threshold) & (proba[:, _POSITIVE] >= top)
        )
        negative = np.flatnonzero(
            (proba[:, _NEGATIVE] >= self.threshold) & (proba[:, _NEGATIVE] >= top)
        )
        return any(i != j for i in positive for j in negative)


@dataclass(frozen=True)
class MixedResult:
    """One comment's verdict.

    Attributes:
        probabilities: Whole-comment ``(p_negative, p_neutral, p_positive)``.
        mixed: Whether :meth:`MixedRule.is_mixed` holds for its clauses.
        clause_count: Clauses classified (0 when the comment has fewer than 2).
        clause_labels: Each clause's arg-max label (:data:`LABEL_ORDER`), in text order, ``""``
            where the classifier failed on that clause; ``()`` without clauses. What a person
            reading the comment sees highlighted (the profile page).
    """

    probabilities: tuple[float, float, float]
    mixed: bool
    clause_count: int
    clause_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClauseBatch:
    """One micro-batch of comments and their clauses, as one flat list of texts.

    Attributes:
        texts: The comments in input order, then the clauses of comment 0, of comment 1, ...
        comment_count: Number of comments (the first ``comment_count`` texts).
        clause_ranges: Per comment, the ``(start, stop)`` indexes of its clauses in ``texts``.
    """

    texts: tuple[str, ...]
    comment_count: int
    clause_ranges: tuple[tuple[int, int], ...]

    @classmethod
    def build(cls, comments: Sequence[str], rule: MixedRule | None) -> ClauseBatch:
        """Split every comment into clauses (none at all when ``rule`` is ``None``).

        Args:
            comments: The micro-batch's comment texts.
            rule: Gives ``max_clauses``; ``None`` = mixed detection off (only the comments).

        Returns:
            The flat batch.
        """
        texts = list(comments)
        ranges = []
        for comment in comments:
            clauses = [] if rule is None else split_clauses(comment, max_clauses=rule.max_clauses)
            ranges.append((len(texts), len(texts) + len(clauses)))
            texts.extend(clauses)
        return cls(tuple(texts), len(comments), tuple(ranges))

    def resolve(
        self, rows: Sequence[Sequence[float] | None], rule: MixedRule | None
    ) -> list[MixedResult | None]:
        """Per comment, its probabilities and verdict from the rows of :attr:`texts`.

        Args:
            rows: One row ``(p_negative, p_neutral, p_positive)`` per text of :attr:`texts`, or
                ``None`` where the classifier failed on that text; a failed clause is left out
                of its comment's verdict.
            rule: The rule; ``None`` = mixed detection off (every verdict False).

        Returns:
            One entry per comment: ``None`` when the comment's own row is ``None``.

        Raises:
            ValueError: ``len(rows) != len(texts)``.
        """
        if len(rows) != len(self.texts):
            raise ValueError(f"got {len(rows)} rows for {len(self.texts)} texts")
        results: list[MixedResult | None] = []
        for index, (start, stop) in enumerate(self.clause_ranges):
            whole = rows[index]
            if whole is None:
                results.append(None)
                continue
            found = [row for row in rows[start:stop] if row is not None]
            proba = np.asarray(found, dtype=np.float32).reshape(len(found), len(LABEL_ORDER))
            mixed = rule is not None and rule.is_mixed(proba)
            p_neg, p_neu, p_pos = (float(p) for p in whole)
            labels = tuple("" if row is None else LABEL_ORDER[int(np.argmax(row))]
                           for row in rows[start:stop])  # fmt: skip
            results.append(MixedResult((p_neg, p_neu, p_pos), mixed, stop - start, labels))
        return results


def classify_with_clauses(
    classifier: Classifier, comments: Sequence[str], rule: MixedRule = MixedRule()
) -> list[MixedResult]:
    """Classify comments and their clauses in one ``predict_proba`` call; judge mixed.

    The offline counterpart of the worker's comment micro-batch (which runs the same
    :class:`ClauseBatch` through its retrying inference runner).

    Args:
        classifier: The sentiment model; its ``labels`` must be :data:`LABEL_ORDER`.
        comments: Comment texts.
        rule: Threshold and clause cap.

    Returns:
        One :class:`MixedResult` per comment, in input order.

    Raises:
        ValueError: ``classifier.labels`` is not :data:`LABEL_ORDER`, or it returned other than
            shape (len(texts), 3).
        InferenceError: Raised by the classifier (as is any other error it raises).
    """
    if tuple(classifier.labels) != LABEL_ORDER:
        raise ValueError(f"classifier labels {classifier.labels} are not {LABEL_ORDER}")
    batch = ClauseBatch.build(comments, rule)
    proba = np.asarray(classifier.predict_proba(list(batch.texts)), dtype=np.float32)
    if proba.shape != (len(batch.texts), len(LABEL_ORDER)):
        raise ValueError(f"classifier returned shape {proba.shape} for {len(batch.texts)} texts")
    results = batch.resolve(list(proba), rule)
    return [result for result in results if result is not None]
