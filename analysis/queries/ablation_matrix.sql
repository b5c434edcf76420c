-- Which of the 2007 requirements can a paravirt backend do without: is it still correct, and at what cost?
-- One row per trace and replay (backend: the run's label, as in every replay view; base:
-- the backend it replays or ablates; without: the requirement removed, NULL for the
-- backend as designed; fallback: trap or none): correct (no violation), violations, the
-- first one's check and seq, total interface cycles and their ratio to what native
-- spends on the same events (interface_ratio), and the estimated whole-run slowdown over
-- native on the same work (whole_run_slowdown: the guest's own instructions at the cost
-- table's CPI and the measured TLB refills added to both sides; an estimate) with the
-- share of its cycles priced by estimated numbers (whole_run_estimate_share; backends as
-- designed only).
-- needs: summary
SELECT
    trace,
    backend,
    base,
    without,
    fallback,
    violations = 0 AS correct,
    violations,
    first_check,
    first_seq,
    cycles,
    cycles / nullif(native_cycles, 0) AS interface_ratio,
    whole_run_slowdown,
    whole_run_estimate_share
FROM summary
ORDER BY trace, base, without NULLS FIRST, fallback;
