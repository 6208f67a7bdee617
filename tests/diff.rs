//! End-to-end tests of `cortex diff` on real git repositories: exit codes
//! (0, 2 with --detailed-exitcode, 1), every format, colour on a pipe, and a
//! revision that does not compile.

use cortex_testkit::git as common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Repo, edit, example, text};

fn cortex(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cortex"));
    cmd.args(args).current_dir(dir);
    for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CORTEX_ENV"] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run cortex")
}

/// A repository with the support-desk example in `desk/`, committed on main.
fn desk_repo() -> Repo {
    let repo = Repo::new();
    repo.copy_dir(&example("support-desk"), "desk");
    repo.commit("support desk");
    repo
}

#[test]
fn exit_codes_follow_terraform() {
    let repo = desk_repo();
    let same = cortex(
        repo.path(),
        &["diff", "desk", "--from", "main", "--detailed-exitcode"],
    );
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert!(text(&same.stdout).contains("No changes."));

    edit(&repo, "desk/topics.yaml", "retention: 3d", "retention: 4d");
    let changed = cortex(
        repo.path(),
        &["diff", "desk", "--from", "main", "--detailed-exitcode"],
    );
    assert_eq!(changed.status.code(), Some(2), "{}", text(&changed.stderr));
    let out = text(&changed.stdout);
    assert!(out.contains("cortex diff main ("), "{out}");
    assert!(out.contains("→ work tree"), "{out}");
    assert!(
        out.contains("retentionMs: 259200000 → 345600000   topics.yaml:32"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "colour on a pipe: {out}");

    let plain = cortex(repo.path(), &["diff", "desk", "--from", "main"]);
    assert_eq!(plain.status.code(), Some(0));
}

#[test]
fn markdown_and_json_formats() {
    let repo = desk_repo();
    repo.branch_and_switch("feature");
    edit(&repo, "desk/topics.yaml", "retention: 3d", "retention: 4d");
    repo.commit("longer retention");
    let args = |format| {
        [
            "diff", "desk", "--from", "main", "--to", "feature", "--format", format,
        ]
    };

    let md = cortex(repo.path(), &args("markdown"));
    assert_eq!(md.status.code(), Some(0), "{}", text(&md.stderr));
    let md = text(&md.stdout);
    assert!(md.starts_with("### cortex diff: `main ("), "{md}");
    assert!(md.contains("| runtime | Topic | 0 | 1 | 0 | 4 |"), "{md}");
    assert!(
        md.contains("<details><summary><code>~ Topic/replies.drafted</code>"),
        "{md}"
    );
    assert!(md.contains("```diff\n"), "{md}");

    let json = cortex(repo.path(), &args("json"));
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["to"]["name"], "feature");
    assert_eq!(plan["to"]["commit"].as_str().map(str::len), Some(40));
    assert_eq!(plan["summary"]["update"], 2);
    let topic = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["identity"] == "Topic/replies.drafted")
        .expect("topic change");
    assert_eq!(topic["action"], "update");
    assert_eq!(topic["fields"][0]["path"], "retentionMs");
    assert_eq!(topic["fields"][0]["new"], 345_600_000);
    assert_eq!(topic["fields"][0]["sources"][0]["file"], "topics.yaml");
    assert_eq!(topic["fields"][0]["sources"][0]["line"], 32);
}

