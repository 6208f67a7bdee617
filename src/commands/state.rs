//! `cortex state [DIR] SCOPE [KEY]`: the operator's view of agent state on
//! the running runtime — one key's document, a scope's keys, or (with
//! `--watch`) its changes as they happen — and a hand on it (`--set`,
//! `--delete`, with compare-and-swap by `--if-version`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{OperateArgs, OutputFormat};
use crate::commands::workflows::with_client;

/// Where the arguments point: the project, the scope, maybe a key. With two
/// arguments the first is the project when it holds `cortex.yaml`.
fn split(args: &[String]) -> anyhow::Result<(PathBuf, &str, Option<&str>)> {
    let is_project = |arg: &str| Path::new(arg).join("cortex.yaml").is_file();
    match args {
        [dir] if is_project(dir) => anyhow::bail!(
            "{dir} is a project: name a scope too (cortex state {dir} SCOPE [KEY]; `cortex status {dir}` lists the scopes)"
        ),
        [scope] => Ok((PathBuf::from("."), scope, None)),
        [dir, scope] if is_project(dir) => Ok((PathBuf::from(dir), scope, None)),
        [scope, key] => Ok((PathBuf::from("."), scope, Some(key))),
        [dir, scope, key] => Ok((PathBuf::from(dir), scope, Some(key))),
        _ => anyhow::bail!("usage: cortex state [DIR] SCOPE [KEY]"),
    }
}

/// What `cortex state` does besides reading.
#[derive(Clone, Debug, Default)]
pub struct StateView {
    /// Only keys starting with this.
    pub prefix: String,
    /// Follow the scope's changes.
    pub watch: bool,
    /// With `watch`: from this version (default: from now).
    pub from_version: Option<u64>,
    /// Write the key: this JSON.
    pub set: Option<String>,
    /// Delete the key.
    pub delete: bool,
    /// With `set` or `delete`: only at this version.
    pub if_version: Option<u64>,
}

/// Runs `cortex state`.
pub fn show(args: &[String], view: StateView, common: &OperateArgs) -> anyhow::Result<ExitCode> {
    let (dir, scope, key) = split(args)?;
    let (scope, key) = (scope.to_string(), key.map(str::to_string));
    let value: Option<serde_json::Value> = view
        .set
        .as_deref()
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                anyhow::anyhow!("--set takes a JSON value ({e}); a string is '\"text\"'")
            })
        })
        .transpose()?;
    if view.if_version.is_some() && value.is_none() && !view.delete {
        anyhow::bail!("--if-version goes with --set or --delete");
    }
    if (value.is_some() || view.delete) && key.is_none() {
        anyhow::bail!("--set and --delete need a KEY: cortex state [DIR] SCOPE KEY --set JSON");
    }
    let format = common.format;
    with_client(&dir, common, async move |client| {
        let state = client.state(&scope);
        if let (Some(key), true) = (&key, value.is_some() || view.delete) {
            let outcome = match (&value, view.if_version) {
                (Some(v), Some(at)) => state.put_if(key, v, at).await?,
                (Some(v), None) => cortex_client::Cas::Written(state.put(key, v).await?),
                (None, Some(at)) => state.delete_if(key, at).await?,
                (None, None) => match state.get(key).await? {
                    Some(doc) => state.delete_if(key, doc.version).await?,
                    None => anyhow::bail!("no key {key} in state scope {scope}"),
                },
            };
            return match outcome {
                cortex_client::Cas::Written(version) => {
                    match format {
                        OutputFormat::Json => println!(
                            "{}",
                            serde_json::json!({ "scope": scope, "key": key, "version": version })
                        ),
                        OutputFormat::Text => println!(
                            "{scope}/{key}: {} at version {version}",
                            if view.delete { "deleted" } else { "written" }
                        ),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                cortex_client::Cas::Conflict(current) => anyhow::bail!(
                    "{scope}/{key} is not at version {}: {}; nothing was written",
                    view.if_version.unwrap_or(0),
                    current.map_or("it does not exist".to_string(), |c| format!(
                        "it is at version {} (by {})",
                        c.version, c.updated_by
                    ))
                ),
            };
        }
        if view.watch {
            let from = match view.from_version {
                Some(v) => v,
                None => state.list("", "", 1).await?.version,
            };
            let mut watch = state.watch(from);
            loop {
                let change = watch.next().await?;
                match format {
                    OutputFormat::Json => println!("{}", serde_json::to_string(&change)?),
                    OutputFormat::Text => println!(
                        "{:>6}  {}  {}  {}",
                        change.version,
                        change.key,
                        change
                            .value
                            .map_or_else(|| "(deleted)".to_string(), |v| v.to_string()),
                        change.by
                    ),
                }
            }
        }
        if let Some(key) = key {
            let Some(doc) = state.get(&key).await? else {
                anyhow::bail!("no key {key} in state scope {scope}");
            };
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
                OutputFormat::Text => println!(
                    "{scope}/{}  version {}  by {} at {}\n{}",
                    doc.key,
                    doc.version,
                    doc.updated_by,
                    doc.updated_at,
                    serde_json::to_string_pretty(&doc.value)?
                ),
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut items = Vec::new();
        let mut after = String::new();
        let mut version = 0;
        loop {
            let page = state.list(&view.prefix, &after, 1000).await?;
            version = version.max(page.version);
            items.extend(page.items);
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
        match format {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "scope": scope, "version": version, "items": items })
                )?
            ),
            OutputFormat::Text if items.is_empty() => {
                println!("{scope}: no keys (version {version})");
            }
            OutputFormat::Text => {
                let width = items.iter().map(|d| d.key.len()).max().unwrap_or(3).max(3);
                println!("{:width$}  {:>7}  {:12}  VALUE", "KEY", "VERSION", "BY");
                for d in &items {
                    let mut value = d.value.to_string();
                    if value.chars().count() > 60 {
                        value = value.chars().take(57).collect::<String>() + "...";
                    }
                    println!(
                        "{:width$}  {:>7}  {:12}  {value}",
                        d.key, d.version, d.updated_by
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
