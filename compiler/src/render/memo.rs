//! What one render keeps for the next: each agent's inputs and the objects
//! rendered from them.
//!
//! `cortex diff` renders two revisions of one project, and most agents are
//! the same in both. An agent's objects are made from its inputs alone —
//! its resolved spec, the pool it runs in, the project facts
//! ([`super::agent::context`] takes nothing else) — and the templates. So
//! the second render compares each agent's inputs with the first render's
//! and, where they are the same value, takes the first render's objects
//! instead of rendering and checking them again. Nothing is guessed: the
//! values are compared whole, and an agent that differs in any field (or
//! any template, or any project fact) is rendered.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bundle::{Object, Project, Taken};
use crate::document::Kind;
use crate::resolve::ResolvedSpec;
use crate::runtime_text::section_of;

/// Each agent's inputs and objects from one render of a project; it
/// borrows that render's resolved specs.
pub struct Memo<'r, B> {
    /// The templates that render used (name and text of each).
    templates: Arc<Vec<(String, String)>>,
    /// Its project facts.
    project: Project,
    /// By agent name.
    agents: HashMap<&'r str, Kept<'r, B>>,
    /// The runtime entries of agents and workflows, with their specs, by
    /// kind and name (when the render's runtime config shares them).
    entries: HashMap<(Kind, &'r str), (&'r ResolvedSpec, Taken)>,
}

/// One agent as a render left it.
struct Kept<'r, B> {
    spec: &'r ResolvedSpec,
    pool: Option<&'r ResolvedSpec>,
    objects: Vec<Object<B>>,
}

impl<'r, B: Clone> Memo<'r, B> {
    /// An empty memo of a render made with `templates` for `project`.
    pub(super) fn new(templates: Arc<Vec<(String, String)>>, project: Project) -> Memo<'r, B> {
        Memo {
            templates,
            project,
            agents: HashMap::new(),
            entries: HashMap::new(),
        }
    }

    /// Whether a render with these templates and project facts can take
    /// objects from this memo.
    pub(super) fn same_setting(&self, templates: &[(String, String)], project: &Project) -> bool {
        self.templates.as_slice() == templates && self.project == *project
    }

    /// The objects of the agent `spec` (running in `pool`) when a render
    /// kept them for the same spec and pool, by value; none otherwise.
    pub(super) fn objects(
        &self,
        spec: &ResolvedSpec,
        pool: Option<&ResolvedSpec>,
    ) -> Option<Vec<Object<B>>> {
        let kept = self.agents.get(spec.name.as_str())?;
        let same_pool = match (kept.pool, pool) {
            (None, None) => true,
            (Some(a), Some(b)) => a.name == b.name && a.node.same_value(&b.node),
            _ => false,
        };
        let same_spec = kept.spec.file == spec.file && kept.spec.node.same_value(&spec.node);
        (same_pool && same_spec).then(|| kept.objects.clone())
    }

    /// Keeps the agent `spec`'s inputs and objects.
    pub(super) fn keep(
        &mut self,
        spec: &'r ResolvedSpec,
        pool: Option<&'r ResolvedSpec>,
        objects: Vec<Object<B>>,
    ) {
        self.agents.insert(
            spec.name.as_str(),
            Kept {
                spec,
                pool,
                objects,
            },
        );
    }

    /// Keeps the runtime entries of `specs` (agents and workflows) among
    /// `entries`.
    pub(super) fn keep_entries(&mut self, specs: &'r [ResolvedSpec], entries: Vec<Taken>) {
        let index: HashMap<(&str, &str), usize> = entries
            .iter()
            .enumerate()
            .map(|(i, (section, name, _))| ((*section, name.as_str()), i))
            .collect();
        for spec in specs {
            let Some(section) = section_of(spec.kind) else {
                continue;
            };
            if let Some(&i) = index.get(&(section, spec.name.as_str())) {
                let kept = (spec, entries[i].clone());
                self.entries.insert((spec.kind, spec.name.as_str()), kept);
            }
        }
    }

    /// The runtime entries of the agents and workflows among `specs` whose
    /// spec is the same value as when a render kept them.
    pub(super) fn taken_entries(&self, specs: &[ResolvedSpec]) -> Vec<Taken>
    where
        B: Sync,
    {
        use rayon::prelude::*;
        specs
            .par_iter()
            .with_min_len(64)
            .filter_map(|spec| {
                let (kept, entry) = self.entries.get(&(spec.kind, spec.name.as_str()))?;
                kept.node.same_value(&spec.node).then(|| entry.clone())
            })
            .collect()
    }

    /// How many agents it holds.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether it holds no agent.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}
