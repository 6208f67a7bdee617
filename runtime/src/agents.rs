//! How a local agent is run: its program, environment (broker URL, name,
//! token, config file, ports, `env` entries with secrets resolved), log
//! files and health probe, derived from its runtime.json entry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cortex_client::{
    ENV_AGENT_CONFIG, ENV_AGENT_NAME, ENV_AGENT_PUBLISH, ENV_AGENT_SUBSCRIBE, ENV_AGENT_TOKEN,
    ENV_BROKER_URL, ENV_REPLICA,
};
use serde_json::Value;

use cortex_compiler::runtime_config::{AgentEntry, PortRef, RuntimeConfig};

use super::backoff::Backoff;
use super::health::{HealthSettings, LocalProbe, Probe};
use super::process::{LocalLauncher, resolve_program};
use super::secrets::Secrets;
use super::supervisor::ReplicaSpec;

/// One replica ready to supervise.
pub struct LocalReplica {
    /// What the supervisor needs.
    pub spec: ReplicaSpec,
    /// How to start it.
    pub launcher: Arc<LocalLauncher>,
    /// How to check it.
    pub probe: Option<Arc<dyn Probe>>,
}

/// An agent's local run: its replicas, or why it cannot run.
pub struct LocalAgent {
    /// Replicas to start.
    pub replicas: Vec<LocalReplica>,
    /// Problems (the agent runs without what they name, or not at all
    /// when there are no replicas).
    pub problems: Vec<String>,
}

/// Where the runtime keeps per-agent files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The project directory (agents' working directory).
    pub project: PathBuf,
    /// The state directory (`.cortex`): `logs/`, `agents/`, `secrets.yaml`.
    pub state: PathBuf,
}

impl Paths {
    /// The log file of a replica.
    pub fn log(&self, agent: &str, replica: u32) -> PathBuf {
        self.state
            .join("logs")
            .join(format!("{agent}-{replica}.log"))
    }

    /// The config file of an agent.
    pub fn config(&self, agent: &str) -> PathBuf {
        self.state.join("agents").join(agent).join("config.json")
    }
}

fn env_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Whether the agent entry says how to run it locally.
pub fn local_command(entry: &AgentEntry) -> Option<Vec<String>> {
    entry
        .local
        .as_ref()
        .map(|local| local.command.clone())
        .filter(|command| !command.is_empty())
}

/// Prepares the local run of `agent` (writes its config file).
pub fn prepare(
    agent: &str,
    entry: &AgentEntry,
    token: &str,
    broker_url: &str,
    paths: &Paths,
    secrets: &Secrets,
    http: &reqwest::Client,
) -> LocalAgent {
    let mut problems = Vec::new();
    let Some(command) = local_command(entry) else {
        return LocalAgent {
            replicas: Vec::new(),
            problems,
        };
    };
    let program = match resolve_program(&command[0], &paths.project) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e);
            return LocalAgent {
                replicas: Vec::new(),
                problems,
            };
        }
    };
    let config_path = paths.config(agent);
    let written = config_path
        .parent()
        .map_or(Ok(()), crate::private_files::create_dir)
        .and_then(|()| {
            crate::private_files::write(&config_path, &serde_json::to_vec_pretty(&entry.config)?)
        });
    if let Err(e) = written {
        problems.push(format!("cannot write {}: {e}", config_path.display()));
        return LocalAgent {
            replicas: Vec::new(),
            problems,
        };
    }
    let mut base_env: Vec<(String, String)> = Vec::new();
    for var in &entry.env {
        let name = &var.name;
        if let Some(value) = &var.value {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            base_env.push((name.clone(), text));
        } else if let Some(r) = &var.secret_ref {
            match secrets.get(&r.name, &r.key) {
                Ok(v) => base_env.push((name.clone(), v)),
                Err(e) => problems.push(format!("{name} not set: {e}")),
            }
        }
    }
    base_env.extend([
        (ENV_BROKER_URL.to_string(), broker_url.to_string()),
        (ENV_AGENT_NAME.to_string(), agent.to_string()),
        (ENV_AGENT_TOKEN.to_string(), token.to_string()),
        (
            ENV_AGENT_CONFIG.to_string(),
            config_path.display().to_string(),
        ),
        (ENV_AGENT_PUBLISH.to_string(), entry.publish.join(",")),
        (ENV_AGENT_SUBSCRIBE.to_string(), entry.subscribe.join(",")),
    ]);
    let declared: Vec<(String, u64)> = entry
        .ports
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.port?)))
        .collect();
    let replicas = entry.replicas;
    let backoff = Backoff::from_runtime(&entry.recovery.backoff);
    let mut out = Vec::new();
    for replica in 0..replicas {
        // Each replica listens on its own free ports (a spec's port numbers
        // are the container's; on one machine replicas would collide).
        let mut assigned: BTreeMap<String, u16> = BTreeMap::new();
        let mut by_number: BTreeMap<u64, u16> = BTreeMap::new();
        let mut env = base_env.clone();
        env.push((ENV_REPLICA.to_string(), replica.to_string()));
        for (i, (name, number)) in declared.iter().enumerate() {
            match free_port() {
                Ok(port) => {
                    assigned.insert(name.clone(), port);
                    by_number.insert(*number, port);
                    env.push((format!("CORTEX_PORT_{}", env_key(name)), port.to_string()));
                    if i == 0 {
                        env.push(("PORT".to_string(), port.to_string()));
                    }
                }
                Err(e) => problems.push(format!("no free port for {name}: {e}")),
            }
        }
        let health = HealthSettings::from_runtime(entry.health.as_ref(), |p| match p {
            PortRef::Name(name) => assigned.get(name).copied(),
            PortRef::Number(n) => by_number.get(n).copied().or_else(|| u16::try_from(*n).ok()),
        });
        if entry.health.as_ref().is_some_and(|h| h.check.is_some()) && health.check.is_none() {
            problems
                .push("health check names a port the agent does not declare: not checked".into());
        }
        let probe = health.check.clone().map(|check| {
            Arc::new(LocalProbe {
                check,
                env: env.clone(),
                http: http.clone(),
            }) as Arc<dyn Probe>
        });
        out.push(LocalReplica {
            spec: ReplicaSpec {
                agent: agent.to_string(),
                replica,
                health,
                backoff,
            },
            launcher: Arc::new(LocalLauncher {
                program: program.clone(),
                args: command[1..].to_vec(),
                env,
                log: paths.log(agent, replica),
                cwd: paths.project.clone(),
            }),
            probe,
        });
    }
    LocalAgent {
        replicas: out,
        problems,
    }
}

/// The labels of every agent of a runtime config.
pub fn labels(config: &RuntimeConfig) -> BTreeMap<String, BTreeMap<String, String>> {
    config
        .agents
        .iter()
        .map(|(name, entry)| (name.clone(), entry.labels.clone()))
        .collect()
}
