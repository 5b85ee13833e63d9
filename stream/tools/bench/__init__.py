"""``portrait bench``: Portrait measured against its model's ceiling and a per-event baseline.

Modules: :mod:`~stream.tools.bench.model` ((a) model ceiling, (b) classifier),
:mod:`~stream.tools.bench.pipeline` ((c) pipeline, (d) baseline, open-loop latency through the real
worker and broker), :mod:`~stream.tools.bench.state` (state-only mode, many users through the
RocksDB
table), :mod:`~stream.tools.bench.stored` (the stored-predictions classifier of that mode),
:mod:`~stream.tools.bench.workload` (texts, broker, worker settings),
:mod:`~stream.tools.bench.runner` and
:mod:`~stream.tools.bench.phases` (the phases, in order), :mod:`~stream.tools.bench.report` (JSON,
table,
PNG), :mod:`~stream.tools.bench.stats` (medians, spreads, percentiles).
"""

from stream.tools.bench.phases import run_bench
from stream.tools.bench.report import format_table, write_chart, write_json
from stream.tools.bench.runner import BenchOptions

__all__ = ["BenchOptions", "format_table", "run_bench", "write_chart", "write_json"]
