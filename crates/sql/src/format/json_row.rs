//! The JSON format's fast path: a JSON object decoded straight into a row's column values,
//! without a `serde_json::Value` tree in between and without allocating its keys, and JSON text
//! written without intermediate strings.
//!
//! Results are the general path's (`from_json` over a parsed `serde_json::Value`), which stays
//! the reference: values of types the fast path does not convert itself (DECIMAL, dates and
//! times, BYTES, ARRAY, MAP, STRUCT) are parsed into a `serde_json::Value` and handed to
//! `from_json`, and so are whole records that are not a JSON object.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;

use super::from_json;
use crate::types::{Field, SqlType};
use crate::value::Value;

/// Decodes `bytes` holding a JSON object into one value per column (fields matched by name,
/// exactly or else ignoring ASCII case; missing fields are null). `None` when `bytes` is not an
/// object: the caller takes the general path.
pub(super) fn decode_object(columns: &[Field], bytes: &[u8]) -> Option<Result<Vec<Value>, String>> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    // A conversion error's own text, not serde_json's wrapping of it (with a position).
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = RowSeed { columns, failure: &failure }.deserialize(&mut de).and_then(|row| de.end().map(|()| row));
    Some(decoded.map_err(|e| failure.into_inner().unwrap_or_else(|| format!("Failed to deserialize JSON: {e}"))))
}

struct RowSeed<'a> {
    columns: &'a [Field],
    failure: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Value>, A::Error> {
        let n = self.columns.len();
        let mut row = vec![Value::Null; n];
        // Per column: set by a field of exactly its name (which wins), or of its name in
        // another case.
        let mut exact = Flags::new(n);
        let mut loose = Flags::new(n);
        while let Some(key) = map.next_key_seed(KeySeed { columns: self.columns })? {
            let target = match key {
                KeyMatch::Exact(i) => {
                    exact.set(i);
                    Some(i)
                }
                KeyMatch::Loose(i) if !exact.get(i) && !loose.get(i) => {
                    loose.set(i);
                    Some(i)
                }
                _ => None,
            };
            match target {
                Some(i) => {
                    row[i] = map.next_value_seed(ValueSeed { ty: &self.columns[i].ty, failure: self.failure })?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(row)
    }
}

/// One flag per column, without an allocation for up to 64 columns.
enum Flags {
    Small(u64),
    Large(Vec<bool>),
}

impl Flags {
    fn new(n: usize) -> Flags {
        if n <= 64 {
            Flags::Small(0)
        } else {
            Flags::Large(vec![false; n])
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Flags::Small(bits) => bits & (1 << i) != 0,
            Flags::Large(v) => v[i],
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Flags::Small(bits) => *bits |= 1 << i,
            Flags::Large(v) => v[i] = true,
        }
    }
}

enum KeyMatch {
    Exact(usize),
    Loose(usize),
    None,
}

struct KeySeed<'a> {
    columns: &'a [Field],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = KeyMatch;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<KeyMatch, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = KeyMatch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyMatch, E> {
        if let Some(i) = self.columns.iter().position(|c| c.name == key) {
            return Ok(KeyMatch::Exact(i));
        }
        Ok(match self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(key)) {
            Some(i) => KeyMatch::Loose(i),
            None => KeyMatch::None,
        })
    }
}

/// One field's value, converted to the column's type.
struct ValueSeed<'a> {
    ty: &'a SqlType,
    failure: &'a RefCell<Option<String>>,
}

