-- Where does each backend first go wrong, and which checks does it fail?
-- Per trace, backend and correctness check: violations found, the seq of the first one,
-- and whether it is the backend's first divergence from the native reference (the
-- earliest violation of any check).
-- needs: violations
WITH per AS (
    SELECT trace, backend, "check", count(*) AS violations, min(seq) AS first_seq
    FROM violations
    GROUP BY trace, backend, "check"
)
SELECT
    *,
    first_seq = min(first_seq) OVER (PARTITION BY trace, backend) AS first_divergence
FROM per
ORDER BY trace, backend, first_seq, "check";