#[test]
fn a_revision_that_does_not_compile_is_named_with_its_diagnostics() {
    let repo = desk_repo();
    repo.branch_and_switch("broken");
    edit(
        &repo,
        "desk/agents/triage.yaml",
        "replicas: 2",
        "replicas: two",
    );
    repo.commit("oops");
    for (format, stream_is_stdout) in [("text", false), ("markdown", true), ("json", true)] {
        let out = cortex(
            repo.path(),
            &[
                "diff", "desk", "--from", "main", "--to", "broken", "--format", format,
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{format}");
        let shown = text(if stream_is_stdout {
            &out.stdout
        } else {
            &out.stderr
        });
        assert!(shown.contains("broken ("), "{format}: {shown}");
        assert!(shown.contains("does not compile"), "{format}: {shown}");
        assert!(
            shown.contains("broken:desk/agents/triage.yaml"),
            "{format}: {shown}"
        );
    }
}

#[test]
fn an_unknown_revision_is_an_error() {
    let repo = desk_repo();
    let out = cortex(repo.path(), &["diff", "desk", "--from", "mian"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("mian"), "{err}");
    assert!(err.contains("main"), "did you mean: {err}");
}

/// The pull-request workflow of `examples/ci`: its diff step, run as GitHub
/// would run it (bash, the step's script, the job's environment), posts a
/// markdown plan and passes on a change.
#[test]
fn the_example_pull_request_workflow_runs_its_diff_step() {
    let run_of = |step: &str| common::workflow_step("pull-request.yml", "diff", step);
    assert!(run_of("Validate").contains("--format github"));
    let script = run_of("Diff against the base branch").replace("${{ github.base_ref }}", "main");

    let repo = desk_repo();
    // As actions/checkout leaves it: the base branch as a remote-tracking ref.
    let head = repo.repo.head().expect("head").target().expect("commit");
    repo.repo
        .reference("refs/remotes/origin/main", head, true, "fetched")
        .expect("origin/main");
    edit(&repo, "desk/topics.yaml", "retention: 3d", "retention: 4d");
    let output = repo.path().join("github-output");
    let status = common::run_step(
        &script,
        repo.path(),
        Path::new(env!("CARGO_BIN_EXE_cortex")),
        &[
            ("PROJECT", "desk".as_ref()),
            ("ENVIRONMENT", "prod".as_ref()),
            ("GITHUB_OUTPUT", output.as_os_str()),
        ],
    );
    assert!(
        status.status.success(),
        "{}{}{}",
        text(&status.stdout),
        text(&status.stderr),
        std::fs::read_to_string(repo.path().join("plan.md")).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read_to_string(&output).expect("output"),
        "status=2\n"
    );
    let plan = std::fs::read_to_string(repo.path().join("plan.md")).expect("plan.md");
    assert!(
        plan.starts_with("### cortex diff: `origin/main ("),
        "{plan}"
    );
    assert!(plan.contains("environment **prod**"), "{plan}");
}

/// Regression: a 5,000-deep block sequence made `cortex diff` abort with a
/// stack overflow. At the nesting limit a deep agent config is diffed (the
/// provenance and field walks included) and built; one level past it, and
/// at 5,000 levels, the revision is named with CX0113.
#[test]
fn diff_and_build_hold_at_the_nesting_limit_and_refuse_past_it() {
    let limit = cortex_compiler::MAX_YAML_DEPTH;
    // The document, `spec` and `config` around `deep`.
    let agent = |levels: usize| {
        format!(
            "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {{ name: deep }}\nspec:\n  extends: base-agent\n  config:\n    deep:\n    {}1\n",
            "- ".repeat(levels)
        )
    };
    let repo = desk_repo();
    repo.write("desk/agents/deep.yaml", &agent(limit - 3));
    repo.commit("deep at the limit");
    repo.write("desk/agents/deep.yaml", &agent(limit - 4));
    let at_limit = cortex(
        repo.path(),
        &["diff", "desk", "--from", "main", "--detailed-exitcode"],
    );
    assert_eq!(
        at_limit.status.code(),
        Some(2),
        "{}",
        text(&at_limit.stderr)
    );
    assert!(
        text(&at_limit.stdout).contains("Agent/deep"),
        "{}",
        text(&at_limit.stdout)
    );
    let out = tempfile::tempdir().unwrap();
    let built = cortex(
        repo.path(),
        &[
            "build",
            "desk",
            "-o",
            out.path().join("o").to_str().unwrap(),
        ],
    );
    assert_eq!(built.status.code(), Some(0), "{}", text(&built.stderr));

    for levels in [limit - 2, 5_000] {
        repo.write("desk/agents/deep.yaml", &agent(levels));
        let past = cortex(repo.path(), &["diff", "desk", "--from", "main"]);
        assert_eq!(
            past.status.code(),
            Some(1),
            "{levels}: {}",
            text(&past.stderr)
        );
        let said = text(&past.stderr);
        assert!(
            said.contains("CX0113") && said.contains(&format!("deeper than {limit} levels")),
            "{levels}: {said}"
        );
    }
}
