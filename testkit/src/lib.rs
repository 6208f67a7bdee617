//! cortex-testkit: what the tests and benchmarks stand on, kept out of the
//! product (`publish = false`; the `cortex` binary does not link it).
//!
//! - [`git`]: real git repositories in temporary directories, the
//!   workspace's examples and fixtures, CI steps run as GitHub runs them;
//! - [`git_http`]: git's own smart-HTTP server behind a token;
//! - [`kubernetes`]: an in-process Kubernetes API server over real HTTP;
//! - [`arango`]: an in-process ArangoDB stand-in over real HTTP;
//! - [`conformance`]: the behaviour every state store must have;
//! - [`memory`]: a state store in memory, for tests on the paused clock;
//! - [`runtime`]: a runtime started in-process on a fixture project;
//! - [`serve`]: `cortex serve` started as a process, its API, the webhook's
//!   signature;
//! - [`generate`]: synthetic projects of any size.

pub mod arango;
pub mod conformance;
pub mod generate;
pub mod git;
pub mod git_http;
pub mod kubernetes;
pub mod memory;
pub mod runtime;
pub mod serve;
