//! Record formats: how the key and value columns of a row become bytes and back.
//! JSON, KAFKA (single primitive column, Kafka's serializers), DELIMITED (CSV) and NONE.
//! AVRO and PROTOBUF need a schema registry and are refused with a clear error.

use bytes::{Bytes, BytesMut};
use freshet_common::limits::SQL_OUTPUT_BUFFER_BYTES;
use serde_json::Value as Json;

mod json_row;
use json_row::{write_int, write_json_string};

use crate::error::{Result, SqlError};
use crate::functions::{base64_decode, base64_encode};
use crate::types::{Field, SqlType};
use crate::value::{decimal_to_string, double_to_string, parse_decimal, Value};

thread_local! {
    /// Each thread's scratch string and shared buffer for [`Serde::serialize_shared`].
    static SHARED_OUTPUT: std::cell::RefCell<(String, BytesMut)> = Default::default();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Kafka,
    Delimited,
    None,
}

impl Format {
    pub fn parse(name: &str) -> Result<Format> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "JSON" => Format::Json,
            "KAFKA" => Format::Kafka,
            "DELIMITED" => Format::Delimited,
            "NONE" => Format::None,
            "AVRO" | "PROTOBUF" | "PROTOBUF_NOSR" | "JSON_SR" => {
                return Err(SqlError::statement(format!(
                    "Format {name} needs a schema registry, which Freshet does not have yet: use JSON, KAFKA, DELIMITED or NONE"
                )))
            }
            other => return Err(SqlError::statement(format!("Unknown format: {other}"))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Kafka => "KAFKA",
            Format::Delimited => "DELIMITED",
            Format::None => "NONE",
        }
    }
}

/// How one side (key or value) of a record is encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Serde {
    pub format: Format,
    /// Single-column JSON: write the bare value instead of an object.
    pub unwrapped: bool,
    pub delimiter: char,
    /// Set in the statement's WITH clause, rather than inherited from a source.
    pub explicit: bool,
}

impl Serde {
    pub fn new(format: Format) -> Serde {
        Serde { format, unwrapped: false, delimiter: ',', explicit: false }
    }

    /// Checks the columns can be carried by this format.
    pub fn check(&self, columns: &[Field], what: &str) -> Result<()> {
        let listed = || {
            let suffix = if what == "key" { " KEY" } else { "" };
            columns.iter().map(|c| format!("`{}` {}{suffix}", c.name, c.ty)).collect::<Vec<_>>().join(", ")
        };
        // Key columns a format cannot carry: ksqlDB's wording, with the schema and the reason.
        let key_error = |reason: String| {
            if what == "key" {
                SqlError::statement(format!(
                    "Key format does not support schema.\nformat: {}\nschema: Persistence{{columns=[{}], features=[]}}\nreason: {reason}",
                    self.format.name(),
                    listed()
                ))
            } else {
                SqlError::statement(reason)
            }
        };
        match self.format {
            Format::Kafka => {
                if columns.len() > 1 {
                    return Err(key_error(format!(
                        "The '{}' format only supports a single field. Got: [{}]",
                        self.format.name(),
                        listed()
                    )));
                }
                if let Some(c) = columns.first() {
                    if !matches!(
                        c.ty,
                        SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::String | SqlType::Bytes
                    ) {
                        return Err(key_error(format!(
                            "The 'KAFKA' format does not support type '{}'",
                            kafka_type_name(&c.ty)
                        )));
                    }
                }
            }
            Format::None => {
                if !columns.is_empty() {
                    return Err(SqlError::statement(format!(
                        "The 'NONE' format can only be used when no columns are defined. Got: [{}]",
                        listed()
                    )));
                }
            }
            Format::Delimited => {
                for c in columns {
                    if !c.ty.is_primitive() {
                        return Err(key_error(format!(
                            "The 'DELIMITED' format does not support type '{}', column: `{}`",
                            kafka_type_name(&c.ty),
                            c.name
                        )));
                    }
                }
            }
            Format::Json => {
                fn string_keyed(t: &SqlType) -> bool {
                    match t {
                        SqlType::Map(k, v) => **k == SqlType::String && string_keyed(v),
                        SqlType::Array(e) => string_keyed(e),
                        SqlType::Struct(fields) => fields.iter().all(|f| string_keyed(&f.ty)),
                        _ => true,
                    }
                }
                if !columns.iter().all(|c| string_keyed(&c.ty)) {
                    return Err(key_error("JSON only supports MAP types with STRING keys".into()));
                }
            }
        }
        Ok(())
    }

