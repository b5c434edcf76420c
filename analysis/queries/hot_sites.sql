-- Which call sites call hooks most, and in which guest function are they?
-- The 25 busiest (site, hook) pairs per trace; a site (the hook's return address) is
-- named by the guest function whose [addr, addr + size) holds it, with the offset into it.
-- needs: events, symbols
WITH sites AS (
    SELECT trace, site, hook, count(*) AS calls
    FROM events
    WHERE kind = 'hook'
    GROUP BY trace, site, hook
),
top AS (
    SELECT *, calls / sum(calls) OVER (PARTITION BY trace) AS share
    FROM sites
    QUALIFY row_number() OVER (PARTITION BY trace ORDER BY calls DESC, site, hook) <= 25
),
funcs AS (
    SELECT trace, name, addr, size FROM symbols WHERE type = 'func' AND size > 0
)
SELECT
    t.trace,
    t.site,
    CASE WHEN t.site < f.addr + f.size THEN f.name END AS function,
    CASE WHEN t.site < f.addr + f.size THEN t.site - f.addr END AS "offset",
    t.hook,
    t.calls,
    t.share
FROM top AS t
ASOF LEFT JOIN funcs AS f ON t.trace = f.trace AND t.site >= f.addr
ORDER BY t.trace, t.calls DESC, t.site, t.hook;
