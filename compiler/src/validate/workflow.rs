//! Workflow DAGs: task references, cycles, agents, exactly-one-variant
//! tasks and triggers, and runtime references `$(…)` in task inputs.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::diagnostic::{Diagnostic, Diagnostics, codes, did_you_mean};
use crate::document::Kind;
use crate::node::{Node, Value};
use crate::resolve::ResolvedSpec;
use crate::validate::Catalog;
use crate::validate::schema_check::union_diagnostic;

/// A workflow's tasks with their dependencies, by name.
pub struct Dag<'a> {
    /// Task nodes by name.
    pub tasks: BTreeMap<&'a str, &'a Node>,
    /// `dependsOn` of each task as written, names that are no task included.
    pub deps: BTreeMap<&'a str, Vec<&'a str>>,
    /// Task names in name order: a task's index in [`TaskSet`]s and `edges`.
    names: Vec<&'a str>,
    /// Each task's distinct dependencies that are tasks, as indices.
    edges: Vec<Vec<usize>>,
}

impl<'a> Dag<'a> {
    /// Every task the given task transitively depends on.
    pub fn ancestors(&self, task: &str) -> TaskSet<'_, 'a> {
        let mut set = TaskSet {
            dag: self,
            bits: vec![0; self.names.len().div_ceil(64)],
        };
        let mut stack: Vec<usize> = self
            .index(task)
            .map(|i| self.edges[i].clone())
            .unwrap_or_default();
        while let Some(t) = stack.pop() {
            if set.insert(t) {
                stack.extend_from_slice(&self.edges[t]);
            }
        }
        set
    }

    /// The tasks in an order where each comes after its dependencies
    /// (Kahn's algorithm, ties broken by name so the order is stable).
    /// Tasks on a cycle, and those depending on one, are left out.
    pub fn topological_order(&self) -> Vec<&'a str> {
        let mut remaining: Vec<usize> = self.edges.iter().map(Vec::len).collect();
        let mut dependents = vec![Vec::new(); self.names.len()];
        for (task, deps) in self.edges.iter().enumerate() {
            for &dep in deps {
                dependents[dep].push(task);
            }
        }
        // Indices follow names, so the smallest ready index is the first name.
        let mut ready: BTreeSet<usize> = (0..self.names.len())
            .filter(|&t| remaining[t] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.names.len());
        while let Some(task) = ready.pop_first() {
            order.push(self.names[task]);
            for &other in &dependents[task] {
                remaining[other] -= 1;
                if remaining[other] == 0 {
                    ready.insert(other);
                }
            }
        }
        order
    }

    fn index(&self, task: &str) -> Option<usize> {
        self.names.binary_search(&task).ok()
    }

    /// A cycle of `dependsOn`, if any, as task names (first repeated last).
    pub fn find_cycle(&self) -> Option<Vec<&'a str>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> = self.tasks.keys().map(|k| (*k, Mark::New)).collect();
        fn visit<'a>(
            dag: &Dag<'a>,
            task: &'a str,
            marks: &mut BTreeMap<&'a str, Mark>,
            path: &mut Vec<&'a str>,
        ) -> Option<Vec<&'a str>> {
            match marks.get(task).copied() {
                Some(Mark::Done) | None => return None,
                Some(Mark::Open) => {
                    let from = path.iter().position(|t| *t == task).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(task);
                    return Some(cycle);
                }
                Some(Mark::New) => {}
            }
            marks.insert(task, Mark::Open);
            path.push(task);
            for &dep in dag.deps.get(task).into_iter().flatten() {
                if let Some(cycle) = visit(dag, dep, marks, path) {
                    return Some(cycle);
                }
            }
            path.pop();
            marks.insert(task, Mark::Done);
            None
        }
        let names: Vec<&str> = self.tasks.keys().copied().collect();
        for name in names {
            if let Some(cycle) = visit(self, name, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
        None
    }
}

/// A set of one workflow's tasks, one bit per task in name order.
pub struct TaskSet<'d, 'a> {
    dag: &'d Dag<'a>,
    bits: Vec<u64>,
}

