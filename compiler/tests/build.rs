//! The renderer: golden output of the example in every environment,
//! determinism, field ownership, security defaults, config checksums,
//! template overrides, and workflow graphs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cortex_compiler::bundle::Bundle;
use cortex_compiler::diagnostic::{codes, render::render_text};
use cortex_compiler::graph::{GraphFormat, draw, draw_with_states};
use cortex_compiler::render::{check_by_rendering, render};
use cortex_compiler::yaml_out::parse_documents;
use cortex_compiler::{MemorySource, Options, Source, WorkTree, check, compile, find_spec};
use serde_json::{Value, json};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/support-desk")
}

fn build(source: &dyn Source, env: Option<&str>) -> Bundle {
    let result = compile(
        source,
        &Options {
            env: env.map(str::to_string),
        },
    );
    let resolved = result.validated().unwrap_or_else(|| {
        panic!(
            "{}",
            render_text(&result.diagnostics, &result.files, "", false)
        )
    });
    render(resolved, source)
        .unwrap_or_else(|d| panic!("{}", render_text(&d, &result.files, "", false)))
}

fn object<'b>(bundle: &'b Bundle, kind: &str, name: &str) -> &'b Value {
    &bundle
        .objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("{kind}/{name}"))
        .body
}

#[test]
fn support_desk_builds_exactly_as_the_goldens_say() {
    let source = WorkTree::open(example()).expect("example");
    let golden_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/build/support-desk");
    let bless = std::env::var_os("CORTEX_BLESS").is_some();
    let mut failures = Vec::new();
    for env in [None, Some("staging"), Some("prod")] {
        let dir = golden_root.join(env.unwrap_or("default"));
        let files = build(&source, env).files();
        if bless {
            let _ = std::fs::remove_dir_all(&dir);
            for (path, content) in &files {
                let target = dir.join(path);
                std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                std::fs::write(target, content).expect("write golden");
            }
            continue;
        }
        let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        collect(&dir, &dir, &mut expected);
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        if names(&expected) != names(&files) {
            failures.push(format!(
                "{env:?}: files differ: expected {:?}, built {:?}",
                names(&expected),
                names(&files)
            ));
            continue;
        }
        for (path, content) in &files {
            if expected[path] != *content {
                failures.push(format!(
                    "{env:?}: {path} differs from fixtures/build (CORTEX_BLESS=1 to accept)"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel, std::fs::read(&path).expect("read"));
        }
    }
}

#[test]
fn two_builds_are_byte_identical() {
    let source = WorkTree::open(example()).expect("example");
    assert_eq!(
        build(&source, Some("prod")).files(),
        build(&source, Some("prod")).files()
    );
}

#[test]
fn manifests_read_back_as_the_rendered_objects() {
    let bundle = build(&WorkTree::open(example()).expect("example"), Some("prod"));
    let docs = parse_documents(&bundle.output().manifests_yaml()).expect("valid YAML");
    let bodies: Vec<&Value> = bundle.objects.iter().map(|o| &o.body).collect();
    assert_eq!(docs.iter().collect::<Vec<_>>(), bodies);
}

#[test]
fn an_autoscaled_deployment_leaves_replicas_to_the_autoscaler() {
    let bundle = build(&WorkTree::open(example()).expect("example"), Some("prod"));
    let triage = object(&bundle, "Deployment", "triage");
    assert!(
        triage["spec"].get("replicas").is_none(),
        "HPA owns replicas: {}",
        triage["spec"]
    );
    assert_eq!(
        object(&bundle, "HorizontalPodAutoscaler", "triage")["spec"]["maxReplicas"],
        30
    );
    assert_eq!(
        object(&bundle, "Deployment", "writer")["spec"]["replicas"],
        3
    );
    assert!(
        bundle
            .objects
            .iter()
            .any(|o| o.kind == "PodDisruptionBudget" && o.name == "writer")
    );
    assert!(
        !bundle
            .objects
            .iter()
            .any(|o| o.kind == "PodDisruptionBudget" && o.name == "crm-lookup"),
        "1 replica: no PDB"
    );
}

#[test]
fn pods_are_hardened_by_default_and_relaxed_only_explicitly() {
    let bundle = build(&WorkTree::open(example()).expect("example"), None);
    let pod = &object(&bundle, "Deployment", "triage")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["securityContext"],
        json!({ "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } })
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"],
        json!({ "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] }, "readOnlyRootFilesystem": true, "runAsNonRoot": true })
    );
    assert_eq!(
        container["env"][2]["valueFrom"]["secretKeyRef"],
        json!({ "name": "llm-keys", "key": "api-key" }),
        "secrets are references"
    );

    let relaxed = hello_with(
        "  security:\n    readOnlyRootFilesystem: false\n    capabilities: { add: [NET_BIND_SERVICE] }\n  serviceAccount: { automountToken: true }\n",
    );
    let bundle = build(&relaxed, None);
    let pod = &object(&bundle, "Deployment", "greeter")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        false
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["capabilities"]["add"],
        json!(["NET_BIND_SERVICE"])
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"], false,
        "not relaxed: unchanged"
    );
}

/// The hello example with extra lines appended to the greeter's spec.
fn hello_with(extra_spec: &str) -> MemorySource {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    let mut source = MemorySource::new();
    for file in [
        "cortex.yaml",
        "agents/base.yaml",
        "agents/greeter.yaml",
        "topics.yaml",
        "workflows.yaml",
        "environments/prod.yaml",
    ] {
        let mut text = std::fs::read_to_string(root.join(file)).expect("read");
        if file == "agents/greeter.yaml" {
            text = text.replacen(
                "  extends: base-agent\n",
                &format!("  extends: base-agent\n{extra_spec}"),
                1,
            );
        }
        source.insert(file, text);
    }
    source
}

#[test]
fn a_config_change_changes_only_the_config_checksum_of_the_deployment() {
    let before = build(&hello_with(""), None);
    let mut changed = hello_with("");
    let greeter = String::from_utf8(changed.files()["agents/greeter.yaml"].clone()).expect("utf-8");
    changed.insert(
        "agents/greeter.yaml",
        greeter.replace("Hello, {{ name }}!", "Hi, {{ name }}!"),
    );
    let after = build(&changed, None);
    let (a, b) = (
        object(&before, "Deployment", "greeter"),
        object(&after, "Deployment", "greeter"),
    );
    let path = "/spec/template/metadata/annotations/checksum~1config";
    assert_ne!(
        a.pointer(path),
        b.pointer(path),
        "the checksum follows the config"
    );
    let mut a = a.clone();
    let mut b = b.clone();
    *a.pointer_mut(path).expect("annotation") = Value::Null;
    *b.pointer_mut(path).expect("annotation") = Value::Null;
    assert_eq!(a, b, "nothing else in the Deployment changed");
    assert_ne!(
        object(&before, "ConfigMap", "greeter-config"),
        object(&after, "ConfigMap", "greeter-config")
    );
}

#[test]
fn config_reaches_the_config_map_verbatim() {
    let bundle = build(&WorkTree::open(example()).expect("example"), None);
    let data = &object(&bundle, "ConfigMap", "triage-config")["data"];
    let config: Value =
        serde_json::from_str(data["config.json"].as_str().expect("config.json")).expect("json");
    assert!(
        config["prompt"]
            .as_str()
            .expect("prompt")
            .contains("Literal braces {{ like this }} and {% raw %}")
    );
    assert_eq!(data["CORTEX_AGENT_NAME"], "triage");
}

#[test]
fn every_object_carries_the_ownership_and_recommended_labels() {
    let bundle = build(&WorkTree::open(example()).expect("example"), None);
    for o in &bundle.objects {
        let labels = &o.body["metadata"]["labels"];
        assert_eq!(
            labels["cortex.codevald.io/project"],
            "support-desk",
            "{}",
            o.identity()
        );
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "cortex",
            "{}",
            o.identity()
        );
        assert_eq!(
            labels["helm.sh/chart"],
            "support-desk-0.3.0",
            "{}",
            o.identity()
        );
        assert!(
            labels["app.kubernetes.io/part-of"].is_string()
                && labels["app.kubernetes.io/instance"].is_string()
        );
    }
    assert_eq!(
        object(&bundle, "Deployment", "triage")["metadata"]["labels"]["app.kubernetes.io/version"],
        "1.4.2"
    );
}

#[test]
fn a_project_template_with_a_typo_is_a_build_error_naming_template_and_agent() {
    let mut source = hello_with("");
    let deployment = include_str!("../../templates/deployment.yaml.j2")
        .replace("revisionHistoryLimit: 5", "revisionHistoryLimt: 5");
    source.insert("templates/deployment.yaml.j2", deployment);
    let result = compile(&source, &Options::default());
    let diags = render(result.validated().expect("valid"), &source).expect_err("typo is an error");
    let d = diags.iter().next().expect("one diagnostic");
    assert_eq!(d.code, codes::RENDER_UNKNOWN_FIELD);
    // `validate` renders such a project, and finds the same.
    let checked = check_by_rendering(result.validated().expect("valid"), &source)
        .expect("a project with a template of its own is rendered");
    assert_eq!(
        checked.iter().next().map(|d| d.code),
        Some(codes::RENDER_UNKNOWN_FIELD)
    );
    let plain = hello_with("");
    let result = compile(&plain, &Options::default());
    assert!(
        check_by_rendering(result.validated().expect("valid"), &plain).is_none(),
        "only cortex's built-in templates: not rendered"
    );
    assert!(
        d.message.contains("deployment.yaml.j2")
            && d.message.contains("Agent/greeter")
            && d.message.contains("spec.revisionHistoryLimt"),
        "{}",
        d.message
    );
}

/// A project's own runtime ConfigMap template gets the runtime config's
/// JSON wherever it puts it: as a whole value (put in place after the
/// template ran) or inside a larger string (rendered again with the JSON).
#[test]
fn a_project_runtime_template_gets_the_runtime_json_as_a_value_or_in_a_string() {
    let shipped = include_str!("../../templates/runtime-configmap.yaml.j2");
    for (template, key, prefix) in [
        (
            shipped.replace("runtime.json:", "config.json:"),
            "config.json",
            "",
        ),
        (
            shipped.replace(
                "runtime.json: {{ runtime_json | tojson }}",
                "wrapped: {{ (\"json:\" ~ runtime_json) | tojson }}",
            ),
            "wrapped",
            "json:",
        ),
    ] {
        let mut source = hello_with("");
        source.insert("templates/runtime-configmap.yaml.j2", template);
        let bundle = build(&source, None);
        let map = bundle
            .objects
            .iter()
            .find(|o| o.template == "runtime-configmap.yaml.j2")
            .expect("the runtime ConfigMap");
        let text = map.body["data"][key].as_str().expect(key);
        let json = text.strip_prefix(prefix).expect("the prefix");
        let runtime: Value = serde_json::from_str(json).expect("the runtime config as JSON");
        assert_eq!(runtime, bundle.runtime, "{key}");
        assert!(!text.contains("@@cortex"), "no placeholder left: {text}");
    }
}

#[test]
fn a_project_template_overrides_the_default_by_name() {
    let mut source = hello_with("");
    source.insert("templates/pdb.yaml.j2", "");
    let service = include_str!("../../templates/service.yaml.j2")
        .replace("type: ClusterIP", "type: NodePort");
    source.insert("templates/service.yaml.j2", service);
    let bundle = build(&source, Some("prod"));
    assert_eq!(
        object(&bundle, "Service", "greeter")["spec"]["type"],
        "NodePort"
    );
    assert!(
        !bundle
            .objects
            .iter()
            .any(|o| o.kind == "PodDisruptionBudget"),
        "an empty template renders nothing"
    );
}

#[test]
fn runtime_config_compiles_workflows_to_dags() {
    let bundle = build(&WorkTree::open(example()).expect("example"), None);
    let pipeline = &bundle.runtime["workflows"]["ticket-pipeline"];
    assert_eq!(
        pipeline["order"],
        json!(["classify", "lookup", "draft", "review"])
    );
    assert_eq!(
        pipeline["tasks"]["review"]["ancestors"],
        json!(["classify", "draft", "lookup"])
    );
    assert_eq!(pipeline["tasks"]["review"]["timeoutMs"], 300_000);
    assert_eq!(
        pipeline["tasks"]["draft"]["timeoutMs"], 60_000,
        "inherited default"
    );
    assert_eq!(pipeline["tasks"]["draft"]["retries"]["limit"], 3);
    assert_eq!(
        bundle.runtime["topics"]["tickets.triaged"]["subscribers"],
        json!(["crm-lookup", "writer"])
    );
    assert_eq!(
        bundle.runtime["agents"]["triage"]["publish"],
        json!(["tickets.triaged"])
    );
    assert_eq!(
        bundle.runtime["agents"]["triage"]["health"]["intervalMs"],
        10_000
    );
    let runtime_map = object(&bundle, "ConfigMap", "support-desk-runtime");
    let embedded: Value = serde_json::from_str(
        runtime_map["data"]["runtime.json"]
            .as_str()
            .expect("runtime.json"),
    )
    .expect("json");
    assert_eq!(
        embedded,
        serde_json::from_str::<Value>(&bundle.output().runtime_json()).expect("json")
    );
}

#[test]
fn graphs_draw_every_task_and_edge() {
    let source = WorkTree::open(example()).expect("example");
    let result = compile(&source, &Options::default());
    let resolved = result.validated().expect("valid");
    let spec = find_spec(resolved, "workflow/ticket-pipeline").expect("workflow");
    let mermaid = draw(spec, GraphFormat::Mermaid);
    assert!(mermaid.starts_with("flowchart LR\n"));
    for edge in [
        "t_classify --> t_draft",
        "t_lookup --> t_draft",
        "t_draft --> t_review",
        "trigger_on_ticket --> t_classify",
    ] {
        assert!(mermaid.contains(edge), "{edge}:\n{mermaid}");
    }
    let dot = draw(spec, GraphFormat::Dot);
    assert!(
        dot.starts_with("digraph \"ticket-pipeline\" {")
            && dot.contains("\"draft\" -> \"review\";"),
        "{dot}"
    );
}

#[test]
fn a_graph_with_an_executions_states_labels_and_colours_each_task() {
    let source = WorkTree::open(example()).expect("example");
    let result = compile(&source, &Options::default());
    let resolved = result.validated().expect("valid");
    let spec = find_spec(resolved, "workflow/ticket-pipeline").expect("workflow");
    let states = std::collections::BTreeMap::from([
        ("classify".to_string(), "succeeded".to_string()),
        ("lookup".to_string(), "failed".to_string()),
        ("draft".to_string(), "skipped".to_string()),
    ]);
    let mermaid = draw_with_states(spec, GraphFormat::Mermaid, &states);
    for line in [
        "class t_classify succeeded",
        "class t_lookup failed",
        "class t_draft skipped",
        "classDef failed fill:#ffe3e3",
    ] {
        assert!(mermaid.contains(line), "{line}:\n{mermaid}");
    }
    assert!(mermaid.contains("<br/>failed\"]"), "{mermaid}");
    assert!(!mermaid.contains("class t_review"), "no state, no class");
    let dot = draw_with_states(spec, GraphFormat::Dot, &states);
    assert!(
        dot.contains("\"lookup\" [label=\"lookup\\nrun: ./scripts/lookup.sh\\nfailed\", style=filled, fillcolor=\"#ffe3e3\"];"),
        "{dot}"
    );
    // Without states, the plain drawing.
    assert_eq!(
        draw_with_states(spec, GraphFormat::Mermaid, &Default::default()),
        draw(spec, GraphFormat::Mermaid)
    );
}

#[test]
fn the_generated_benchmark_project_renders() {
    use cortex_testkit::generate::{Shape, memory_source};
    let bundle = build(
        &memory_source(Shape {
            agents: 40,
            workflows: 5,
            tasks: 5,
        }),
        None,
    );
    assert_eq!(
        bundle
            .objects
            .iter()
            .filter(|o| o.kind == "Deployment")
            .count(),
        40
    );
}

/// The chart's objects fill template files of at most CHART_FILE_BYTES,
/// in apply order, each file as full as the next object allows.
#[test]
fn chart_files_are_packed_in_apply_order_up_to_the_limit() {
    use cortex_compiler::bundle::{CHART_FILE_BYTES, escape_for_helm};
    use cortex_testkit::generate::{Shape, memory_source};
    let bundle = build(
        &memory_source(Shape {
            agents: 600,
            workflows: 10,
            tasks: 5,
        }),
        None,
    );
    let output = bundle.output();
    let files = output.files();
    let chart: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(path, _)| path.starts_with("chart/templates/objects-"))
        .map(|(_, bytes)| bytes)
        .collect();
    assert!(chart.len() > 1, "{} files", chart.len());
    let documents: Vec<String> = output
        .objects
        .iter()
        .map(|o| format!("---\n{}", escape_for_helm(&o.body.yaml)))
        .collect();
    assert_eq!(
        chart
            .iter()
            .map(|b| b.as_slice())
            .collect::<Vec<_>>()
            .concat(),
        documents.concat().into_bytes(),
        "every object once, in apply order"
    );
    let mut next = 0;
    for (index, file) in chart.iter().enumerate() {
        let mut size = 0;
        while size < file.len() {
            size += documents[next].len();
            next += 1;
        }
        assert_eq!(size, file.len(), "file {index} holds whole documents");
        assert!(
            file.len() <= CHART_FILE_BYTES,
            "file {index}: {} bytes",
            file.len()
        );
        if let Some(following) = documents.get(next) {
            assert!(
                file.len() + following.len() > CHART_FILE_BYTES + 4,
                "file {index} could hold one more"
            );
        }
    }
}

#[test]
fn runtime_shards_fit_the_limit_and_merge_back_to_the_whole() {
    use cortex_compiler::render::runtime::{shards, shards_of};
    use cortex_testkit::generate::{Shape, memory_source};
    let bundle = build(
        &memory_source(Shape {
            agents: 120,
            workflows: 40,
            tasks: 10,
        }),
        None,
    );
    let limit = 64 * 1024;
    let texts = shards(&bundle.runtime, limit);
    assert!(texts.len() > 2, "a small limit needs several shards");
    let parts: Vec<Value> = texts
        .iter()
        .map(|t| serde_json::from_str(t).expect("json"))
        .collect();
    let mut merged = parts[0].clone();
    for (part, text) in parts.iter().zip(&texts) {
        assert_eq!(
            *text,
            serde_json::to_string(part).expect("json"),
            "compact JSON"
        );
        let size = text.len();
        assert!(size <= limit, "shard of {size} bytes");
        for section in ["agents", "workflows"] {
            for (name, value) in part[section].as_object().expect("map") {
                merged[section][name] = value.clone();
            }
        }
    }
    assert_eq!(merged, bundle.runtime);
    // A build's form of the config holds each agent's and workflow's text
    // and hash: the text is the entry's compact JSON, the hash its content
    // hash, and runtime.json made from the texts is the config's.
    let text = cortex_compiler::runtime_text::RuntimeText::from_value(&bundle.runtime);
    for (section, count) in [("agents", 120), ("workflows", 40)] {
        let entries = bundle.runtime[section].as_object().expect("map");
        let texts = text.entries(section).expect("a big section");
        assert_eq!(entries.len(), count);
        assert_eq!(texts.len(), count);
        for ((name, value), entry) in entries.iter().zip(texts) {
            assert_eq!(*name, entry.name);
            assert_eq!(entry.json, serde_json::to_string(value).expect("json"));
            assert_eq!(
                entry.hash,
                cortex_compiler::hash::canonical_hash(value),
                "{section}/{name}"
            );
        }
    }
    let mut pretty = Vec::new();
    text.write_pretty(&mut pretty).expect("writes");
    assert_eq!(
        String::from_utf8(pretty).expect("utf-8"),
        serde_json::to_string_pretty(&bundle.runtime).expect("pretty")
    );
    assert_eq!(shards_of(&text, limit), texts);
    // The rendered ConfigMaps are the shards, labelled i-of-n.
    let maps: Vec<_> = bundle
        .objects
        .iter()
        .filter(|o| o.name.starts_with("generated-runtime"))
        .collect();
    assert_eq!(
        maps.len(),
        1,
        "the default limit fits this project in one ConfigMap"
    );
    assert_eq!(
        maps[0].body["metadata"]["labels"]["cortex.codevald.io/runtime-shard"],
        "1-of-1"
    );
}

/// The hello example shipping `files` through `spec.manifests: ["k8s/*.yaml"]`,
/// built: the compile's diagnostics when it does not validate, else the
/// render's.
fn hello_shipping(files: &[(&str, &str)]) -> (MemorySource, Result<Bundle, String>) {
    let source = hello_source_shipping(files);
    let result = compile(&source, &Options::default());
    let Some(resolved) = result.validated() else {
        let diagnostics = render_text(&result.diagnostics, &result.files, "", false);
        return (source, Err(diagnostics));
    };
    let bundle = render(resolved, &source).map_err(|d| render_text(&d, &result.files, "", false));
    (source, bundle)
}

/// The diagnostics `cortex validate` reports for the hello example
/// shipping `files`, when there are errors.
fn validate_shipping(files: &[(&str, &str)]) -> Result<(), String> {
    let source = hello_source_shipping(files);
    let result = check(&source, &Options::default());
    match result.diagnostics.has_errors() {
        true => Err(render_text(&result.diagnostics, &result.files, "", false)),
        false => Ok(()),
    }
}

fn hello_source_shipping(files: &[(&str, &str)]) -> MemorySource {
    let mut source = hello_with("");
    let project = String::from_utf8(source.files()["cortex.yaml"].clone()).expect("utf-8");
    source.insert(
        "cortex.yaml",
        project.replace(
            "  namespace: hello\n",
            "  namespace: hello\n  manifests: [\"k8s/*.yaml\"]\n",
        ),
    );
    for (path, text) in files {
        source.insert(*path, *text);
    }
    source
}

/// A CRD and a custom resource of it (`fixtures/manifests/widgets.yaml`).
fn widgets() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/manifests/widgets.yaml"),
    )
    .expect("read the fixture")
}

