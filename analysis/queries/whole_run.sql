-- What does each replay cost on the whole run, estimated, beside its interface ratio?
-- One row per trace and replay: the interface's cycles (the events, priced by the cost
-- table), the guest's own instructions at the table's CPI (kernel and user), the TLB
-- refills the recorder measured at the table's walk cost (nested on nested paging), their
-- sum, native's sum on the same work, the whole-run slowdown (an estimate), the share of
-- the whole-run cycles priced by estimates in the cost table (null for ablations) and
-- the interface ratio (the events' cycles over native's).
-- needs: summary
SELECT
    trace,
    backend,
    base,
    without,
    fallback,
    cost_table,
    cycles AS interface_cycles,
    guest_cycles,
    tlb_cycles,
    tlb_refills,
    whole_run_cycles,
    native_whole_run_cycles,
    whole_run_slowdown,
    whole_run_estimate_share,
    interface_ratio
FROM summary
ORDER BY trace, whole_run_slowdown, base, without NULLS FIRST, fallback;
