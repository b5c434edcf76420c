"""Golden SQL, Perfetto style: each saved query over each golden trace gives an expected CSV.

``tests/analysis/golden_sql/<workload>/<query>.csv`` holds what ``pvscope query
traces/golden/<workload>/trace --saved <query> --format csv`` printed when it was last
reviewed.  The test compares byte for byte and, on a mismatch, prints the diff, the
command that reproduces the output and the one that regenerates the expectations (on
purpose only, after reviewing the diff):

    python -m analysis.golden_sql update
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from analysis import output, queries
from analysis.views import Session
from pvscope.paths import GOLDEN_ROOT

EXPECTED_ROOT = Path(__file__).resolve().parent.parent / "tests" / "analysis" / "golden_sql"


def cases() -> list[tuple[str, str]]:
    """(workload, saved query) for every golden trace and every trace-side saved query."""
    workloads = sorted(p.name for p in GOLDEN_ROOT.iterdir() if (p / "trace").is_dir())
    return [(w, q.name) for w in workloads for q in queries.saved() if not q.needs_replay]


def actual(workload: str, query: str) -> str:
    """The CSV the saved query gives on the golden trace now."""
    with Session(GOLDEN_ROOT / workload / "trace") as s:
        return output.to_csv(s.query(queries.load(query).sql)).decode()


def expected_path(workload: str, query: str) -> Path:
    """Where the reviewed CSV lives."""
    return EXPECTED_ROOT / workload / f"{query}.csv"


def mismatch(workload: str, query: str) -> str | None:
    """None when the output matches; else the diff and the commands to reproduce and fix."""
    path = expected_path(workload, query)
    got = actual(workload, query)
    want = path.read_text() if path.exists() else ""
    if got == want:
        return None
    diff = "".join(
        difflib.unified_diff(
            want.splitlines(keepends=True),
            got.splitlines(keepends=True),
            fromfile=str(path),
            tofile="now",
            n=1,
        )
    )
    trace = GOLDEN_ROOT / workload / "trace"
    return (
        f"{workload}/{query}: output differs from {path}\n{diff}\n"
        f"reproduce:  pvscope query {trace} --saved {query} --format csv\n"
        f"regenerate: python -m analysis.golden_sql update   (after reviewing the diff)"
    )


def update() -> None:
    """Rewrite every expected CSV from the current output."""
    for workload, query in cases():
        path = expected_path(workload, query)
        path.parent.mkdir(parents=True, exist_ok=True)
        got = actual(workload, query)
        old = path.read_text() if path.exists() else None
        path.write_text(got)
        state = "new" if old is None else ("unchanged" if old == got else "changed")
        print(f"{workload}/{query}: {state}")


if __name__ == "__main__":
    if sys.argv[1:] != ["update"]:
        sys.exit("usage: python -m analysis.golden_sql update")
    update()
