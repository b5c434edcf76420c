"""The analysis stage: SQL over traces and replay results, reports and diffs.

* ``analysis.views`` -- a read-only DuckDB session whose views (``events``, ``inputs``,
  ``state``, ``symbols``, ``hooks``, ``traces`` and the replay results) are built from
  ``pvscope.schema`` and ``pvscope.hooks``;
* ``analysis/queries/*.sql`` and ``analysis.queries`` -- saved queries, each headed by
  the question it answers;
* ``analysis.report`` and ``analysis.svg`` -- terminal tables and one self-contained
  HTML file with inline SVG plots;
* ``analysis.diff`` and ``analysis.replays`` -- comparing two traces or two replays;
* ``analysis.cli`` -- the ``query``, ``report``, ``diff`` and ``demo`` commands.
"""