    pub fn serialize(&self, columns: &[Field], values: &[Value]) -> Result<Option<Vec<u8>>, String> {
        match self.format {
            Format::None => Ok(None),
            Format::Kafka => match values.first() {
                None | Some(Value::Null) => Ok(None),
                Some(v) => Ok(Some(kafka_encode(v)?)),
            },
            Format::Delimited => {
                if values.iter().all(Value::is_null) && values.len() == 1 {
                    return Ok(None);
                }
                let mut out = String::new();
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(self.delimiter);
                    }
                    out.push_str(&delimited_field(v, self.delimiter, i == 0));
                }
                Ok(Some(out.into_bytes()))
            }
            Format::Json => {
                // Sized once: growing by doubling copies the text and faults in fresh pages.
                let estimate: usize = columns
                    .iter()
                    .zip(values)
                    .map(|(c, v)| c.name.len() + 4 + if let Value::String(s) = v { s.len() + 2 } else { 24 })
                    .sum();
                let mut out = String::with_capacity(estimate + 2);
                Ok(self.write_json_row(columns, values, &mut out).then(|| out.into_bytes()))
            }
        }
    }

    /// A JSON row's text appended to `out`; false (nothing written) for a single unwrapped
    /// null, which is no value at all.
    fn write_json_row(&self, columns: &[Field], values: &[Value], out: &mut String) -> bool {
        if self.unwrapped && columns.len() == 1 {
            if values[0].is_null() {
                return false;
            }
            write_json(&values[0], out);
        } else {
            out.push('{');
            for (i, (c, v)) in columns.iter().zip(values).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(&c.name, out);
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
        true
    }

    /// [`Serde::serialize`] into `Bytes` cut from a buffer many records share: a JSON row
    /// costs no allocation of its own (its text is written into this thread's scratch string,
    /// then copied to the shared buffer), where a `Vec` of its own would cost two (the text, and
    /// `Bytes`' header when the `Vec` has room to spare).
    pub fn serialize_shared(&self, columns: &[Field], values: &[Value]) -> Result<Option<Bytes>, String> {
        if self.format != Format::Json {
            return Ok(self.serialize(columns, values)?.map(Bytes::from));
        }
        SHARED_OUTPUT.with(|cell| {
            let (scratch, shared) = &mut *cell.borrow_mut();
            scratch.clear();
            if !self.write_json_row(columns, values, scratch) {
                return Ok(None);
            }
            let bytes = cut_shared(shared, scratch.as_bytes());
            if scratch.capacity() > SQL_OUTPUT_BUFFER_BYTES {
                // A rare large row: its scratch is not kept for the thread's life.
                *scratch = String::new();
            }
            Ok(Some(bytes))
        })
    }

    /// [`Serde::deserialize`] appending the values to `out` (left as it was on an error).
    /// `unread`: bit `i` set for a VARCHAR column `i` the caller does not read, which may be
    /// left null (the JSON format then spares building its string; errors are the same).
    pub fn deserialize_into(
        &self,
        columns: &[Field],
        bytes: Option<&[u8]>,
        out: &mut Vec<Value>,
        unread: u64,
    ) -> Result<(), String> {
        if let (Format::Json, Some(bytes)) = (self.format, bytes) {
            if !(self.unwrapped && columns.len() == 1) && json_row::decode_object_into(columns, bytes, out, unread) {
                return Ok(());
            }
        }
        out.extend(self.deserialize(columns, bytes)?);
        Ok(())
    }

    /// Decodes bytes into one value per column. `None` bytes decode to all nulls.
    pub fn deserialize(&self, columns: &[Field], bytes: Option<&[u8]>) -> Result<Vec<Value>, String> {
        let Some(bytes) = bytes else {
            return Ok(vec![Value::Null; columns.len()]);
        };
        match self.format {
            Format::None => Ok(vec![]),
            Format::Kafka => match columns.first() {
                None => Ok(vec![]),
                Some(c) => Ok(vec![kafka_decode(&c.ty, bytes)?]),
            },
            Format::Delimited => {
                let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?;
                let fields = split_delimited(text, self.delimiter);
                if fields.len() != columns.len() {
                    return Err(format!(
                        "Unexpected field count, csvFields:{} schemaFields:{} line: {text}",
                        fields.len(),
                        columns.len()
                    ));
                }
                columns
                    .iter()
                    .zip(fields)
                    .map(|(c, f)| match f {
                        None => Ok(Value::Null),
                        Some(f) if f.is_empty() && c.ty != SqlType::String => Ok(Value::Null),
                        Some(f) => from_text(&c.ty, &f),
                    })
                    .collect()
            }
            Format::Json => {
                if !(self.unwrapped && columns.len() == 1) {
                    let mut row = Vec::with_capacity(columns.len());
                    if json_row::decode_object_into(columns, bytes, &mut row, 0) {
                        return Ok(row);
                    }
                }
                let json: Json =
                    serde_json::from_slice(bytes).map_err(|e| format!("Failed to deserialize JSON: {e}"))?;
                if self.unwrapped && columns.len() == 1 {
                    return Ok(vec![from_json(&columns[0].ty, &json)?]);
                }
                match &json {
                    Json::Object(map) => columns
                        .iter()
                        .map(|c| {
                            let v = map
                                .get(&c.name)
                                .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(&c.name)).map(|(_, v)| v));
                            match v {
                                None => Ok(Value::Null),
                                Some(v) => from_json(&c.ty, v),
                            }
                        })
                        .collect(),
                    Json::Null => Ok(vec![Value::Null; columns.len()]),
                    other if columns.len() == 1 => Ok(vec![from_json(&columns[0].ty, other)?]),
                    other => Err(format!("Expected a JSON object, got {other}")),
                }
            }
        }
    }
}

