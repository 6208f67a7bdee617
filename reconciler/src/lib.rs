//! cortex-reconciler: where specs come from at a revision, desired states,
//! plans and their renderings, and the targets they are applied to
//! (Kubernetes, and the embedded runtime's state store). The runtime itself
//! is the `cortex-runtime` crate.

pub mod desired;
pub mod plan;
pub mod serve;
pub mod source;
pub mod target;
pub mod up;
pub mod write;

pub use desired::{At, Desired, DesiredError, desired_at, desired_pair, plan_between};
pub use plan::{Action, Plan, PlanOptions};
pub use source::git::{GitError, GitTree};
