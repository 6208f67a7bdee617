//! `cortex serve`: the reconciler in the foreground until Ctrl-C.

use std::path::Path;
use std::process::ExitCode;

use cortex_reconciler::serve::{Serve, ServeOptions, ServeTarget, Source};
use cortex_reconciler::target::kubernetes::ConnectOptions;

use crate::cli::ServeArgs;
use crate::commands::target::{failed, runtime};
use crate::commands::up::{init_logging, terminated};

/// What `--repo` names: a URL or a bare repository is fetched into the
/// cache; any other directory is read as it is on disk.
fn source(repo: &str, branch: &str, state: &Path, token_env: &str) -> Source {
    let path = Path::new(repo);
    let bare = path.is_dir() && git2::Repository::open_bare(path).is_ok();
    // `git@host:org/repo.git`, ssh's short form.
    let scp_like = !path.exists() && repo.contains(':');
    if repo.contains("://") || bare || scp_like {
        Source::Remote {
            url: repo.to_string(),
            branch: branch.to_string(),
            cache: state.join("repo"),
            token_env: token_env.to_string(),
        }
    } else {
        Source::Local {
            dir: path.to_path_buf(),
        }
    }
}

/// `cortex serve`.
pub fn run(request: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(request.log_format);
    let webhook_secret = match &request.webhook_secret_env {
        Some(var) => match std::env::var(var) {
            Ok(secret) if !secret.is_empty() => Some(secret.into_bytes()),
            _ => {
                return failed(&format!(
                    "--webhook-secret-env {var}: the environment variable {var} is not set (or empty)"
                ));
            }
        },
        None => None,
    };
    let (auto_sync, self_heal) = (request.auto_sync(), request.self_heals());
    let state = std::path::absolute(&request.state).unwrap_or(request.state.clone());
    let target = match request.cluster.target {
        crate::cli::TargetArg::Embedded => ServeTarget::Embedded,
        crate::cli::TargetArg::Kubernetes => ServeTarget::Kubernetes {
            connect: ConnectOptions {
                kubeconfig: request.cluster.kubeconfig.clone(),
                context: request.cluster.context.clone(),
            },
            prune: request.prune,
        },
    };
    let options = ServeOptions {
        target,
        source: source(
            &request.repo,
            &request.branch,
            &state,
            &request.git_token_env,
        ),
        subdir: request.subdir,
        env: request.env,
        interval: request.interval,
        state: state.clone(),
        listen: request.listen,
        supervise: !request.no_agents,
        webhook_secret,
        auto_sync,
        self_heal,
        tokens_file: request.tokens,
        lease: request.lease,
    };
    let rt = runtime()?;
    let outcome: anyhow::Result<ExitCode> = rt.block_on(async {
        let stop = terminated();
        let mut serve = Serve::new(options.clone());
        let url = serve.listen().await?;
        let how = match &options.source {
            Source::Local { .. } => format!("as it is saved (and every {:?})", options.interval),
            Source::Remote { .. } => format!("every {:?}", options.interval),
        };
        eprintln!(
            "cortex serve: watching {} {how}, syncing to the {} target; API on {url} (GET /api/v1/status with the token in {}) — Ctrl-C to stop",
            options.source.describe(),
            options.target.name(),
            cortex_runtime::tokens::operator_token_path(&state).display()
        );
        let (shutdown, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(serve.run(stopped));
        stop.await;
        eprintln!("Stopping…");
        let _ = shutdown.send(true);
        running.await??;
        eprintln!("Stopped; state kept in {}.", state.display());
        Ok(ExitCode::SUCCESS)
    });
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => failed(&format!("{e:#}")),
    }
}
