//! Typed values read straight from a [`Node`] tree, as serde_json reads
//! them from the JSON the tree converts to ([`Node::to_json`]): the same
//! calls on the visitor, the same errors, and no JSON tree in between.
//!
//! It follows serde_json's `impl Deserializer for &Value` call by call:
//! numbers go to the visitor as the JSON number they convert to (a
//! non-negative integer as `u64`, a negative one as `i64`, a finite float
//! as `f64`, any other float as null), sequences and mappings must be read
//! to their end, and enums are a string or a mapping with one key. Two
//! differences cannot change a result: a mapping's keys come in document
//! order rather than sorted (a spec has no duplicate keys, and every type
//! read here collects fields by name), and keys are read as strings only
//! (no type read here has numeric keys).

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    DeserializeSeed, EnumAccess, Error as _, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};
use serde_json::Error;

use super::{Entry, Map, Node, Value};

/// `T` read from `node`, as `T::deserialize(&node.to_json())` reads it.
pub fn from_node<'de, T: serde::Deserialize<'de>>(node: &'de Node) -> Result<T, Error> {
    T::deserialize(node)
}

impl Node {
    /// What the node is, for a type error (as serde_json names the JSON it
    /// converts to).
    fn unexpected(&self) -> Unexpected<'_> {
        match &self.value {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Int(i) if *i < 0 => Unexpected::Signed(*i),
            Value::Int(i) => Unexpected::Unsigned(i.unsigned_abs()),
            Value::Float(f) if f.is_finite() => Unexpected::Float(*f),
            Value::Float(_) => Unexpected::Unit,
            Value::Str(s) => Unexpected::Str(s),
            Value::Seq(_) => Unexpected::Seq,
            Value::Map(_) => Unexpected::Map,
        }
    }

    fn invalid_type(&self, expected: &dyn serde::de::Expected) -> Error {
        Error::invalid_type(self.unexpected(), expected)
    }

    /// Whether the node converts to a JSON number.
    fn is_number(&self) -> bool {
        match self.value {
            Value::Int(_) => true,
            Value::Float(f) => f.is_finite(),
            _ => false,
        }
    }
}

