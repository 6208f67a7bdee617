//! Stage 4: validation of resolved, templated specs: each spec's schema and
//! own rules, and the rules between specs, each family in its own module.
//! Every problem is collected; nothing stops at the first.

pub mod formats;
pub mod node_json;
pub mod pools;
pub mod refs;
pub mod schema_check;
pub mod workflow;

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::diagnostic::Diagnostics;
use crate::document::Kind;
use crate::resolve::{Resolved, ResolvedSpec};
use crate::schema::Schemas;

/// Names declared per kind, for reference checks.
pub struct Catalog<'a> {
    /// Topics by name.
    pub topics: BTreeMap<&'a str, &'a ResolvedSpec>,
    /// Concrete agents by name.
    pub agents: BTreeMap<&'a str, &'a ResolvedSpec>,
    /// Agent template names.
    pub agent_templates: BTreeSet<&'a str>,
    /// Pools by name.
    pub pools: BTreeMap<&'a str, &'a ResolvedSpec>,
}

impl<'a> Catalog<'a> {
    /// Indexes `specs`.
    pub fn new(specs: &'a [ResolvedSpec]) -> Catalog<'a> {
        let by = |kind: Kind| {
            specs
                .iter()
                .filter(move |s| s.kind == kind)
                .map(|s| (s.name.as_str(), s))
                .collect()
        };
        Catalog {
            topics: by(Kind::Topic),
            agents: by(Kind::Agent),
            agent_templates: specs
                .iter()
                .filter(|s| s.kind == Kind::AgentTemplate)
                .map(|s| s.name.as_str())
                .collect(),
            pools: by(Kind::ResourcePool),
        }
    }
}

/// Validates the project document, every environment document and every
/// resolved spec.
pub fn validate(resolved: &Resolved, diags: &mut Diagnostics) {
    let schemas = Schemas::get();
    schema_check::check(Kind::Project, &resolved.project.node, true, diags);
    formats::check(&resolved.project.node, schemas.cursor(Kind::Project), diags);
    for env in &resolved.environments {
        schema_check::check(Kind::Environment, &env.node, true, diags);
        formats::check(&env.node, schemas.cursor(Kind::Environment), diags);
    }
    // Each spec's own checks and the checks between specs are independent:
    // both run at once, the first spread over the cores by spec. Findings
    // keep this order: every spec's own, then those between specs.
    let (per_spec, between) = rayon::join(
        || {
            resolved
                .specs
                .par_iter()
                .with_min_len(64)
                .map(|spec| {
                    let mut found = Diagnostics::new();
                    schema_check::check(spec.kind, &spec.node, spec.complete, &mut found);
                    formats::check(&spec.node, schemas.cursor(spec.kind), &mut found);
                    refs::check_name(spec, &mut found);
                    refs::check_bounds(spec, &mut found);
                    refs::check_value_schema(spec, &mut found);
                    found
                })
                .collect::<Vec<Diagnostics>>()
        },
        || {
            let mut found = Diagnostics::new();
            check_between_specs(resolved, &mut found);
            found
        },
    );
    for found in per_spec {
        diags.extend(found);
    }
    diags.extend(between);
}

/// The checks that look across specs: references, workflows, pools.
fn check_between_specs(resolved: &Resolved, diags: &mut Diagnostics) {
    if resolved.incomplete {
        // Specs of files that failed to load are missing; every reference
        // to them would be reported as unknown.
        return;
    }
    let catalog = Catalog::new(&resolved.specs);
    refs::check_topics(&resolved.specs, &catalog, diags);
    refs::check_agents_and_policies(&resolved.specs, &catalog, diags);
    workflow::check(&resolved.specs, &catalog, diags);
    pools::check(&resolved.specs, diags);
}
