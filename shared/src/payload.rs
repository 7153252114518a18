//! The invocation payload as every function receives it: JSON whose objects
//! have unique keys.
//!
//! `serde_json::Value` keeps the last of duplicate keys silently, so
//! `{"dryRun": true, "dryRun": false}` would delete. RFC 8259 leaves
//! duplicates to the parser; we refuse them. [`Payload`] deserializes like a
//! `Value` and fails on the first duplicate key, naming it and where it is.
//! The Lambda runtime then answers the invocation with its deserialization
//! error before any of our code runs, exactly as for a payload that is not
//! JSON, so nothing is read or written. No AWS service sends duplicate keys.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A JSON payload without duplicate keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload(pub Value);

impl Payload {
    pub fn into_value(self) -> Value {
        self.0
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Strict { path: "$".into() }.deserialize(deserializer).map(Payload)
    }
}

/// One value at `path` (`$`, `$.detail`, `$.rules[0]`, ...).
struct Strict {
    path: String,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict { path: format!("{}[{}]", self.path, items.len()) })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?} in {}", self.path)));
            }
            let value = map.next_value_seed(Strict { path: format!("{}.{key}", self.path) })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, String> {
        serde_json::from_str::<Payload>(text).map(Payload::into_value).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_what_a_value_reads() {
        let text = r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": {"d": [[]]}, "e": 18446744073709551615}"#;
        assert_eq!(parse(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(parse("null").unwrap(), Value::Null);
        assert_eq!(parse("\"prune\"").unwrap(), Value::from("prune"));
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth_naming_them() {
        let err = parse(r#"{"dryRun": true, "dryRun": false}"#).unwrap_err();
        assert!(err.starts_with("duplicate key \"dryRun\" in $"), "{err}");
        let err = parse(r#"{"detail": {"repository-name": "a", "x": 1, "repository-name": "b"}}"#).unwrap_err();
        assert!(err.starts_with("duplicate key \"repository-name\" in $.detail"), "{err}");
        let err =
            parse(r#"{"policy": {"rules": [{}, {"action": {"type": "expire", "type": "transition"}}]}}"#).unwrap_err();
        assert!(err.starts_with("duplicate key \"type\" in $.policy.rules[1].action"), "{err}");
    }

    #[test]
    fn the_same_key_in_sibling_objects_is_fine() {
        assert!(parse(r#"[{"a": 1}, {"a": 2}, {"b": {"a": 3}}]"#).is_ok());
    }
}