#[test]
fn manifests_are_templated_labelled_namespaced_and_ordered() {
    let policy = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-all, namespace: elsewhere }
spec: { podSelector: {}, policyTypes: [Ingress] }
";
    let (_, bundle) = hello_shipping(&[("k8s/crd.yaml", &widgets()), ("k8s/policy.yaml", policy)]);
    let bundle = bundle.unwrap_or_else(|e| panic!("{e}"));
    let widget = object(&bundle, "Widget", "blue");
    assert_eq!(
        widget["spec"]["image"], "ghcr.io/acme/widget",
        "templated with the values"
    );
    assert_eq!(
        widget["metadata"]["namespace"], "hello",
        "the project's namespace"
    );
    assert_eq!(
        widget["metadata"]["labels"]["color"], "blue",
        "its own labels kept"
    );
    assert_eq!(
        widget["metadata"]["labels"]["cortex.codevald.io/project"],
        "hello"
    );
    let crd = object(&bundle, "CustomResourceDefinition", "widgets.example.com");
    assert!(crd["metadata"].get("namespace").is_none(), "cluster-scoped");
    let policy = object(&bundle, "NetworkPolicy", "deny-all");
    assert_eq!(
        policy["metadata"]["namespace"], "elsewhere",
        "a namespace it names is kept"
    );
    let kinds: Vec<&str> = bundle.objects.iter().map(|o| o.kind.as_str()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).expect(k);
    assert!(at("CustomResourceDefinition") < at("ServiceAccount"));
    assert!(at("Deployment") < at("Widget"));
    assert!(bundle.output().manifests_yaml().contains("kind: Widget"));
}

