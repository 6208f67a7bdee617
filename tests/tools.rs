//! Checks cortex's output with the real tools users run: `helm lint` and
//! `helm template` on the chart of every example and valid fixture (Helm
//! must print exactly the objects of manifests.yaml), and
//! `kubernetes-validate --strict` on the manifests of every example.
//!
//! `scripts/test` installs the tools into `.tools/` and sets
//! CORTEX_REQUIRE_TOOLS=1, which turns a missing tool into a failure; run
//! alone without the tools, each test says loudly that it skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cortex_compiler::bundle::Bundle;
use cortex_compiler::render::render;
use cortex_compiler::yaml_out::parse_documents;
use cortex_compiler::{Options, WorkTree, compile};
use serde_json::Value;

/// The Kubernetes version manifests are validated against (k8s-openapi's
/// `v1_35` feature matches it).
const KUBERNETES_VERSION: &str = "1.35.0";

fn tool(name: &str) -> Option<PathBuf> {
    let repo_tool = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/bin")
        .join(name);
    if repo_tool.is_file() {
        return Some(repo_tool);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn require(name: &str) -> Option<PathBuf> {
    match tool(name) {
        Some(path) => Some(path),
        None if std::env::var_os("CORTEX_REQUIRE_TOOLS").is_some() => {
            panic!(
                "{name} is required (CORTEX_REQUIRE_TOOLS is set) but not installed; scripts/test installs it"
            )
        }
        None => {
            eprintln!(
                "\n!!! SKIPPED: {name} is not installed; run scripts/test to install it and run this test !!!\n"
            );
            None
        }
    }
}

/// Every project and environment the checks cover.
fn projects() -> Vec<(PathBuf, Option<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![
        (root.join("examples/support-desk"), None),
        (
            root.join("examples/support-desk"),
            Some("staging".to_string()),
        ),
        (root.join("examples/support-desk"), Some("prod".to_string())),
        (root.join("examples/hello"), None),
        (root.join("examples/hello"), Some("prod".to_string())),
    ];
    let mut valid: Vec<PathBuf> = std::fs::read_dir(root.join("fixtures/valid"))
        .expect("fixtures/valid")
        .map(|e| e.expect("entry").path())
        .collect();
    valid.sort();
    for dir in valid {
        let env = std::fs::read_to_string(dir.join("args"))
            .ok()
            .and_then(|a| a.split_whitespace().nth(1).map(str::to_string));
        out.push((dir, env));
    }
    out
}

fn build(dir: &Path, env: Option<&str>) -> Bundle {
    let source = WorkTree::open(dir).expect("project");
    let result = compile(
        &source,
        &Options {
            env: env.map(str::to_string),
        },
    );
    let resolved = result
        .validated()
        .unwrap_or_else(|| panic!("{} does not validate", dir.display()));
    render(resolved, &source).unwrap_or_else(|_| panic!("{} does not render", dir.display()))
}

fn write(bundle: &Bundle, out: &Path) {
    for (path, content) in bundle.files() {
        let target = out.join(path);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(target, content).expect("write");
    }
}

fn key(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[test]
fn helm_lints_and_templates_every_chart_to_exactly_the_manifests() {
    let Some(helm) = require("helm") else { return };
    let mut failures = Vec::new();
    for (dir, env) in projects() {
        let label = format!("{} {:?}", dir.display(), env);
        let bundle = build(&dir, env.as_deref());
        let out = tempfile::tempdir().expect("tempdir");
        write(&bundle, out.path());
        let chart = out.path().join("chart");
        let lint = Command::new(&helm)
            .arg("lint")
            .arg("--strict")
            .arg(&chart)
            .output()
            .expect("helm lint");
        if !lint.status.success() {
            failures.push(format!(
                "{label}: helm lint failed:\n{}",
                String::from_utf8_lossy(&lint.stdout)
            ));
            continue;
        }
        let template = Command::new(&helm)
            .args(["template", "release"])
            .arg(&chart)
            .output()
            .expect("helm template");
        if !template.status.success() {
            failures.push(format!(
                "{label}: helm template failed:\n{}",
                String::from_utf8_lossy(&template.stderr)
            ));
            continue;
        }
        let from_helm = parse_documents(&String::from_utf8_lossy(&template.stdout))
            .expect("helm output is YAML");
        let from_cortex = parse_documents(&bundle.manifests_yaml()).expect("manifests are YAML");
        let index = |docs: Vec<Value>| {
            docs.into_iter()
                .map(|d| (key(&d), d))
                .collect::<BTreeMap<_, _>>()
        };
        let (helm_objects, cortex_objects) = (index(from_helm), index(from_cortex));
        if helm_objects.keys().collect::<Vec<_>>() != cortex_objects.keys().collect::<Vec<_>>() {
            failures.push(format!(
                "{label}: helm printed {:?}, cortex rendered {:?}",
                helm_objects.keys(),
                cortex_objects.keys()
            ));
            continue;
        }
        for (k, object) in &cortex_objects {
            if helm_objects[k] != *object {
                failures.push(format!(
                    "{label}: {k} differs after helm template:\nhelm:   {}\ncortex: {}",
                    helm_objects[k], object
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn helm_keeps_literal_braces_in_agent_config() {
    let Some(helm) = require("helm") else { return };
    let bundle = build(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/support-desk"),
        None,
    );
    let out = tempfile::tempdir().expect("tempdir");
    write(&bundle, out.path());
    let template = Command::new(&helm)
        .args(["template", "release"])
        .arg(out.path().join("chart"))
        .output()
        .expect("helm");
    let docs = parse_documents(&String::from_utf8_lossy(&template.stdout)).expect("yaml");
    let config = docs
        .iter()
        .find(|d| key(d) == "ConfigMap/support/triage-config")
        .expect("triage config");
    let text = config["data"]["config.json"].as_str().expect("config.json");
    assert!(
        text.contains("Literal braces {{ like this }} and {% raw %} reach the agent unchanged."),
        "{text}"
    );
}

#[test]
fn kubernetes_validate_accepts_every_example_strictly() {
    let Some(validator) = require("kubernetes-validate") else {
        return;
    };
    let mut failures = Vec::new();
    for (dir, env) in projects()
        .into_iter()
        .filter(|(d, _)| d.to_string_lossy().contains("examples"))
    {
        let bundle = build(&dir, env.as_deref());
        let out = tempfile::tempdir().expect("tempdir");
        let manifests = out.path().join("manifests.yaml");
        std::fs::write(&manifests, bundle.manifests_yaml()).expect("write");
        let run = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(&manifests)
            .output()
            .expect("kubernetes-validate");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let passed = report
            .lines()
            .filter(|l| l.starts_with("INFO") && l.contains("passed"))
            .count();
        // An unknown kind or apiVersion is only a WARN with exit 0: treat it as a failure.
        if !run.status.success()
            || report
                .lines()
                .any(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
            || passed != bundle.objects.len()
        {
            failures.push(format!(
                "{} {env:?}: {passed} of {} objects passed:\n{report}",
                dir.display(),
                bundle.objects.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
