//! `cortex graph`: a workflow's DAG as Mermaid (renders in GitHub comments)
//! or Graphviz dot, triggers as entry nodes; with an execution's task
//! states, each task coloured by its state.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::node::Node;
use crate::render::runtime::topological_order;
use crate::resolve::ResolvedSpec;
use crate::validate::workflow::dag;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// Mermaid `flowchart`.
    Mermaid,
    /// Graphviz `digraph`.
    Dot,
}

struct Task {
    name: String,
    detail: String,
    deps: Vec<String>,
}

/// Mermaid classes of task states (`cortex graph --execution`).
const MERMAID_STATES: &str = "  classDef succeeded fill:#d3f9d8,stroke:#2b8a3e
  classDef failed fill:#ffe3e3,stroke:#c92a2a
  classDef running fill:#fff3bf,stroke:#e67700
  classDef pending fill:#ffffff,stroke:#adb5bd
  classDef skipped fill:#f1f3f5,stroke:#868e96,stroke-dasharray:4
  classDef cancelled fill:#f1f3f5,stroke:#868e96,stroke-dasharray:4
";

/// The Graphviz fill colour of a task state.
fn dot_fill(state: &str) -> &'static str {
    match state {
        "succeeded" => "#d3f9d8",
        "failed" => "#ffe3e3",
        "running" => "#fff3bf",
        "skipped" | "cancelled" => "#f1f3f5",
        _ => "#ffffff",
    }
}

/// Draws `workflow` (a resolved Workflow).
pub fn draw(workflow: &ResolvedSpec, format: GraphFormat) -> String {
    draw_with_states(workflow, format, &BTreeMap::new())
}

/// Draws `workflow` with each task of `states` (task → `succeeded`,
/// `failed`, `running`…) labelled and coloured by its state.
pub fn draw_with_states(
    workflow: &ResolvedSpec,
    format: GraphFormat,
    states: &BTreeMap<String, String>,
) -> String {
    let Some(spec) = workflow.spec() else {
        return String::new();
    };
    let graph = dag(spec);
    let order = topological_order(&graph);
    let tasks: Vec<Task> = order
        .iter()
        .filter_map(|name| {
            let node = graph.tasks.get(name.as_str())?;
            let detail = match (node.str_at(&["agent"]), node.path(&["run", "command"])) {
                (Some(agent), _) => format!("agent: {agent}"),
                (None, Some(cmd)) => format!(
                    "run: {}",
                    cmd.to_json()
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "))
                        .unwrap_or_default()
                ),
                _ => String::new(),
            };
            Some(Task {
                name: name.clone(),
                detail,
                deps: graph.deps[name.as_str()]
                    .iter()
                    .map(|d| d.to_string())
                    .collect(),
            })
        })
        .collect();
    let triggers: Vec<(String, String)> = spec
        .get("triggers")
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            let name = t.str_at(&["name"])?.to_string();
            let what = if let Some(topic) = t.str_at(&["topic"]) {
                format!("topic {topic}")
            } else if let Some(cron) = t.str_at(&["schedule"]) {
                format!("schedule {cron}")
            } else {
                "manual".to_string()
            };
            Some((name, what))
        })
        .collect();
    let roots: Vec<&Task> = tasks.iter().filter(|t| t.deps.is_empty()).collect();
    match format {
        GraphFormat::Mermaid => {
            let id =
                |s: &str| format!("t_{}", s.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
            let mut out = String::from("flowchart LR\n");
            for (name, what) in &triggers {
                out.push_str(&format!(
                    "  trigger_{}([\"{name}: {what}\"])\n",
                    name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ));
            }
            for t in &tasks {
                let state = states
                    .get(&t.name)
                    .map(|s| format!("<br/>{s}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "  {}[\"{}<br/>{}{state}\"]\n",
                    id(&t.name),
                    t.name,
                    t.detail.replace('"', "'")
                ));
            }
            for (name, _) in &triggers {
                for r in &roots {
                    out.push_str(&format!(
                        "  trigger_{} --> {}\n",
                        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
                        id(&r.name)
                    ));
                }
            }
            for t in &tasks {
                for d in &t.deps {
                    out.push_str(&format!("  {} --> {}\n", id(d), id(&t.name)));
                }
            }
            if !states.is_empty() {
                out.push_str(MERMAID_STATES);
                for t in &tasks {
                    if let Some(state) = states.get(&t.name) {
                        let class = state.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
                        out.push_str(&format!("  class {} {class}\n", id(&t.name)));
                    }
                }
            }
            out
        }
        GraphFormat::Dot => {
            let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
            let mut out = format!(
                "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
                q(&workflow.name)
            );
            for (name, what) in &triggers {
                out.push_str(&format!(
                    "  {} [shape=oval, label={}];\n",
                    q(&format!("trigger:{name}")),
                    q(&format!("{name}: {what}"))
                ));
            }
            for t in &tasks {
                match states.get(&t.name) {
                    Some(state) => out.push_str(&format!(
                        "  {} [label={}, style=filled, fillcolor={}];\n",
                        q(&t.name),
                        q(&format!("{}\n{}\n{state}", t.name, t.detail)),
                        q(dot_fill(state))
                    )),
                    None => out.push_str(&format!(
                        "  {} [label={}];\n",
                        q(&t.name),
                        q(&format!("{}\n{}", t.name, t.detail))
                    )),
                }
            }
            for (name, _) in &triggers {
                for r in &roots {
                    out.push_str(&format!(
                        "  {} -> {};\n",
                        q(&format!("trigger:{name}")),
                        q(&r.name)
                    ));
                }
            }
            for t in &tasks {
                for d in &t.deps {
                    out.push_str(&format!("  {} -> {};\n", q(d), q(&t.name)));
                }
            }
            out.push_str("}\n");
            out
        }
    }
}