impl ValueSeed<'_> {
    fn fail<E: de::Error>(&self, message: String) -> E {
        let e = E::custom(&message);
        *self.failure.borrow_mut() = Some(message);
        e
    }

    fn mismatch<E: de::Error>(&self, source: &str) -> E {
        self.fail(format!("Can't convert type. sourceType: {source}, requiredType: {}, path: $", self.ty))
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.ty {
            SqlType::Boolean | SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::String => {
                d.deserialize_any(self)
            }
            ty => {
                let json = Json::deserialize(d)?;
                from_json(ty, &json).map_err(|m| self.fail(m))
            }
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a JSON value for {}", self.ty)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        match self.ty {
            SqlType::Boolean => Ok(Value::Boolean(b)),
            SqlType::String => Ok(Value::String(b.to_string())),
            _ => Err(self.mismatch("BOOLEAN")),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        match self.ty {
            SqlType::Int => Ok(Value::Int(n as i32)),
            SqlType::BigInt => Ok(Value::BigInt(n)),
            SqlType::Double => Ok(Value::Double(n as f64)),
            SqlType::String => Ok(Value::String(n.to_string())),
            _ => Err(self.mismatch("BIGINT")),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        // As serde_json's `Number::as_i64`, else `as_f64`, would have it.
        let as_i64 = i64::try_from(n).unwrap_or(n as f64 as i64);
        match self.ty {
            SqlType::Int => Ok(Value::Int(as_i64 as i32)),
            SqlType::BigInt => Ok(Value::BigInt(as_i64)),
            SqlType::Double => Ok(Value::Double(n as f64)),
            SqlType::String => Ok(Value::String(n.to_string())),
            _ => Err(self.mismatch("BIGINT")),
        }
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        match self.ty {
            SqlType::Int => Ok(Value::Int(f as i64 as i32)),
            SqlType::BigInt => Ok(Value::BigInt(f as i64)),
            SqlType::Double => Ok(Value::Double(f)),
            SqlType::String => Ok(Value::String(Json::from(f).to_string())),
            _ => Err(self.mismatch("DOUBLE")),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        match self.ty {
            SqlType::Boolean => Ok(Value::Boolean(s.eq_ignore_ascii_case("true"))),
            SqlType::Int => s.trim().parse().map(Value::Int).map_err(|_| self.mismatch("STRING")),
            SqlType::BigInt => s.trim().parse().map(Value::BigInt).map_err(|_| self.mismatch("STRING")),
            SqlType::Double => s.trim().parse().map(Value::Double).map_err(|_| self.mismatch("STRING")),
            _ => Ok(Value::String(s.to_string())),
        }
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        match self.ty {
            SqlType::String => Ok(Value::String(s)),
            _ => self.visit_str(&s),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        match self.ty {
            SqlType::String => {
                let json = Json::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Value::String(json.to_string()))
            }
            _ => Err(self.mismatch("ARRAY")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        match self.ty {
            SqlType::String => {
                let json = Json::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Value::String(json.to_string()))
            }
            _ => Err(self.mismatch("STRUCT")),
        }
    }
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
pub(super) fn write_json_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Writes an integer without an intermediate string.
pub(super) fn write_int(n: impl fmt::Display, out: &mut String) {
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, Serde};

    fn field(name: &str, ty: SqlType) -> Field {
        Field { name: name.into(), ty }
    }

    /// The general path: a parsed `serde_json::Value`, each column through `from_json`.
    fn reference(columns: &[Field], bytes: &[u8]) -> Result<Vec<Value>, String> {
        let json: Json = serde_json::from_slice(bytes).map_err(|e| format!("Failed to deserialize JSON: {e}"))?;
        let Json::Object(map) = &json else { panic!("objects only") };
        columns
            .iter()
            .map(|c| {
                let v = map
                    .get(&c.name)
                    .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(&c.name)).map(|(_, v)| v));
                v.map_or(Ok(Value::Null), |v| from_json(&c.ty, v))
            })
            .collect()
    }

    #[test]
    fn the_fast_path_decodes_as_the_general_path() {
        let columns = [
            field("ID", SqlType::BigInt),
            field("N", SqlType::Int),
            field("NAME", SqlType::String),
            field("PRICE", SqlType::Double),
            field("OK", SqlType::Boolean),
            field("PRICE_D", SqlType::Decimal { precision: 6, scale: 2 }),
            field("TAGS", SqlType::Array(Box::new(SqlType::String))),
            field("TS", SqlType::Timestamp),
        ];
        let cases: &[&str] = &[
            r#"{"ID": 1, "N": 2, "NAME": "a\"b\u00e9", "PRICE": 1.5, "OK": true, "PRICE_D": 12.25, "TAGS": ["x"], "TS": 5}"#,
            r#"{"id": 7, "Name": "loose", "NAME": "exact", "extra": {"deep": [1, 2, {"x": null}]}}"#,
            r#"{"ID": "42", "N": " 3 ", "PRICE": "2.5", "OK": "TRUE", "NAME": 12}"#,
            r#"{"ID": 18446744073709551615, "N": 3.9, "PRICE": 7, "NAME": 1.5e300}"#,
            r#"{"NAME": [1, "a"], "ID": null, "TS": "2026-01-01T00:00:00.000"}"#,
            r#"{"NAME": {"b": 1, "a": [true]}}"#,
            r#"{}"#,
            r#"{"ID": 1, "ID": 2}"#,
            r#"{"ID": true}"#,
            r#"{"N": "x"}"#,
            r#"{"PRICE_D": "abc"}"#,
            r#"{"TAGS": 3}"#,
            r#"{"ID": 1,"#,
            r#"{"ID": 1} x"#,
        ];
        for case in cases {
            let fast = decode_object(&columns, case.as_bytes()).expect("an object");
            let general = reference(&columns, case.as_bytes());
            match (&fast, &general) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{case}"),
                (Err(a), Err(b)) => {
                    // Syntax errors name the same problem (positions may differ).
                    let head = |s: &str| s.split(" at line").next().unwrap_or_default().to_string();
                    assert_eq!(head(a), head(b), "{case}")
                }
                _ => panic!("{case}: fast {fast:?} vs general {general:?}"),
            }
        }
        assert!(decode_object(&columns, b" [1]").is_none());
        assert!(decode_object(&columns, b"null").is_none());
    }

    #[test]
    fn wide_rows_decode_too() {
        let columns: Vec<Field> = (0..70).map(|i| field(&format!("C{i}"), SqlType::Int)).collect();
        let row = decode_object(&columns, br#"{"c69": 1, "C69": 2, "c0": 3, "C68": 4}"#).unwrap().unwrap();
        assert_eq!(
            (&row[0], &row[68], &row[69], &row[1]),
            (&Value::Int(3), &Value::Int(4), &Value::Int(2), &Value::Null)
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in ["plain", "q\"uote\\", "nl\n\r\t\u{8}\u{c}", "ctl\u{1}\u{1f}\u{7f}", "é✓", ""] {
            let mut out = String::new();
            write_json_string(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn serialize_then_deserialize_round_trips() {
        let columns = [field("A", SqlType::String), field("B", SqlType::BigInt), field("C", SqlType::Int)];
        let serde = Serde::new(Format::Json);
        let row = vec![Value::String("x\"y".into()), Value::BigInt(-5), Value::Null];
        let bytes = serde.serialize(&columns, &row).unwrap().unwrap();
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), r#"{"A":"x\"y","B":-5,"C":null}"#);
        assert_eq!(serde.deserialize(&columns, Some(&bytes)).unwrap(), row);
    }
}
