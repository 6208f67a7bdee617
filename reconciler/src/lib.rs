//! cortex-reconciler: where specs come from at a revision, and (in later
//! work) plans, diffs, targets and the runtime.

pub mod source;

pub use source::git::{GitError, GitTree};
