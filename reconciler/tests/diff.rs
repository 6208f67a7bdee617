//! Plans between two revisions of real git repositories made in temporary
//! directories: branches, a renamed file, a deleted agent, an environment
//! patch and a template value with provenance, a broken revision, a project
//! in a sub-directory; golden renderings of the support-desk example; secret
//! masking in every rendering; GitHub's comment limit.

use cortex_testkit::git as common;

use std::path::Path;

use cortex_compiler::Options;
use cortex_reconciler::plan::fields::FieldChange;
use cortex_reconciler::plan::mask::Masker;
use cortex_reconciler::plan::render::{json::render_json, markdown, text::render_text};
use cortex_reconciler::plan::{self, Change, ObjectId, PlanObject, Realm, Revision, Side};
use cortex_reconciler::{Action, At, DesiredError, Plan, PlanOptions, desired_at, plan_between};
use serde_json::json;

use common::{Repo, edit, example};

fn options() -> PlanOptions {
    PlanOptions {
        masker: Masker::with_key([42; 16]),
        context_lines: 3,
    }
}

/// The plan of the project in `dir` between two revisions.
fn plan(dir: &Path, from: &str, to: &str, env: Option<&str>) -> Plan {
    let options_ = Options {
        env: env.map(str::to_string),
    };
    let at = |rev: &str| match rev {
        "" => At::WorkTree,
        rev => At::Revision(rev.to_string()),
    };
    let old = desired_at(dir, &at(from), &options_).expect("old side compiles");
    let new = desired_at(dir, &at(to), &options_).expect("new side compiles");
    plan_between(&old, &new, &options())
}

fn change<'p>(plan: &'p Plan, kind: &str, name: &str) -> &'p Change {
    plan.changes
        .iter()
        .find(|c| c.id.kind == kind && c.id.name == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the plan"))
}

fn field<'c>(change: &'c Change, path: &str) -> &'c FieldChange {
    change
        .fields
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| {
            let paths: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
            panic!("no field {path} in {}: {paths:?}", change.id)
        })
}

/// The 1-based line of the first line of `file` containing `needle`.
fn line_of(repo: &Repo, file: &str, needle: &str) -> u32 {
    let text = std::fs::read_to_string(repo.path().join(file)).expect("read");
    let index = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in {file}"));
    u32::try_from(index + 1).expect("line")
}

fn support_desk_repo() -> Repo {
    let repo = Repo::new();
    repo.copy_dir(&example("support-desk"), "");
    repo.commit("support desk");
    repo
}

#[test]
fn an_environment_patch_on_a_branch_names_the_overlay_line() {
    let repo = support_desk_repo();
    repo.branch_and_switch("bigger-model");
    edit(
        &repo,
        "environments/prod.yaml",
        "        replicas: 4\n",
        "        replicas: 4\n        env:\n          - { name: MODEL, value: claude-opus }\n",
    );
    repo.commit("prod: triage on the large model");
    let plan = plan(repo.path(), "main", "bigger-model", Some("prod"));

    let deployment = change(&plan, "Deployment", "triage");
    assert_eq!(deployment.action, Action::Update);
    let model = field(
        deployment,
        "spec.template.spec.containers[agent].env[MODEL]",
    );
    assert_eq!(model.old, Some(json!("claude-sonnet")));
    assert_eq!(model.new, Some(json!("claude-opus")));
    let line = line_of(&repo, "environments/prod.yaml", "claude-opus");
    assert_eq!(model.sources.len(), 1, "{:?}", model.sources);
    assert_eq!(model.sources[0].file, "environments/prod.yaml");
    assert_eq!(model.sources[0].line, line);
    assert_eq!(model.sources[0].by, "env prod");
    // Nothing else changes: only triage's Deployment.
    assert_eq!(
        plan.summary.update,
        1,
        "{:#?}",
        plan.changed().collect::<Vec<_>>()
    );
    assert!(render_text(&plan, false).contains(&format!(
        "env[MODEL]: \u{1b}[31mclaude-sonnet\u{1b}[0m → \u{1b}[32mclaude-opus\u{1b}[0m   \u{1b}[2menvironments/prod.yaml:{line}"
    )));
}

