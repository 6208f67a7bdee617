//! Resource pool capacity: for every pool, the sum over its agents of
//! requests × maximum replicas must fit `cpu` and `memory`, and the sum of
//! maximum replicas must fit `agents`. Exactly at capacity fits.

use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use crate::document::Kind;
use crate::node::Node;
use crate::resolve::ResolvedSpec;
use crate::validate::formats::quantity_of;

/// One agent's share of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolMember {
    /// Agent name.
    pub agent: String,
    /// Most replicas it may run (HPA `maxReplicas`, else `replicas`, else 1).
    pub max_replicas: i64,
    /// CPU request per replica, in millicores.
    pub cpu_milli: i128,
    /// Memory request per replica, in milli-bytes (Kubernetes milli-units).
    pub memory_milli: i128,
}

/// A pool's capacity and the agents placed in it.
#[derive(Clone, Debug)]
pub struct PoolUsage {
    /// Pool name.
    pub pool: String,
    /// CPU capacity in millicores, when set.
    pub cpu_capacity: Option<i128>,
    /// Memory capacity in milli-bytes, when set.
    pub memory_capacity: Option<i128>,
    /// Agent-count capacity, when set.
    pub agents_capacity: Option<i64>,
    /// Cost per CPU-hour, when set.
    pub cost_per_cpu_hour: Option<f64>,
    /// The agents in the pool, by name.
    pub members: Vec<PoolMember>,
}

impl PoolUsage {
    /// Total CPU at maximum scale, in millicores.
    pub fn cpu_used(&self) -> i128 {
        self.members
            .iter()
            .map(|m| m.cpu_milli * i128::from(m.max_replicas))
            .sum()
    }

    /// Total memory at maximum scale, in milli-bytes.
    pub fn memory_used(&self) -> i128 {
        self.members
            .iter()
            .map(|m| m.memory_milli * i128::from(m.max_replicas))
            .sum()
    }

    /// Total replicas at maximum scale.
    pub fn agents_used(&self) -> i64 {
        self.members.iter().map(|m| m.max_replicas).sum()
    }
}

/// Most replicas an agent spec may run.
pub fn max_replicas(spec: &Node) -> i64 {
    spec.path(&["autoscaling", "maxReplicas"])
        .and_then(Node::as_i64)
        .or_else(|| spec.get("replicas").and_then(Node::as_i64))
        .unwrap_or(1)
}

/// Usage of every pool.
pub fn usage(specs: &[ResolvedSpec]) -> Vec<PoolUsage> {
    let mut pools: Vec<PoolUsage> = specs
        .iter()
        .filter(|s| s.kind == Kind::ResourcePool)
        .map(|s| {
            let cap = |k: &str| s.spec().and_then(|b| b.path(&["capacity", k]));
            PoolUsage {
                pool: s.name.clone(),
                cpu_capacity: cap("cpu").and_then(quantity_of),
                memory_capacity: cap("memory").and_then(quantity_of),
                agents_capacity: cap("agents").and_then(Node::as_i64),
                cost_per_cpu_hour: s
                    .spec()
                    .and_then(|b| b.get("costPerCpuHour"))
                    .and_then(|n| match n.value {
                        crate::node::Value::Float(f) => Some(f),
                        crate::node::Value::Int(i) => Some(i as f64),
                        _ => None,
                    }),
                members: Vec::new(),
            }
        })
        .collect();
    for agent in specs.iter().filter(|s| s.kind == Kind::Agent) {
        let Some(body) = agent.spec() else { continue };
        let Some(pool_name) = body.str_at(&["pool"]) else {
            continue;
        };
        let Some(pool) = pools.iter_mut().find(|p| p.pool == pool_name) else {
            continue;
        };
        let request = |k: &str| {
            body.path(&["resources", "requests", k])
                .and_then(quantity_of)
                .unwrap_or(0)
        };
        pool.members.push(PoolMember {
            agent: agent.name.clone(),
            max_replicas: max_replicas(body),
            cpu_milli: request("cpu"),
            memory_milli: request("memory"),
        });
    }
    for pool in &mut pools {
        pool.members.sort_by(|a, b| a.agent.cmp(&b.agent));
    }
    pools
}

