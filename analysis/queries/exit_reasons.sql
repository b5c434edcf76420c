-- Where does each backend's time go, exit reason by exit reason (perf kvm stat report style)?
-- One row per trace, replayed backend and reason.  A reason is the mechanism the backend
-- used for an event (vm_exit, hypercall, trap, wp_fault, rom_call, queued, delivery,
-- native, ...) and what the event was: its paravirt_ops hook for a hook call, else its
-- kind (interrupt, exception, mmio_write, ...), so "vm_exit read_cr3", "hypercall set_pmd",
-- "wp_fault set_pte", "delivery interrupt".  Per reason: events, the VM exits, hypercalls
-- and traps they caused (an event may cause several or none: a queued PTE update pays its
-- hypercall at the flush), total cycles, mean cycles per event and the share of the
-- backend's cycles (every event has one reason: the shares of a run sum to 1).  The same
-- table as pvscope replay --reasons (replayer/exitstat.py), which the replay writes per
-- run as the reasons view: summing the per-event replay rows joined to the trace's events
-- here instead took 16-29 s on a default-scale trace replayed with --backend all.
-- needs: reasons
SELECT
    trace,
    backend,
    mechanism || ' ' || name AS reason,
    mechanism,
    name,
    events::BIGINT AS events,
    exits::BIGINT AS exits,
    hypercalls::BIGINT AS hypercalls,
    traps::BIGINT AS traps,
    cycles::BIGINT AS cycles,
    cycles / events AS mean_cycles,
    cycles / nullif(sum(cycles) OVER (PARTITION BY trace, backend), 0) AS share
FROM reasons
ORDER BY trace, backend, cycles DESC, reason;
