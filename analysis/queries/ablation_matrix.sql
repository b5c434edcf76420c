-- Which of the 2007 requirements can a paravirt backend do without: is it still correct, and at what cost?
-- One row per trace and replay (run: the replayed backend's label; backend: the backend it
-- ablates; without: the requirement removed, NULL for the backend as designed; fallback:
-- trap or none): correct (no violation),
-- violations, total cycles and their ratio to native's on the same trace.
-- needs: summary
SELECT
    s.trace,
    s.backend AS run,
    s.base AS backend,
    s.without,
    s.fallback,
    s.violations = 0 AS correct,
    s.violations,
    s.cycles,
    s.cycles / nullif(n.cycles, 0) AS cost_ratio
FROM summary AS s
LEFT JOIN summary AS n ON n.trace = s.trace AND n.backend = 'native'
ORDER BY s.trace, s.base, s.without NULLS FIRST, s.fallback;
