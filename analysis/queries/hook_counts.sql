-- How often did the guest call each hook group, and for which of the 2007 requirements?
-- One row per trace, hook group and requirement (NULL: a hook serving none of them):
-- hook calls, how many distinct hooks were called, and the share of the trace's hook calls.
-- needs: events, hooks
SELECT
    e.trace,
    h."group",
    h.requirement,
    count(*) AS calls,
    count(DISTINCT e.hook) AS hooks_called,
    count(*) / sum(count(*)) OVER (PARTITION BY e.trace) AS share
FROM events AS e
JOIN hooks AS h ON h.name = e.hook
WHERE e.kind = 'hook'
GROUP BY e.trace, h."group", h.requirement
ORDER BY e.trace, calls DESC, h."group", h.requirement NULLS LAST;
