//! `cortex-bench`: the benchmarks behind the figures in `docs/benchmarks.md`,
//! a binary of their own so the product `cortex` carries none of them.
//!
//! - `cortex-bench compiler`: validate, build (against `helm template`),
//!   diff and peak memory on a generated project, and a Kubernetes plan
//!   against the in-process API server;
//! - `cortex-bench runtime`: broker throughput (in-process and durable),
//!   HTTP latency with many connected agents, the health loop's cost;
//! - `cortex-bench workflows`: the workflow runtime against Restate and
//!   DBOS on the same workloads;
//! - `cortex-bench serve`: `cortex serve`'s push → applied latency, its
//!   no-op reconcile and its memory;
//! - `cortex-bench state`: agent state's CAS writes/s and watch latency
//!   against etcd on the same workload.

mod compiler;
mod config;
mod counting;
mod durable;
mod http;
mod jetstream;
mod kubernetes;
mod peer;
mod runtime;
mod serve;
mod spread;
mod state;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cortex_testkit::generate::Shape;

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

/// Measure cortex (figures in docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "cortex-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure agent state against etcd (`CORTEX_BENCH_ETCD`, default
    /// `etcd` on the PATH): CAS writes/s and watch latency.
    State {
        /// Seconds of CAS writes per engine.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Measure the workflow runtime against Restate and DBOS.
    Workflows(WorkflowArgs),
    /// Measure `cortex serve` (the release binary): push → applied, a
    /// no-op reconcile of the generated project, memory.
    Serve {
        /// Pushes timed per mode (interval, webhook).
        #[arg(long, default_value_t = 10)]
        pushes: usize,
    },
    /// Measure the compiler on a generated project.
    Compiler {
        /// Number of agents.
        #[arg(long, default_value_t = 2000)]
        agents: usize,
        /// Number of workflows.
        #[arg(long, default_value_t = 500)]
        workflows: usize,
        /// Tasks per workflow.
        #[arg(long, default_value_t = 20)]
        tasks: usize,
        /// Timed runs (the first is a warm-up and is reported separately).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Write the generated project to this (new) directory and keep it,
        /// e.g. to time `cortex validate DIR` as a whole process.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Measure the runtime: broker throughput (in-process and durable),
    /// HTTP latency with many agents, health loop cost.
    Runtime {
        /// Connected agents for the HTTP benchmark (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        http_agents: usize,
        /// Aggregate publish rate of the HTTP benchmark (msg/s).
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Seconds each timed phase runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Supervised replicas for the health loop benchmark (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        health_agents: usize,
        /// Run only the HTTP benchmark's load generator, against the
        /// runtime at this URL (one started with --serve-for-load, e.g. on
        /// another machine); prints one mode's figures.
        #[arg(long)]
        client_of: Option<String>,
        /// The operator token --serve-for-load printed (for --client-of).
        #[arg(long, default_value = "")]
        operator_token: String,
        /// Run only the HTTP benchmark's runtime, listening on this address
        /// (e.g. 0.0.0.0:7070), for a load generator on another machine; it
        /// prints the command to run there and serves until Ctrl-C.
        #[arg(long, conflicts_with = "client_of")]
        serve_for_load: Option<std::net::SocketAddr>,
        /// Modes of the HTTP benchmark, comma-separated: `agents` (agents
        /// send to each other over their sockets, acks riding on their next
        /// send), `agents-acking-each` (an ack frame per delivery), `http`
        /// (the operator sends over HTTP).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "agents,agents-acking-each,http"
        )]
        senders: Vec<String>,
    },
}

/// `cortex-bench workflows`' flags.
#[derive(Debug, clap::Args)]
struct WorkflowArgs {
    /// 10-step workflows timed one at a time.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// 10-step workflows started at once.
    #[arg(long, default_value_t = 1000)]
    concurrent: usize,
    /// Tasks in the middle of the fan-out/fan-in DAG (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    dag: usize,
    /// Engines, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "cortex,restate,dbos")]
    engines: Vec<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::State { seconds } => {
            tokio_runtime()?.block_on(state::run(seconds))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { pushes } => {
            tokio_runtime()?.block_on(serve::run(pushes))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Workflows(args) => {
            workflows::run(&workflows::Request {
                runs: args.runs,
                concurrent: args.concurrent,
                dag: args.dag,
                engines: args.engines,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compiler {
            agents,
            workflows,
            tasks,
            runs,
            keep,
        } => compiler::run(
            Shape {
                agents,
                workflows,
                tasks,
            },
            runs,
            keep.as_deref(),
        ),
        Command::Runtime {
            http_agents,
            rate,
            seconds,
            health_agents,
            client_of,
            operator_token,
            senders,
            serve_for_load,
        } => match (client_of, serve_for_load) {
            (None, Some(listen)) => {
                runtime::check_open_files(http::files_needed(http_agents, rate))?;
                tokio_runtime()?.block_on(http::serve_for_load(listen, http_agents))?;
                Ok(ExitCode::SUCCESS)
            }
            (Some(url), _) => {
                runtime::check_open_files(http::files_needed(http_agents, rate))?;
                let [senders] = senders.as_slice() else {
                    anyhow::bail!("--client-of takes one --senders mode");
                };
                http::load_generator_runtime()?.block_on(http::client(
                    &url,
                    &operator_token,
                    http_agents,
                    rate,
                    seconds,
                    http::Senders::from_arg(senders)?,
                ))?;
                Ok(ExitCode::SUCCESS)
            }
            (None, None) => runtime::run(runtime::Request {
                http_agents,
                rate,
                seconds,
                health_agents,
                senders: senders
                    .iter()
                    .map(|s| http::Senders::from_arg(s))
                    .collect::<anyhow::Result<_>>()?,
            }),
        },
    }
}

/// The async runtime of the benchmarks (two workers: this machine's cores).
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The `cortex` binary the compiler benchmark runs as a process: `CORTEX_BIN`,
/// else the one built beside this binary (`cargo build --release -p cortex`).
fn cortex_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CORTEX_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().context("cannot find this binary")?;
    let beside = me.with_file_name("cortex");
    anyhow::ensure!(
        beside.is_file(),
        "no cortex binary beside {} (run `cargo build --release -p cortex` first, or set CORTEX_BIN)",
        me.display()
    );
    Ok(beside)
}
