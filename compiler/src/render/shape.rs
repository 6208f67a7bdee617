//! Objects of the built-in forms are checked once per shape: an object
//! whose shape — its keys, the type of each value, and for a number
//! whether it fits an `i32`, an `i64` or only a `u64` or a float — is one
//! an earlier object of the same render passed with is not read into its
//! Kubernetes type again ([`CheckedShapes`]).
//!
//! For these objects the check's verdict is a function of the shape alone:
//! the Kubernetes types have no unsigned integers, so a number reads into
//! an `i32`, `i64` or `f64` field by its class; an unknown field is a key;
//! and the built-in forms write no field whose reading looks at a string's
//! content (timestamps, base64 data), which a test holds them to. An
//! object that fails is never remembered, so each one gets its diagnostic.
//! A project's own templates may write such fields: their objects are
//! always read whole ([`super::check::check_object`]).

use std::collections::HashSet;

use serde_json::{Number, Value};

use super::check::check_object;
use crate::diagnostic::Diagnostics;

/// How many shapes a render's worker remembers before it starts over: a
/// project of many distinct objects keeps no more than this many.
const KEPT_SHAPES: usize = 256;

/// The shapes of the objects that passed the check, and a buffer to write
/// the next one's into.
#[derive(Clone, Default)]
pub struct CheckedShapes {
    passed: HashSet<Vec<u8>, foldhash::fast::FixedState>,
    scratch: Vec<u8>,
}

impl CheckedShapes {
    /// [`check_object`], skipped when an object of the same shape passed.
    pub fn check_object(
        &mut self,
        body: &Value,
        what: &dyn Fn() -> String,
        written_in: &str,
        at: &crate::span::Span,
        diags: &mut Diagnostics,
    ) -> bool {
        self.scratch.clear();
        write_shape(body, &mut self.scratch);
        if self.passed.contains(&self.scratch) {
            return true;
        }
        let passed = check_object(body, what, written_in, at, diags);
        if passed {
            if self.passed.len() == KEPT_SHAPES {
                self.passed.clear();
            }
            self.passed.insert(self.scratch.clone());
        }
        passed
    }

    /// How many shapes are remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.passed.len()
    }
}

/// Appends the shape of `value` to `out`. Every part says how long it is
/// (a count of entries, a key's length), so two shapes are equal only when
/// the values have the same keys, in the same places, holding values of
/// the same classes.
pub fn write_shape(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(_) => out.push(b'b'),
        Value::Number(number) => out.push(number_class(number)),
        Value::String(_) => out.push(b's'),
        Value::Array(items) => {
            out.push(b'[');
            write_length(items.len(), out);
            for item in items {
                write_shape(item, out);
            }
        }
        Value::Object(map) => {
            out.push(b'{');
            write_length(map.len(), out);
            for (key, item) in map {
                write_length(key.len(), out);
                out.extend_from_slice(key.as_bytes());
                write_shape(item, out);
            }
        }
    }
}

fn write_length(length: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&(length as u64).to_le_bytes());
}

/// What a number reads into: `i` an `i32` (and wider), `l` an `i64` but
/// not an `i32`, `u` only a `u64`, `f` a float (no integer field).
fn number_class(number: &Number) -> u8 {
    match number.as_i64() {
        Some(n) if i32::try_from(n).is_ok() => b'i',
        Some(_) => b'l',
        None if number.is_u64() => b'u',
        None => b'f',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_shape(value, &mut out);
        out
    }

    fn deployment(replicas: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"app": "a"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "a"}},
                "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}},
            },
        })
    }

    #[test]
    fn a_shape_holds_keys_and_value_classes_not_strings() {
        let a = deployment(json!(2));
        let mut b = deployment(json!(7));
        b["metadata"]["name"] = json!("another name");
        assert_eq!(shape(&a), shape(&b));
        for other in [
            deployment(json!(3_000_000_000u64)),
            deployment(json!(u64::MAX)),
            deployment(json!(2.5)),
            deployment(json!("2")),
            deployment(Value::Null),
        ] {
            assert_ne!(shape(&a), shape(&other), "{other}");
        }
        let mut renamed = a.clone();
        renamed["metadata"]["labels"] = json!({"ap": "a"});
        assert_ne!(shape(&a), shape(&renamed));
        let mut longer = a.clone();
        longer["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "b", "image": "y"}));
        assert_ne!(shape(&a), shape(&longer));
    }

    #[test]
    fn keys_cannot_run_into_each_other() {
        assert_ne!(
            shape(&json!({"ab": 1, "c": 1})),
            shape(&json!({"a": 1, "bc": 1}))
        );
        assert_ne!(shape(&json!([[1], 1])), shape(&json!([[1, 1]])));
    }

    #[test]
    fn a_shape_that_passed_is_not_read_again_and_one_that_failed_always_is() {
        let at = crate::span::Span::file_only("templates/deployment.yaml.j2".into());
        let what = || "Deployment `a`".to_string();
        let mut shapes = CheckedShapes::default();
        let mut diags = Diagnostics::new();
        assert!(shapes.check_object(&deployment(json!(1)), &what, "template", &at, &mut diags));
        assert!(shapes.check_object(&deployment(json!(5)), &what, "template", &at, &mut diags));
        assert_eq!(shapes.remembered(), 1);
        // Past an i32: read again, refused, each time.
        for _ in 0..2 {
            let big = deployment(json!(3_000_000_000u64));
            assert!(!shapes.check_object(&big, &what, "template", &at, &mut diags));
        }
        assert_eq!(diags.error_count(), 2);
        assert_eq!(shapes.remembered(), 1);
        let mut unknown = deployment(json!(1));
        unknown["spec"]["replcas"] = json!(1);
        assert!(!shapes.check_object(&unknown, &what, "template", &at, &mut diags));
        assert_eq!(diags.error_count(), 3);
    }

    #[test]
    fn no_more_than_the_kept_shapes_are_remembered() {
        let at = crate::span::Span::file_only("t".into());
        let what = || "ConfigMap".to_string();
        let mut shapes = CheckedShapes::default();
        let mut diags = Diagnostics::new();
        for n in 0..KEPT_SHAPES + 10 {
            let mut data = serde_json::Map::new();
            data.insert(format!("key-{n}"), json!("v"));
            let object = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c"}, "data": data,
            });
            assert!(shapes.check_object(&object, &what, "template", &at, &mut diags));
            assert!(shapes.remembered() <= KEPT_SHAPES);
        }
        assert_eq!(shapes.remembered(), 10);
    }
}