#[test]
fn a_template_value_change_updates_every_agent_and_names_both_lines() {
    let repo = support_desk_repo();
    edit(&repo, "cortex.yaml", "logLevel: info", "logLevel: debug");
    repo.commit("more logs");
    let plan = plan(repo.path(), "HEAD~1", "HEAD", None);
    let use_line = line_of(&repo, "agents/base.yaml", "values.logLevel");
    let value_line = line_of(&repo, "cortex.yaml", "logLevel: debug");
    let updated: Vec<&Change> = plan.changed().collect();
    assert!(!updated.is_empty());
    for change in &updated {
        assert_eq!(change.action, Action::Update, "{}", change.id);
        assert_eq!(change.id.kind, "Deployment", "{}", change.id);
        let level = field(
            change,
            "spec.template.spec.containers[agent].env[LOG_LEVEL]",
        );
        assert_eq!(
            (level.old.clone(), level.new.clone()),
            (Some(json!("info")), Some(json!("debug")))
        );
        let places: Vec<(String, u32, String)> = level
            .sources
            .iter()
            .map(|s| (s.file.clone(), s.line, s.field.clone()))
            .collect();
        assert_eq!(
            places,
            vec![
                (
                    "agents/base.yaml".into(),
                    use_line,
                    "spec.env[LOG_LEVEL].value".into()
                ),
                ("cortex.yaml".into(), value_line, "values.logLevel".into()),
            ]
        );
    }
    // Every agent extends base-agent: each Deployment changes, nothing else.
    assert_eq!(updated.len(), 4);
}

#[test]
fn a_template_spec_change_points_at_the_template() {
    let repo = support_desk_repo();
    edit(&repo, "agents/llm.yaml", "memory: 1Gi", "memory: 2Gi");
    repo.commit("llm agents get more memory");
    let plan = plan(repo.path(), "HEAD~1", "HEAD", None);
    let line = line_of(&repo, "agents/llm.yaml", "memory: 2Gi");
    let triage = change(&plan, "Deployment", "triage");
    let memory = triage
        .fields
        .iter()
        .find(|f| f.new == Some(json!("2Gi")))
        .expect("a field becomes 2Gi");
    assert_eq!(memory.sources[0].file, "agents/llm.yaml");
    assert_eq!(memory.sources[0].line, line);
    assert_eq!(memory.sources[0].by, "llm-agent");
}

#[test]
fn a_renamed_spec_file_is_no_delete_and_create() {
    let repo = support_desk_repo();
    std::fs::rename(
        repo.path().join("agents/lookup.yaml"),
        repo.path().join("agents/crm.yaml"),
    )
    .expect("rename");
    repo.commit("rename");
    let plan = plan(repo.path(), "HEAD~1", "HEAD", None);
    assert_eq!((plan.summary.create, plan.summary.delete), (0, 0));
    // What changes is the annotation that names the source file.
    for change in plan.changed() {
        assert_eq!(change.action, Action::Update);
        let paths: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![r#"metadata.annotations["cortex.codevald.io/source"]"#],
            "{}",
            change.id
        );
    }
}

#[test]
fn a_deleted_agent_deletes_its_objects() {
    let repo = support_desk_repo();
    std::fs::remove_file(repo.path().join("agents/lookup.yaml")).expect("rm");
    repo.commit("no more crm lookups");
    let plan = plan(repo.path(), "HEAD~1", "HEAD", None);
    let deleted: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(
        deleted,
        vec![
            "ServiceAccount/crm-lookup",
            "ConfigMap/crm-lookup-config",
            "Service/crm-lookup",
            "Deployment/crm-lookup",
            "Agent/crm-lookup",
        ]
    );
    let agent = change(&plan, "Deployment", "crm-lookup");
    let source = agent.source.as_ref().expect("source of a delete");
    assert_eq!(source.file, "agents/lookup.yaml");
    assert!(agent.diff.contains("+++ /dev/null"), "{}", agent.diff);
    assert_eq!(plan.summary.create, 0);
}

