//! A synthetic project of any size, for benchmarks and scale tests:
//! `agents` agents with three levels of inheritance (base template → one of
//! ten team templates → agent), `workflows` workflows of `tasks` tasks each
//! (every task fans in from the two before it), topics, pools and an
//! environment.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Shape of a generated project.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Number of agents.
    pub agents: usize,
    /// Number of workflows.
    pub workflows: usize,
    /// Tasks per workflow.
    pub tasks: usize,
}

impl Shape {
    /// The benchmark's shape: 2,000 agents, 500 workflows of 20 tasks.
    pub const BENCH: Shape = Shape {
        agents: 2_000,
        workflows: 500,
        tasks: 20,
    };
}

const AGENTS_PER_FILE: usize = 100;
const WORKFLOWS_PER_FILE: usize = 20;
const TEAMS: usize = 10;
const TOPICS: usize = 50;
const POOLS: usize = 4;

/// The project's files: path → content.
pub fn project(shape: Shape) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert(
        "cortex.yaml".to_string(),
        "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: generated }\nspec:\n  include: [\"templates/*.yaml\", \"agents/*.yaml\", \"workflows/*.yaml\", \"platform.yaml\"]\n  namespace: generated\n  values: { registry: registry.example.com/acme, logLevel: info }\n  environments: { prod: environments/prod.yaml }\n".to_string(),
    );
    let mut templates = String::from(
        "apiVersion: cortex.codevald.io/v1\nkind: AgentTemplate\nmetadata: { name: base }\nspec:\n  image: \"{{ values.registry }}/agent-runtime:1.4.2\"\n  resources:\n    requests: { cpu: 100m, memory: 128Mi }\n    limits: { cpu: 500m, memory: 256Mi }\n  env:\n    - { name: LOG_LEVEL, value: \"{{ values.logLevel }}\" }\n    - { name: REGION, value: eu }\n  ports: [{ name: http, port: 8080 }]\n  health:\n    check: { http: { path: /healthz, port: http } }\n    interval: 10s\n    timeout: 2s\n    failureThreshold: 3\n",
    );
    for team in 0..TEAMS {
        let _ = write!(
            templates,
            "---\napiVersion: cortex.codevald.io/v1\nkind: AgentTemplate\nmetadata: {{ name: team-{team} }}\nspec:\n  extends: base\n  env:\n    - {{ name: TEAM, value: team-{team} }}\n    - {{ name: REGION, $patch: delete }}\n  messaging: {{ inbox: {{ capacity: 512 }} }}\n"
        );
    }
    templates.push_str("---\napiVersion: cortex.codevald.io/v1\nkind: WorkflowTemplate\nmetadata: { name: with-retries }\nspec:\n  defaults:\n    timeout: 60s\n    retries: { limit: 3, backoff: { initial: 1s, max: 30s, multiplier: 2.0 } }\n  concurrency: 10\n");
    files.insert("templates/templates.yaml".to_string(), templates);

    let mut platform = String::new();
    for t in 0..TOPICS {
        let _ = write!(
            platform,
            "---\napiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: {{ name: topic.t{t} }}\nspec: {{ ordering: per-key, retention: 7d, delivery: {{ maxAttempts: 5, ackTimeout: 30s }} }}\n"
        );
    }
    let per_pool = shape.agents.div_ceil(POOLS).max(1);
    for p in 0..POOLS {
        let _ = write!(
            platform,
            "---\napiVersion: cortex.codevald.io/v1\nkind: ResourcePool\nmetadata: {{ name: pool-{p} }}\nspec:\n  capacity: {{ cpu: \"{}\", memory: {}Gi, agents: {} }}\n  costPerCpuHour: 0.04\n",
            per_pool,
            per_pool,
            per_pool * 2
        );
    }
    files.insert("platform.yaml".to_string(), platform);

    for chunk in 0..shape.agents.div_ceil(AGENTS_PER_FILE) {
        let mut text = String::new();
        for a in chunk * AGENTS_PER_FILE..((chunk + 1) * AGENTS_PER_FILE).min(shape.agents) {
            let _ = write!(
                text,
                "---\napiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {{ name: agent-{a}, labels: {{ team: team-{} }} }}\nspec:\n  extends: team-{}\n  replicas: 2\n  pool: pool-{}\n  env:\n    - {{ name: MODEL, value: m{} }}\n  subscribe: [topic.t{}]\n  publish: [topic.t{}]\n  config:\n    prompt: \"Agent {a}: answer as {{{{ json }}}}\"\n",
                a % TEAMS,
                a % TEAMS,
                a / per_pool,
                a % 7,
                a % TOPICS,
                (a + 1) % TOPICS
            );
        }
        files.insert(format!("agents/agents-{chunk:03}.yaml"), text);
    }

    for chunk in 0..shape.workflows.div_ceil(WORKFLOWS_PER_FILE) {
        let mut text = String::new();
        for w in chunk * WORKFLOWS_PER_FILE..((chunk + 1) * WORKFLOWS_PER_FILE).min(shape.workflows)
        {
            let _ = write!(
                text,
                "---\napiVersion: cortex.codevald.io/v1\nkind: Workflow\nmetadata: {{ name: flow-{w} }}\nspec:\n  extends: with-retries\n  triggers:\n    - {{ name: on-message, topic: topic.t{} }}\n  tasks:\n",
                w % TOPICS
            );
            for t in 0..shape.tasks {
                let agent = (w * shape.tasks + t) % shape.agents.max(1);
                let deps: Vec<String> = (t.saturating_sub(2)..t).map(|d| format!("t{d}")).collect();
                let input = if t == 0 {
                    "\"$(trigger.payload)\"".to_string()
                } else {
                    format!("\"$(tasks.t{}.output.result)\"", t - 1)
                };
                let _ = writeln!(
                    text,
                    "    - {{ name: t{t}, agent: agent-{agent}, dependsOn: [{}], input: {{ value: {input} }} }}",
                    deps.join(", ")
                );
            }
        }
        files.insert(format!("workflows/workflows-{chunk:03}.yaml"), text);
    }
    files.insert(
        "environments/prod.yaml".to_string(),
        "apiVersion: cortex.codevald.io/v1\nkind: Environment\nmetadata: { name: prod }\nspec:\n  namespace: generated-prod\n  values: { logLevel: warn }\n  patches:\n    - { target: agenttemplate/base, patch: { replicas: 3 } }\n".to_string(),
    );
    files
}