/// A copy of `bytes` cut from this thread's shared output buffer (see
/// [`Serde::serialize_shared`]): for keys, which are built in a `Vec` of their own, the copy
/// spares `Bytes` its header allocation, and the writer that drops the record a free of memory
/// this thread allocated.
pub fn shared_copy(bytes: &[u8]) -> Bytes {
    SHARED_OUTPUT.with(|cell| cut_shared(&mut cell.borrow_mut().1, bytes))
}

fn cut_shared(shared: &mut BytesMut, bytes: &[u8]) -> Bytes {
    if shared.capacity() < bytes.len() {
        // A fresh buffer: the records cut from the old one keep it alive until dropped.
        *shared = BytesMut::with_capacity(SQL_OUTPUT_BUFFER_BYTES.max(bytes.len()));
    }
    shared.extend_from_slice(bytes);
    shared.split().freeze()
}

/// The bare name of a type (`ARRAY`, `MAP`, `STRUCT`, `DECIMAL`...), as format errors give it.
fn kafka_type_name(t: &SqlType) -> String {
    let s = t.to_string();
    s.split(['<', '(']).next().unwrap_or(&s).to_string()
}

pub fn kafka_encode(v: &Value) -> Result<Vec<u8>, String> {
    Ok(match v {
        Value::Int(i) => i.to_be_bytes().to_vec(),
        Value::BigInt(i) => i.to_be_bytes().to_vec(),
        Value::Double(d) => d.to_be_bytes().to_vec(),
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Bytes(b) => b.clone(),
        other => return Err(format!("the KAFKA format cannot carry {other}")),
    })
}

