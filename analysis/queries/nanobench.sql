-- How many events of each kind does each phase of a nanobench trace hold, per operation?
-- One row per trace, phase and event kind: the phase's operations (N), its events of that
-- kind and their number per operation.  The nanobench guest reports a guest event with
-- arg0 = 4 (PV_SERVICE_PHASE), arg1 = phase id, arg2 = N right before a phase's loop, and
-- phase 0 (no phase) right after it; events before the first marker or after an end marker
-- are phase 0, "(outside phases)" -- for any other guest, the whole trace.  The markers
-- themselves are not counted.  Phase names are recorder/nanobench.py's PHASES (a test holds
-- this list to them).  Cycles per operation for each replayed backend: analysis/nanobench.py
-- (pvscope fidelity), which reads the replay results beside this.
-- needs: events
WITH names (phase_id, phase) AS (
    VALUES
        (0, '(outside phases)'),
        (1, 'syscall'),
        (2, 'in'),
        (3, 'cr8wr'),
        (4, 'call/ret'),
        (5, 'pgfault'),
        (6, 'divzero'),
        (7, 'ptemod'),
        (8, 'null_syscall'),
        (9, 'fork_exit'),
        (10, 'ctxsw'),
        (11, 'page_fault'),
        (12, 'mmap_munmap')
),
markers AS (
    SELECT trace, seq, arg1 AS phase_id, arg2 AS ops
    FROM events
    WHERE kind = 'guest' AND arg0 = 4
),
ops AS (
    SELECT trace, phase_id, sum(ops) AS operations
    FROM markers
    WHERE phase_id <> 0
    GROUP BY trace, phase_id
),
marked AS (
    SELECT DISTINCT trace FROM markers
),
-- the events of traces with phase markers only, materialized first: the as-of join
-- below would otherwise sort every trace's events (gigabytes on a 10 M-event trace)
ev AS MATERIALIZED (
    SELECT trace, seq, kind
    FROM events
    WHERE trace IN (SELECT trace FROM marked) AND NOT (kind = 'guest' AND arg0 = 4)
),
counted AS (
    -- each event takes the phase of the last marker before it
    SELECT e.trace, coalesce(m.phase_id, 0) AS phase_id, e.kind, count(*) AS events
    FROM ev AS e
    ASOF LEFT JOIN markers AS m ON e.trace = m.trace AND e.seq >= m.seq
    GROUP BY ALL
    UNION ALL
    -- any other trace is phase 0 throughout: counted without a join
    SELECT trace, 0, kind, count(*)
    FROM events
    WHERE trace NOT IN (SELECT trace FROM marked)
    GROUP BY ALL
)
SELECT
    c.trace,
    c.phase_id,
    coalesce(n.phase, 'phase ' || c.phase_id::VARCHAR) AS phase,
    o.operations,
    c.kind::VARCHAR AS kind,
    c.events,
    c.events / o.operations AS events_per_op
FROM counted AS c
LEFT JOIN names AS n USING (phase_id)
LEFT JOIN ops AS o USING (trace, phase_id)
ORDER BY c.trace, c.phase_id, c.events DESC, kind;
