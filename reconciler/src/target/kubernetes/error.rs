//! What can go wrong talking to a cluster, worded for the person at the
//! terminal: what failed, on which object, and what to do about it.

use std::fmt;
use std::time::Duration;

/// A field another field manager owns, which cortex wants to set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldConflict {
    /// The other field manager (`kubectl-edit`, `helm`…).
    pub manager: String,
    /// The field, as the API server names it (`.spec.replicas`).
    pub field: String,
}

/// An error of the Kubernetes target.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be loaded.
    #[error(
        "cannot load the Kubernetes configuration: {0}\n  cortex reads $KUBECONFIG (or ~/.kube/config), --kubeconfig, --context, or the in-cluster service account"
    )]
    Config(String),
    /// The API server could not be reached.
    #[error(
        "cannot reach the Kubernetes API server at {server}: {message}\n  check that the cluster is up and that the kubeconfig context points at it (kubectl config current-context)"
    )]
    Connect {
        /// The server's URL.
        server: String,
        /// Why.
        message: String,
    },
    /// The API server refused a request.
    #[error("{what}: {message} ({code} {reason})")]
    Api {
        /// What cortex was doing (`apply Deployment/triage`).
        what: String,
        /// HTTP status.
        code: u16,
        /// The API server's reason.
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// Fields cortex wants to set are owned by another field manager.
    #[error("{}", conflict_text(.0))]
    Conflicts(Vec<(String, Vec<FieldConflict>)>),
    /// The cluster does not serve a kind the project uses.
    #[error(
        "the cluster does not serve {api_version} {kind} (needed by {object}); is its CustomResourceDefinition installed?"
    )]
    UnknownKind {
        /// `apiVersion`.
        api_version: String,
        /// Kind.
        kind: String,
        /// The first object of that kind.
        object: String,
    },
    /// Another apply holds the lock.
    #[error(
        "{namespace} is locked by {holder} (since {since}, expires {expires}); wait for that apply to finish, pass --lock-timeout to wait, or run `cortex unlock` if it is stale"
    )]
    Locked {
        /// Namespace.
        namespace: String,
        /// Who holds it.
        holder: String,
        /// Acquired at.
        since: String,
        /// Expires at.
        expires: String,
    },
    /// Live objects changed since the plan was made.
    #[error("stale plan: {} since the plan was made; run `cortex plan` again", stale_text(.0))]
    Stale(Vec<String>),
    /// The prune guard.
    #[error(
        "refusing to prune {deletes} of the {owned} objects cortex owns in {namespace} (more than half); check the project, or pass --force"
    )]
    PruneGuard {
        /// Objects to delete.
        deletes: usize,
        /// Objects cortex owns there.
        owned: usize,
        /// Namespace.
        namespace: String,
    },
    /// The namespace is missing and may not be created.
    #[error("namespace {0} does not exist (and --no-create-namespace was given)")]
    NamespaceMissing(String),
    /// `--wait` ran out of time.
    #[error("timed out after {} waiting for {} object{}:\n{}", humanize(*.after), .pending.len(), if .pending.len() == 1 { "" } else { "s" }, .pending.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Timeout {
        /// How long it waited.
        after: Duration,
        /// Each object still pending, with why.
        pending: Vec<String>,
    },
    /// Stopped by the user (Ctrl-C).
    #[error(
        "interrupted after {created} created, {updated} updated, {deleted} deleted; the lock was released — run `cortex plan` to see what is left"
    )]
    Interrupted {
        /// Objects created before the interrupt.
        created: usize,
        /// Objects updated before it.
        updated: usize,
        /// Objects deleted before it.
        deleted: usize,
    },
    /// A saved plan that cannot be used.
    #[error("{0}")]
    Plan(String),
}

fn conflict_text(conflicts: &[(String, Vec<FieldConflict>)]) -> String {
    let mut out = String::from("fields cortex sets are managed by another field manager:");
    for (object, fields) in conflicts {
        for f in fields {
            out.push_str(&format!(
                "\n  {object} {} (managed by {:?})",
                f.field, f.manager
            ));
        }
    }
    out.push_str("\n  make the project agree with the cluster, or pass --force-conflicts to take these fields over");
    out
}

fn stale_text(objects: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out: Vec<String> = objects.iter().take(SHOWN).cloned().collect();
    if objects.len() > SHOWN {
        out.push(format!("and {} more", objects.len() - SHOWN));
    }
    out.join(", ")
}

/// `90s`, `2m30s`.
pub fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{}m{}s", secs / 60, secs % 60),
    }
}

impl KubeError {
    /// Maps a kube client error for `what` against `server`.
    pub fn from_kube(what: &str, server: &str, e: kube::Error) -> KubeError {
        match e {
            kube::Error::Api(status) => KubeError::Api {
                what: what.to_string(),
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            kube::Error::HyperError(e) => KubeError::Connect {
                server: server.to_string(),
                message: chain(&e),
            },
            kube::Error::Service(e) => KubeError::Connect {
                server: server.to_string(),
                message: chain(e.as_ref()),
            },
            other => KubeError::Api {
                what: what.to_string(),
                code: 0,
                reason: "ClientError".into(),
                message: chain(&other),
            },
        }
    }

    /// The HTTP status of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// An error and its sources on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The field-manager conflicts of a 409 from server-side apply, if it is one.
pub fn field_conflicts(e: &kube::Error) -> Option<Vec<FieldConflict>> {
    let kube::Error::Api(status) = e else {
        return None;
    };
    let causes = status.details.as_ref()?.causes.as_slice();
    let conflicts: Vec<FieldConflict> = causes
        .iter()
        .filter(|c| c.reason == "FieldManagerConflict")
        .map(|c| FieldConflict {
            manager: c
                .message
                .split('"')
                .nth(1)
                .unwrap_or(&c.message)
                .to_string(),
            field: c.field.clone(),
        })
        .collect();
    (status.code == 409 && !conflicts.is_empty()).then_some(conflicts)
}

impl fmt::Display for FieldConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (managed by {:?})", self.field, self.manager)
    }
}
