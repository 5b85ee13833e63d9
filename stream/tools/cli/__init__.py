"""The ``portrait`` command line: one console script, one subcommand per job.

The modules below register their commands on :data:`app` when imported, in the order ``--help``
lists them: model commands, export commands, stream commands, the page, bench, worker.
"""

# isort: off
from stream.tools.cli.app import app, main
from stream.tools.cli import model_commands  # noqa: F401  # registers its commands, in this order
from stream.tools.cli import registry_commands  # noqa: F401
from stream.tools.cli import export_commands  # noqa: F401
from stream.tools.cli import stream_commands  # noqa: F401
from stream.tools.cli import page_commands  # noqa: F401
from stream.tools.cli import bench_command  # noqa: F401
from stream.tools.cli import worker_command  # noqa: F401
# isort: on

__all__ = ["app", "main"]