/// The project with `count` agents changed (spread evenly over the
/// project): each gets another model and another prompt. For benchmarks of
/// diffs between two revisions.
pub fn with_changed_agents(shape: Shape, count: usize) -> BTreeMap<String, String> {
    let mut files = project(shape);
    let step = (shape.agents / count.max(1)).max(1);
    for a in (0..shape.agents).step_by(step).take(count) {
        let path = format!("agents/agents-{:03}.yaml", a / AGENTS_PER_FILE);
        let Some(text) = files.get_mut(&path) else {
            continue;
        };
        let Some(start) = text.find(&format!("name: agent-{a},")) else {
            continue;
        };
        let end = text[start..].find("---").map_or(text.len(), |e| start + e);
        let agent = text[start..end]
            .replacen("value: m", "value: large-m", 1)
            .replacen(": answer as", ": reply as", 1);
        text.replace_range(start..end, &agent);
    }
    files
}

/// The project as an in-memory source.
pub fn memory_source(shape: Shape) -> cortex_compiler::MemorySource {
    let mut source = cortex_compiler::MemorySource::new();
    for (path, content) in project(shape) {
        source.insert(path, content);
    }
    source
}

/// Writes the project under `dir`.
pub fn write_to(shape: Shape, dir: &std::path::Path) -> std::io::Result<()> {
    write_files(&project(shape), dir)
}

/// Writes project files (path → content) under `dir`.
pub fn write_files(files: &BTreeMap<String, String>, dir: &std::path::Path) -> std::io::Result<()> {
    for (path, content) in files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, content)?;
    }
    Ok(())
}
