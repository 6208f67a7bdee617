//! The JSON rendering: the [`Plan`] as it is, with `format_version`.
//!
//! Layout (version 1): `format_version`, `from`/`to` (`name`, `commit`),
//! `project`, `environment`, `namespace`, `summary` (`create`, `update`,
//! `delete`, `unchanged`), and `changes`: every object in apply order with
//! `target` (`kubernetes`|`runtime`), `group`, `kind`, `namespace`, `name`,
//! `identity`, `apiVersion`, `action`, `spec`, `source` (`file`, `line`,
//! `column`, `by`), and for updates `fields` (`path`, `pointer`, `inner`,
//! `old`, `new`, `sources`) and `diff` (unified YAML diff). An absent `old`
//! or `new` means the field is added or removed. Secret values are masked.

use crate::plan::Plan;

/// Renders a plan as pretty-printed JSON with a trailing newline.
pub fn render_json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan).unwrap_or_default();
    text.push('\n');
    text
}
