-- Where does each backend's time go, exit reason by exit reason (perf kvm stat report style)?
-- One row per trace, replayed backend and reason.  A reason is the mechanism the backend
-- used for an event (vm_exit, hypercall, trap, wp_fault, rom_call, queued, delivery,
-- native, ...) and what the event was: its paravirt_ops hook for a hook call, else its
-- kind (interrupt, exception, mmio_write, ...), so "vm_exit read_cr3", "hypercall set_pmd",
-- "wp_fault set_pte", "delivery interrupt".  Per reason: events, the VM exits, hypercalls
-- and traps they caused (an event may cause several or none: a queued PTE update pays its
-- hypercall at the flush), total cycles, mean cycles per event and the share of the
-- backend's cycles (every event has one reason: the shares of a run sum to 1).  The same
-- table as pvscope replay --reasons (replayer/exitstat.py).
-- needs: replay, events
WITH per AS (
    SELECT
        r.trace,
        r.backend,
        r.mechanism::VARCHAR AS mechanism,
        coalesce(e.hook, e.kind::VARCHAR) AS name,
        count(*) AS events,
        sum(r.exits)::BIGINT AS exits,
        sum(r.hypercalls)::BIGINT AS hypercalls,
        sum(r.traps)::BIGINT AS traps,
        sum(r.cycles)::BIGINT AS cycles
    FROM replay AS r
    JOIN events AS e ON e.trace = r.trace AND e.seq = r.seq
    GROUP BY ALL
)
SELECT
    trace,
    backend,
    mechanism || ' ' || name AS reason,
    mechanism,
    name,
    events,
    exits,
    hypercalls,
    traps,
    cycles,
    cycles / events AS mean_cycles,
    cycles / nullif(sum(cycles) OVER (PARTITION BY trace, backend), 0) AS share
FROM per
ORDER BY trace, backend, cycles DESC, reason;
