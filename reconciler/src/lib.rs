//! cortex-reconciler: where specs come from at a revision, desired states,
//! plans and their renderings; (in later work) targets and the runtime.

pub mod desired;
pub mod embedded;
pub mod kubernetes;
pub mod plan;
pub mod runtime;
pub mod source;
pub mod store;

pub use desired::{At, Desired, DesiredError, desired_at, desired_pair, plan_between};
pub use plan::{Action, Plan, PlanOptions};
pub use source::git::{GitError, GitTree};
