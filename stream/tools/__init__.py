"""The tools around the worker: the ``portrait`` command line, the demo and its simulated
population, the benchmark, the embedded broker, replay, follow and schema export.

Tools import the worker (``stream``), training (``models``) and export (``export``); the worker
never imports a tool (checked by import-linter, ``pyproject.toml``).
"""
