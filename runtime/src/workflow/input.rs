//! A task's input at start time: every `$(trigger.payload…)`,
//! `$(trigger.name)` and `$(tasks.NAME.output…)` replaced by the value it
//! names. A string that is one reference and nothing else becomes the value
//! itself, with its JSON type (a number, an object); a reference inside
//! longer text is written into it (strings as they are, other values as
//! JSON). A path that is not there fails the task, naming the reference.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::workflow::execution::TaskRun;

/// What the references of one execution can name.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The trigger's name.
    pub trigger_name: &'a str,
    /// The trigger's payload (the topic message, the manual input, `null`
    /// for a schedule).
    pub trigger_payload: &'a Value,
    /// The execution's tasks (those that succeeded have an output): read
    /// in place, so starting a task costs no copy of every output.
    pub tasks: &'a BTreeMap<String, TaskRun>,
}

/// A reference that names nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("input reference `$({reference})`: {why}")]
pub struct InputError {
    /// The expression between `$(` and `)`.
    pub reference: String,
    /// What is missing.
    pub why: String,
}

/// `input` with every reference resolved against `scope`.
pub fn resolve(input: &Value, scope: &Scope<'_>) -> Result<Value, InputError> {
    Ok(match input {
        Value::String(text) => resolve_text(text, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve(item, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, scope)?)))
                .collect::<Result<_, InputError>>()?,
        ),
        other => other.clone(),
    })
}

fn resolve_text(text: &str, scope: &Scope<'_>) -> Result<Value, InputError> {
    if let Some(expr) = text
        .strip_prefix("$(")
        .and_then(|rest| rest.strip_suffix(')'))
        .filter(|expr| !expr.contains("$(") && !expr.contains(')'))
    {
        return lookup(expr.trim(), scope);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            // Not a reference (the compiler refuses unclosed ones): literal.
            out.push_str(&rest[start..]);
            return Ok(Value::String(out));
        };
        match lookup(after[..end].trim(), scope)? {
            Value::String(s) => out.push_str(&s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

fn lookup(expr: &str, scope: &Scope<'_>) -> Result<Value, InputError> {
    let fail = |why: String| InputError {
        reference: expr.to_string(),
        why,
    };
    if expr == "trigger.name" {
        return Ok(Value::String(scope.trigger_name.to_string()));
    }
    let (root, path, what) = if let Some(path) = expr.strip_prefix("trigger.payload") {
        (
            scope.trigger_payload,
            path,
            "the trigger's payload".to_string(),
        )
    } else if let Some(tail) = expr.strip_prefix("tasks.") {
        let (task, field) = tail
            .split_once('.')
            .ok_or_else(|| fail("write `tasks.NAME.output…`".into()))?;
        let path = field
            .strip_prefix("output")
            .ok_or_else(|| fail("write `tasks.NAME.output…`".into()))?;
        let output = scope
            .tasks
            .get(task)
            .and_then(|t| t.output.as_ref())
            .ok_or_else(|| {
                fail(format!(
                    "task `{task}` has no output (it has not succeeded)"
                ))
            })?;
        (output, path, format!("the output of `{task}`"))
    } else {
        return Err(fail(
            "write `trigger.payload…`, `trigger.name` or `tasks.NAME.output…`".into(),
        ));
    };
    let path = match path {
        "" => return Ok(root.clone()),
        p => p
            .strip_prefix('.')
            .ok_or_else(|| fail("a path continues with `.`".into()))?,
    };
    let mut at = root;
    let mut walked = String::new();
    for segment in path.split('.') {
        let next = match at {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        at = next.ok_or_else(|| {
            fail(format!(
                "{what}{} has no `{segment}`",
                if walked.is_empty() {
                    String::new()
                } else {
                    format!(" at `{walked}`")
                }
            ))
        })?;
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
    }
    Ok(at.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Succeeded tasks with these outputs.
    fn runs(outputs: &BTreeMap<String, Value>) -> BTreeMap<String, TaskRun> {
        outputs
            .iter()
            .map(|(name, output)| {
                (
                    name.clone(),
                    TaskRun {
                        state: crate::workflow::TaskState::Succeeded,
                        attempts: 1,
                        output: Some(output.clone()),
                        error: None,
                        retry_at: None,
                        earlier_attempts: 0,
                    },
                )
            })
            .collect()
    }

    fn scope<'a>(payload: &'a Value, tasks: &'a BTreeMap<String, TaskRun>) -> Scope<'a> {
        Scope {
            trigger_name: "on-ticket",
            trigger_payload: payload,
            tasks,
        }
    }

    #[test]
    fn a_whole_string_reference_keeps_the_json_type() {
        let payload = json!({"id": 7, "tags": ["a", "b"]});
        let outputs = BTreeMap::from([("classify".to_string(), json!({"score": 0.9}))]);
        let input = json!({
            "ticket": "$(trigger.payload)",
            "id": "$(trigger.payload.id)",
            "second": "$(trigger.payload.tags.1)",
            "score": "$(tasks.classify.output.score)",
            "all": ["$(tasks.classify.output)", 3],
        });
        assert_eq!(
            resolve(&input, &scope(&payload, &runs(&outputs))).expect("resolves"),
            json!({
                "ticket": {"id": 7, "tags": ["a", "b"]},
                "id": 7,
                "second": "b",
                "score": 0.9,
                "all": [{"score": 0.9}, 3],
            })
        );
    }

    #[test]
    fn references_inside_text_are_written_into_it() {
        let payload = json!({"id": 7, "subject": "printer"});
        let outputs = BTreeMap::new();
        let input =
            json!("ticket $(trigger.payload.id): $(trigger.payload.subject) via $(trigger.name)");
        assert_eq!(
            resolve(&input, &scope(&payload, &runs(&outputs))).expect("resolves"),
            json!("ticket 7: printer via on-ticket")
        );
    }

    #[test]
    fn a_missing_path_names_the_reference_and_where_it_stopped() {
        let payload = json!({"customer": {"id": 1}});
        let outputs = BTreeMap::from([("lookup".to_string(), json!({"customer": null}))]);
        let err = resolve(
            &json!({"x": "$(trigger.payload.customer.name)"}),
            &scope(&payload, &runs(&outputs)),
        )
        .expect_err("missing");
        assert_eq!(err.reference, "trigger.payload.customer.name");
        assert!(err.why.contains("at `customer` has no `name`"), "{err}");
        let err = resolve(
            &json!("$(tasks.draft.output)"),
            &scope(&payload, &runs(&outputs)),
        )
        .expect_err("no output");
        assert!(err.to_string().contains("`draft` has no output"), "{err}");
    }
}
