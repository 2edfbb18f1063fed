"""The serving engine in plain Python: the deliberately simple step-by-step reference the compiled
kernel is tested against (`simple`), and what both share: KV layout, prefix blocks, step costs
(J, s), the job table, the cost ledger and span logs."""
