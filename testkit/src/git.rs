//! Real git repositories in temporary directories, the workspace's
//! examples and fixtures, and CI steps run as GitHub runs them.

use std::path::Path;

use git2::{IndexAddOption, Oid, Repository, RepositoryInitOptions, Signature};

/// A repository with `main` as its first branch.
pub struct Repo {
    /// The work tree (removed when dropped).
    pub dir: tempfile::TempDir,
    /// The repository itself.
    pub repo: Repository,
}

impl Default for Repo {
    fn default() -> Repo {
        Repo::new()
    }
}

impl Repo {
    /// A new, empty repository in a temporary directory.
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_opts(
            dir.path(),
            RepositoryInitOptions::new().initial_head("main"),
        )
        .expect("init");
        Repo { dir, repo }
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to `path` in the work tree (directories made).
    pub fn write(&self, path: &str, content: &str) {
        let file = self.path().join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, content).expect("write");
    }

    /// Copies what git tracks under `from` (a directory of this workspace)
    /// to `to` in this repository: never what a run left beside it, such as
    /// an example's ignored `.cortex/state.db` after `cortex up`.
    pub fn copy_dir(&self, from: &Path, to: &str) {
        let from = from.canonicalize().expect("canonical source");
        let workspace = Repository::discover(&from).expect("the workspace is a git repository");
        let root = workspace
            .workdir()
            .expect("a work tree")
            .canonicalize()
            .expect("canonical work tree");
        let prefix = from.strip_prefix(&root).expect("inside the work tree");
        let index = workspace.index().expect("the workspace's index");
        let mut copied = 0;
        for entry in index.iter() {
            let tracked = Path::new(std::str::from_utf8(&entry.path).expect("a UTF-8 path"));
            let Ok(relative) = tracked.strip_prefix(prefix) else {
                continue;
            };
            let target = Path::new(to).join(relative);
            let file = self.path().join(&target);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::copy(root.join(tracked), &file).expect("copy a tracked file");
            copied += 1;
        }
        assert!(copied > 0, "git tracks nothing under {}", from.display());
    }

    /// Commits everything in the work tree on the current branch.
    pub fn commit(&self, message: &str) -> Oid {
        let mut index = self.repo.index().expect("index");
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree = self
            .repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("find tree");
        let sig = Signature::now("cortex tests", "tests@cortex.invalid").expect("signature");
        let parents: Vec<git2::Commit<'_>> = self
            .repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parent_refs)
            .expect("commit")
    }

    /// Creates branch `name` at HEAD and makes it current.
    pub fn branch_and_switch(&self, name: &str) {
        let head = self
            .repo
            .head()
            .expect("head")
            .peel_to_commit()
            .expect("commit");
        self.repo.branch(name, &head, false).expect("branch");
        self.repo
            .set_head(&format!("refs/heads/{name}"))
            .expect("set head");
    }

    /// Checks out branch `name` (work tree forced to it).
    pub fn switch(&self, name: &str) {
        self.repo
            .set_head(&format!("refs/heads/{name}"))
            .expect("set head");
        self.repo
            .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .expect("checkout");
    }

    /// Tags HEAD as `name` (lightweight).
    pub fn tag(&self, name: &str) {
        let head = self
            .repo
            .head()
            .expect("head")
            .peel(git2::ObjectType::Commit)
            .expect("commit");
        self.repo.tag_lightweight(name, &head, false).expect("tag");
    }
}

/// The workspace's root (the tests of two packages use this module).
fn workspace() -> &'static Path {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("examples").is_dir() {
        dir = dir.parent().expect("the workspace holds examples/");
    }
    dir
}

/// `examples/<name>`.
pub fn example(name: &str) -> std::path::PathBuf {
    workspace().join("examples").join(name)
}

/// `fixtures/<path>`.
pub fn fixture_path(path: &str) -> std::path::PathBuf {
    workspace().join("fixtures").join(path)
}

/// The text of `fixtures/<path>`.
pub fn fixture(path: &str) -> String {
    std::fs::read_to_string(workspace().join("fixtures").join(path)).expect("read the fixture")
}

/// Replaces the first `from` in `file` (which must contain it) with `to`.
pub fn edit(repo: &Repo, file: &str, from: &str, to: &str) {
    let path = repo.path().join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{from} not in {file}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

/// The `run:` script of step `step` of job `job` in a GitHub Actions
/// workflow of `examples/ci`.
pub fn workflow_step(workflow: &str, job: &str, step: &str) -> String {
    let path = example("ci").join(workflow);
    let text = std::fs::read_to_string(&path).expect("read the workflow");
    let docs = cortex_compiler::yaml_out::parse_documents(&text).expect("valid YAML");
    docs[0]["jobs"][job]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == step)
        .and_then(|s| s["run"].as_str())
        .unwrap_or_else(|| panic!("no step {step} in {workflow}"))
        .to_string()
}

/// A CI step's script run as GitHub runs it (`bash -e -c`) in `dir`, with
/// the directory of the `cortex` binary `bin` first on PATH and `envs` set.
pub fn run_step(
    script: &str,
    dir: &Path,
    bin: &Path,
    envs: &[(&str, &std::ffi::OsStr)],
) -> std::process::Output {
    let bin_dir = bin.parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .envs(envs.iter().copied())
        .output()
        .expect("bash")
}

/// A process's output as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A finished process's exit code.
pub fn code(output: &std::process::Output) -> i32 {
    output.status.code().expect("exit code")
}
