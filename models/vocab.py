"""Extending a WordPiece vocabulary with the CJK characters of a corpus.

BERT's basic tokenizer puts spaces around every CJK ideograph (``handle_chinese_chars``), so each
Chinese character is one pre-token; WordPiece then maps it to itself if the vocabulary has it and to
``[UNK]`` otherwise. The English all-MiniLM-L6-v2 vocabulary holds 488 CJK characters, so 63% of
the characters of Chinese comments come out ``[UNK]``. Appending the missing characters to the
vocabulary (new ids after the existing ones, so every existing id keeps its meaning) and resizing
the embedding matrix is enough for the tokenizer to see them.

New embedding rows are initialised by ``transformers``' mean resizing: drawn from a normal
distribution with the mean and covariance of the existing rows (Hewitt 2021, "Initializing New
Word Embeddings for Pretrained Language Models"), so that the new tokens start inside the
distribution the encoder was trained on and the softmax of a tied output layer is not disturbed.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

__all__ = ["extend_tokenizer_json", "is_cjk", "missing_cjk_characters"]

_CJK_RANGES = (
    (0x3000, 0x303F),  # CJK symbols and punctuation (、。「」...)
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # half-width and full-width forms (，！？：...)
    (0x20000, 0x2FA1F),  # supplementary ideographic plane
)


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph or a CJK / full-width punctuation character (one code point)."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def missing_cjk_characters(
    tokenizer_json: Path, texts: Iterable[str], *, min_count: int = 2
) -> list[str]:
    """CJK characters of ``texts`` that the tokenizer maps to ``[UNK]``, most frequent first.

    Each text goes through the tokenizer's own normalizer and pre-tokenizer (lower-casing, CJK
    splitting, punctuation splitting), so the characters returned are exactly the pre-tokens
    WordPiece cannot find.

    Args:
        tokenizer_json: a fast tokenizer file (``tokenizer.json``) with a WordPiece model.
        texts: the corpus.
        min_count: keep characters seen at least this many times (a character seen once cannot
            be learnt and would only add an untrained row).

    Returns:
        The characters, ordered by descending count then code point.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    vocab = tok.get_vocab()
    normalizer, pre = tok.normalizer, tok.pre_tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        norm = normalizer.normalize_str(text) if normalizer else text
        for piece, _ in pre.pre_tokenize_str(norm) if pre else [(norm, None)]:
            if len(piece) == 1 and piece not in vocab and is_cjk(piece):
                counts[piece] += 1
    kept = [(n, ch) for ch, n in counts.items() if n >= min_count]
    return [ch for _, ch in sorted(kept, key=lambda t: (-t[0], ord(t[1])))]


def extend_tokenizer_json(src: Path, dst: Path, characters: Iterable[str]) -> int:
    """Append characters to a WordPiece ``tokenizer.json`` vocabulary.

    Existing ids are unchanged; new ones follow the largest existing id. Characters already in the
    vocabulary are skipped. The normaliser is NFC-stable for CJK, so no other setting changes.

    Args:
        src: the tokenizer file to read.
        dst: where to write the extended file (may equal ``src``).
        characters: single characters to add.

    Returns:
        The new vocabulary size.

    Raises:
        ValueError: the tokenizer is not WordPiece, or an entry is not one character.
    """
    data = json.loads(Path(src).read_text(encoding="utf-8"))
    if data.get("model", {}).get("type") != "WordPiece":
        raise ValueError(f"{src}: only WordPiece tokenizers can be extended this way")
    vocab: dict[str, int] = data["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for ch in characters:
        if len(ch) != 1:
            raise ValueError(f"not a single character: {ch!r}")
        ch = unicodedata.normalize("NFC", ch)
        if ch not in vocab:
            vocab[ch] = next_id
            next_id += 1
    Path(dst).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return next_id