impl<'a> TaskSet<'_, 'a> {
    /// Whether the set holds the task of that name.
    pub fn contains(&self, task: &str) -> bool {
        self.dag.index(task).is_some_and(|i| self.has(i))
    }

    /// The names in the set, in name order.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.dag
            .names
            .iter()
            .enumerate()
            .filter(|(i, _)| self.has(*i))
            .map(|(_, name)| *name)
    }

    fn has(&self, i: usize) -> bool {
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// Adds task `i`; false if it was there.
    fn insert(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }
}

/// Builds the DAG of a workflow spec.
pub fn dag(spec: &Node) -> Dag<'_> {
    let mut tasks = BTreeMap::new();
    let mut deps = BTreeMap::new();
    for task in spec.get("tasks").and_then(Node::as_seq).unwrap_or_default() {
        let Some(name) = task.str_at(&["name"]) else {
            continue;
        };
        tasks.insert(name, task);
        let list: Vec<&str> = task
            .get("dependsOn")
            .and_then(Node::as_seq)
            .unwrap_or_default()
            .iter()
            .filter_map(Node::as_str)
            .collect();
        deps.insert(name, list);
    }
    let names: Vec<&str> = tasks.keys().copied().collect();
    let edges = deps
        .values()
        .map(|list| {
            let mut ids: Vec<usize> = list
                .iter()
                .filter_map(|d| names.binary_search(d).ok())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect();
    Dag {
        tasks,
        deps,
        names,
        edges,
    }
}

/// Checks every Workflow.
pub fn check(specs: &[ResolvedSpec], catalog: &Catalog<'_>, diags: &mut Diagnostics) {
    // Workflows are checked independently: spread them over the cores;
    // their findings keep spec order.
    let workflows: Vec<&ResolvedSpec> = specs.iter().filter(|s| s.kind == Kind::Workflow).collect();
    let found: Vec<Diagnostics> = workflows
        .par_iter()
        .with_min_len(8)
        .map(|spec| {
            let mut found = Diagnostics::new();
            check_workflow(spec, catalog, &mut found);
            found
        })
        .collect();
    for found in found {
        diags.extend(found);
    }
}

/// Checks one workflow: task variants, dependencies, cycles and the
/// references of task inputs.
fn check_workflow(spec: &ResolvedSpec, catalog: &Catalog<'_>, diags: &mut Diagnostics) {
    let Some(body) = spec.spec() else { return };
    check_variants(body, diags);
    let dag = dag(body);
    for (name, task) in &dag.tasks {
        for dep in task
            .get("dependsOn")
            .and_then(Node::as_seq)
            .unwrap_or_default()
        {
            let Some(dep_name) = dep.as_str() else {
                continue;
            };
            if !dag.tasks.contains_key(dep_name) {
                diags.push(
                    Diagnostic::error(
                        codes::UNKNOWN_TASK,
                        format!(
                            "task `{name}` depends on `{dep_name}`, which is not a task of {}",
                            spec.id()
                        ),
                    )
                    .at(dep.span())
                    .maybe_help(did_you_mean(
                        dep_name,
                        dag.tasks.keys().copied().filter(|t| t != name),
                    )),
                );
            } else if dep_name == *name {
                diags.push(
                    Diagnostic::error(
                        codes::WORKFLOW_CYCLE,
                        format!("task `{name}` depends on itself"),
                    )
                    .at(dep.span())
                    .help("remove it from its own `dependsOn`"),
                );
            }
        }
        if let Some(agent) = task.get("agent")
            && let Some(agent_name) = agent.as_str().filter(|a| !catalog.agents.contains_key(a))
        {
            let is_template = catalog.agent_templates.contains(agent_name);
            diags.push(
                Diagnostic::error(
                    codes::UNKNOWN_AGENT,
                    format!("task `{name}` sends to unknown agent `{agent_name}`"),
                )
                .at(agent.span())
                .label(if is_template {
                    "this is an AgentTemplate, which does not run"
                } else {
                    "no Agent has this name"
                })
                .maybe_help(did_you_mean(agent_name, catalog.agents.keys().copied())),
            );
        }
    }
    if let Some(cycle) = dag.find_cycle().filter(|c| c.len() > 2) {
        let first = dag.tasks[cycle[0]];
        let mut diag = Diagnostic::error(
            codes::WORKFLOW_CYCLE,
            format!("cycle in workflow `{}`: {}", spec.name, cycle.join(" → ")),
        )
        .at(first.get("dependsOn").map_or(first.span(), Node::span))
        .label(format!("`{}` depends on `{}`", cycle[0], cycle[1]))
        .help("remove one of these `dependsOn` links");
        for pair in cycle.windows(2).skip(1) {
            if let Some(deps) = dag.tasks[pair[0]].get("dependsOn") {
                diag = diag.with_label(
                    deps.span(),
                    format!("`{}` depends on `{}`", pair[0], pair[1]),
                );
            }
        }
        diags.push(diag);
    }
    let has_trigger = body
        .get("triggers")
        .and_then(Node::as_seq)
        .is_some_and(|t| !t.is_empty());
    for (name, task) in &dag.tasks {
        if dag.deps[name].iter().any(|d| !dag.tasks.contains_key(d)) {
            continue; // its unknown dependency is reported already
        }
        if let Some(input) = task.get("input") {
            let ancestors = dag.ancestors(name);
            check_references(input, name, &dag, &ancestors, has_trigger, diags);
        }
    }
}

fn check_variants(body: &Node, diags: &mut Diagnostics) {
    for (list, variants, what) in [
        ("tasks", &["agent", "run"][..], "task"),
        ("triggers", &["topic", "schedule", "manual"][..], "trigger"),
    ] {
        for (i, item) in body
            .get(list)
            .and_then(Node::as_seq)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let Some(map) = item.as_map() else { continue };
            let set = variants.iter().filter(|v| map.get(v).is_some()).count();
            // Several variants are reported by the generic union check.
            if set == 0 {
                let name = item.str_at(&["name"]).unwrap_or("?");
                diags.push(union_diagnostic(
                    item,
                    &format!("/spec/{list}/{i}"),
                    &format!("{what} `{name}`"),
                    variants,
                ));
            }
        }
    }
}

