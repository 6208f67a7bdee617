//! The git source on real repositories made in temporary directories:
//! revisions of every form, branches and tags, a project in a
//! sub-directory, uncommitted changes, symbolic links, and equivalence with
//! the work tree.

use cortex_compiler::render::render;
use cortex_compiler::source::SourceError;
use cortex_compiler::{Options, Source, WorkTree, compile};
use cortex_reconciler::{GitError, GitTree};

use cortex_testkit::git as common;

use common::{Repo, example};

/// `spec.replicas` of the greeter agent as compiled from `source`.
fn greeter_replicas(source: &dyn Source) -> Option<i64> {
    let result = compile(source, &Options::default());
    assert!(!result.diagnostics.has_errors(), "{:?}", result.diagnostics);
    let resolved = result.resolved.expect("resolved");
    let greeter = resolved
        .specs
        .iter()
        .find(|s| s.name == "greeter")
        .expect("greeter");
    greeter
        .node
        .path(&["spec", "replicas"])
        .and_then(|n| n.as_i64())
}

fn with_replicas(repo: &Repo, n: u32) {
    let original =
        std::fs::read_to_string(example("hello").join("agents/greeter.yaml")).expect("read");
    repo.write(
        "agents/greeter.yaml",
        &original.replacen(
            "  extends: base-agent\n",
            &format!("  extends: base-agent\n  replicas: {n}\n"),
            1,
        ),
    );
}

#[test]
fn reads_the_project_at_any_revision_without_checkout() {
    let repo = Repo::new();
    repo.copy_dir(&example("hello"), "");
    let first = repo.commit("hello");
    repo.tag("v1");
    with_replicas(&repo, 2);
    repo.commit("two replicas");
    repo.branch_and_switch("feature");
    with_replicas(&repo, 5);
    repo.commit("five on a branch");
    repo.switch("main");
    with_replicas(&repo, 9); // uncommitted: invisible to every revision
    let at = |rev: &str| GitTree::open(repo.path(), rev).unwrap_or_else(|e| panic!("{rev}: {e}"));
    assert_eq!(greeter_replicas(&at("main")), Some(2));
    assert_eq!(greeter_replicas(&at("HEAD")), Some(2));
    assert_eq!(greeter_replicas(&at("HEAD~1")), None);
    assert_eq!(greeter_replicas(&at("v1")), None);
    assert_eq!(greeter_replicas(&at(&first.to_string())), None);
    assert_eq!(
        greeter_replicas(&at(&first.to_string()[..10])),
        None,
        "abbreviated ids work"
    );
    assert_eq!(greeter_replicas(&at("feature")), Some(5));
    assert_eq!(greeter_replicas(&at("feature~1")), Some(2));
    assert_eq!(
        greeter_replicas(&WorkTree::open(repo.path()).expect("work tree")),
        Some(9)
    );
    let tree = at("v1");
    assert_eq!(tree.commit_id(), first.to_string());
    assert!(tree.describe().starts_with("v1 ("), "{}", tree.describe());
}

#[test]
fn an_unknown_revision_is_an_error_with_a_suggestion() {
    let repo = Repo::new();
    repo.copy_dir(&example("hello"), "");
    repo.commit("hello");
    match GitTree::open(repo.path(), "mian") {
        Err(GitError::UnknownRevision { rev, hint }) => {
            assert_eq!(rev, "mian");
            assert_eq!(hint.as_deref(), Some("did you mean `main`?"));
        }
        other => panic!("{other:?}"),
    }
    let outside = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        GitTree::open(outside.path(), "HEAD"),
        Err(GitError::NotARepository { .. })
    ));
}

#[test]
fn a_project_in_a_sub_directory_reads_relative_to_itself() {
    let repo = Repo::new();
    repo.write("README.md", "the repository root\n");
    repo.commit("before the project existed");
    repo.copy_dir(&example("hello"), "deploy/cortex");
    repo.commit("add the project");
    let project = repo.path().join("deploy/cortex");
    let tree = GitTree::open(&project, "HEAD").expect("open");
    assert_eq!(greeter_replicas(&tree), None);
    assert!(
        tree.list("")
            .expect("list")
            .contains(&"cortex.yaml".to_string())
    );
    assert_eq!(
        tree.list("agents").expect("list"),
        vec!["agents/base.yaml", "agents/greeter.yaml"]
    );
    assert!(
        matches!(tree.read("README.md"), Err(SourceError::NotFound(_))),
        "outside the project"
    );
    assert!(matches!(
        tree.read("../../README.md"),
        Err(SourceError::OutsideRoot { .. })
    ));
    assert!(matches!(
        GitTree::open(&project, "HEAD~1"),
        Err(GitError::ProjectMissing { .. })
    ));
}

#[cfg(unix)]
#[test]
fn symbolic_links_are_followed_only_inside_the_project() {
    let repo = Repo::new();
    repo.copy_dir(&example("hello"), "project");
    repo.write("secret.yaml", "token: hunter2\n");
    std::os::unix::fs::symlink(
        "../../secret.yaml",
        repo.path().join("project/agents/escape.yaml"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink("base.yaml", repo.path().join("project/agents/alias.yaml"))
        .expect("symlink");
    repo.commit("links");
    let tree = GitTree::open(&repo.path().join("project"), "HEAD").expect("open");
    assert!(matches!(
        tree.read("agents/escape.yaml"),
        Err(SourceError::OutsideRoot { .. })
    ));
    assert_eq!(
        tree.read("agents/alias.yaml").expect("inside link"),
        tree.read("agents/base.yaml").expect("base")
    );
}

#[test]
fn the_example_builds_byte_identically_from_git_and_from_disk() {
    let repo = Repo::new();
    repo.copy_dir(&example("support-desk"), "");
    repo.commit("support desk");
    let git = GitTree::open(repo.path(), "HEAD").expect("open");
    let disk = WorkTree::open(example("support-desk")).expect("work tree");
    let build = |source: &dyn Source| {
        let result = compile(
            source,
            &Options {
                env: Some("prod".into()),
            },
        );
        let resolved = result.validated().expect("valid");
        render(resolved, source).expect("render").files()
    };
    assert_eq!(build(&git), build(&disk));
}

/// Regression: after `cortex up examples/support-desk`, the example holds an
/// ignored, binary `.cortex/state.db`; the repository helper read it as UTF-8
/// and five diff tests failed. It copies only what git tracks.
#[test]
fn the_test_repositories_copy_only_tracked_files() {
    let workspace = Repo::new();
    workspace.write(".gitignore", ".cortex/\n");
    workspace.write("project/cortex.yaml", "tracked\n");
    workspace.commit("tracked");
    let state = workspace.path().join("project/.cortex");
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::write(state.join("state.db"), [0xffu8, 0x00, 0xfe]).expect("write");
    std::fs::write(workspace.path().join("project/untracked.yaml"), "x").expect("write");

    let copy = Repo::new();
    copy.copy_dir(&workspace.path().join("project"), "p");
    assert_eq!(
        std::fs::read_to_string(copy.path().join("p/cortex.yaml")).expect("copied"),
        "tracked\n"
    );
    assert!(
        !copy.path().join("p/.cortex").exists(),
        "ignored state copied"
    );
    assert!(
        !copy.path().join("p/untracked.yaml").exists(),
        "untracked file copied"
    );
}
