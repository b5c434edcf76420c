"""Backend mechanisms: small stateful components the replay engine composes.

* ``pagetables`` -- physical page-table frames and the guest's intent (plus the
  entries a native TLB may still hold);
* ``coherence`` -- a backend's copy of the tables beside the intent, and the
  incremental coherence check;
* ``tracer`` -- write-protected shadow tables and KVM's write-flood heuristic;
* ``batch`` -- lazy-mode queues (Xen multicalls, lguest's ring, VMI's queue);
* ``vcpu`` -- the virtual interrupt flag and interrupt delivery (vectorized);
* ``apic`` -- virtual LAPIC/IOAPIC registers.
"""