#[test]
fn a_broken_revision_says_which_revision_and_where() {
    let repo = support_desk_repo();
    repo.branch_and_switch("broken");
    edit(&repo, "agents/triage.yaml", "replicas: 2", "replicas: two");
    repo.commit("oops");
    let error = desired_at(
        repo.path(),
        &At::Revision("broken".into()),
        &Options::default(),
    )
    .expect_err("does not compile");
    let DesiredError::Compile {
        revision,
        diagnostics,
        files,
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(revision.name, "broken");
    assert!(error.to_string().starts_with("broken ("), "{error}");
    let first = diagnostics.iter().next().expect("a diagnostic");
    let span = first.span.as_ref().expect("a position");
    assert_eq!(&*span.file, "agents/triage.yaml");
    assert_eq!(
        span.line,
        line_of(&repo, "agents/triage.yaml", "replicas: two")
    );
    assert!(files.text("agents/triage.yaml").is_some());
    // The other revision still compiles.
    assert!(
        desired_at(
            repo.path(),
            &At::Revision("main".into()),
            &Options::default()
        )
        .is_ok()
    );
}

#[test]
fn a_project_in_a_sub_directory_is_planned_from_there() {
    let repo = Repo::new();
    repo.write("README.md", "an application repository\n");
    repo.copy_dir(&example("hello"), "deploy/cortex");
    repo.commit("hello");
    edit(
        &repo,
        "deploy/cortex/agents/greeter.yaml",
        "  extends: base-agent\n",
        "  extends: base-agent\n  replicas: 3\n",
    );
    let plan = plan(&repo.path().join("deploy/cortex"), "HEAD", "", None);
    let deployment = change(&plan, "Deployment", "greeter");
    let replicas = field(deployment, "spec.replicas");
    assert_eq!(replicas.new, Some(json!(3)));
    assert_eq!(replicas.sources[0].file, "agents/greeter.yaml");
    assert_eq!(plan.to.name, "work tree");
    assert!(plan.to.commit.is_none());
    // replicas > 1 adds a PodDisruptionBudget.
    assert_eq!(
        change(&plan, "PodDisruptionBudget", "greeter").action,
        Action::Create
    );
}

#[test]
fn no_change_is_an_empty_plan() {
    let repo = support_desk_repo();
    let plan = plan(repo.path(), "HEAD", "", Some("staging"));
    assert!(!plan.summary.has_changes());
    assert_eq!(plan.summary.unchanged, plan.changes.len());
    assert!(render_text(&plan, false).contains("No changes."));
}

/// The support-desk example between two revisions: every rendering,
/// compared with the goldens in `fixtures/plan/` (`CORTEX_BLESS=1`
/// rewrites them).
#[test]
fn renderings_of_the_support_desk_plan_match_their_goldens() {
    let repo = support_desk_repo();
    repo.branch_and_switch("feature");
    edit(
        &repo,
        "environments/prod.yaml",
        "        replicas: 4\n",
        "        replicas: 6\n        env:\n          - { name: MODEL, value: claude-opus }\n",
    );
    edit(
        &repo,
        "environments/prod.yaml",
        "logLevel: warn",
        "logLevel: error",
    );
    edit(
        &repo,
        "agents/triage.yaml",
        "[billing, bug, account, other]",
        "[billing, bug, account, refund, other]",
    );
    edit(&repo, "topics.yaml", "retention: 3d", "retention: 5d");
    edit(&repo, "agents/lookup.yaml", "key: token", "key: token-v2");
    repo.write(
        "agents/summarizer.yaml",
        "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata:\n  name: summarizer\nspec:\n  extends: llm-agent\n  pool: general\n  subscribe: [replies.approved]\n",
    );
    repo.commit("feature");
    let mut plan = plan(repo.path(), "main", "feature", Some("prod"));
    // Commit ids depend on the clock: fix them for the goldens.
    plan.from.commit = Some("1111111111111111111111111111111111111111".into());
    plan.to.commit = Some("2222222222222222222222222222222222222222".into());

    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/plan/support-desk");
    let renderings = [
        ("plan.txt", strip_ansi(&render_text(&plan, true))),
        (
            "plan.md",
            markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT),
        ),
        ("plan.json", render_json(&plan)),
    ];
    for (name, text) in renderings {
        let path = golden_dir.join(name);
        if std::env::var_os("CORTEX_BLESS").is_some() {
            std::fs::create_dir_all(&golden_dir).expect("mkdir");
            std::fs::write(&path, &text).expect("bless");
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing: run with CORTEX_BLESS=1", path.display()));
        assert_eq!(text, golden, "{name} differs from {}", path.display());
    }
    // The secret reference changed, and is masked.
    for (_, text) in [
        ("", render_text(&plan, true)),
        (
            "",
            markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT),
        ),
        ("", render_json(&plan)),
    ] {
        assert!(!text.contains("token-v2"), "a secret reference leaked");
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn kube(kind: &str, name: &str, body: serde_json::Value) -> PlanObject {
    PlanObject {
        id: ObjectId {
            target: Realm::Kubernetes,
            group: String::new(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
        },
        api_version: Some("v1".into()),
        spec: None,
        body: body.into(),
    }
}

fn plan_of(old: &[PlanObject], new: &[PlanObject]) -> Plan {
    plan::diff(
        Side {
            objects: old,
            resolved: None,
        },
        Side {
            objects: new,
            resolved: None,
        },
        (
            Revision {
                name: "old".into(),
                commit: None,
            },
            Revision {
                name: "new".into(),
                commit: None,
            },
        ),
        ("p", None, "ns"),
        &options(),
    )
}

#[test]
fn secret_values_never_appear_in_any_rendering() {
    const VALUES: [&str; 6] = [
        "hunter2-old",
        "aHVudGVyMi1uZXc=",
        "s3cr3t-created",
        "s3cr3t-deleted",
        "vault-key-old",
        "vault-key-new",
    ];
    let pod = |key: &str| {
        json!({"spec": {"containers": [{"name": "a", "env": [
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": key}}}
        ]}]}})
    };
    let old = vec![
        kube(
            "Secret",
            "keys",
            json!({"data": {"password": VALUES[0]}, "stringData": {"user": "u"}, "type": "Opaque"}),
        ),
        kube("Secret", "gone", json!({"data": {"k": VALUES[3]}})),
        kube("Pod", "p", pod(VALUES[4])),
    ];
    let new = vec![
        kube(
            "Secret",
            "keys",
            json!({"data": {"password": VALUES[1]}, "type": "Opaque"}),
        ),
        kube("Secret", "new", json!({"stringData": {"k": VALUES[2]}})),
        kube("Pod", "p", pod(VALUES[5])),
    ];
    let plan = plan_of(&old, &new);
    assert_eq!(
        (
            plan.summary.create,
            plan.summary.update,
            plan.summary.delete
        ),
        (1, 2, 1)
    );
    let renderings = [
        render_text(&plan, true),
        render_text(&plan, false),
        markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT),
        render_json(&plan),
    ];
    for text in &renderings {
        for value in VALUES {
            assert!(!text.contains(value), "secret {value} printed:\n{text}");
        }
    }
    // The change is still visible, as a different short hash.
    let keys = change(&plan, "Secret", "keys");
    let password = keys
        .fields
        .iter()
        .find(|f| f.path.ends_with("password"))
        .expect("password");
    let (Some(old), Some(new)) = (&password.old, &password.new) else {
        panic!("{password:?}")
    };
    assert!(
        old.as_str().is_some_and(|s| s.starts_with("(secret ")),
        "{old}"
    );
    assert_ne!(old, new);
}

#[test]
fn a_comment_over_the_github_limit_is_shortened_but_keeps_its_table() {
    let configmap = |i: usize, version: usize| {
        let lines: String = (0..200)
            .map(|l| format!("line {l} of {i} at v{version}\n"))
            .collect();
        kube(
            "ConfigMap",
            &format!("cm-{i:03}"),
            json!({"data": {"file": lines}}),
        )
    };
    let old: Vec<PlanObject> = (0..60).map(|i| configmap(i, 1)).collect();
    let mut new: Vec<PlanObject> = (0..60).map(|i| configmap(i, 2)).collect();
    new.push(kube(
        "Service",
        "extra",
        json!({"spec": {"ports": [{"port": 80}]}}),
    ));
    let plan = plan_of(&old, &new);
    let full = markdown::render_markdown(&plan, usize::MAX);
    assert!(full.chars().count() > markdown::GITHUB_COMMENT_LIMIT);

    let comment = markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT);
    assert!(comment.chars().count() <= markdown::GITHUB_COMMENT_LIMIT);
    assert!(comment.contains("Shortened to fit GitHub's 65535-character comment limit"));
    assert!(comment.contains("diffs longer than"));
    assert!(comment.contains("| Kubernetes | ConfigMap | 0 | 60 | 0 | 0 |"));
    assert!(comment.contains("| Kubernetes | Service | 1 | 0 | 0 | 0 |"));
    // Every object still has its section, and the largest diffs were cut.
    assert_eq!(comment.matches("<details>").count(), 61);
    assert!(comment.contains("more diff lines"));

    // So many objects that even bare sections do not fit: the last ones are
    // left out and counted; the table stays whole.
    let old: Vec<PlanObject> = (0..3000)
        .map(|i| kube("ConfigMap", &format!("c{i}"), json!({"data": {"v": "1"}})))
        .collect();
    let new: Vec<PlanObject> = (0..3000)
        .map(|i| kube("ConfigMap", &format!("c{i}"), json!({"data": {"v": "2"}})))
        .collect();
    let plan = plan_of(&old, &new);
    let comment = markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT);
    assert!(comment.chars().count() <= markdown::GITHUB_COMMENT_LIMIT);
    assert!(comment.contains("| Kubernetes | ConfigMap | 0 | 3000 | 0 | 0 |"));
    assert!(comment.contains("changed objects are not shown"));
    let shown = comment.matches("<details>").count();
    assert!(shown > 100 && shown < 3000, "{shown}");
}

