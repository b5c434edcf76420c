"""Where the repository keeps the files every layer agrees on.

Part of the contract package, like the schema: the stages (the analysis's golden
SQL results) and the command line (``pvscope golden``) both find the golden traces
here, so neither has to import the other for a path.
"""

from __future__ import annotations

from pathlib import Path

#: The golden traces: ``<workload>/trace``, ``<workload>/expected/`` and
#: ``<workload>/PROVENANCE.json`` (see :mod:`pvscope.cli.golden`).
GOLDEN_ROOT = Path(__file__).resolve().parent.parent / "traces" / "golden"
