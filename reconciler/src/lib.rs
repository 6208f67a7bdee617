//! cortex-reconciler: plan, diff, apply, targets and the runtime. Filled in by later issues.
