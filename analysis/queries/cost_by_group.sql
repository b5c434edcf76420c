-- What does each backend spend per hook group, relative to native?
-- Per trace, replayed backend (or ablation) and hook group (events that are not hook calls
-- are grouped by their kind: interrupt, exception, mmio_read, ...): events, the cycles the
-- backend spends on them, the cycles native spends on the same events, their ratio
-- (interface_ratio: events only; the whole-run estimate is the saved query whole_run), and
-- the group's share of the backend's cycles.
-- needs: groups
SELECT
    trace,
    backend,
    "group",
    events,
    cycles,
    native_cycles,
    cycles / nullif(native_cycles, 0) AS interface_ratio,
    cycles / nullif(sum(cycles) OVER (PARTITION BY trace, backend), 0) AS share
FROM groups
ORDER BY trace, backend, cycles DESC, "group";
