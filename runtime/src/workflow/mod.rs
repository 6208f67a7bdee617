//! The DAG workflow runtime. Its core: an execution as a state machine
//! ([`execution`]: ready-set scheduling, retries with backoff, `onFailure`,
//! cancel), a task's input resolved at start time ([`input`]), the task
//! kinds ([`runner`]: an agent request through the broker, or a local
//! command, [`command`]), the loop that drives an execution to its end
//! ([`driver`]) and the store recording every transition first
//! ([`record`]). Around it: the [`scheduler`] that owns executions (start,
//! queue, cancel, retry, pause, resume after a restart), its triggers
//! ([`consumer`] for topics, [`cron`] for schedules), the API ([`http`],
//! [`view`], [`error`]) and [`metrics`].

pub mod command;
pub mod consumer;
pub mod cron;
pub mod driver;
pub mod error;
pub mod execution;
pub mod http;
pub mod input;
pub mod metrics;
pub mod record;
pub mod runner;
pub mod scheduler;
pub mod view;

pub use error::WorkflowError;
pub use execution::{AfterFailure, Execution, ExecutionState, TaskRun, TaskState};
pub use input::{InputError, Scope, resolve};
pub use scheduler::{SchedulerOptions, Start, Workflows};