pub fn kafka_decode(ty: &SqlType, b: &[u8]) -> Result<Value, String> {
    let size_err = |n: usize| format!("Size of data received by Deserializer is not {n}");
    Ok(match ty {
        SqlType::Int => Value::Int(i32::from_be_bytes(b.try_into().map_err(|_| size_err(4))?)),
        SqlType::BigInt => Value::BigInt(i64::from_be_bytes(b.try_into().map_err(|_| size_err(8))?)),
        SqlType::Double => Value::Double(f64::from_be_bytes(b.try_into().map_err(|_| size_err(8))?)),
        SqlType::String => Value::String(String::from_utf8(b.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))?),
        SqlType::Bytes => Value::Bytes(b.to_vec()),
        other => return Err(format!("the KAFKA format cannot carry {other}")),
    })
}

/// One DELIMITED field, quoted as ksqlDB's CSV printer (Apache Commons CSV, minimal quoting)
/// quotes it: a null is an empty field; a value is quoted if it contains the delimiter, a quote
/// or a line break, starts with a character up to `#` or ends with whitespace, and the first
/// field of a record also if it is empty or does not start with a letter or digit.
fn delimited_field(v: &Value, delim: char, first: bool) -> String {
    let text = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => base64_encode(b),
        Value::Date(d) => d.to_string(),
        Value::Time(t) => t.to_string(),
        Value::Timestamp(t) => t.to_string(),
        other => other.to_string(),
    };
    let quote = match (text.chars().next(), text.chars().last()) {
        (None, _) => first,
        (Some(c), Some(last)) => {
            (first && !c.is_ascii_alphanumeric()) || c <= '#' || text.contains([delim, '"', '\n', '\r']) || last <= ' '
        }
        (Some(_), None) => false,
    };
    if quote {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// CSV fields; `None` for an empty unquoted field.
fn split_delimited(text: &str, delim: char) -> Vec<Option<String>> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.is_empty() {
            quoted = true;
            was_quoted = true;
        } else if c == delim {
            out.push(if cur.is_empty() && !was_quoted { None } else { Some(std::mem::take(&mut cur)) });
            was_quoted = false;
        } else {
            cur.push(c);
        }
    }
    out.push(if cur.is_empty() && !was_quoted { None } else { Some(cur) });
    out
}

/// Parses a value of a primitive type from text (DELIMITED fields).
pub fn from_text(ty: &SqlType, s: &str) -> Result<Value, String> {
    let err = || format!("Invalid value '{s}' for type {ty}");
    Ok(match ty {
        SqlType::Boolean => Value::Boolean(match s.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(err()),
        }),
        SqlType::Int => Value::Int(s.trim().parse().map_err(|_| err())?),
        SqlType::BigInt => Value::BigInt(s.trim().parse().map_err(|_| err())?),
        SqlType::Double => Value::Double(s.trim().parse().map_err(|_| err())?),
        SqlType::Decimal { precision, scale } => {
            let (u, sc) = parse_decimal(s).ok_or_else(err)?;
            fit_decimal(u, sc, *precision, *scale)?
        }
        SqlType::String => Value::String(s.to_string()),
        SqlType::Bytes => Value::Bytes(base64_decode(s).ok_or_else(err)?),
        SqlType::Date => Value::Date(s.trim().parse().map_err(|_| err())?),
        SqlType::Time => Value::Time(s.trim().parse().map_err(|_| err())?),
        SqlType::Timestamp => Value::Timestamp(s.trim().parse().map_err(|_| err())?),
        _ => return Err(err()),
    })
}

fn fit_decimal(u: i128, sc: u8, precision: u8, scale: u8) -> Result<Value, String> {
    let v = crate::value::rescale(u, sc, scale);
    if crate::value::decimal_digits(v) > precision {
        return Err(format!(
            "Cannot fit decimal '{}' into DECIMAL({precision}, {scale}) without rounding.",
            decimal_to_string(u, sc)
        ));
    }
    Ok(Value::Decimal(v, scale))
}