/// A runtime reference found in a string.
#[derive(Debug, PartialEq, Eq)]
pub enum RuntimeRef<'s> {
    /// `$(trigger…)`.
    Trigger,
    /// `$(tasks.NAME.output…)`.
    TaskOutput(&'s str),
}

/// Parses every `$(…)` of `s`; `Err` holds the malformed expression.
pub fn runtime_refs(s: &str) -> Vec<Result<RuntimeRef<'_>, &str>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("$(") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            out.push(Err(&rest[start..]));
            break;
        };
        let expr = after[..end].trim();
        let parsed = if expr == "trigger.payload"
            || expr.starts_with("trigger.payload.")
            || expr == "trigger.name"
        {
            Ok(RuntimeRef::Trigger)
        } else if let Some(tail) = expr.strip_prefix("tasks.") {
            match tail.split_once('.') {
                Some((task, field))
                    if !task.is_empty() && (field == "output" || field.starts_with("output.")) =>
                {
                    Ok(RuntimeRef::TaskOutput(task))
                }
                _ => Err(expr),
            }
        } else {
            Err(expr)
        };
        out.push(parsed);
        rest = &after[end + 1..];
    }
    out
}

fn check_references(
    input: &Node,
    task: &str,
    dag: &Dag<'_>,
    ancestors: &TaskSet<'_, '_>,
    has_trigger: bool,
    diags: &mut Diagnostics,
) {
    match &input.value {
        Value::Str(s) => {
            for reference in runtime_refs(s) {
                match reference {
                    Err(expr) => diags.push(
                        Diagnostic::error(codes::BAD_RUNTIME_REF, format!("malformed runtime reference `$({expr})`"))
                            .at(input.span())
                            .help("write `$(trigger.payload…)`, `$(trigger.name)` or `$(tasks.NAME.output…)`"),
                    ),
                    Ok(RuntimeRef::Trigger) if !has_trigger => diags.push(
                        Diagnostic::error(codes::NO_TRIGGER, format!("task `{task}` reads `$(trigger…)` but the workflow has no trigger"))
                            .at(input.span())
                            .help("add a trigger (topic, schedule or manual) to the workflow"),
                    ),
                    Ok(RuntimeRef::TaskOutput(other)) if !dag.tasks.contains_key(other) => diags.push(
                        Diagnostic::error(codes::UNKNOWN_TASK, format!("task `{task}` reads the output of unknown task `{other}`"))
                            .at(input.span())
                            .maybe_help(did_you_mean(other, dag.tasks.keys().copied())),
                    ),
                    Ok(RuntimeRef::TaskOutput(other)) if !ancestors.contains(other) => diags.push(
                        Diagnostic::error(codes::NOT_AN_ANCESTOR, format!("task `{task}` reads the output of `{other}`, which is not one of its ancestors"))
                            .at(input.span())
                            .label(format!("`{other}` may not have finished when `{task}` starts"))
                            .help(format!("add `{other}` to the `dependsOn` of `{task}`")),
                    ),
                    Ok(_) => {}
                }
            }
        }
        Value::Seq(items) => items
            .iter()
            .for_each(|i| check_references(i, task, dag, ancestors, has_trigger, diags)),
        Value::Map(map) => map
            .iter()
            .for_each(|e| check_references(&e.value, task, dag, ancestors, has_trigger, diags)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtime_references() {
        assert_eq!(
            runtime_refs("$(trigger.payload)"),
            vec![Ok(RuntimeRef::Trigger)]
        );
        assert_eq!(
            runtime_refs("a $(tasks.classify.output.category) b $(trigger.name)"),
            vec![
                Ok(RuntimeRef::TaskOutput("classify")),
                Ok(RuntimeRef::Trigger)
            ]
        );
        assert_eq!(runtime_refs("$(tasks.x)"), vec![Err("tasks.x")]);
        assert_eq!(runtime_refs("$(env.HOME)"), vec![Err("env.HOME")]);
        assert_eq!(
            runtime_refs("$(trigger.payload"),
            vec![Err("$(trigger.payload")]
        );
        assert!(runtime_refs("no references").is_empty());
    }

    /// The old walks over names, kept as the reference the indexed ones
    /// must agree with.
    fn ancestors_by_name<'a>(dag: &Dag<'a>, task: &str) -> BTreeSet<&'a str> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<&str> = dag.deps.get(task).cloned().unwrap_or_default();
        while let Some(t) = stack.pop() {
            if let Some((name, _)) = dag.tasks.get_key_value(t)
                && out.insert(*name)
            {
                stack.extend(dag.deps.get(t).cloned().unwrap_or_default());
            }
        }
        out
    }

    fn order_by_name<'a>(dag: &Dag<'a>) -> Vec<&'a str> {
        let mut remaining: BTreeMap<&str, usize> = dag
            .tasks
            .keys()
            .map(|t| {
                (
                    *t,
                    dag.deps[t]
                        .iter()
                        .filter(|d| dag.tasks.contains_key(*d))
                        .count(),
                )
            })
            .collect();
        let mut ready: BTreeSet<&str> = remaining
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(t, _)| *t)
            .collect();
        let mut order = Vec::new();
        while let Some(task) = ready.pop_first() {
            remaining.remove(task);
            order.push(task);
            for (other, deps) in &dag.deps {
                if deps.contains(&task)
                    && let Some(n) = remaining.get_mut(other)
                {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(other);
                    }
                }
            }
        }
        order
    }

    proptest::proptest! {
        /// Over random graphs (past one 64-task word, with cycles, self
        /// links and unknown names), the indexed ancestors and order equal
        /// the walks over names.
        #[test]
        fn indexed_walks_agree_with_walks_by_name(
            deps in proptest::collection::vec(
                proptest::collection::btree_set(0usize..90, 0..5),
                1..80,
            )
        ) {
            let mut text = String::from("tasks:\n");
            for (i, list) in deps.iter().enumerate() {
                let names: Vec<String> = list.iter().map(|d| format!("t{d}")).collect();
                text.push_str(&format!("  - name: t{i}\n    dependsOn: [{}]\n", names.join(", ")));
            }
            let docs = crate::yaml::parse(&std::sync::Arc::from("w.yaml"), &text).unwrap();
            let dag = dag(&docs[0]);
            for name in dag.tasks.keys() {
                let indexed = dag.ancestors(name);
                let expected = ancestors_by_name(&dag, name);
                proptest::prop_assert_eq!(indexed.names().collect::<BTreeSet<_>>(), expected.clone());
                proptest::prop_assert!(indexed.names().is_sorted());
                for other in dag.tasks.keys().chain([&"t95"]) {
                    proptest::prop_assert_eq!(indexed.contains(other), expected.contains(other));
                }
            }
            proptest::prop_assert_eq!(dag.topological_order(), order_by_name(&dag));
        }
    }
}
