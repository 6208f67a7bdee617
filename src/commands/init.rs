//! `cortex init [DIR]`: writes the `examples/hello` project, renamed, with
//! the JSON Schema of every kind in `.vscode/cortex.schema.json` and a
//! `# yaml-language-server: $schema=…` line atop each YAML file, so editors
//! that speak the YAML language server (VS Code's YAML extension, Neovim,
//! Helix, IntelliJ) complete and check the specs.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// The scaffold: the files of `examples/hello`, embedded in the binary.
const FILES: &[(&str, &str)] = &[
    (
        "cortex.yaml",
        include_str!("../../examples/hello/cortex.yaml"),
    ),
    (
        "agents/base.yaml",
        include_str!("../../examples/hello/agents/base.yaml"),
    ),
    (
        "agents/greeter.yaml",
        include_str!("../../examples/hello/agents/greeter.yaml"),
    ),
    (
        "topics.yaml",
        include_str!("../../examples/hello/topics.yaml"),
    ),
    (
        "workflows.yaml",
        include_str!("../../examples/hello/workflows.yaml"),
    ),
    (
        "environments/prod.yaml",
        include_str!("../../examples/hello/environments/prod.yaml"),
    ),
];

/// Where `cortex init` puts the combined schema, relative to the project.
pub const SCHEMA_FILE: &str = ".vscode/cortex.schema.json";

/// The modeline that points the YAML language server at the schema from a
/// file at `path` (relative to the project).
fn modeline(path: &str) -> String {
    let up = "../".repeat(path.matches('/').count());
    format!("# yaml-language-server: $schema={up}{SCHEMA_FILE}\n")
}

pub fn run(dir: &Path, name: Option<String>) -> anyhow::Result<ExitCode> {
    let name = match name {
        Some(name) => name,
        None => dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| {
                n.to_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "my-project".to_string()),
    };
    if let Err(why) = cortex_compiler::validate::formats::check_dns(&name, 63, false) {
        anyhow::bail!("project name `{name}` is invalid: {why} (choose one with --name)");
    }
    // Refuse before writing anything, so a partial scaffold never mixes
    // with existing files.
    for path in FILES.iter().map(|(path, _)| *path).chain([SCHEMA_FILE]) {
        let target = dir.join(path);
        if target.exists() {
            anyhow::bail!(
                "{} already exists; cortex init never overwrites files",
                target.display()
            );
        }
    }
    for (path, content) in FILES {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let content = if *path == "cortex.yaml" {
            content
                .replacen("name: hello", &format!("name: {name}"), 1)
                .replace("namespace: hello", &format!("namespace: {name}"))
        } else if *path == "environments/prod.yaml" {
            content.replace("namespace: hello-prod", &format!("namespace: {name}-prod"))
        } else {
            content.to_string()
        };
        let content = modeline(path) + &content;
        std::fs::write(&target, content)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    let schema = dir.join(SCHEMA_FILE);
    if let Some(parent) = schema.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&cortex_compiler::schema::combined_schema())?;
    std::fs::write(&schema, text + "\n")
        .with_context(|| format!("cannot write {}", schema.display()))?;
    let mut out = std::io::stdout();
    writeln!(out, "created project `{name}` in {}", dir.display())?;
    writeln!(
        out,
        "editors: each file names the schema in {SCHEMA_FILE} (refresh it with `cortex schema > {SCHEMA_FILE}` after upgrading cortex)"
    )?;
    writeln!(out, "next: cortex validate {}", dir.display())?;
    Ok(ExitCode::SUCCESS)
}
