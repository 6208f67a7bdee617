//! `cortex up` (compile, apply to the embedded store, run the runtime in
//! the foreground) and `cortex status`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use cortex_reconciler::target::embedded;
use cortex_reconciler::up::{Applied, UpOptions};
use cortex_runtime::engine::RUNTIME_URL;
use cortex_runtime::health::HealthState;
use cortex_runtime::status::{
    AgentStatus, InboxStatsView, ReplicaStatus, RuntimeStatus, render_table,
};
use cortex_runtime::store::{SqliteStore, Store};
use cortex_runtime::tokens;

use crate::cli::{LogFormat, PlanFormat, StatusFormat};
use crate::commands::operate::proves_identity;
use crate::commands::target::{compile, failed, runtime};
use crate::output;

/// `cortex up`'s options.
pub struct UpRequest {
    pub env: Option<String>,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub agents: bool,
}

/// Logs to stderr, filtered by `CORTEX_LOG` (default `info`).
pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORTEX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .try_init(),
    };
}

/// One line: agents by state, queue totals, alerts.
fn summary_line(status: &RuntimeStatus) -> String {
    let mut states: std::collections::BTreeMap<HealthState, usize> = Default::default();
    let mut external = 0;
    for agent in status.agents.values() {
        if !agent.local {
            external += 1;
        }
        for r in &agent.replicas {
            *states.entry(r.state).or_default() += 1;
        }
    }
    let replicas: usize = states.values().sum();
    let healthy = states.get(&HealthState::Healthy).copied().unwrap_or(0);
    let others: Vec<String> = states
        .iter()
        .filter(|(s, _)| **s != HealthState::Healthy)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let (depth, flight, dead) = status.queues.iter().fold((0, 0, 0), |(a, b, c), q| {
        (a + q.depth, b + q.in_flight, c + q.dead_letters)
    });
    format!(
        "agents: {healthy}/{replicas} processes healthy{}{} · queues: {depth} ready, {flight} in flight, {dead} dead · alerts: {}",
        if others.is_empty() {
            String::new()
        } else {
            format!(" ({})", others.join(", "))
        },
        if external > 0 {
            format!(", {external} external")
        } else {
            String::new()
        },
        if status.alerts_firing.is_empty() {
            "none".to_string()
        } else {
            status.alerts_firing.join(", ")
        }
    )
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when
/// this is called, not when first polled, so a signal that arrives while the
/// runtime starts is not lost (or fatal: SIGINT's default kills at once).
pub(crate) fn terminated() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (interrupt, term) {
                (Ok(mut interrupt), Ok(mut term)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `cortex up`.
pub fn up(dir: &Path, request: UpRequest) -> anyhow::Result<ExitCode> {
    init_logging(request.log_format);
    let Some(desired) = compile(dir, request.env.clone(), PlanFormat::Text)? else {
        return Ok(ExitCode::from(1));
    };
    let rt = runtime()?;
    let options = UpOptions {
        listen: request.listen,
        supervise: request.agents,
        poll: Duration::from_secs(1),
        alert_period: Duration::from_secs(1),
        routes: None,
        metrics: None,
    };
    let outcome: anyhow::Result<ExitCode> = rt.block_on(async {
        // The signal handlers first: a Ctrl-C while the runtime starts is
        // not lost.
        let stop = terminated();
        // The compiled project is dropped once applied: the runtime runs
        // from the store, and a large project's compile is most of the
        // memory `cortex up` would otherwise keep.
        let up = {
            let desired = desired;
            cortex_reconciler::up::up(dir, &desired, options).await?
        };
        match up.applied {
            Applied::Revision {
                revision,
                created,
                updated,
                deleted,
            } => eprintln!(
                "Applied revision {revision} to {} ({created} created, {updated} updated, {deleted} deleted).",
                up.state.display()
            ),
            Applied::Resumed { revision } => eprintln!(
                "No changes: resuming revision {revision} from {}.",
                up.state.display()
            ),
        }
        let running = &up.running;
        let status = running.status();
        eprintln!(
            "cortex up: {} revision {} — broker {} — {} agents — logs in {} — Ctrl-C to stop",
            status.project,
            status.revision,
            running.url,
            status.agents.len(),
            up.state_dir.join("logs").display()
        );
        for (name, agent) in &status.agents {
            for p in &agent.problems {
                eprintln!("  {name}: {p}");
            }
        }
        let live = std::io::stderr().is_terminal();
        let mut last = String::new();
        let mut ticker = tokio::time::interval(Duration::from_secs(2));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = ticker.tick() => {
                    let line = summary_line(&running.status());
                    if line != last {
                        if live {
                            eprintln!("\x1b[2m{line}\x1b[0m");
                        } else {
                            eprintln!("{line}");
                        }
                        last = line;
                    }
                }
            }
        }
        eprintln!("Stopping: agents first, then the broker…");
        let state = up.state.clone();
        up.stop().await?;
        eprintln!("Stopped cleanly; state kept in {}.", state.display());
        Ok(ExitCode::SUCCESS)
    });
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => failed(&format!("{e:#}")),
    }
}

