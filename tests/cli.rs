//! End-to-end tests of the `cortex` binary: exit codes, output formats,
//! colour handling, and every command of the front end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs cortex in the repository root with colour settings cleared.
fn cortex(args: &[&str]) -> Output {
    cortex_in(&repo(), args, &[])
}

fn cortex_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cortex"));
    cmd.args(args).current_dir(dir);
    for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CORTEX_ENV"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cortex")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_passes_on_the_example_in_every_environment() {
    for env in [None, Some("staging"), Some("prod")] {
        let mut args = vec!["validate", "examples/support-desk"];
        if let Some(e) = env {
            args.extend(["--env", e]);
        }
        let out = cortex(&args);
        assert_eq!(out.status.code(), Some(0), "{env:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("valid: project `support-desk`"));
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn validate_reports_an_error_with_position_and_hint_and_exits_1() {
    let out = cortex(&["validate", "fixtures/invalid/cx0201-unknown-field"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error[CX0201]: unknown field `replcas`"),
        "{err}"
    );
    assert!(
        err.contains("--> fixtures/invalid/cx0201-unknown-field/agents.yaml:25:3"),
        "{err}"
    );
    assert!(err.contains("help: did you mean `replicas`?"), "{err}");
    assert!(!err.contains('\x1b'), "colour on a pipe: {err}");
}

#[test]
fn warnings_alone_exit_0() {
    let out = cortex(&[
        "validate",
        "fixtures/invalid/cx0109-include-matches-nothing",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("warning[CX0109]"));
}

#[test]
fn json_format_is_versioned_and_complete() {
    let out = cortex(&[
        "validate",
        "fixtures/invalid/cx0506-unknown-topic",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["format_version"], 1);
    assert_eq!(report["errors"], 1);
    let d = &report["diagnostics"][0];
    assert_eq!(d["code"], "CX0506");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["span"]["file"], "agents.yaml");
    assert_eq!(d["span"]["line"], 27);
    assert_eq!(
        d["path"],
        "fixtures/invalid/cx0506-unknown-topic/agents.yaml"
    );
    assert!(d["help"].as_str().unwrap().contains("tickets.created"));
}

#[test]
fn github_format_emits_workflow_commands() {
    let out = cortex(&[
        "validate",
        "fixtures/invalid/cx0503-bad-duration",
        "--format",
        "github",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let line = stdout.lines().next().expect("one annotation");
    assert!(
        line.starts_with("::error file=fixtures/invalid/cx0503-bad-duration/agents.yaml,line=16,col=15,title=CX0503 invalid duration `10sec`::"),
        "{line}"
    );
    assert!(
        line.contains("%0Ahelp: "),
        "multi-line bodies are escaped: {line}"
    );
}

#[test]
fn colour_follows_clicolor_force_and_no_color() {
    let dir = repo();
    let forced = cortex_in(
        &dir,
        &["validate", "fixtures/invalid/cx0201-unknown-field"],
        &[("CLICOLOR_FORCE", "1")],
    );
    assert!(
        text(&forced.stderr).contains('\x1b'),
        "CLICOLOR_FORCE=1 colours"
    );
    let off = cortex_in(
        &dir,
        &["validate", "fixtures/invalid/cx0201-unknown-field"],
        &[("NO_COLOR", "1")],
    );
    assert!(
        !text(&off.stderr).contains('\x1b'),
        "NO_COLOR=1 does not colour"
    );
}

#[test]
fn explain_prints_origins_of_every_value() {
    let out = cortex(&[
        "explain",
        "examples/support-desk",
        "agent/triage",
        "--env",
        "prod",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("# extends: triage → llm-agent → base-agent"),
        "{stdout}"
    );
    let replicas = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("replicas:"))
        .expect("replicas line");
    assert!(
        replicas.contains("replicas: 4")
            && replicas.contains("# examples/support-desk/environments/prod.yaml:"),
        "{replicas}"
    );
    let image = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("image:"))
        .expect("image line");
    assert!(
        image.contains("ghcr.io/acme/agent-runtime:1.4.3")
            && image.contains("agents/base.yaml:8 (base-agent)"),
        "{image}"
    );
    assert!(!stdout.contains("TRACE_SAMPLING"), "deleted entry is gone");
    assert!(stdout.contains("{{ like this }}"), "config is verbatim");
}

#[test]
fn explain_of_an_unknown_spec_suggests_the_closest() {
    let out = cortex(&["explain", "examples/support-desk", "agent/triag"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("did you mean `triage`?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_prints_valid_json_schemas() {
    let one = cortex(&["schema", "agent"]);
    assert_eq!(one.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&one.stdout).expect("json");
    assert_eq!(schema["title"], "Agent");
    assert!(
        schema["$defs"]["duration"].is_object(),
        "shared definitions are bundled in"
    );
    let all = cortex(&["schema"]);
    let combined: serde_json::Value = serde_json::from_slice(&all.stdout).expect("json");
    assert_eq!(combined["allOf"].as_array().map(Vec::len), Some(11));
    // Regression: it referred to `#/$defs/…` without holding `$defs`.
    let printed = String::from_utf8_lossy(&all.stdout);
    for reference in printed.split("\"#/$defs/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(
            combined["$defs"][name].is_object(),
            "#/$defs/{name} is missing"
        );
    }
    let bad = cortex(&["schema", "agnet"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("did you mean `Agent`?"));
}

#[test]
fn init_scaffolds_a_valid_project_and_never_overwrites() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("my-desk");
    let dir_text = dir.to_str().expect("utf-8");
    let out = cortex(&["init", dir_text]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let project = std::fs::read_to_string(dir.join("cortex.yaml")).expect("cortex.yaml");
    assert!(project.contains("name: my-desk"), "{project}");
    // Editors find the schema from every file.
    assert!(
        project.starts_with("# yaml-language-server: $schema=.vscode/cortex.schema.json\n"),
        "{project}"
    );
    let greeter = std::fs::read_to_string(dir.join("agents/greeter.yaml")).expect("greeter");
    assert!(
        greeter.starts_with("# yaml-language-server: $schema=../.vscode/cortex.schema.json\n"),
        "{greeter}"
    );
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(".vscode/cortex.schema.json")).expect("the schema file"),
    )
    .expect("JSON");
    assert!(schema["$defs"]["duration"].is_object(), "self-contained");
    for env in [None, Some("prod")] {
        let mut args = vec!["validate", dir_text];
        if let Some(e) = env {
            args.extend(["--env", e]);
        }
        let out = cortex(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let before = std::fs::read_to_string(dir.join("agents/greeter.yaml")).expect("file");
    let again = cortex(&["init", dir_text]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(dir.join("agents/greeter.yaml")).expect("file"),
        before
    );
}

/// A project's own template is rendered by `validate`, which refuses what
/// `build` would; a project without one is not rendered (its objects come
/// from cortex's built-in templates).
#[test]
fn validate_renders_a_project_with_templates_of_its_own() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("desk");
    let dir_text = dir.to_str().expect("utf-8");
    assert_eq!(cortex(&["init", dir_text]).status.code(), Some(0));
    let shipped = std::fs::read_to_string(repo().join("templates/deployment.yaml.j2"))
        .expect("the shipped template");
    std::fs::create_dir_all(dir.join("templates")).expect("templates/");
    let own = dir.join("templates/deployment.yaml.j2");
    std::fs::write(&own, &shipped).expect("write");
    let out = cortex(&["validate", dir_text]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::write(
        &own,
        shipped.replace("revisionHistoryLimit: 5", "revisionHistoryLimt: 5"),
    )
    .expect("write");
    let out = cortex(&["validate", dir_text]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("error[CX0603]") && err.contains("revisionHistoryLimt"),
        "{err}"
    );
}

#[test]
fn explain_code_describes_codes() {
    let out = cortex(&["explain-code", "cx0302"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("CX0302: extends cycle"));
    let list = cortex(&["explain-code"]);
    assert!(text(&list.stdout).lines().count() >= 50);
    assert_eq!(cortex(&["explain-code", "CX9999"]).status.code(), Some(1));
}

#[test]
fn a_directory_without_a_project_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = cortex(&["validate", tmp.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("has no cortex.yaml") && err.contains("cortex init"),
        "{err}"
    );
}

#[test]
fn an_unknown_environment_lists_the_declared_ones() {
    let out = cortex(&["validate", "examples/support-desk", "--env", "prdo"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error[CX0309]")
            && err.contains("did you mean `prod`?")
            && err.contains("declared: prod, staging"),
        "{err}"
    );
}

#[test]
fn build_writes_every_output_and_replaces_a_previous_build() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let out_text = out.to_str().expect("utf-8");
    let first = cortex(&[
        "build",
        "examples/support-desk",
        "--env",
        "prod",
        "-o",
        out_text,
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let summary = text(&first.stdout);
    assert!(
        summary.contains("built project `support-desk` (env prod)"),
        "{summary}"
    );
    assert!(summary.contains("pool general: cpu 17.5/32, memory 35Gi/128Gi, agents 35/40 at maximum scale, ≈ $0.700/h"), "{summary}");
    for file in [
        "chart/Chart.yaml",
        "chart/values.yaml",
        "chart/templates/objects-000.yaml",
        "manifests.yaml",
        "runtime.json",
        "inventory.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let inventory: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("inventory.json")).expect("read"))
            .expect("json");
    assert_eq!(inventory["objects"].as_array().map(Vec::len), Some(22));
    assert!(
        inventory["objects"][0]["hash"]
            .as_str()
            .is_some_and(|h| h.len() == 64)
    );
    // A second build (another environment) replaces the first whole.
    let second = cortex(&[
        "build",
        "examples/support-desk",
        "--env",
        "staging",
        "-o",
        out_text,
    ]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(
        std::fs::read_to_string(out.join("manifests.yaml"))
            .expect("read")
            .contains("namespace: support-staging")
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no staging or old directories left: {leftovers:?}"
    );
}

#[test]
fn a_failed_build_leaves_the_output_as_it_was() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let out_text = out.to_str().expect("utf-8");
    assert_eq!(
        cortex(&["build", "examples/hello", "-o", out_text])
            .status
            .code(),
        Some(0)
    );
    let before = std::fs::read(out.join("manifests.yaml")).expect("read");
    let failed = cortex(&[
        "build",
        "fixtures/invalid/cx0201-unknown-field",
        "-o",
        out_text,
    ]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(text(&failed.stderr).contains("error[CX0201]"));
    assert_eq!(
        std::fs::read(out.join("manifests.yaml")).expect("read"),
        before
    );
}

#[test]
fn build_never_replaces_a_directory_it_did_not_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("precious.txt"), "keep me").expect("write");
    let out = cortex(&[
        "build",
        "examples/hello",
        "-o",
        tmp.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("was not written by `cortex build`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("precious.txt")).expect("read"),
        "keep me"
    );
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let mermaid = cortex(&["graph", "examples/support-desk", "workflow/ticket-pipeline"]);
    assert_eq!(mermaid.status.code(), Some(0), "{}", text(&mermaid.stderr));
    assert!(text(&mermaid.stdout).contains("t_classify --> t_draft"));
    let dot = cortex(&[
        "graph",
        "examples/support-desk",
        "workflow/escalation",
        "--format",
        "dot",
    ]);
    assert!(
        text(&dot.stdout).contains("\"draft\" -> \"escalate\";"),
        "{}",
        text(&dot.stdout)
    );
    let wrong = cortex(&["graph", "examples/support-desk", "agent/triage"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong.stderr).contains("is not a Workflow"));
}

#[test]
fn build_fails_cleanly_on_every_invalid_fixture() {
    let mut dirs: Vec<_> = std::fs::read_dir(repo().join("fixtures/invalid"))
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    let tmp = tempfile::tempdir().expect("tempdir");
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        let out = tmp.path().join(&name);
        let mut args = vec![
            "build".to_string(),
            dir.to_string_lossy().to_string(),
            "-o".into(),
            out.to_string_lossy().to_string(),
        ];
        if let Ok(extra) = std::fs::read_to_string(dir.join("args")) {
            args.extend(extra.split_whitespace().map(str::to_string));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = cortex(&args);
        let stderr = text(&result.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        if name.starts_with("cx0109") || name.starts_with("cx0306") {
            assert_eq!(
                result.status.code(),
                Some(0),
                "{name} has only a warning: {stderr}"
            );
        } else {
            assert_eq!(result.status.code(), Some(1), "{name}: {stderr}");
            assert!(
                !out.exists(),
                "{name}: a failed build wrote {}",
                out.display()
            );
        }
    }
}

#[test]
fn the_product_binary_carries_no_benchmarks_and_no_test_fakes() {
    let help = cortex(&["--help"]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    assert!(help.contains("validate") && help.contains("up"), "{help}");
    assert!(!help.to_lowercase().contains("bench"), "{help}");
    // The fake Kubernetes API server and the ArangoDB stand-in live in
    // cortex-testkit, which the binary does not link.
    let binary = std::fs::read(env!("CARGO_BIN_EXE_cortex")).expect("read the binary");
    for name in ["FakeApiServer", "FakeArango", "cortex_testkit"] {
        assert!(
            !binary.windows(name.len()).any(|w| w == name.as_bytes()),
            "the cortex binary contains {name}"
        );
    }
}

#[test]
fn state_without_a_scope_says_what_is_missing() {
    let out = cortex(&["state", "examples/support-desk"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains("name a scope too"), "{said}");
    let bad = cortex(&[
        "state",
        "examples/support-desk",
        "desk-stats",
        "k",
        "--set",
        "{not json",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("--set takes a JSON value"),
        "{}",
        text(&bad.stderr)
    );
    let lone = cortex(&[
        "state",
        "examples/support-desk",
        "desk-stats",
        "k",
        "--if-version",
        "3",
    ]);
    assert_eq!(lone.status.code(), Some(1));
    assert!(text(&lone.stderr).contains("--if-version goes with --set or --delete"));
}
