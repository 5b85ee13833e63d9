"""Text hygiene shared by the event decoder and the classifier runtime."""

from __future__ import annotations

import re

__all__ = ["replace_lone_surrogates"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(text: str) -> str:
    """Replace lone UTF-16 surrogates (U+D800..U+DFFF) by U+FFFD.

    Python strings hold a surrogate only when it is unpaired (JSON ``"\\ud83d"`` decodes to one);
    such a string cannot be encoded as UTF-8 and makes the fast tokenizer raise.

    Args:
        text: Any string.

    Returns:
        ``text`` itself when it holds no surrogate, else a copy with each one replaced.
    """
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
