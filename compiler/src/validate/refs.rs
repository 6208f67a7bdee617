//! References between specs: topics, pools, agents, roles, ports, and the
//! names that become Kubernetes objects.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Diagnostic, Diagnostics, codes, did_you_mean};
use crate::document::Kind;
use crate::node::Node;
use crate::resolve::ResolvedSpec;
use crate::validate::Catalog;
use crate::validate::formats::check_dns;

/// Checks a spec's `metadata.name` against the rules of its kind.
pub fn check_name(spec: &ResolvedSpec, diags: &mut Diagnostics) {
    let dotted = matches!(
        spec.kind,
        Kind::Topic | Kind::Workflow | Kind::WorkflowTemplate | Kind::State
    );
    if spec.kind == Kind::State && spec.name == "agents" {
        diags.push(
            Diagnostic::error(codes::RESERVED_NAME, "a State may not be called `agents`")
                .at(&spec.name_span)
                .label("`agents/NAME` is the scope each agent owns")
                .help("choose another name, e.g. `agent-notes`"),
        );
    }
    let (max, rule) = if dotted {
        (253, "a DNS-1123 subdomain")
    } else {
        (63, "a DNS-1123 label")
    };
    if let Err(why) = check_dns(&spec.name, max, dotted) {
        diags.push(
            Diagnostic::error(
                codes::BAD_NAME,
                format!("invalid {} name `{}`", spec.kind, spec.name),
            )
            .at(&spec.name_span)
            .label(why)
            .help(format!("{} names must be {rule}", spec.kind)),
        );
    }
}

/// Topics named by agents, topics and workflow triggers must be declared.
pub fn check_topics(specs: &[ResolvedSpec], catalog: &Catalog<'_>, diags: &mut Diagnostics) {
    for spec in specs {
        let Some(body) = spec.spec() else { continue };
        match spec.kind {
            Kind::Agent | Kind::AgentTemplate => {
                for field in ["subscribe", "publish"] {
                    for topic in body.get(field).and_then(Node::as_seq).unwrap_or_default() {
                        unknown_topic(topic, catalog, &format!("in `{field}`"), diags);
                    }
                }
            }
            Kind::Topic => {
                if let Some(dead) = body.get("deadLetter") {
                    if dead.as_str() == Some(spec.name.as_str()) {
                        diags.push(
                            Diagnostic::error(
                                codes::DEAD_LETTER_SELF,
                                format!("topic `{}` dead-letters to itself", spec.name),
                            )
                            .at(dead.span())
                            .help(
                                "declare a separate topic, e.g. `{name}.dead`"
                                    .replace("{name}", &spec.name),
                            ),
                        );
                    } else {
                        unknown_topic(dead, catalog, "used as dead-letter topic", diags);
                    }
                }
            }
            Kind::Workflow | Kind::WorkflowTemplate => {
                for trigger in body
                    .get("triggers")
                    .and_then(Node::as_seq)
                    .unwrap_or_default()
                {
                    if let Some(topic) = trigger.get("topic") {
                        unknown_topic(topic, catalog, "used as trigger", diags);
                    }
                }
            }
            _ => {}
        }
    }
}

fn unknown_topic(node: &Node, catalog: &Catalog<'_>, context: &str, diags: &mut Diagnostics) {
    let Some(name) = node.as_str() else { return };
    if catalog.topics.contains_key(name) {
        return;
    }
    diags.push(
        Diagnostic::error(codes::UNKNOWN_TOPIC, format!("unknown topic `{name}`"))
            .at(node.span())
            .label(format!("no Topic has this name ({context})"))
            .help(
                did_you_mean(name, catalog.topics.keys().copied()).unwrap_or_else(|| {
                    format!("declare it: `kind: Topic`, `metadata: {{ name: {name} }}`")
                }),
            ),
    );
}

/// Agent pools, health-check ports, policy roles and alert targets.
pub fn check_agents_and_policies(
    specs: &[ResolvedSpec],
    catalog: &Catalog<'_>,
    diags: &mut Diagnostics,
) {
    for spec in specs {
        let Some(body) = spec.spec() else { continue };
        match spec.kind {
            Kind::Agent | Kind::AgentTemplate => {
                if let Some(pool) = body.get("pool")
                    && let Some(name) = pool.as_str().filter(|n| !catalog.pools.contains_key(n))
                {
                    diags.push(
                        Diagnostic::error(
                            codes::UNKNOWN_POOL,
                            format!("unknown resource pool `{name}`"),
                        )
                        .at(pool.span())
                        .maybe_help(did_you_mean(name, catalog.pools.keys().copied())),
                    );
                }
                check_health_port(spec, body, diags);
            }
            Kind::AccessPolicy => {
                let roles: BTreeSet<&str> = body
                    .get("roles")
                    .and_then(Node::as_seq)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| r.str_at(&["name"]))
                    .collect();
                for binding in body
                    .get("bindings")
                    .and_then(Node::as_seq)
                    .unwrap_or_default()
                {
                    let Some(role) = binding.get("role") else {
                        continue;
                    };
                    if let Some(name) = role.as_str().filter(|n| !roles.contains(n)) {
                        diags.push(
                            Diagnostic::error(
                                codes::UNKNOWN_ROLE,
                                format!("binding to unknown role `{name}`"),
                            )
                            .at(role.span())
                            .help(
                                did_you_mean(name, roles.iter().copied()).unwrap_or_else(|| {
                                    format!(
                                        "roles of this policy: {}",
                                        roles.iter().copied().collect::<Vec<_>>().join(", ")
                                    )
                                }),
                            ),
                        );
                    }
                }
            }
            Kind::State => {
                for field in ["readers", "writers"] {
                    for agent in body.get(field).and_then(Node::as_seq).unwrap_or_default() {
                        let Some(name) = agent.as_str().filter(|n| !catalog.agents.contains_key(n))
                        else {
                            continue;
                        };
                        diags.push(
                            Diagnostic::error(
                                codes::UNKNOWN_AGENT,
                                format!("unknown agent `{name}` in `{field}`"),
                            )
                            .at(agent.span())
                            .label("no Agent has this name")
                            .maybe_help(did_you_mean(name, catalog.agents.keys().copied())),
                        );
                    }
                }
            }
            Kind::AlertRule => {
                if let Some(agent) = body.path(&["when", "agent"])
                    && let Some(name) = agent.as_str().filter(|n| !catalog.agents.contains_key(n))
                {
                    diags.push(
                        Diagnostic::error(
                            codes::UNKNOWN_AGENT,
                            format!("alert on unknown agent `{name}`"),
                        )
                        .at(agent.span())
                        .maybe_help(did_you_mean(name, catalog.agents.keys().copied())),
                    );
                }
            }
            _ => {}
        }
    }
}

