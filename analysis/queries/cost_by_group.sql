-- What does each backend spend per hook group, relative to native?
-- Per trace, backend and hook group (events that are not hook calls are grouped by their
-- kind: interrupt, exception, mmio_read, ...): events replayed, cycles spent, the cycles
-- native spends on the same events, and the ratio of the two.
-- needs: replay, events, hooks
WITH per AS (
    SELECT
        r.trace,
        r.backend,
        coalesce(h."group", e.kind) AS "group",
        count(*) AS events,
        sum(r.cycles)::DOUBLE AS cycles
    FROM replay AS r
    JOIN events AS e ON e.trace = r.trace AND e.seq = r.seq
    LEFT JOIN hooks AS h ON h.name = e.hook
    GROUP BY r.trace, r.backend, coalesce(h."group", e.kind)
)
SELECT
    p.trace,
    p.backend,
    p."group",
    p.events,
    p.cycles,
    n.cycles AS native_cycles,
    p.cycles / nullif(n.cycles, 0) AS ratio
FROM per AS p
LEFT JOIN per AS n ON n.trace = p.trace AND n."group" = p."group" AND n.backend = 'native'
ORDER BY p.trace, p.backend, p.cycles DESC, p."group";
