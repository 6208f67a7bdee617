//! cortex-reconciler: where specs come from at a revision, desired states,
//! plans and their renderings, the Kubernetes and embedded targets, the
//! state stores and the embedded runtime.

pub mod desired;
pub mod embedded;
pub mod kubernetes;
pub mod plan;
pub mod private_files;
pub mod runtime;
pub mod source;
pub mod store;

pub use desired::{At, Desired, DesiredError, desired_at, desired_pair, plan_between};
pub use plan::{Action, Plan, PlanOptions};
pub use source::git::{GitError, GitTree};
