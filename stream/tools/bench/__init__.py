"""``portrait bench``: Portrait measured against its model's ceiling and a per-event baseline.

Modules: :mod:`~stream.bench.model` ((a) model ceiling, (b) classifier),
:mod:`~stream.bench.pipeline` ((c) pipeline, (d) baseline, open-loop latency through the real
worker and broker), :mod:`~stream.bench.state` (state-only mode, many users through the RocksDB
table), :mod:`~stream.bench.stored` (the stored-predictions classifier of that mode),
:mod:`~stream.bench.workload` (texts, broker, worker settings), :mod:`~stream.bench.runner` and
:mod:`~stream.bench.phases` (the phases, in order), :mod:`~stream.bench.report` (JSON, table,
PNG), :mod:`~stream.bench.stats` (medians, spreads, percentiles).
"""

from stream.bench.phases import run_bench
from stream.bench.report import format_table, write_chart, write_json
from stream.bench.runner import BenchOptions

__all__ = ["BenchOptions", "format_table", "run_bench", "write_chart", "write_json"]