/// Reports every pool whose agents could need more than its capacity.
pub fn check(specs: &[ResolvedSpec], diags: &mut Diagnostics) {
    for pool in usage(specs) {
        let mut over = Vec::new();
        if let Some(cap) = pool.cpu_capacity.filter(|c| pool.cpu_used() > *c) {
            over.push(format!(
                "cpu {} > {}",
                format_cpu(pool.cpu_used()),
                format_cpu(cap)
            ));
        }
        if let Some(cap) = pool.memory_capacity.filter(|c| pool.memory_used() > *c) {
            over.push(format!(
                "memory {} > {}",
                format_memory(pool.memory_used()),
                format_memory(cap)
            ));
        }
        if let Some(cap) = pool.agents_capacity.filter(|c| pool.agents_used() > *c) {
            over.push(format!("agents {} > {cap}", pool.agents_used()));
        }
        if over.is_empty() {
            continue;
        }
        let Some(spec) = specs
            .iter()
            .find(|s| s.kind == Kind::ResourcePool && s.name == pool.pool)
        else {
            continue;
        };
        let at = spec
            .spec()
            .and_then(|b| b.get("capacity"))
            .map_or(&spec.name_span, Node::span);
        diags.push(
            Diagnostic::error(
                codes::POOL_OVER_CAPACITY,
                format!(
                    "resource pool `{}` is over capacity: {}",
                    pool.pool,
                    over.join(", ")
                ),
            )
            .at(at)
            .label("capacity set here")
            .note(usage_table(&pool))
            .help(
                "raise the capacity, lower requests or maxReplicas, or move agents to another pool",
            ),
        );
    }
}

/// The usage table shown with an over-capacity error and by `cortex build`.
pub fn usage_table(pool: &PoolUsage) -> String {
    let mut rows = vec![[
        "agent".to_string(),
        "max replicas".to_string(),
        "cpu/replica".to_string(),
        "memory/replica".to_string(),
        "cpu".to_string(),
        "memory".to_string(),
    ]];
    for m in &pool.members {
        rows.push([
            m.agent.clone(),
            m.max_replicas.to_string(),
            format_cpu(m.cpu_milli),
            format_memory(m.memory_milli),
            format_cpu(m.cpu_milli * i128::from(m.max_replicas)),
            format_memory(m.memory_milli * i128::from(m.max_replicas)),
        ]);
    }
    rows.push([
        "total".into(),
        pool.agents_used().to_string(),
        String::new(),
        String::new(),
        format_cpu(pool.cpu_used()),
        format_memory(pool.memory_used()),
    ]);
    rows.push([
        "capacity".into(),
        pool.agents_capacity.map_or("-".into(), |c| c.to_string()),
        String::new(),
        String::new(),
        pool.cpu_capacity.map_or("-".into(), format_cpu),
        pool.memory_capacity.map_or("-".into(), format_memory),
    ]);
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!("usage of pool `{}` at maximum scale:\n", pool.pool);
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Millicores as Kubernetes writes them: `250m`, `2`, `2.5`.
pub fn format_cpu(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else if milli < 1000 {
        format!("{milli}m")
    } else {
        let s = format!("{:.3}", milli as f64 / 1000.0);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Milli-bytes as the largest binary unit that divides evenly (`512Mi`, `1Gi`).
pub fn format_memory(milli: i128) -> String {
    let bytes = milli / 1000;
    for (suffix, size) in [
        ("Ti", 1i128 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{suffix}", bytes / size);
        }
    }
    if bytes >= 1 << 30 {
        return format!("{:.2}Gi", bytes as f64 / (1u64 << 30) as f64);
    }
    bytes.to_string()
}
