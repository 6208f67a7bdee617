//! The operator's workflow commands against the running runtime: `run`,
//! `executions`, `execution`, `cancel`, `retry`, `pause`, `resume`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use cortex_client::{Client, ExecutionView};
use serde_json::{Map, Value};

use crate::cli::{OperateArgs, OutputFormat};
use crate::commands::operate::connect;
use crate::commands::target::{failed, runtime};

/// How often `--wait` asks.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// `workflow/NAME` → `NAME`.
fn workflow_name(reference: &str) -> anyhow::Result<&str> {
    reference
        .strip_prefix("workflow/")
        .or_else(|| reference.strip_prefix("Workflow/"))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("expected workflow/NAME, got {reference:?}"))
}

/// The trigger payload of `cortex run`: the file's object, then each
/// `KEY=VALUE` over it.
pub fn payload(inputs: &[String], file: Option<&Path>) -> anyhow::Result<Value> {
    let mut object = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => anyhow::bail!("{} must hold a JSON object", path.display()),
                Err(e) => anyhow::bail!("{} is not JSON: {e}", path.display()),
            }
        }
        None => Map::new(),
    };
    for input in inputs {
        let Some((key, value)) = input.split_once('=') else {
            anyhow::bail!("--input {input:?}: expected KEY=VALUE");
        };
        if key.is_empty() {
            anyhow::bail!("--input {input:?}: the key is empty");
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        object.insert(key.to_string(), value);
    }
    Ok(Value::Object(object))
}

/// Runs `call` with the operator's client of the runtime running `dir`.
pub(crate) fn with_client<F>(dir: &Path, common: &OperateArgs, call: F) -> anyhow::Result<ExitCode>
where
    F: AsyncFnOnce(Client) -> anyhow::Result<ExitCode>,
{
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        match connect(dir, common.env.clone()).await? {
            Some(client) => call(client).await,
            None => Ok(ExitCode::from(1)),
        }
    });
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => failed(&format!("{e:#}")),
    }
}

/// An execution as text: a header, then one line per task.
pub fn render_execution(e: &ExecutionView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {}  revision {}  {}",
        e.id, e.workflow, e.revision, e.state
    );
    let _ = writeln!(
        out,
        "trigger {}  created {}{}",
        e.trigger.name,
        e.created_at,
        e.finished_at
            .as_ref()
            .map(|f| format!("  finished {f}"))
            .unwrap_or_default()
    );
    let width = e
        .tasks
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "  {:width$}  {:9}  ATTEMPTS  RESULT", "TASK", "STATE");
    for t in &e.tasks {
        let result = match (&t.output, &t.error) {
            (Some(output), _) => output.to_string(),
            (None, Some(error)) => error.clone(),
            (None, None) => String::new(),
        };
        let result: String = result.chars().take(100).collect();
        let _ = writeln!(
            out,
            "  {:width$}  {:9}  {:8}  {}",
            t.name, t.state, t.attempts, result
        );
    }
    out
}

fn print_execution(e: &ExecutionView, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(e)?),
        OutputFormat::Text => print!("{}", render_execution(e)),
    }
    Ok(())
}

