//! The catalogue of diagnostic codes: each code's title and explanation.
//!
//! Codes are stable: tools and CI logs may match on them. `cortex explain-code
//! CODE` prints the explanation; docs/diagnostics.md lists them all.

use std::fmt;

use serde::{Serialize, Serializer};

/// A diagnostic code such as `CX0201`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(pub &'static str);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// A code with its title and explanation.
#[derive(Clone, Copy, Debug)]
pub struct CodeInfo {
    /// The code.
    pub code: Code,
    /// Short title.
    pub title: &'static str,
    /// What it means and how to fix it.
    pub explanation: &'static str,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $title:literal, $explanation:literal;)*) => {
        $(
            #[doc = $title]
            pub const $name: Code = Code($code);
        )*
        /// Every code, in order.
        pub const ALL: &[CodeInfo] = &[
            $(CodeInfo { code: $name, title: $title, explanation: $explanation },)*
        ];
    };
}

codes! {
    FILE_UNREADABLE = "CX0101", "file cannot be read",
        "A file named by the project (the project file, an `include` match or an environment file) does not exist or cannot be read. Check the path; paths are relative to the directory that holds `cortex.yaml`.";
    NOT_UTF8 = "CX0102", "file is not UTF-8",
        "Spec files must be UTF-8 text. Re-save the file as UTF-8 (without a byte-order mark is best).";
    YAML_SYNTAX = "CX0103", "YAML syntax error",
        "The file is not valid YAML. The caret points at where the parser gave up; the mistake is often just before it (indentation, an unclosed quote or bracket, a tab used for indentation).";
    DUPLICATE_KEY = "CX0104", "duplicate key",
        "A mapping names the same key twice. YAML forbids it and most tools silently keep the last one, which hides mistakes; cortex refuses it. Remove one of the two.";
    ALIAS_LIMIT = "CX0105", "YAML alias expansion too large",
        "Anchors and aliases (`&a`, `*a`) expanded to more nodes than cortex allows. This is how a \"billion laughs\" file exhausts memory. Write the values out, or use `extends` to share them.";
    FILE_TOO_LARGE = "CX0106", "file too large",
        "A spec file is larger than cortex reads (4 MiB). Split it into several files; `include` takes globs.";
    OUTSIDE_ROOT = "CX0107", "path outside the project root",
        "An `include` pattern, an environment file or a symbolic link leads outside the directory that holds `cortex.yaml`. cortex only reads files inside the project, so a build is the same on every machine.";
    BAD_GLOB = "CX0108", "invalid include pattern",
        "An `include` entry is not a valid glob. Use `*` for any name, `**` for any depth and `{a,b}` for alternatives.";
    EMPTY_INCLUDE = "CX0109", "include pattern matches no file",
        "An `include` pattern matched nothing. It is probably misspelled, or the files moved.";
    BAD_DOCUMENT = "CX0110", "not a cortex document",
        "Every YAML document must be a mapping with `apiVersion`, `kind`, `metadata.name` and (except for `Project`) `spec`.";
    BAD_API_VERSION = "CX0111", "unknown apiVersion",
        "Every document uses `apiVersion: cortex.codevald.io/v1`.";
    UNKNOWN_KIND = "CX0112", "unknown kind",
        "`kind` must be one of Project, AgentTemplate, Agent, WorkflowTemplate, Workflow, Topic, ResourcePool, AccessPolicy, AlertRule, State, Environment.";
    UNSUPPORTED_YAML = "CX0113", "unsupported YAML feature",
        "Merge keys (`<<`), custom tags (`!foo`), non-scalar keys and very deep nesting are not part of the spec language. Use `extends` to share values.";
    BAD_PROJECT = "CX0114", "invalid project file",
        "`cortex.yaml` must hold exactly one document of kind `Project`.";
    SCHEMA_UNKNOWN_FIELD = "CX0201", "unknown field",
        "The field is not part of this kind's schema. It is usually a typo; the hint names the closest known field. `cortex schema KIND` prints the schema.";
    SCHEMA_MISSING_FIELD = "CX0202", "missing required field",
        "A field this kind needs is not set, neither in the spec nor in anything it extends.";
    SCHEMA_WRONG_TYPE = "CX0203", "wrong type",
        "The value has the wrong type, e.g. a string where a number is expected. Note that YAML reads `1.0` as a number and `\"1.0\"` as a string.";
    SCHEMA_NOT_ALLOWED = "CX0204", "value not allowed",
        "The value is not one of those this field accepts; the message lists them.";
    SCHEMA_CONSTRAINT = "CX0205", "value out of range",
        "The value breaks a constraint of the schema (minimum, maximum, length, pattern, number of items).";
    SCHEMA_UNION = "CX0206", "exactly one variant required",
        "This mapping is a union: it takes exactly one of the listed keys (e.g. a health check is `http`, `tcp` or `exec`; a task is `agent` or `run`).";
    UNKNOWN_PARENT = "CX0301", "unknown parent in extends",
        "`extends` names a spec that does not exist. An Agent extends an AgentTemplate or an Agent; a Workflow extends a WorkflowTemplate or a Workflow.";
    EXTENDS_CYCLE = "CX0302", "extends cycle",
        "Specs extend each other in a circle, so none of them has a root. The message prints the whole cycle; break it.";
    EXTENDS_WRONG_FAMILY = "CX0303", "extends across kinds",
        "`extends` must name a spec of the same family: Agent/AgentTemplate or Workflow/WorkflowTemplate. Other kinds cannot extend.";
    PATCH_MISUSE = "CX0304", "misplaced merge directive",
        "`$patch: delete` only works on an entry of a keyed list (a list merged on `name`, such as `env`, `ports`, `tasks`, `triggers`); `$patch: replace` only inside a mapping or as a lone entry of a keyed list.";
    PATCH_UNKNOWN = "CX0305", "unknown merge directive",
        "`$patch` takes `delete` or `replace`.";
    PATCH_NOTHING = "CX0306", "nothing to delete",
        "A `$patch: delete` entry names an entry that nothing inherited has, so it has no effect. It is probably misspelled, or the parent changed.";
    KEYED_ENTRY_NO_KEY = "CX0307", "keyed list entry without its key",
        "Entries of a keyed list (e.g. `env`, `ports`, `tasks`) are matched by their key (`name`); every entry must have one.";
    KEYED_ENTRY_DUPLICATE = "CX0308", "duplicate entry in keyed list",
        "Two entries of a keyed list have the same key. Each name may appear once per list.";
    UNKNOWN_ENVIRONMENT = "CX0309", "unknown environment",
        "`--env` names an environment that the project does not declare under `spec.environments`.";
    BAD_PATCH_TARGET = "CX0310", "invalid environment patch target",
        "An environment patch `target` is `kind/name` (e.g. `agent/triage`, `agenttemplate/base-agent`, `workflow/ticket-pipeline`) and must name an existing spec.";
    ENVIRONMENT_MISMATCH = "CX0311", "environment name mismatch",
        "The Environment document's `metadata.name` differs from the key it is registered under in the project's `spec.environments`.";
    TEMPLATE_UNDEFINED = "CX0401", "undefined template variable",
        "A compile-time expression uses a name that is not defined. Templates see `values` (project values, overridden by the environment), `env` (`name`, `namespace`) and `project` (`name`, `namespace`). Undefined names are errors, never empty strings.";
    TEMPLATE_SYNTAX = "CX0402", "template syntax error",
        "A `{{ … }}` or `{% … %}` expression does not parse. To write literal braces, use `{{ '{{' }}` or a `{% raw %}` block; an agent's `config` and a Topic's `schema` are never templated.";
    TEMPLATE_EVAL = "CX0403", "template evaluation failed",
        "A compile-time expression failed while evaluating (a filter got the wrong type, or it ran out of its step budget).";
    DUPLICATE_NAME = "CX0501", "duplicate name",
        "Two specs of the same kind share a name. Names are unique per kind.";
    BAD_NAME = "CX0502", "invalid name",
        "Names that become Kubernetes objects must be DNS-1123 labels: at most 63 lower-case letters, digits and `-`, starting and ending with a letter or digit. Topic and workflow names may also contain `.`.";
    BAD_DURATION = "CX0503", "invalid duration",
        "Durations are a number followed by a unit: `ms`, `s`, `m`, `h` or `d`, and may be combined (`1h30m`).";
    BAD_QUANTITY = "CX0504", "invalid quantity",
        "Kubernetes quantities are a number with an optional suffix: `250m` (milli), `2`, `1.5`, `512Mi`, `1Gi`, `1G`.";
    BAD_CRON = "CX0505", "invalid cron expression",
        "Schedules are five-field cron expressions: minute hour day-of-month month day-of-week, e.g. `*/15 * * * *`.";
    UNKNOWN_TOPIC = "CX0506", "unknown topic",
        "The name does not match any declared Topic. Declare the topic (kind: Topic) or fix the name.";
    UNKNOWN_AGENT = "CX0507", "unknown agent",
        "A workflow task's `agent`, an AlertRule's `when.agent` and a State's `readers` and `writers` must name a concrete Agent (not an AgentTemplate).";
    UNKNOWN_POOL = "CX0508", "unknown resource pool",
        "An agent's `pool` must name a declared ResourcePool.";
    UNKNOWN_TASK = "CX0509", "unknown task in dependsOn",
        "`dependsOn` must name tasks of the same workflow.";
    WORKFLOW_CYCLE = "CX0510", "workflow cycle",
        "The tasks' `dependsOn` form a cycle, so the workflow can never finish. The message prints the cycle.";
    NOT_AN_ANCESTOR = "CX0511", "task output read from a non-ancestor",
        "`$(tasks.X.output…)` can only read tasks that are guaranteed to have finished: ancestors of the reading task through `dependsOn`. Add `X` to the task's `dependsOn` (directly or through another task).";
    NO_TRIGGER = "CX0512", "trigger reference without trigger",
        "`$(trigger…)` reads the payload of the trigger that started the execution; this workflow declares no trigger.";
    BAD_RUNTIME_REF = "CX0513", "malformed runtime reference",
        "Runtime references are `$(trigger.payload…)`, `$(trigger.name)` or `$(tasks.NAME.output…)`; anything else inside `$( )` is an error. They are allowed only in a task's `input`.";
    POOL_OVER_CAPACITY = "CX0514", "resource pool over capacity",
        "The agents placed in a pool could need more than it has: for every pool, the sum over its agents of requests × maximum replicas (the autoscaler's `maxReplicas`, else `replicas`) must fit `cpu` and `memory`, and the sum of maximum replicas must fit `agents`. The note shows the usage table.";
    UNKNOWN_ROLE = "CX0515", "unknown role",
        "An AccessPolicy binding names a role the policy does not define.";
    BAD_RANGE = "CX0516", "inconsistent bounds",
        "A lower bound is above its upper bound, e.g. `minReplicas` > `maxReplicas`, or backoff `initial` > `max`.";
    DEAD_LETTER_SELF = "CX0517", "topic dead-letters to itself",
        "A topic's `deadLetter` must be another topic, or failed messages would loop forever.";
    UNKNOWN_PORT = "CX0518", "unknown port name",
        "A health check names a port by name that the agent does not declare under `ports`.";
    NUL_IN_PROCESS_TEXT = "CX0519", "NUL character in a command or environment value",
        "Environment values, commands and arguments reach a process through the operating system, which ends each of them at a NUL character (`\\0`): no process, local or in a container, can be started with one. Remove it (a YAML double-quoted `\"\\0\"` is a NUL).";
    BAD_JSON_SCHEMA = "CX0520", "invalid JSON Schema",
        "A Topic's or a State's `schema` is not a JSON Schema the runtime can compile (draft 2020-12): an unknown `type`, a `$ref` that leads nowhere, a `pattern` that is not a regular expression. The runtime validates every payload or value against it, so it must compile.";
    RESERVED_NAME = "CX0521", "reserved name",
        "The name is taken by cortex itself: a State may not be called `agents`, because `agents/NAME` is the scope every agent owns.";
    RENDER_TEMPLATE = "CX0601", "object template failed",
        "A template of `templates/` (cortex's own, or the project's override of the same name) failed to render for this spec. The message names the template, the line in it and the agent.";
    RENDER_NOT_AN_OBJECT = "CX0602", "template did not render one object",
        "Each object template renders exactly one YAML mapping with apiVersion, kind and metadata.name (or nothing, to skip the object).";
    RENDER_UNKNOWN_FIELD = "CX0603", "rendered object has an unknown field",
        "A rendered object has a field its Kubernetes type does not have; the API server would reject or silently drop it. Usually a typo in an overriding template.";
    RENDER_INVALID_OBJECT = "CX0604", "rendered object does not fit its Kubernetes type",
        "A rendered object's field has the wrong type for its Kubernetes kind (e.g. a list where a mapping belongs).";
}

/// Looks a code up (case-insensitive).
pub fn lookup(code: &str) -> Option<&'static CodeInfo> {
    ALL.iter().find(|c| c.code.0.eq_ignore_ascii_case(code))
}
