//! The Kubernetes target: read live state, plan with server-side dry-run,
//! apply with server-side apply in dependency order, prune, wait, lock.

pub mod cluster;
pub mod error;
pub mod retry;

pub use cluster::{Cluster, ConnectOptions, Discovery, FIELD_MANAGER, Kind};
pub use error::{FieldConflict, KubeError};
pub use retry::RetryPolicy;
pub mod apply;
pub mod election;
pub mod live;
pub mod lock;
pub mod planner;
pub mod quantity;
pub mod wait;

pub use apply::{ApplyReport, ApplySettings, apply};
pub use planner::{ClusterPlan, PlanSettings, SavedPlan, plan};
