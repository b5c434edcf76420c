-- Where does each backend first go wrong, and which checks does it fail?
-- Per trace, replayed backend and correctness check: violations found, the seq of the
-- first one and what it was, and whether it is the backend's first divergence from the
-- native reference (the earliest violation of any check).
-- needs: violations
WITH per AS (
    SELECT
        trace,
        backend,
        "check",
        count(*) AS violations,
        min(seq) AS first_seq,
        arg_min(detail, seq) AS first_detail
    FROM violations
    GROUP BY trace, backend, "check"
)
SELECT
    trace,
    backend,
    "check",
    violations,
    first_seq,
    first_seq = min(first_seq) OVER (PARTITION BY trace, backend) AS first_divergence,
    first_detail
FROM per
ORDER BY trace, backend, first_seq, "check";
