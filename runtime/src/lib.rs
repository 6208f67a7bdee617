//! cortex-runtime: the runtime of the embedded target — the message broker,
//! agent state, the workflow runtime, the local agent supervisor, the health
//! loop and alerts, served over HTTP
//! on one address — and the state stores it keeps its state in.

pub mod agents;
pub mod alerts;
pub mod backoff;
pub mod batch;
pub mod broker;
pub mod connections;
pub mod engine;
pub mod health;
pub mod leftovers;
pub mod metrics;
pub mod private_files;
pub mod process;
pub mod secrets;
pub mod server;
pub mod state;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod tokens;
pub mod workflow;

pub use engine::{Runtime, RuntimeError, RuntimeOptions, start};