/// `cortex diff` renders the new side after the old one, taking the objects
/// of unchanged agents from it: its plan is the plan of two renders made
/// on their own, field for field and line for line.
#[test]
fn the_paired_render_plans_what_two_separate_renders_plan() {
    let repo = support_desk_repo();
    repo.branch_and_switch("changes");
    edit(&repo, "agents/triage.yaml", "replicas: 2", "replicas: 3");
    edit(
        &repo,
        "pools.yaml",
        "effect: NoSchedule",
        "effect: NoExecute",
    );
    repo.commit("triage scales, the batch pool's taint changes");
    let (from, to) = (At::Revision("main".into()), At::Revision("changes".into()));
    let (old, new) = cortex_reconciler::desired_pair(repo.path(), &from, &to, &Options::default());
    let paired = plan_between(&old.expect("old"), &new.expect("new"), &options());
    let separate = plan(repo.path(), "main", "changes", None);
    assert_eq!(render_json(&paired), render_json(&separate));
    assert_eq!(render_text(&paired, true), render_text(&separate, true));
    let updated: Vec<String> = paired.changed().map(|c| c.id.to_string()).collect();
    // triage's replicas reach its runtime entry (an autoscaler sizes its
    // Deployment); the pool's taint reaches crm-lookup's Deployment.
    for expected in ["Agent/triage", "Deployment/crm-lookup"] {
        assert!(
            updated.iter().any(|u| u == expected),
            "{expected} not in {updated:?}"
        );
    }
    assert!(!updated.iter().any(|u| u.contains("writer")), "{updated:?}");
}
