"""Golden SQL: every trace-side saved query on every golden trace gives its reviewed CSV."""

from __future__ import annotations

import pytest

from analysis import golden_sql


@pytest.mark.parametrize(("workload", "query"), golden_sql.cases())
def test_saved_query_output_is_the_reviewed_csv(workload: str, query: str) -> None:
    if not golden_sql.expected_path(workload, query).parent.is_dir():
        pytest.skip(
            f"no reviewed CSVs for the {workload} workload yet: "
            "python -m analysis.golden_sql update, then review and commit them"
        )
    problem = golden_sql.mismatch(workload, query)
    if problem:
        pytest.fail(problem, pytrace=False)