fn check_health_port(spec: &ResolvedSpec, body: &Node, diags: &mut Diagnostics) {
    let Some(check) = body.path(&["health", "check"]) else {
        return;
    };
    let port = check
        .path(&["http", "port"])
        .or_else(|| check.path(&["tcp", "port"]));
    let Some(port) = port else { return };
    let Some(name) = port.as_str() else { return };
    let ports: BTreeMap<&str, &Node> = body
        .get("ports")
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p.str_at(&["name"])?, p)))
        .collect();
    if !ports.contains_key(name) && spec.kind == Kind::Agent {
        diags.push(
            Diagnostic::error(codes::UNKNOWN_PORT, format!("health check uses port `{name}`, which the agent does not declare"))
                .at(port.span())
                .help(did_you_mean(name, ports.keys().copied()).unwrap_or_else(|| {
                    format!("declare it under `ports` (`- {{ name: {name}, port: 8080 }}`) or use a port number")
                })),
        );
    }
}

/// Lower bounds above upper bounds in a spec.
pub fn check_bounds(spec: &ResolvedSpec, diags: &mut Diagnostics) {
    use crate::validate::formats::parse_duration_ms;
    let Some(body) = spec.spec() else { return };
    if let (Some(min), Some(max)) = (
        body.path(&["autoscaling", "minReplicas"]),
        body.path(&["autoscaling", "maxReplicas"]),
    ) && let (Some(lo), Some(hi)) = (min.as_i64(), max.as_i64())
        && lo > hi
    {
        diags.push(
            Diagnostic::error(
                codes::BAD_RANGE,
                format!("`minReplicas` ({lo}) is above `maxReplicas` ({hi})"),
            )
            .at(min.span())
            .with_label(max.span(), "maximum set here"),
        );
    }
    let mut backoffs: Vec<&Node> = Vec::new();
    collect_backoffs(body, &mut backoffs);
    for backoff in backoffs {
        let parse = |k: &str| {
            backoff
                .get(k)
                .and_then(|n| Some((n, parse_duration_ms(n.as_str()?).ok()?)))
        };
        if let (Some((initial, lo)), Some((max, hi))) = (parse("initial"), parse("max"))
            && lo > hi
        {
            diags.push(
                Diagnostic::error(
                    codes::BAD_RANGE,
                    "backoff `initial` is longer than its `max`",
                )
                .at(initial.span())
                .with_label(max.span(), "maximum set here"),
            );
        }
    }
}

fn collect_backoffs<'a>(node: &'a Node, out: &mut Vec<&'a Node>) {
    if let Some(map) = node.as_map() {
        for entry in map {
            if entry.key == "backoff" {
                out.push(&entry.value);
            } else {
                collect_backoffs(&entry.value, out);
            }
        }
    } else if let Some(items) = node.as_seq() {
        items.iter().for_each(|i| collect_backoffs(i, out));
    }
}

/// A Topic's and a State's `schema` must compile: the runtime validates
/// every payload or value against it.
pub fn check_value_schema(spec: &ResolvedSpec, diags: &mut Diagnostics) {
    if !matches!(spec.kind, Kind::Topic | Kind::State) {
        return;
    }
    let Some(schema) = spec.spec().and_then(|b| b.get("schema")) else {
        return;
    };
    if let Err(e) = jsonschema::validator_for(&schema.to_json()) {
        // Point at the part of the schema that is wrong.
        let at = schema.pointer(e.instance_path().as_str()).unwrap_or(schema);
        diags.push(
            Diagnostic::error(
                codes::BAD_JSON_SCHEMA,
                format!(
                    "the `schema` of {} `{}` does not compile",
                    spec.kind, spec.name
                ),
            )
            .at(at.span())
            .label(e.to_string())
            .help("write a JSON Schema of draft 2020-12 (the runtime validates with it)"),
        );
    }
}
