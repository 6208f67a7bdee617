//! The DAG workflow runtime's core: an execution as a state machine
//! ([`execution`]: ready-set scheduling, retries with backoff, `onFailure`,
//! cancel), a task's input resolved at start time ([`input`]), the `run`
//! task kind ([`command`]), the loop that drives an execution to its end
//! ([`driver`]) and the store recording it ([`record`]). Triggers, agent tasks, durability and the
//! operator commands build on these.

pub mod command;
pub mod driver;
pub mod execution;
pub mod input;
pub mod record;

pub use execution::{AfterFailure, Execution, ExecutionState, TaskRun, TaskState};
pub use input::{InputError, Scope, resolve};