/// `cortex run`.
pub fn run(
    args: &[String],
    inputs: &[String],
    input_file: Option<PathBuf>,
    wait: bool,
    common: &OperateArgs,
) -> anyhow::Result<ExitCode> {
    let (dir, reference) = super::dir_and_reference(args, "cortex run [DIR] workflow/NAME")?;
    let workflow = workflow_name(reference)?.to_string();
    let payload = payload(inputs, input_file.as_deref())?;
    let format = common.format;
    with_client(&dir, common, async move |client| {
        let mut execution = client.start_execution(&workflow, &payload).await?;
        if !wait {
            print_execution(&execution, format)?;
            return Ok(ExitCode::SUCCESS);
        }
        if format == OutputFormat::Text {
            eprintln!("Started {}; waiting for it to end…", execution.id);
        }
        while !execution.is_finished() {
            tokio::time::sleep(WAIT_POLL).await;
            execution = client.execution(&execution.id).await?;
        }
        print_execution(&execution, format)?;
        Ok(if execution.state == "succeeded" {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Each task's state in execution `id` of the runtime running `dir`, for
/// `cortex graph --execution` (`None`: the project did not compile).
pub fn task_states(
    dir: &Path,
    env: Option<String>,
    id: &str,
    workflow: &str,
) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
    let rt = runtime()?;
    rt.block_on(async {
        let Some(client) = connect(dir, env).await? else {
            return Ok(None);
        };
        let execution = client.execution(id).await?;
        if execution.workflow != workflow {
            anyhow::bail!(
                "execution {id} runs workflow/{}, not workflow/{workflow}",
                execution.workflow
            );
        }
        Ok(Some(
            execution
                .tasks
                .into_iter()
                .map(|t| (t.name, t.state))
                .collect(),
        ))
    })
}

/// `cortex executions [DIR] [workflow/NAME]`.
pub fn list(args: &[String], common: &OperateArgs) -> anyhow::Result<ExitCode> {
    let (dir, workflow) = match args {
        [] => (PathBuf::from("."), None),
        [one] if one.starts_with("workflow/") => (PathBuf::from("."), Some(one.as_str())),
        [dir] => (PathBuf::from(dir), None),
        [dir, workflow] => (PathBuf::from(dir), Some(workflow.as_str())),
        _ => anyhow::bail!("usage: cortex executions [DIR] [workflow/NAME]"),
    };
    let workflow = workflow.map(workflow_name).transpose()?.map(str::to_string);
    let format = common.format;
    with_client(&dir, common, async move |client| {
        let executions = client.executions(workflow.as_deref()).await?;
        match format {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "executions": executions }))?
            ),
            OutputFormat::Text if executions.is_empty() => println!("No executions."),
            OutputFormat::Text => {
                let width = executions.iter().map(|e| e.id.len()).max().unwrap_or(2);
                println!("{:width$}  {:9}  {:10}  CREATED", "ID", "STATE", "TRIGGER");
                for e in &executions {
                    println!(
                        "{:width$}  {:9}  {:10}  {}",
                        e.id, e.state, e.trigger.name, e.created_at
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What `cortex execution`, `cancel` and `retry` do with the id.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// Show it.
    Show,
    /// Cancel it.
    Cancel,
    /// Retry it.
    Retry,
}

/// `cortex execution|cancel|retry [DIR] ID`.
pub fn act(args: &[String], act: Act, common: &OperateArgs) -> anyhow::Result<ExitCode> {
    let (dir, id) = super::dir_and_reference(args, "cortex execution [DIR] ID")?;
    let id = id.to_string();
    let format = common.format;
    with_client(&dir, common, async move |client| {
        let execution = match act {
            Act::Show => client.execution(&id).await?,
            Act::Cancel => client.cancel_execution(&id).await?,
            Act::Retry => client.retry_execution(&id).await?,
        };
        print_execution(&execution, format)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `cortex pause|resume [DIR] workflow/NAME`.
pub fn pause(args: &[String], paused: bool, common: &OperateArgs) -> anyhow::Result<ExitCode> {
    let (dir, reference) = super::dir_and_reference(args, "cortex pause [DIR] workflow/NAME")?;
    let workflow = workflow_name(reference)?.to_string();
    let format = common.format;
    with_client(&dir, common, async move |client| {
        let state = client.pause_workflow(&workflow, paused).await?;
        match format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&state)?),
            OutputFormat::Text => println!(
                "workflow/{} {} ({} queued)",
                state.workflow,
                if state.paused { "paused" } else { "resumed" },
                state.queued
            ),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `cortex publish|send|request`: the broker from the shell.
#[derive(Clone, Debug)]
pub enum Message {
    /// To a topic.
    Publish {
        /// Ordering key.
        key: Option<String>,
    },
    /// To an agent's inbox.
    Send {
        /// Ordering key.
        key: Option<String>,
    },
    /// To an agent, waiting for the reply.
    Request {
        /// How long to wait.
        timeout: Duration,
    },
}

/// `cortex publish|send|request [DIR] TO --payload JSON`.
pub fn message(
    args: &[String],
    payload: &str,
    kind: Message,
    common: &OperateArgs,
) -> anyhow::Result<ExitCode> {
    let (dir, to) = super::dir_and_reference(args, "cortex publish [DIR] TOPIC --payload JSON")?;
    let to = to.to_string();
    let payload: Value =
        serde_json::from_str(payload).map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))?;
    let format = common.format;
    with_client(&dir, common, async move |client| {
        let shown = match kind {
            Message::Publish { key } => {
                let published = client.publish(&to, key.as_deref(), &payload).await?;
                match format {
                    OutputFormat::Json => serde_json::to_string_pretty(&published)?,
                    OutputFormat::Text => format!(
                        "published to {to}: message {} delivered to {}",
                        join(&published.ids),
                        if published.delivered_to.is_empty() {
                            "no subscriber".to_string()
                        } else {
                            published.delivered_to.join(", ")
                        }
                    ),
                }
            }
            Message::Send { key } => {
                let sent = client.send(&to, key.as_deref(), &payload).await?;
                match format {
                    OutputFormat::Json => serde_json::to_string_pretty(&sent)?,
                    OutputFormat::Text => format!("sent to {to}: message {}", join(&sent.ids)),
                }
            }
            Message::Request { timeout } => {
                let reply = client.request(&to, &payload, timeout).await?;
                serde_json::to_string_pretty(&reply)?
            }
        };
        println!("{shown}");
        Ok(ExitCode::SUCCESS)
    })
}

fn join(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_keep_json_types_and_go_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.json");
        std::fs::write(&file, r#"{"id": "T-1", "n": 1}"#).unwrap();
        let inputs = vec!["n=7".to_string(), "subject=Refund please".to_string()];
        assert_eq!(
            payload(&inputs, Some(&file)).unwrap(),
            json!({"id": "T-1", "n": 7, "subject": "Refund please"})
        );
        let err = payload(&["novalue".to_string()], None).unwrap_err();
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
    }
}