/// Converts a JSON value to a value of `ty`, coercing the way ksqlDB's JSON deserializer does.
pub fn from_json(ty: &SqlType, j: &Json) -> Result<Value, String> {
    if j.is_null() {
        return Ok(Value::Null);
    }
    let mismatch = || format!("Can't convert type. sourceType: {}, requiredType: {ty}, path: $", json_type(j));
    Ok(match ty {
        SqlType::Boolean => match j {
            Json::Bool(b) => Value::Boolean(*b),
            Json::String(s) => Value::Boolean(s.eq_ignore_ascii_case("true")),
            _ => return Err(mismatch()),
        },
        SqlType::Int => match j {
            Json::Number(n) => {
                Value::Int(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).ok_or_else(mismatch)? as i32)
            }
            Json::String(s) => Value::Int(s.trim().parse().map_err(|_| mismatch())?),
            _ => return Err(mismatch()),
        },
        SqlType::BigInt => match j {
            Json::Number(n) => Value::BigInt(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).ok_or_else(mismatch)?),
            Json::String(s) => Value::BigInt(s.trim().parse().map_err(|_| mismatch())?),
            _ => return Err(mismatch()),
        },
        SqlType::Double => match j {
            Json::Number(n) => Value::Double(n.as_f64().ok_or_else(mismatch)?),
            Json::String(s) => Value::Double(s.trim().parse().map_err(|_| mismatch())?),
            _ => return Err(mismatch()),
        },
        SqlType::Decimal { precision, scale } => {
            let text = match j {
                Json::Number(n) => n.to_string(),
                Json::String(s) => s.clone(),
                _ => return Err(mismatch()),
            };
            let (u, sc) = match parse_decimal(&text) {
                Some(d) => d,
                None => {
                    let f: f64 = text.parse().map_err(|_| mismatch())?;
                    (Value::Double(f).to_decimal(*scale).ok_or_else(mismatch)?, *scale)
                }
            };
            fit_decimal(u, sc, *precision, *scale)?
        }
        SqlType::String => match j {
            Json::String(s) => Value::String(s.clone()),
            Json::Number(n) => Value::String(n.to_string()),
            Json::Bool(b) => Value::String(b.to_string()),
            other => Value::String(other.to_string()),
        },
        SqlType::Bytes => match j {
            Json::String(s) => Value::Bytes(base64_decode(s).ok_or_else(mismatch)?),
            _ => return Err(mismatch()),
        },
        SqlType::Date => match j {
            Json::Number(n) => Value::Date(n.as_i64().ok_or_else(mismatch)? as i32),
            Json::String(s) => Value::Date(crate::time::parse_date(s).ok_or_else(mismatch)?),
            _ => return Err(mismatch()),
        },
        SqlType::Time => match j {
            Json::Number(n) => Value::Time(n.as_i64().ok_or_else(mismatch)?),
            Json::String(s) => Value::Time(crate::time::parse_time(s).ok_or_else(mismatch)?),
            _ => return Err(mismatch()),
        },
        SqlType::Timestamp => match j {
            Json::Number(n) => Value::Timestamp(n.as_i64().ok_or_else(mismatch)?),
            Json::String(s) => Value::Timestamp(
                crate::time::parse_timestamp(s).or_else(|| s.trim().parse().ok()).ok_or_else(mismatch)?,
            ),
            _ => return Err(mismatch()),
        },
        SqlType::Array(t) => match j {
            Json::Array(items) => Value::Array(items.iter().map(|i| from_json(t, i)).collect::<Result<_, _>>()?),
            _ => return Err(mismatch()),
        },
        SqlType::Map(kt, vt) => match j {
            Json::Object(m) => Value::Map(
                m.iter().map(|(k, v)| Ok((from_text(kt, k)?, from_json(vt, v)?))).collect::<Result<_, String>>()?,
            ),
            _ => return Err(mismatch()),
        },
        SqlType::Struct(fields) => match j {
            Json::Object(m) => Value::Struct(
                fields
                    .iter()
                    .map(|f| {
                        let v = m
                            .get(&f.name)
                            .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(&f.name)).map(|(_, v)| v));
                        Ok((
                            f.name.clone(),
                            match v {
                                Some(v) => from_json(&f.ty, v)?,
                                None => Value::Null,
                            },
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err(mismatch()),
        },
    })
}

fn json_type(j: &Json) -> &'static str {
    match j {
        Json::Null => "NULL",
        Json::Bool(_) => "BOOLEAN",
        Json::Number(n) if n.is_f64() => "DOUBLE",
        Json::Number(_) => "BIGINT",
        Json::String(_) => "STRING",
        Json::Array(_) => "ARRAY",
        Json::Object(_) => "STRUCT",
    }
}

