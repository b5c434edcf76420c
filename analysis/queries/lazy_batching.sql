-- How well does lazy MMU mode batch page-table updates (updates per flush)?
-- set_lazy_mode(1) enters lazy MMU mode, set_lazy_mode(0) leaves it and set_lazy_mode(3)
-- flushes without leaving: a hypervisor may queue the PTE updates (hooks serving the
-- pteupdate requirement) made in lazy mode and apply them at the next leave or flush.
-- Per trace: batches (flushes ending a lazy MMU stretch), PTE updates inside and outside
-- lazy mode, updates per flush (mean, median, max) and flushes that carried no update.
-- needs: events, hooks
WITH marked AS (
    SELECT
        e.trace,
        e.seq,
        e.hook = 'set_lazy_mode' AS is_mode,
        CASE WHEN e.hook = 'set_lazy_mode' THEN e.arg0 END AS mode
    FROM events AS e
    WHERE e.hook = 'set_lazy_mode'
       OR e.hook IN (SELECT name FROM hooks WHERE requirement = 'pteupdate')
),
setters AS (
    -- the enter/leave calls (not flushes), numbered in order: the k-th sets the mode in
    -- force after it
    SELECT
        trace,
        row_number() OVER (PARTITION BY trace ORDER BY seq) AS k,
        mode
    FROM marked
    WHERE is_mode AND mode <> 3
),
counted AS (
    -- how many enter/leave calls precede each event, and how many set_lazy_mode calls:
    -- running counts, linear in the events (a last_value(... IGNORE NULLS) window over
    -- an unbounded frame is not, on a trace with no lazy-mode call at all)
    SELECT
        *,
        coalesce(sum((is_mode AND mode <> 3)::INTEGER) OVER (
            PARTITION BY trace ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ), 0) AS setters_before,
        sum(is_mode::INTEGER) OVER (
            PARTITION BY trace ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS batch
    FROM marked
),
stretch AS (
    -- the lazy mode in force at each event: that of the last enter/leave before it
    SELECT c.*, coalesce(s.mode, 0) AS lazy
    FROM counted AS c
    LEFT JOIN setters AS s ON s.trace = c.trace AND s.k = c.setters_before
),
batches AS (
    -- a batch: the updates made in lazy MMU mode since the last set_lazy_mode call,
    -- closed by the set_lazy_mode call (leave or flush) that follows them
    SELECT
        trace,
        batch,
        count(*) FILTER (WHERE NOT is_mode) AS updates,
        bool_or(is_mode) AS closed
    FROM stretch
    WHERE lazy = 1
    GROUP BY trace, batch
),
per_trace AS (
    SELECT
        trace,
        count(*) FILTER (WHERE closed) AS flushes,
        (sum(updates) FILTER (WHERE closed))::BIGINT AS batched_updates,
        avg(updates) FILTER (WHERE closed) AS updates_per_flush,
        median(updates) FILTER (WHERE closed) AS median_updates_per_flush,
        max(updates) FILTER (WHERE closed) AS max_updates_per_flush,
        count(*) FILTER (WHERE closed AND updates = 0) AS empty_flushes,
        (sum(updates) FILTER (WHERE NOT closed))::BIGINT AS unflushed_updates
    FROM batches
    GROUP BY trace
),
totals AS (
    SELECT
        trace,
        count(*) FILTER (WHERE is_mode AND mode = 1) AS lazy_enters,
        count(*) FILTER (WHERE NOT is_mode AND lazy <> 1) AS unbatched_updates
    FROM stretch
    GROUP BY trace
)
SELECT
    t.trace,
    t.lazy_enters,
    coalesce(p.flushes, 0) AS flushes,
    coalesce(p.batched_updates, 0) AS batched_updates,
    t.unbatched_updates,
    p.updates_per_flush,
    p.median_updates_per_flush,
    p.max_updates_per_flush,
    coalesce(p.empty_flushes, 0) AS empty_flushes,
    coalesce(p.unflushed_updates, 0) AS unflushed_updates
FROM totals AS t
LEFT JOIN per_trace AS p USING (trace)
ORDER BY t.trace;
