//! Command-line flags (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// cortex: a declarative config compiler and GitOps reconciler for
/// multi-agent systems.
#[derive(Debug, Parser)]
#[command(name = "cortex", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Diagnostic output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiagnosticFormat {
    /// rustc-style text with source snippets (colour on a terminal unless NO_COLOR).
    Text,
    /// One JSON document (format_version 1).
    Json,
    /// GitHub Actions workflow commands (annotations on the pull request).
    Github,
}

/// Plan formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// One line per changed object and field (colour on a terminal unless NO_COLOR).
    Text,
    /// A pull-request comment: summary table, one collapsible diff per object.
    Markdown,
    /// The plan as JSON (format_version 1; layout in docs/plans-and-diffs.md).
    Json,
}

/// Graph formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormatArg {
    /// Mermaid flowchart.
    Mermaid,
    /// Graphviz dot.
    Dot,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a project: load, inherit, template and validate every spec.
    Validate {
        /// Project directory (holds cortex.yaml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Environment overlay to apply.
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        /// Output format of the diagnostics.
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Text)]
        format: DiagnosticFormat,
    },
    /// Render the project: a Helm chart, plain manifests, the runtime config
    /// and an inventory, written atomically to OUT.
    Build {
        /// Project directory (holds cortex.yaml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Environment overlay to apply.
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        /// Output directory (replaced whole; only an empty directory or a
        /// previous build's output is ever replaced).
        #[arg(long, short = 'o')]
        out: PathBuf,
        /// Output format of diagnostics.
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Text)]
        format: DiagnosticFormat,
    },
    /// Show what changes between two revisions of a project: every rendered
    /// object created, updated or deleted, each changed field with the spec
    /// line that caused it. Exit 0 (no changes; 2 with --detailed-exitcode
    /// when there are changes) or 1 (error).
    Diff {
        /// Project directory (holds cortex.yaml), inside a git repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Old revision: branch, tag, `HEAD~2`, `origin/main`, commit id.
        #[arg(long)]
        from: String,
        /// New revision; without it, the work tree (files on disk).
        #[arg(long)]
        to: Option<String>,
        /// Environment overlay to apply on both sides.
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Exit 2 when there are changes (as `terraform plan -detailed-exitcode`).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Text format: print each object's unified YAML diff too.
        #[arg(long)]
        unified: bool,
    },
    /// Plan the project against a target (a Kubernetes cluster): what
    /// applying would create, update and (with --prune) delete, with the
    /// API server's own dry-run so its defaults never show. Exit 0 (no
    /// changes; 2 with --detailed-exitcode when there are changes) or 1.
    Plan {
        /// Project directory (holds cortex.yaml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Environment overlay to apply.
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        planning: PlanningArgs,
        /// Save the plan here, for `cortex apply PLAN.json`.
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Exit 2 when there are changes (as `terraform plan -detailed-exitcode`).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Text format: print each object's unified YAML diff too.
        #[arg(long)]
        unified: bool,
    },
    /// Apply the project (or a saved plan) to a target with server-side
    /// apply, in dependency order, holding the project's lock.
    Apply {
        /// Project directory, or a plan saved by `cortex plan -o`.
        #[arg(default_value = ".", value_name = "DIR|PLAN.json")]
        input: PathBuf,
        /// Environment overlay to apply (not with a saved plan).
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        planning: PlanningArgs,
        /// Apply without asking (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Wait until Deployments have rolled out and HPAs/PDBs exist.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 90s, 5m).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// How long to wait for another apply's lock (default: fail at once).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: std::time::Duration,
    },
    /// Run the project on this machine: validate, build, apply to the
    /// embedded state store, then run the broker, the agents with
    /// `local.command` and the health loop in the foreground until Ctrl-C.
    Up {
        /// Project directory (holds cortex.yaml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Environment overlay to apply.
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        /// Address of the broker (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:7400", env = "CORTEX_LISTEN")]
        listen: std::net::SocketAddr,
        /// Log format (logs go to stderr; filter with CORTEX_LOG, e.g. `debug`).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Do not start the agents (the broker only; agents connect on their own).
        #[arg(long)]
        no_agents: bool,
    },
    /// Run the GitOps reconciler: watch a repository, compile each new
    /// commit and sync it — to the embedded state store, running it as
    /// `cortex up` does, or to a Kubernetes cluster (`--target
    /// kubernetes`); drift is put back (or reported); a commit that does
    /// not compile keeps the last good one and is reported on `GET
    /// /api/v1/status`. Replicas on one state directory (or one cluster)
    /// elect a leader. Ctrl-C stops it.
    Serve(ServeArgs),
    /// Show the agents, their health and the queues of the project's
    /// runtime (or of its state store when no runtime is running).
    Status {
        /// Project directory (holds cortex.yaml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Environment overlay (it may set the state store).
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Break the project's apply lock (a Lease) left by an apply that died.
    Unlock {
        /// Project directory (holds cortex.yaml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Environment overlay (it may set the namespace).
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Draw a workflow's DAG (Mermaid renders in GitHub comments); with
    /// --execution, each task's state in that execution of the running
    /// runtime.
    Graph {
        /// Project directory, then workflow/NAME; the directory defaults to `.`.
        #[arg(num_args = 1..=2, value_names = ["DIR", "workflow/NAME"], required = true)]
        args: Vec<String>,
        /// Environment overlay to apply.
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormatArg::Mermaid)]
        format: GraphFormatArg,
        /// Colour each task by its state in this execution.
        #[arg(long, value_name = "ID")]
        execution: Option<String>,
    },
    /// Start an execution of a workflow by hand (its manual trigger) on
    /// the project's running runtime; print it. With --wait, wait for the
    /// end: exit 0 when it succeeded, 1 when it failed or was cancelled.
    Run {
        /// Project directory, then workflow/NAME; the directory defaults to `.`.
        #[arg(num_args = 1..=2, value_names = ["DIR", "workflow/NAME"], required = true)]
        args: Vec<String>,
        /// A field of the trigger payload, `KEY=VALUE` (VALUE read as JSON
        /// when it is JSON — `n=7` is a number — else as a string); repeatable.
        #[arg(long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// The trigger payload from a JSON file (--input fields go over it).
        #[arg(long, value_name = "FILE.json")]
        input_file: Option<PathBuf>,
        /// Wait until the execution ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// List the executions of the project's runtime (of one workflow).
    Executions {
        /// Project directory and/or workflow/NAME (both optional).
        #[arg(num_args = 0..=2, value_names = ["DIR", "workflow/NAME"])]
        args: Vec<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Show agent state on the running runtime: one key's document, a
    /// scope's keys (SCOPE is a State's name or agents/NAME), or with
    /// --watch its changes as they happen. With two arguments the first is
    /// the project when it holds cortex.yaml, else they are SCOPE KEY.
    State {
        /// [DIR] SCOPE [KEY].
        #[arg(num_args = 1..=3, value_names = ["DIR", "SCOPE", "KEY"], required = true)]
        args: Vec<String>,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Follow the scope's changes (until Ctrl-C).
        #[arg(long)]
        watch: bool,
        /// With --watch: every change after this version (default: from now).
        #[arg(long, requires = "watch")]
        from_version: Option<u64>,
        /// Write KEY: this JSON value (audited as the operator's).
        #[arg(long, value_name = "JSON", conflicts_with_all = ["watch", "delete"])]
        set: Option<String>,
        /// Delete KEY (audited as the operator's).
        #[arg(long, conflicts_with = "watch")]
        delete: bool,
        /// With --set or --delete: only if KEY is at this version (0: with
        /// --set, only if it does not exist); a mismatch exits 1 naming the
        /// current version.
        #[arg(long)]
        if_version: Option<u64>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Show one execution: its state and each task's.
    Execution {
        /// Project directory, then the execution id; the directory defaults to `.`.
        #[arg(num_args = 1..=2, value_names = ["DIR", "ID"], required = true)]
        args: Vec<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Cancel a queued or running execution (running tasks are stopped).
    Cancel {
        /// Project directory, then the execution id.
        #[arg(num_args = 1..=2, value_names = ["DIR", "ID"], required = true)]
        args: Vec<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Run a failed or cancelled execution again: succeeded tasks keep
    /// their outputs, the others run as new attempts.
    Retry {
        /// Project directory, then the execution id.
        #[arg(num_args = 1..=2, value_names = ["DIR", "ID"], required = true)]
        args: Vec<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Pause a workflow: its triggers still record executions, queued;
    /// none starts until `cortex resume`.
    Pause {
        /// Project directory, then workflow/NAME.
        #[arg(num_args = 1..=2, value_names = ["DIR", "workflow/NAME"], required = true)]
        args: Vec<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Resume a paused workflow: its queued executions start, in order.
    Resume {
        /// Project directory, then workflow/NAME.
        #[arg(num_args = 1..=2, value_names = ["DIR", "workflow/NAME"], required = true)]
        args: Vec<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Publish a message to a topic of the running runtime (checked
    /// against the topic's schema, as over HTTP).
    Publish {
        /// Project directory, then the topic.
        #[arg(num_args = 1..=2, value_names = ["DIR", "TOPIC"], required = true)]
        args: Vec<String>,
        /// The payload, as JSON.
        #[arg(long)]
        payload: String,
        /// Ordering key.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Send a message straight to an agent's inbox.
    Send {
        /// Project directory, then the agent.
        #[arg(num_args = 1..=2, value_names = ["DIR", "AGENT"], required = true)]
        args: Vec<String>,
        /// The payload, as JSON.
        #[arg(long)]
        payload: String,
        /// Ordering key.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Send a request to an agent and print its reply.
    Request {
        /// Project directory, then the agent.
        #[arg(num_args = 1..=2, value_names = ["DIR", "AGENT"], required = true)]
        args: Vec<String>,
        /// The payload, as JSON.
        #[arg(long)]
        payload: String,
        /// How long to wait for the reply (at most 60s).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        common: OperateArgs,
    },
    /// Print a resolved spec with the file, line and spec that set each value.
    Explain {
        /// Project directory, then KIND/NAME (e.g. `agent/triage`); the
        /// directory defaults to `.`.
        #[arg(num_args = 1..=2, value_names = ["DIR", "KIND/NAME"], required = true)]
        args: Vec<String>,
        /// Environment overlay to apply.
        #[arg(long, short = 'e', env = "CORTEX_ENV")]
        env: Option<String>,
    },
    /// Print the JSON Schema of a kind (or of every document) for editors.
    Schema {
        /// Kind (e.g. Agent, workflow); without it, one schema for every kind.
        kind: Option<String>,
    },
    /// Scaffold a small working project.
    Init {
        /// Directory to create it in (must not hold a cortex.yaml yet).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Project name (defaults to the directory name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Explain a diagnostic code, or list them all.
    ExplainCode {
        /// A code such as CX0201; without it, every code is listed.
        code: Option<String>,
    },
}

/// What every command that talks to the running runtime takes.
#[derive(Clone, Debug, clap::Args)]
pub struct OperateArgs {
    /// Environment overlay (it may set the state store).
    #[arg(long, short = 'e', env = "CORTEX_ENV")]
    pub env: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Output formats of the operator commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines and tables for people.
    Text,
    /// The API's JSON.
    Json,
}

/// `cortex serve`'s flags.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// The repository: a URL (`https://`, `ssh://`, `git@host:path`,
    /// `file://`) or a bare repository, fetched into the state
    /// directory's cache; or a directory, read as it is on disk and
    /// watched.
    #[arg(long)]
    pub repo: String,
    /// The branch followed (a fetched repository).
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The project's directory inside the repository.
    #[arg(long = "path", value_name = "SUBDIR")]
    pub subdir: Option<PathBuf>,
    /// Environment overlay to apply.
    #[arg(long, short = 'e', env = "CORTEX_ENV")]
    pub env: Option<String>,
    /// How often the repository is fetched (e.g. 30s, 1m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Address of the API and the runtime (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: std::net::SocketAddr,
    /// State directory (store, cache of the repository, logs).
    #[arg(long, default_value = ".cortex-serve")]
    pub state: PathBuf,
    /// Log format (logs go to stderr; filter with CORTEX_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Do not start the agents.
    #[arg(long)]
    pub no_agents: bool,
    /// The environment variable holding the secret of `POST
    /// /api/v1/webhook` (GitHub's X-Hub-Signature-256); without it the
    /// webhook is off.
    #[arg(long, value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
    /// `auto`: apply each new commit; `manual`: report it (`out-of-sync`)
    /// until `POST /api/v1/sync`.
    #[arg(long, value_enum, default_value_t = SyncMode::Auto)]
    pub sync: SyncMode,
    /// Put drift back at once, also with `--sync manual` (self-heal is
    /// on with `--sync auto`, off with `manual`).
    #[arg(long, conflicts_with = "no_self_heal")]
    pub self_heal: bool,
    /// Report drift instead of putting it back.
    #[arg(long)]
    pub no_self_heal: bool,
    /// More API tokens (YAML: a list of `{name, sha256, groups}`); the
    /// project's AccessPolicy bindings give them roles.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Kubernetes target: delete objects cortex owns that left the
    /// project (without it they are kept and listed in the status'
    /// notes). The embedded target always applies whole revisions.
    #[arg(long)]
    pub prune: bool,
    /// The environment variable holding the token sent to an http(s)
    /// remote (as basic authentication's password); ssh remotes use
    /// the ssh-agent.
    #[arg(long, value_name = "VAR", default_value = "CORTEX_GIT_TOKEN")]
    pub git_token_env: String,
    /// Leader election between replicas on one state directory: the
    /// leader's lease lasts this long unrenewed; a standby takes over
    /// within it when the leader dies.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease: std::time::Duration,
}

impl ServeArgs {
    /// Whether each new commit is applied as it comes (`--sync auto`).
    pub fn auto_sync(&self) -> bool {
        self.sync == SyncMode::Auto
    }

    /// Whether drift is put back at once: `--self-heal`, or `--sync auto`
    /// without `--no-self-heal`.
    pub fn self_heals(&self) -> bool {
        self.self_heal || (self.auto_sync() && !self.no_self_heal)
    }
}

/// Which cluster.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Target: `embedded` (the local state store run by `cortex up`) or
    /// `kubernetes`.
    #[arg(long, value_enum, env = "CORTEX_TARGET", default_value_t = TargetArg::Embedded)]
    pub target: TargetArg,
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the project's targets.kubernetes.context,
    /// else the current context).
    #[arg(long)]
    pub context: Option<String>,
}

/// What a plan may do.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct PlanningArgs {
    /// Delete objects cortex owns that left the project.
    #[arg(long)]
    pub prune: bool,
    /// Prune even more than half of what cortex owns in the namespace.
    #[arg(long)]
    pub force: bool,
    /// Take over fields another field manager owns.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Fail instead of creating a missing namespace.
    #[arg(long)]
    pub no_create_namespace: bool,
}

/// Targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// The embedded state store (`targets.embedded.state`, default
    /// `.cortex/state.db`), run by `cortex up`.
    Embedded,
    /// A Kubernetes cluster.
    Kubernetes,
}

/// When `cortex serve` applies a new commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// As it comes.
    Auto,
    /// When asked (`POST /api/v1/sync`).
    Manual,
}

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Status formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// Tables.
    Text,
    /// The runtime's status JSON.
    Json,
}

/// `90s`, `5m`, `1h`, `250ms`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    cortex_compiler::validate::formats::parse_duration_ms(text)
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command, ServeArgs};

    fn serve(flags: &[&str]) -> ServeArgs {
        let argv = ["cortex", "serve", "--repo", "r"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Serve(args) => args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn serve_self_heals_with_auto_sync_unless_told_otherwise() {
        let default = serve(&[]);
        assert!(default.auto_sync() && default.self_heals());
        let reported = serve(&["--no-self-heal"]);
        assert!(reported.auto_sync() && !reported.self_heals());
        let manual = serve(&["--sync", "manual"]);
        assert!(!manual.auto_sync() && !manual.self_heals());
        let manual_healing = serve(&["--sync", "manual", "--self-heal"]);
        assert!(!manual_healing.auto_sync() && manual_healing.self_heals());
        assert!(
            Cli::try_parse_from([
                "cortex",
                "serve",
                "--repo",
                "r",
                "--self-heal",
                "--no-self-heal"
            ])
            .is_err()
        );
    }
}