/// Writes a value as JSON text; decimals keep their scale.
pub fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => write_int(*i, out),
        Value::BigInt(i) => write_int(*i, out),
        Value::Double(d) => {
            if d.is_finite() {
                crate::value::push_double(*d, out)
            } else {
                write_json_string(&double_to_string(*d), out)
            }
        }
        Value::Decimal(u, s) => crate::value::push_decimal(*u, *s, out),
        Value::String(s) => write_json_string(s, out),
        Value::Bytes(b) => write_json_string(&base64_encode(b), out),
        Value::Date(d) => write_int(*d, out),
        Value::Time(t) => write_int(*t, out),
        Value::Timestamp(t) => write_int(*t, out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                write_json_string(&key, out);
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
        Value::Struct(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

/// A value as a serde_json value (for the REST API and test comparisons).
pub fn to_json(v: &Value) -> Json {
    let mut s = String::new();
    write_json(v, &mut s);
    serde_json::from_str(&s).unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_buffers_hold_what_serialize_writes() {
        let columns =
            [Field { name: "ID".into(), ty: SqlType::BigInt }, Field { name: "NAME".into(), ty: SqlType::String }];
        let json = Serde::new(Format::Json);
        let unwrapped = Serde { unwrapped: true, ..Serde::new(Format::Json) };
        let mut kept = vec![];
        // Rows past several buffers, one longer than a buffer: each keeps its own bytes.
        for i in 0..3 * SQL_OUTPUT_BUFFER_BYTES / 20 {
            let name = if i == 100 { "x".repeat(SQL_OUTPUT_BUFFER_BYTES + 1) } else { format!("n\"{i}") };
            let row = [Value::BigInt(i as i64), Value::String(name)];
            let shared = json.serialize_shared(&columns, &row).unwrap().unwrap();
            assert_eq!(Some(shared.to_vec()), json.serialize(&columns, &row).unwrap());
            kept.push((shared, row));
        }
        for (shared, row) in &kept {
            assert_eq!(Some(shared.to_vec()), json.serialize(&columns, row).unwrap());
        }
        // No value at all, and the other formats, as serialize has them.
        assert_eq!(unwrapped.serialize_shared(&columns[..1], &[Value::Null]).unwrap(), None);
        let delimited = Serde::new(Format::Delimited);
        let row = [Value::BigInt(7), Value::String("a,b".into())];
        assert_eq!(
            delimited.serialize_shared(&columns, &row).unwrap().map(|b| b.to_vec()),
            delimited.serialize(&columns, &row).unwrap()
        );
    }

    #[test]
    fn delimited_fields_are_quoted_as_ksqldb_quotes_them() {
        let f = |v: Value, first| delimited_field(&v, ',', first);
        assert_eq!(f(Value::Int(-1), true), "\"-1\"");
        assert_eq!(f(Value::Int(-1), false), "-1");
        assert_eq!(f(Value::String(String::new()), true), "\"\"");
        assert_eq!(f(Value::String(String::new()), false), "");
        assert_eq!(f(Value::Null, true), "");
        assert_eq!(f(Value::String("a,b".into()), false), "\"a,b\"");
        assert_eq!(f(Value::String("say \"hi\"".into()), false), "\"say \"\"hi\"\"\"");
        assert_eq!(f(Value::String("#tag".into()), false), "\"#tag\"");
        assert_eq!(f(Value::String("trailing ".into()), false), "\"trailing \"");
        assert_eq!(f(Value::String("plain".into()), true), "plain");
    }
}
