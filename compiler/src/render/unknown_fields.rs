//! Reads a JSON value into a type and lists the fields the type has no
//! place for ([`deserialize`]): what `serde_ignored` reported, with the
//! same paths, but keys are borrowed from the value instead of copied
//! for every field of every object (half of checking objects).
//!
//! [`Tracked`] is serde_json's own reading of a `&Value`: scalars, enums
//! and identifiers go straight to it, with the caller's visitor, so values
//! and errors are serde_json's; maps, sequences, options and newtypes are
//! walked here, to know the path of a value its type ignores.

use std::cell::RefCell;
use std::fmt::{self, Display};

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Error, Value};

/// Where a value sits in the document read.
#[derive(Clone, Copy)]
enum Path<'p, 'de> {
    Root,
    Item {
        parent: &'p Path<'p, 'de>,
        index: usize,
    },
    Field {
        parent: &'p Path<'p, 'de>,
        key: &'de str,
    },
    /// Inside an option or a newtype (written `?`, as `serde_ignored` did).
    Wrapped {
        parent: &'p Path<'p, 'de>,
    },
}

impl Display for Path<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent = |f: &mut fmt::Formatter<'_>, parent: &Path<'_, '_>| match parent {
            Path::Root => Ok(()),
            path => write!(f, "{path}."),
        };
        match self {
            Path::Root => f.write_str("."),
            Path::Item { parent: p, index } => {
                parent(f, p)?;
                write!(f, "{index}")
            }
            Path::Field { parent: p, key } => {
                parent(f, p)?;
                f.write_str(key)
            }
            Path::Wrapped { parent: p } => {
                parent(f, p)?;
                f.write_str("?")
            }
        }
    }
}

/// Reads `value` as a `T`: the result, and the paths of the fields `T`
/// ignores (as [`written`]).
pub fn deserialize<'de, T: de::Deserialize<'de>>(
    value: &'de Value,
) -> (Result<T, Error>, Vec<String>) {
    let sink = RefCell::new(Vec::new());
    let result = T::deserialize(Tracked {
        value,
        path: &Path::Root,
        sink: &sink,
    });
    (result, sink.into_inner())
}

/// A path as the user wrote it: its display (`serde_ignored`'s form)
/// without the `?` that options and newtypes add.
pub(super) fn written(path: &str) -> String {
    path.split('.')
        .filter(|s| *s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

/// A value being read, where it sits, and where ignored paths go.
struct Tracked<'p, 'de> {
    value: &'de Value,
    path: &'p Path<'p, 'de>,
    sink: &'p RefCell<Vec<String>>,
}

impl<'p, 'de> Tracked<'p, 'de> {
    fn ignored(&self) {
        self.sink.borrow_mut().push(written(&self.path.to_string()));
    }

    /// serde_json's `visit_array_ref`, its items tracked.
    fn array<V: Visitor<'de>>(self, items: &'de [Value], visitor: V) -> Result<V::Value, Error> {
        let mut seq = Items {
            items: items.iter(),
            index: 0,
            path: self.path,
            sink: self.sink,
        };
        let value = visitor.visit_seq(&mut seq)?;
        if seq.items.len() == 0 {
            Ok(value)
        } else {
            Err(de::Error::invalid_length(
                items.len(),
                &"fewer elements in array",
            ))
        }
    }

    /// serde_json's `visit_object_ref`, its values tracked.
    fn object<V: Visitor<'de>>(
        self,
        map: &'de serde_json::Map<String, Value>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut entries = Fields {
            entries: map.iter(),
            value: None,
            path: self.path,
            sink: self.sink,
        };
        let value = visitor.visit_map(&mut entries)?;
        if entries.entries.len() == 0 {
            Ok(value)
        } else {
            Err(de::Error::invalid_length(
                map.len(),
                &"fewer elements in map",
            ))
        }
    }
}

/// The methods that serde_json's own reading answers as it is.
macro_rules! as_serde_json_does {
    ($($method:ident),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.value.$method(visitor)
        })*
    };
}

impl<'p, 'de> Deserializer<'de> for Tracked<'p, 'de> {
    type Error = Error;

    as_serde_json_does!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_identifier
    );

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Array(items) => self.array(items, visitor),
            Value::Object(map) => self.object(map, visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(Tracked {
                path: &Path::Wrapped { parent: self.path },
                ..self
            }),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(Tracked {
            path: &Path::Wrapped { parent: self.path },
            ..self
        })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.value.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Array(items) => self.array(items, visitor),
            other => other.deserialize_seq(visitor),
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
        match self.value {
            Value::Object(map) => self.object(map, visitor),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Value::Array(items) => self.array(items, visitor),
            Value::Object(map) => self.object(map, visitor),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.value.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.ignored();
        self.value.deserialize_ignored_any(visitor)
    }
}

/// A sequence's items, each with its index in the path.
struct Items<'p, 'de> {
    items: std::slice::Iter<'de, Value>,
    index: usize,
    path: &'p Path<'p, 'de>,
    sink: &'p RefCell<Vec<String>>,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(value) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Item {
            parent: self.path,
            index: self.index,
        };
        self.index += 1;
        seed.deserialize(Tracked {
            value,
            path: &path,
            sink: self.sink,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A map's entries, each value with its key in the path.
struct Fields<'p, 'de> {
    entries: serde_json::map::Iter<'de>,
    value: Option<(&'de str, &'de Value)>,
    path: &'p Path<'p, 'de>,
    sink: &'p RefCell<Vec<String>>,
}

impl<'de> MapAccess<'de> for Fields<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let Some((key, value)) = self.value.take() else {
            return Err(de::Error::custom("value is missing"));
        };
        seed.deserialize(Tracked {
            value,
            path: &Path::Field {
                parent: self.path,
                key,
            },
            sink: self.sink,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