/// A number's reading, as serde_json's `Number::deserialize_any` does it.
macro_rules! deserialize_number {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            if self.is_number() {
                self.deserialize_any(visitor)
            } else {
                Err(self.invalid_type(&visitor))
            }
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for &'de Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) if *i < 0 => visitor.visit_i64(*i),
            Value::Int(i) => visitor.visit_u64(i.unsigned_abs()),
            Value::Float(f) if f.is_finite() => visitor.visit_f64(*f),
            Value::Float(_) => visitor.visit_unit(),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visit_seq(items, visitor),
            Value::Map(map) => visit_map(map, visitor),
        }
    }

    deserialize_number! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            Value::Float(f) if !f.is_finite() => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.value {
            Value::Map(map) => match map.iter().as_slice() {
                [only] => visitor.visit_enum(Variant {
                    name: &only.key,
                    value: Some(&only.value),
                }),
                _ => Err(Error::invalid_value(
                    Unexpected::Map,
                    &"map with a single key",
                )),
            },
            Value::Str(name) => visitor.visit_enum(Variant { name, value: None }),
            _ => Err(Error::invalid_type(self.unexpected(), &"string or map")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Bool(b) => visitor.visit_bool(b),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Str(s) => visitor.visit_borrowed_str(s),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visit_seq(items, visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Float(f) if !f.is_finite() => visitor.visit_unit(),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Seq(items) => visit_seq(items, visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Map(map) => visit_map(map, visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.value {
            Value::Seq(items) => visit_seq(items, visitor),
            Value::Map(map) => visit_map(map, visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

/// Reads `items` as a sequence, all of them.
fn visit_seq<'de, V: Visitor<'de>>(items: &'de [Node], visitor: V) -> Result<V::Value, Error> {
    let mut access = Items(items.iter());
    let value = visitor.visit_seq(&mut access)?;
    if access.0.len() == 0 {
        Ok(value)
    } else {
        Err(Error::invalid_length(
            items.len(),
            &"fewer elements in array",
        ))
    }
}

/// Reads `map` as a mapping, all of it.
fn visit_map<'de, V: Visitor<'de>>(map: &'de Map, visitor: V) -> Result<V::Value, Error> {
    let mut access = Entries {
        entries: map.iter(),
        value: None,
    };
    let value = visitor.visit_map(&mut access)?;
    if access.entries.len() == 0 {
        Ok(value)
    } else {
        Err(Error::invalid_length(map.len(), &"fewer elements in map"))
    }
}

struct Items<'de>(std::slice::Iter<'de, Node>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|item| seed.deserialize(item)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'de> {
    entries: std::slice::Iter<'de, Entry>,
    /// The value of the key just read.
    value: Option<&'de Node>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(&entry.value);
        seed.deserialize(BorrowedStrDeserializer::new(&entry.key))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum's variant: its name, and its value when written as a mapping.
struct Variant<'de> {
    name: &'de str,
    value: Option<&'de Node>,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let name: serde::de::value::StrDeserializer<'_, Error> = self.name.into_deserializer();
        seed.deserialize(name).map(|variant| (variant, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            Some(value) => serde::Deserialize::deserialize(value),
            None => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.value {
            Some(value) => seed.deserialize(value),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.value.map(|node| (node, &node.value)) {
            Some((_, Value::Seq(items))) if items.is_empty() => visitor.visit_unit(),
            Some((_, Value::Seq(items))) => visit_seq(items, visitor),
            Some((node, _)) => Err(Error::invalid_type(node.unexpected(), &"tuple variant")),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value.map(|node| (node, &node.value)) {
            Some((_, Value::Map(map))) => visit_map(map, visitor),
            Some((node, _)) => Err(Error::invalid_type(node.unexpected(), &"struct variant")),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"struct variant",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::de::DeserializeOwned;
    use serde_json::Value as Json;

    use super::*;
    use crate::runtime_config::{
        AgentEntry, AlertRuleEntry, Backoff, EnvVar, HealthCheck, HealthEntry, StateScopeEntry,
        TaskEntry, TopicEntry, Trigger, WorkflowEntry,
    };
    use crate::span::{Provenance, Span};

    /// `json` as a node tree whose mappings hold their keys in reverse
    /// order: the reading must not depend on the order.
    fn provenance() -> Provenance {
        Provenance {
            span: Span::file_only("test.yaml".into()),
            spec: "test".into(),
        }
    }

    fn reversed(json: &Json) -> Node {
        let prov = provenance();
        let value = match json {
            Json::Array(items) => Value::Seq(items.iter().map(reversed).collect()),
            Json::Object(members) => {
                let mut map = Map::new();
                for (key, value) in members.iter().rev() {
                    map.insert(Entry {
                        key: key.clone(),
                        key_span: prov.span.clone(),
                        value: reversed(value),
                    });
                }
                Value::Map(map)
            }
            scalar => return Node::from_json(scalar, &prov),
        };
        Node::new(value, prov)
    }

    /// Reading `T` from the node and from its JSON gives the same value,
    /// or fails both ways.
    fn same<T: DeserializeOwned + PartialEq + std::fmt::Debug>(node: &Node, json: &Json) {
        let direct = from_node::<T>(node).ok();
        let through_json = T::deserialize(json).ok();
        assert_eq!(
            direct,
            through_json,
            "{} from {json}",
            std::any::type_name::<T>()
        );
    }

    fn every_type(node: &Node) {
        let json = node.to_json();
        same::<Json>(node, &json);
        same::<AgentEntry>(node, &json);
        same::<WorkflowEntry>(node, &json);
        same::<TaskEntry>(node, &json);
        same::<Trigger>(node, &json);
        same::<Vec<Trigger>>(node, &json);
        same::<HealthEntry>(node, &json);
        same::<Option<HealthCheck>>(node, &json);
        same::<Backoff>(node, &json);
        same::<Vec<EnvVar>>(node, &json);
        same::<TopicEntry>(node, &json);
        same::<StateScopeEntry>(node, &json);
        same::<AlertRuleEntry>(node, &json);
        same::<BTreeMap<String, String>>(node, &json);
        same::<Vec<String>>(node, &json);
        same::<Option<u32>>(node, &json);
        same::<u64>(node, &json);
        same::<i8>(node, &json);
        same::<f64>(node, &json);
        same::<bool>(node, &json);
        same::<String>(node, &json);
        same::<char>(node, &json);
        same::<()>(node, &json);
        same::<(u8, String)>(node, &json);
    }

    /// Keys of the runtime config's types, and a few others.
    const KEYS: &[&str] = &[
        "name",
        "value",
        "secretRef",
        "key",
        "topic",
        "schedule",
        "manual",
        "agent",
        "run",
        "command",
        "dependsOn",
        "input",
        "retries",
        "limit",
        "backoff",
        "initialMs",
        "maxMs",
        "multiplier",
        "check",
        "http",
        "exec",
        "tcp",
        "path",
        "port",
        "intervalMs",
        "failureThreshold",
        "ordering",
        "readers",
        "writers",
        "history",
        "when",
        "notify",
        "concurrency",
        "order",
        "tasks",
        "triggers",
        "config",
        "labels",
        "other",
    ];

    fn json_tree() -> impl Strategy<Value = Json> {
        let scalar = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            prop_oneof![
                Just(0i64),
                Just(-3),
                Just(7),
                Just(300),
                Just(1 << 40),
                Just(i64::MIN)
            ]
            .prop_map(Json::from),
            prop_oneof![Just(1.5f64), Just(-0.25), Just(3.0)].prop_map(Json::from),
            prop_oneof![
                Just("x"),
                Just("fail-fast"),
                Just("http"),
                Just("exec"),
                Just("tcp"),
                Just("a"),
                Just("10s"),
                Just("")
            ]
            .prop_map(Json::from),
        ];
        scalar.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..5).prop_map(
                    |members| Json::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect()
                    )
                ),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn a_node_reads_as_its_json_reads(json in json_tree()) {
            every_type(&reversed(&json));
        }
    }

    #[test]
    fn numbers_and_floats_read_as_their_json() {
        let prov = provenance();
        for value in [
            Value::Int(-1),
            Value::Int(0),
            Value::Int(i64::MAX),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(2.5),
        ] {
            every_type(&Node::new(value, prov.clone()));
        }
    }

    #[test]
    fn a_typed_entry_reads_from_a_spec() {
        let json = serde_json::json!({
            "tasks": {"a": {"agent": "x", "ancestors": [], "dependsOn": [], "input": {"v": 1},
                "retries": {"limit": 2, "backoff": {"initialMs": 5, "maxMs": 9, "multiplier": 2.0}},
                "timeoutMs": 30}},
            "triggers": [{"name": "t", "topic": "in"}, {"name": "m", "manual": {}}],
            "concurrency": 3, "maxActiveExecutions": 2, "onFailure": "continue",
            "order": ["a"],
        });
        let node = reversed(&json);
        let entry: WorkflowEntry = from_node(&node).expect("reads");
        assert_eq!(entry.tasks["a"].retries.limit, 2);
        assert_eq!(entry.triggers.len(), 2);
        same::<WorkflowEntry>(&node, &json);
    }
}