/// The status of the runtime at `url`, asked with the operator token once
/// the runtime has proved who it is.
async fn live_status(url: &str, token: &str) -> Result<RuntimeStatus, String> {
    proves_identity(url, token).await?;
    let response = cortex_client::http_client()
        .get(format!("{url}/v1/status"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// What the store says when no runtime is running.
async fn stored_status(store: &SqliteStore) -> anyhow::Result<Option<RuntimeStatus>> {
    let Some(applied) = store.applied().await? else {
        return Ok(None);
    };
    let config = cortex_compiler::runtime_config::RuntimeConfig::from_value(&applied.config)?;
    let mut status = RuntimeStatus {
        project: config.project.clone(),
        revision: applied.revision,
        url: "not running".into(),
        ..RuntimeStatus::default()
    };
    for (name, entry) in &config.agents {
        let mut agent = AgentStatus {
            local: cortex_runtime::agents::local_command(entry).is_some(),
            ..AgentStatus::default()
        };
        for record in store.health_history(name, 200).await? {
            if agent.replicas.iter().any(|r| r.replica == record.replica) {
                continue;
            }
            let state = serde_json::from_value(serde_json::Value::String(record.state.clone()))
                .unwrap_or(HealthState::Stopped);
            agent.replicas.push(ReplicaStatus {
                replica: record.replica,
                state,
                detail: record.detail,
                restarts: 0,
                pid: None,
                since_ms: record.at_ms,
            });
        }
        agent.replicas.sort_by_key(|r| r.replica);
        status.agents.insert(name.clone(), agent);
    }
    let mut queues: std::collections::BTreeMap<String, InboxStatsView> = Default::default();
    for m in store.messages().await? {
        let q = queues
            .entry(m.inbox.clone())
            .or_insert_with(|| InboxStatsView {
                inbox: m.inbox.clone(),
                depth: 0,
                in_flight: 0,
                dead_letters: 0,
                capacity: 0,
            });
        if m.dead.is_some() {
            q.dead_letters += 1;
        } else {
            q.depth += 1;
        }
    }
    status.queues = queues.into_values().collect();
    status.states = cortex_runtime::store::state::with_declared(
        config.states.keys(),
        store.state_scopes().await?,
    );
    Ok(Some(status))
}

/// `cortex status`.
pub fn status(dir: &Path, env: Option<String>, format: StatusFormat) -> anyhow::Result<ExitCode> {
    let Some(desired) = compile(dir, env, PlanFormat::Text)? else {
        return Ok(ExitCode::from(1));
    };
    let state = embedded::state_path(dir, &desired);
    if !state.exists() {
        output::error_line(&format!(
            "no state store at {}: nothing was applied yet (run cortex up)",
            state.display()
        ))?;
        return Ok(ExitCode::from(1));
    }
    let store = match SqliteStore::open(&state) {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let state_dir = state.parent().unwrap_or(Path::new("."));
    let rt = runtime()?;
    let result: anyhow::Result<Option<(RuntimeStatus, bool)>> = rt.block_on(async {
        let url = store.meta(RUNTIME_URL).await?;
        let token = tokens::read_operator_token(state_dir, &store).await?;
        match (url, token) {
            (Some(url), Some(token)) => match live_status(&url, &token).await {
                Ok(s) => return Ok(Some((s, true))),
                Err(e) => eprintln!(
                    "The runtime recorded at {url} is not reachable: {e}; showing the state store."
                ),
            },
            (Some(url), None) => eprintln!(
                "The runtime recorded at {url} cannot be asked: {} is missing or belongs to another store; showing the state store.",
                tokens::operator_token_path(state_dir).display()
            ),
            (None, _) => {}
        }
        Ok(stored_status(&store).await?.map(|s| (s, false)))
    });
    store.close();
    match result {
        Ok(Some((status, _live))) => {
            match format {
                StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                StatusFormat::Text => print!("{}", render_table(&status)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            output::error_line(&format!(
                "the state store {} holds nothing applied yet (run cortex up)",
                state.display()
            ))?;
            Ok(ExitCode::from(1))
        }
        Err(e) => failed(&format!("{e:#}")),
    }
}