#[test]
fn bad_manifests_are_diagnosed_at_their_file() {
    // `validate` refuses what `build` would: it renders a project that
    // ships manifests.
    for (file, text) in [
        (
            "k8s/typo.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\ndatta: {}\n",
        ),
        (
            "k8s/missing.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: \"{{ values.nope }}\" }\n",
        ),
        (
            "k8s/dup.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\ndata: { a: '1', a: '2' }\n",
        ),
        ("k8s/bare.yaml", "apiVersion: v1\nkind: ConfigMap\n"),
        (
            "k8s/twice.yaml",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: greeter }\n",
        ),
    ] {
        let found = validate_shipping(&[(file, text)]).expect_err("validate refuses it");
        assert!(found.contains(file), "{file}: {found}");
        assert!(
            hello_shipping(&[(file, text)]).1.is_err(),
            "{file}: build refuses it"
        );
    }

    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: fine }\n---\n# the second\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: extra }\ndatta: { a: b }\n";
    let err = hello_shipping(&[("k8s/typo.yaml", typo)])
        .1
        .expect_err("unknown field");
    assert!(
        err.contains("CX0603") && err.contains("k8s/typo.yaml:6:1") && err.contains("datta"),
        "the second document, at its line: {err}"
    );

    let missing = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: \"{{ values.nope }}\" }\n";
    let err = hello_shipping(&[("k8s/missing.yaml", missing)])
        .1
        .expect_err("undefined value");
    assert!(
        err.contains("CX0601") && err.contains("k8s/missing.yaml:3:"),
        "{err}"
    );

    let twice = "apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: greeter }\n";
    let err = hello_shipping(&[("k8s/twice.yaml", twice)])
        .1
        .expect_err("duplicate");
    assert!(err.contains("defined twice"), "{err}");

    let not_object = "apiVersion: v1\nkind: ConfigMap\n";
    let err = hello_shipping(&[("k8s/bare.yaml", not_object)])
        .1
        .expect_err("no name");
    assert!(err.contains("not a Kubernetes object"), "{err}");
}
