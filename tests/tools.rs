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
        let from_cortex =
            parse_documents(&bundle.output().manifests_yaml()).expect("manifests are YAML");
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
        std::fs::write(&manifests, bundle.output().manifests_yaml()).expect("write");
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

/// Strings a YAML 1.1 reader takes for something else when written plain.
const YAML_1_1_TRAPS: [&str; 27] = [
    "y",
    "Y",
    "n",
    "N",
    "yes",
    "No",
    "on",
    "OFF",
    "~",
    "null",
    "=",
    "<<",
    "0x1F",
    "0o17",
    "0b101",
    "017",
    "1_000",
    "1:20",
    "190:20:30.15",
    ".inf",
    "-.Inf",
    ".NaN",
    "1e3",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "+12",
    "1.4.2",
];

/// Regression: an env value `"y"` was written `value: y`, which the YAML
/// 1.1 reader of Helm and kubectl takes as `true` (a real API server
/// refused such manifests). The manifests of a project whose env values,
/// labels and config are every such trap are read back with PyYAML (YAML
/// 1.1, with `y`/`n` booleans added as go-yaml v2 has them): every value
/// is the string it was.
#[test]
fn a_yaml_1_1_reader_reads_every_string_back_as_a_string() {
    let Some(python) = require("yaml11-python") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let env: String = YAML_1_1_TRAPS
        .iter()
        .enumerate()
        .map(|(i, v)| format!("    - {{ name: V{i}, value: {} }}\n", serde_json::json!(v)))
        .collect();
    let config: String = YAML_1_1_TRAPS
        .iter()
        .enumerate()
        .map(|(i, v)| format!("    c{i}: {}\n", serde_json::json!(v)))
        .collect();
    std::fs::write(
        dir.path().join("cortex.yaml"),
        "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: traps }\nspec:\n  include: [\"agent.yaml\"]\n  namespace: traps\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata:\n  name: traps\n  labels: {{ flag: \"y\", other: \"on\" }}\nspec:\n  image: example/agent:1\n  env:\n{env}  config:\n{config}"
        ),
    )
    .unwrap();
    let bundle = build(dir.path(), None);
    let manifests = bundle.output().manifests_yaml();
    let script = r#"
import json, re, sys, yaml
class Loader(yaml.SafeLoader):
    pass
# go-yaml v2 (Helm, kubectl) also reads y, Y, n, N as booleans; PyYAML does not.
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
def boolean(loader, node):
    return loader.construct_scalar(node).lower() in ("y", "yes", "true", "on")
Loader.add_constructor("tag:yaml.org,2002:bool", boolean)
wrong = []
def walk(value, path):
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                wrong.append(f"{path}: key {k!r} is a {type(k).__name__}")
            walk(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            walk(v, f"{path}/{i}")
    elif not isinstance(value, (str, int, bool)) or (isinstance(value, bool) and "/value" in path):
        wrong.append(f"{path}: {value!r} is a {type(value).__name__}")
seen = {}
for doc in yaml.load_all(sys.stdin, Loader=Loader):
    if not doc:
        continue
    walk(doc, doc["kind"])
    if doc["kind"] == "Deployment":
        for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", []):
            seen[e["name"]] = e.get("value")
        seen["label"] = doc["metadata"]["labels"]["flag"]
    if doc["kind"] == "ConfigMap":
        seen["config"] = json.loads(doc["data"]["config.json"]) if "config.json" in doc["data"] else doc["data"]
print(json.dumps({"wrong": wrong, "seen": seen}, default=str))
"#;
    let output = {
        use std::io::Write;
        let mut child = Command::new(&python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run python");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifests.as_bytes())
            .expect("write manifests");
        child.wait_with_output().expect("python")
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["wrong"], serde_json::json!([]), "{manifests}");
    for (i, trap) in YAML_1_1_TRAPS.iter().enumerate() {
        assert_eq!(
            report["seen"][format!("V{i}")],
            serde_json::json!(trap),
            "env V{i}"
        );
    }
    assert_eq!(report["seen"]["label"], serde_json::json!("y"));
}

/// Every spec document of `dir` (its YAML files outside `.cortex/`,
/// `k8s/` and `templates/`), as JSON files in `out`; how many.
fn spec_documents_as_json(dir: &Path, out: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read_dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if ![".cortex", "k8s", "templates", "scripts"].contains(&name) {
                    stack.push(path);
                }
                continue;
            }
            if !name.ends_with(".yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for doc in parse_documents(&text).expect("parses") {
                if doc.get("kind").is_none() {
                    continue;
                }
                count += 1;
                std::fs::write(
                    out.join(format!("{count:03}-{name}.json")),
                    serde_json::to_vec(&doc).unwrap(),
                )
                .unwrap();
            }
        }
    }
    count
}

/// Regression: the combined schema `cortex schema` prints referred to
/// `#/$defs/…` without holding `$defs` (a standard validator failed to
/// load it), and the Agent schema marked `image` missing in an agent that
/// inherits it. A standard JSON Schema 2020-12 validator
/// (`check-jsonschema`) loads every exported schema, finds no error in any
/// document of the examples and valid fixtures, and catches the
/// misspelled field of an invalid one.
#[test]
fn a_standard_validator_takes_the_exported_schemas() {
    let Some(checker) = require("check-jsonschema") else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let cortex = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
            .args(args)
            .output()
            .expect("cortex schema");
        assert!(out.status.success());
        out.stdout
    };
    let combined = work.path().join("all.json");
    std::fs::write(&combined, cortex(&["schema"])).unwrap();
    let agent = work.path().join("agent.json");
    std::fs::write(&agent, cortex(&["schema", "agent"])).unwrap();
    let check = |schema: &Path, files: &[PathBuf]| {
        Command::new(&checker)
            .arg("--schemafile")
            .arg(schema)
            .args(files)
            .output()
            .expect("check-jsonschema")
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = work.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let mut total = 0;
    for (dir, _) in projects() {
        total += spec_documents_as_json(&dir, &docs);
    }
    let files: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(total > 50, "only {total} documents");
    let out = check(&combined, &files);
    assert!(
        out.status.success(),
        "false errors on valid files:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The agent of the issue, alone against the Agent schema: it inherits its image.
    let triage = work.path().join("triage");
    std::fs::create_dir_all(&triage).unwrap();
    spec_documents_as_json(&root.join("examples/support-desk/agents"), &triage);
    let triage_docs: Vec<PathBuf> = std::fs::read_dir(&triage)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("-triage.yaml.json"))
        })
        .collect();
    assert!(!triage_docs.is_empty());
    let out = check(&agent, &triage_docs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A misspelled field is caught.
    let invalid = work.path().join("invalid");
    std::fs::create_dir_all(&invalid).unwrap();
    spec_documents_as_json(
        &root.join("fixtures/invalid/cx0201-unknown-field"),
        &invalid,
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&invalid)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = check(&combined, &files);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("replcas"), "{said}");
}
