//! The runtime of the embedded target: the message broker, the local agent
//! supervisor, the health loop and alerts, served over HTTP on one address.

pub mod broker;
pub mod metrics;
