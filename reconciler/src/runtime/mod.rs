//! The runtime of the embedded target: the message broker, the local agent
//! supervisor, the health loop and alerts, served over HTTP on one address.

pub mod agents;
pub mod alerts;
pub mod backoff;
pub mod broker;
pub mod connections;
pub mod engine;
mod fields;
pub mod health;
pub mod leftovers;
pub mod metrics;
pub mod process;
pub mod secrets;
pub mod server;
pub mod status;
pub mod supervisor;
pub mod tokens;

pub use engine::{Runtime, RuntimeError, RuntimeOptions, start};
