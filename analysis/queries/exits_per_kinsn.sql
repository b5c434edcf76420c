-- How often does each backend leave the guest: exits, hypercalls and traps per thousand guest instructions?
-- Per trace and replayed backend: VM exits, hypercalls, traps and lazy-mode batch flushes
-- counted by the replay, and each per 1000 instructions the guest retired (the manifest's
-- counts.instructions).
-- needs: summary, traces
SELECT
    s.trace,
    s.backend,
    s.exits,
    s.hypercalls,
    s.traps,
    s.batch_flushes,
    1000.0 * s.exits / t.instructions AS exits_per_kinsn,
    1000.0 * s.hypercalls / t.instructions AS hypercalls_per_kinsn,
    1000.0 * s.traps / t.instructions AS traps_per_kinsn,
    1000.0 * s.batch_flushes / t.instructions AS batch_flushes_per_kinsn
FROM summary AS s
JOIN traces AS t USING (trace)
ORDER BY s.trace, s.backend;
