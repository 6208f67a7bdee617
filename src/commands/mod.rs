//! One module per subcommand.

mod build;
mod diff;
mod explain;
mod init;
mod operate;
mod schema;
mod serve;
mod state;
mod target;
mod up;
mod validate;
mod workflows;

use std::process::ExitCode;

use crate::cli::{Cli, Command, GraphFormatArg};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { dir, env, format } => validate::run(&dir, env, format),
        Command::Build {
            dir,
            env,
            out,
            format,
        } => build::run(&dir, env, &out, format),
        Command::Diff {
            dir,
            from,
            to,
            env,
            format,
            detailed_exitcode,
            unified,
        } => diff::run(
            &dir,
            diff::Request {
                from,
                to,
                env,
                format,
                detailed_exitcode,
                unified,
            },
        ),
        Command::Plan {
            dir,
            env,
            cluster,
            planning,
            out,
            format,
            detailed_exitcode,
            unified,
        } => target::plan(
            &dir,
            target::PlanRequest {
                env,
                cluster,
                planning,
                out,
                format,
                detailed_exitcode,
                unified,
            },
        ),
        Command::Apply {
            input,
            env,
            cluster,
            planning,
            yes,
            wait,
            timeout,
            lock_timeout,
        } => target::apply(
            &input,
            target::ApplyRequest {
                env,
                cluster,
                planning,
                yes,
                wait,
                timeout,
                lock_timeout,
            },
        ),
        Command::Unlock { dir, env, cluster } => target::unlock(&dir, env, &cluster),
        Command::Up {
            dir,
            env,
            listen,
            log_format,
            no_agents,
        } => up::up(
            &dir,
            up::UpRequest {
                env,
                listen,
                log_format,
                agents: !no_agents,
            },
        ),
        Command::Status { dir, env, format } => up::status(&dir, env, format),
        Command::Serve(args) => serve::run(args),
        Command::Graph {
            args,
            env,
            format,
            execution,
        } => {
            let format = match format {
                GraphFormatArg::Mermaid => cortex_compiler::graph::GraphFormat::Mermaid,
                GraphFormatArg::Dot => cortex_compiler::graph::GraphFormat::Dot,
            };
            build::graph(&args, env, format, execution.as_deref())
        }
        Command::Run {
            args,
            inputs,
            input_file,
            wait,
            common,
        } => workflows::run(&args, &inputs, input_file, wait, &common),
        Command::Executions { args, common } => workflows::list(&args, &common),
        Command::State {
            args,
            prefix,
            watch,
            from_version,
            set,
            delete,
            if_version,
            common,
        } => state::show(
            &args,
            state::StateView {
                prefix,
                watch,
                from_version,
                set,
                delete,
                if_version,
            },
            &common,
        ),
        Command::Execution { args, common } => workflows::act(&args, workflows::Act::Show, &common),
        Command::Cancel { args, common } => workflows::act(&args, workflows::Act::Cancel, &common),
        Command::Retry { args, common } => workflows::act(&args, workflows::Act::Retry, &common),
        Command::Pause { args, common } => workflows::pause(&args, true, &common),
        Command::Resume { args, common } => workflows::pause(&args, false, &common),
        Command::Publish {
            args,
            payload,
            key,
            common,
        } => workflows::message(
            &args,
            &payload,
            workflows::Message::Publish { key },
            &common,
        ),
        Command::Send {
            args,
            payload,
            key,
            common,
        } => workflows::message(&args, &payload, workflows::Message::Send { key }, &common),
        Command::Request {
            args,
            payload,
            timeout,
            common,
        } => workflows::message(
            &args,
            &payload,
            workflows::Message::Request { timeout },
            &common,
        ),
        Command::Explain { args, env } => explain::run(&args, env),
        Command::Schema { kind } => schema::run(kind.as_deref()),
        Command::Init { dir, name } => init::run(&dir, name),
        Command::ExplainCode { code } => schema::explain_code(code.as_deref()),
    }
}

/// Opens a project directory with a clear error when it is not one.
pub fn open_project(dir: &std::path::Path) -> anyhow::Result<cortex_compiler::WorkTree> {
    use anyhow::Context;
    if !dir.join(cortex_compiler::load::PROJECT_FILE).is_file() {
        anyhow::bail!(
            "{} has no {} (run `cortex init {}` to create a project)",
            dir.display(),
            cortex_compiler::load::PROJECT_FILE,
            dir.display()
        );
    }
    cortex_compiler::WorkTree::open(dir)
        .with_context(|| format!("cannot open project {}", dir.display()))
}

/// `[DIR] KIND/NAME` as `explain` and `graph` take it (DIR defaults to `.`).
pub fn dir_and_reference<'a>(
    args: &'a [String],
    usage: &str,
) -> anyhow::Result<(std::path::PathBuf, &'a str)> {
    match args {
        [reference] => Ok((std::path::PathBuf::from("."), reference.as_str())),
        [dir, reference] => Ok((std::path::PathBuf::from(dir), reference.as_str())),
        _ => anyhow::bail!("usage: {usage}"),
    }
}
