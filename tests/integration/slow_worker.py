"""``portrait worker`` with a slow classifier: a test hook, not a production switch.

Usage: ``python slow_worker.py MARKER SECONDS worker``. Every ``predict_proba`` call on a batch that
holds a text containing ``MARKER`` sleeps ``SECONDS`` first, then classifies as usual, so one
micro-batch of comments stays in flight while the behaviour agent (other partitions of another
topic) goes on. Run by ``reliability_kit.start_worker(slow_marker=...)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from models.contract.classifier import SentimentClassifier


def _install(marker: str, seconds: float) -> None:
    original = SentimentClassifier.predict_proba

    def predict_proba(self: SentimentClassifier, texts: Sequence[str]) -> Any:
        if seconds > 0 and any(marker in text for text in texts):
            print(f"slow_worker: sleeping {seconds} s on a batch of {len(texts)}", flush=True)
            time.sleep(seconds)
        return original(self, texts)

    SentimentClassifier.predict_proba = predict_proba  # type: ignore[method-assign]  # test hook


if __name__ == "__main__":
    marker, seconds = sys.argv[1], float(sys.argv[2])
    del sys.argv[1:3]
    _install(marker, seconds)
    from stream.tools.cli import main

    main()
