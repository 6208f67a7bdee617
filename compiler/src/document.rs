//! Kinds of the spec language and one loaded document of a kind.

use std::fmt;
use std::sync::Arc;

use crate::node::Node;
use crate::span::Span;

/// The `apiVersion` of every cortex document.
pub const API_VERSION: &str = "cortex.codevald.io/v1";

/// A kind of the spec language (SPEC.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `cortex.yaml`.
    Project,
    /// A reusable, abstract agent.
    AgentTemplate,
    /// A concrete agent.
    Agent,
    /// Reusable workflow defaults.
    WorkflowTemplate,
    /// A DAG of tasks.
    Workflow,
    /// A broker topic.
    Topic,
    /// Capacity and placement of agents.
    ResourcePool,
    /// Roles and bindings.
    AccessPolicy,
    /// Health alerts.
    AlertRule,
    /// A shared scope of agent state.
    State,
    /// An overlay.
    Environment,
}

impl Kind {
    /// Every kind, in the order they are listed and reported.
    pub const ALL: [Kind; 11] = [
        Kind::Project,
        Kind::AgentTemplate,
        Kind::Agent,
        Kind::WorkflowTemplate,
        Kind::Workflow,
        Kind::Topic,
        Kind::ResourcePool,
        Kind::AccessPolicy,
        Kind::AlertRule,
        Kind::State,
        Kind::Environment,
    ];

    /// The name as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Project => "Project",
            Kind::AgentTemplate => "AgentTemplate",
            Kind::Agent => "Agent",
            Kind::WorkflowTemplate => "WorkflowTemplate",
            Kind::Workflow => "Workflow",
            Kind::Topic => "Topic",
            Kind::ResourcePool => "ResourcePool",
            Kind::AccessPolicy => "AccessPolicy",
            Kind::AlertRule => "AlertRule",
            Kind::State => "State",
            Kind::Environment => "Environment",
        }
    }

    /// Parses `kind:` exactly.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Parses the lower-case form used in `kind/name` references
    /// (`agent/triage`, `agenttemplate/base`), case-insensitively.
    pub fn parse_ref(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// The schema file name (without `.json`) in `schemas/`.
    pub fn schema_name(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::AgentTemplate => "agent-template",
            Kind::Agent => "agent",
            Kind::WorkflowTemplate => "workflow-template",
            Kind::Workflow => "workflow",
            Kind::Topic => "topic",
            Kind::ResourcePool => "resource-pool",
            Kind::AccessPolicy => "access-policy",
            Kind::AlertRule => "alert-rule",
            Kind::State => "state",
            Kind::Environment => "environment",
        }
    }

    /// Kinds a spec of this kind may `extends`, in look-up order; empty when
    /// the kind cannot extend.
    pub fn parents(self) -> &'static [Kind] {
        match self {
            Kind::AgentTemplate | Kind::Agent => &[Kind::AgentTemplate, Kind::Agent],
            Kind::WorkflowTemplate | Kind::Workflow => &[Kind::WorkflowTemplate, Kind::Workflow],
            _ => &[],
        }
    }

    /// Whether specs of this kind become objects (Kubernetes or runtime).
    pub fn is_rendered(self) -> bool {
        !matches!(
            self,
            Kind::Project | Kind::AgentTemplate | Kind::WorkflowTemplate | Kind::Environment
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One YAML document of a known kind.
#[derive(Clone, Debug)]
pub struct Document {
    /// Its kind.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// Where `metadata.name` is written.
    pub name_span: Span,
    /// The file it is in.
    pub file: Arc<str>,
    /// The whole document (`apiVersion`, `kind`, `metadata`, `spec`).
    pub node: Node,
}

impl Document {
    /// `Kind/name`, as diagnostics and plans print it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The `spec` mapping, if the document has one.
    pub fn spec(&self) -> Option<&Node> {
        self.node.get("spec")
    }
}
