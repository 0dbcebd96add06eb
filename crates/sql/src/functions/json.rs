//! JSON functions. They parse with a small parser of their own that keeps object key order and
//! the exact text of numbers, as ksqlDB's Jackson tree model does.

use super::{f, Sig};
use crate::error::Result;
use crate::functions::ScalarFn;
use crate::types::SqlType as T;
use crate::value::Value;

/// A parsed JSON value; numbers keep their text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Deepest nesting the parser accepts.
const MAX_DEPTH: usize = 256;

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        let c = *self.b.get(self.i)?;
        Some(match c {
            b'{' => {
                self.i += 1;
                let mut out: Vec<(String, Json)> = vec![];
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Some(Json::Obj(out));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    match out.iter_mut().find(|(k2, _)| *k2 == k) {
                        Some(slot) => slot.1 = v,
                        None => out.push((k, v)),
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
                Json::Obj(out)
            }
            b'[' => {
                self.i += 1;
                let mut out = vec![];
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Some(Json::Arr(out));
                }
                loop {
                    out.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
                Json::Arr(out)
            }
            b'"' => Json::Str(self.string()?),
            b't' => self.word("true", Json::Bool(true))?,
            b'f' => self.word("false", Json::Bool(false))?,
            b'n' => self.word("null", Json::Null)?,
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                if c == b'-' {
                    self.i += 1;
                }
                let digits = |p: &mut Self| {
                    let s = p.i;
                    while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                        p.i += 1;
                    }
                    p.i > s
                };
                if !digits(self) {
                    return None;
                }
                if self.b.get(self.i) == Some(&b'.') {
                    self.i += 1;
                    if !digits(self) {
                        return None;
                    }
                }
                if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
                    self.i += 1;
                    if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                        self.i += 1;
                    }
                    if !digits(self) {
                        return None;
                    }
                }
                Json::Num(std::str::from_utf8(&self.b[start..self.i]).ok()?.to_string())
            }
            _ => return None,
        })
    }

    fn word(&mut self, w: &str, v: Json) -> Option<Json> {
        if self.b[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Some(v)
        } else {
            None
        }
    }

    fn string(&mut self) -> Option<String> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out: Vec<u8> = vec![];
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) && self.b[self.i..].starts_with(b"\\u") {
                                self.i += 2;
                                let low = self.hex4()?;
                                code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            let ch = char::from_u32(code).unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).ok()
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.b.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }
}

/// Parses the first JSON value of `text` (trailing text is ignored, as Jackson's `readTree`
/// does); `None` when there is none.
pub(crate) fn parse(text: &str) -> Option<Json> {
    Parser { b: text.as_bytes(), i: 0 }.value(0)
}

/// Parses `text` as exactly one JSON value.
fn parse_strict(text: &str) -> Option<Json> {
    let mut p = Parser { b: text.as_bytes(), i: 0 };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.b.len()).then_some(v)
}

fn write_str(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Compact JSON text, as Jackson writes it.
pub(crate) fn write(j: &Json, out: &mut String) {
    match j {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Num(n) => out.push_str(n),
        Json::Str(s) => write_str(s, out),
        Json::Arr(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        Json::Obj(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
    }
}

fn text_of(j: &Json) -> String {
    let mut s = String::new();
    write(j, &mut s);
    s
}

/// One step of a JSON path.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
}

/// Parses the JSON paths EXTRACTJSONFIELD takes: `$.a.b`, `$.a[0]`, `$['a']`, `$["a"]`.
fn parse_path(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let mut rest = p.strip_prefix('$')?;
    let mut steps = vec![];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let inner = r[..close].trim();
            if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                steps.push(Step::Key(q.to_string()));
            } else if let Some(q) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                steps.push(Step::Key(q.to_string()));
            } else {
                steps.push(Step::Index(inner.parse().ok()?));
            }
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

fn walk<'a>(mut j: &'a Json, steps: &[Step]) -> Option<&'a Json> {
    for s in steps {
        j = match (s, j) {
            (Step::Key(k), Json::Obj(entries)) => entries.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v)?,
            (Step::Index(i), Json::Arr(items)) => {
                if *i < 0 {
                    return None;
                }
                items.get(*i as usize)?
            }
            _ => return None,
        };
    }
    Some(j)
}

/// A value as JSON, the way ksqlDB's TO_JSON_STRING writes it.
pub(crate) fn value_to_json(v: &Value, out: &mut String) {
    match v {
        Value::Date(d) => write_str(&crate::time::format_date(*d), out),
        Value::Time(t) => write_str(&crate::time::format_time(*t), out),
        Value::Timestamp(t) => write_str(&crate::time::format_timestamp(*t), out),
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value_to_json(x, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, x)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(&k.to_string(), out);
                out.push(':');
                value_to_json(x, out);
            }
            out.push('}');
        }
        Value::Struct(fields) => {
            out.push('{');
            for (i, (k, x)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                value_to_json(x, out);
            }
            out.push('}');
        }
        other => crate::format::write_json(other, out),
    }
}

/// Whether a JSON node equals a SQL value (JSON_ARRAY_CONTAINS).
fn json_equals(j: &Json, v: &Value) -> bool {
    match (j, v) {
        (Json::Null, Value::Null) => true,
        (Json::Bool(a), Value::Boolean(b)) => a == b,
        (Json::Str(a), Value::String(b)) => a == b,
        (Json::Num(n), Value::Int(_) | Value::BigInt(_)) => {
            n.parse::<i64>().ok().zip(v.as_i64()).is_some_and(|(a, b)| a == b)
        }
        (Json::Num(n), Value::Double(d)) => n.parse::<f64>().is_ok_and(|a| a == *d),
        (Json::Num(n), Value::Decimal(..)) => crate::value::parse_decimal(n)
            .is_some_and(|(u, s)| Value::Decimal(u, s).compare(v) == Some(std::cmp::Ordering::Equal)),
        _ => false,
    }
}

fn str_arg(v: &Value) -> Option<&str> {
    v.as_str()
}

fn string(t: &T) -> bool {
    *t == T::String
}

pub(super) fn resolve(s: &Sig) -> Result<Option<(ScalarFn, T)>> {
    Ok(Some(match s.name {
        "EXTRACTJSONFIELD" => {
            s.arity(2, 2)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| {
                    let (Some(json), Some(path)) = (str_arg(&a[0]), str_arg(&a[1])) else { return Ok(Value::Null) };
                    let steps = parse_path(path).ok_or_else(|| format!("Invalid JSON path: {path}"))?;
                    Ok(match parse(json).as_ref().and_then(|j| walk(j, &steps)) {
                        None | Some(Json::Null) => Value::Null,
                        Some(Json::Str(s)) => Value::String(s.clone()),
                        Some(other) => Value::String(text_of(other)),
                    })
                }),
                T::String,
            )
        }
        "IS_JSON_STRING" => {
            s.arity(1, 1)?;
            s.check(s.all(string))?;
            (f!(|a, _| Ok(Value::Boolean(str_arg(&a[0]).is_some_and(|j| parse_strict(j).is_some())))), T::Boolean)
        }
        "JSON_ARRAY_LENGTH" => {
            s.arity(1, 1)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| Ok(match str_arg(&a[0]).and_then(parse) {
                    Some(Json::Arr(items)) => Value::Int(items.len() as i32),
                    _ => Value::Null,
                })),
                T::Int,
            )
        }
        "JSON_ARRAY_CONTAINS" => {
            s.arity(2, 2)?;
            s.check(s.is(0, string) && s.is(1, |t| t.is_primitive()))?;
            (
                f!(|a, _| Ok(Value::Boolean(match str_arg(&a[0]).and_then(parse) {
                    Some(Json::Arr(items)) => items.iter().any(|j| json_equals(j, &a[1])),
                    _ => false,
                }))),
                T::Boolean,
            )
        }
        "JSON_KEYS" => {
            s.arity(1, 1)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| Ok(match str_arg(&a[0]).and_then(parse) {
                    Some(Json::Obj(entries)) => {
                        Value::Array(entries.into_iter().map(|(k, _)| Value::String(k)).collect())
                    }
                    _ => Value::Null,
                })),
                T::Array(Box::new(T::String)),
            )
        }
        "JSON_ITEMS" => {
            s.arity(1, 1)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| Ok(match str_arg(&a[0]).and_then(parse) {
                    Some(Json::Arr(items)) => Value::Array(items.iter().map(|j| Value::String(text_of(j))).collect()),
                    _ => Value::Null,
                })),
                T::Array(Box::new(T::String)),
            )
        }
        "JSON_RECORDS" => {
            s.arity(1, 1)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| Ok(match str_arg(&a[0]).and_then(parse) {
                    Some(Json::Obj(entries)) => Value::Map(
                        entries.into_iter().map(|(k, v)| (Value::String(k), Value::String(text_of(&v)))).collect(),
                    ),
                    _ => Value::Null,
                })),
                T::Map(Box::new(T::String), Box::new(T::String)),
            )
        }
        "JSON_CONCAT" => {
            s.check(s.n() >= 1 && s.all(string))?;
            (
                f!(|a, _| {
                    let mut nodes = vec![];
                    for v in a {
                        let Some(j) = str_arg(v).and_then(parse) else { return Ok(Value::Null) };
                        nodes.push(j);
                    }
                    let all_objects = nodes.iter().all(|j| matches!(j, Json::Obj(_)));
                    let mut iter = nodes.into_iter();
                    let mut acc = iter.next().unwrap_or(Json::Null);
                    for next in iter {
                        acc = match (acc, next) {
                            (Json::Obj(mut x), Json::Obj(y)) if all_objects => {
                                for (k, v) in y {
                                    match x.iter_mut().find(|(k2, _)| *k2 == k) {
                                        Some(slot) => slot.1 = v,
                                        None => x.push((k, v)),
                                    }
                                }
                                Json::Obj(x)
                            }
                            (x, y) => {
                                let mut items = match x {
                                    Json::Arr(i) => i,
                                    other => vec![other],
                                };
                                match y {
                                    Json::Arr(i) => items.extend(i),
                                    other => items.push(other),
                                }
                                Json::Arr(items)
                            }
                        };
                    }
                    Ok(Value::String(text_of(&acc)))
                }),
                T::String,
            )
        }
        "TO_JSON_STRING" => {
            s.arity(1, 1)?;
            (
                f!(|a, _| {
                    let mut out = String::new();
                    value_to_json(&a[0], &mut out);
                    Ok(Value::String(out))
                }),
                T::String,
            )
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keeping_order_and_number_text() {
        let j = parse("{\"b\": 1.23450, \"a\": [1, {\"x\": null}], \"s\": \"\\u00e9\\n\"}}").unwrap();
        assert_eq!(text_of(&j), "{\"b\":1.23450,\"a\":[1,{\"x\":null}],\"s\":\"é\\n\"}");
        assert!(parse_strict("{} x").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn paths() {
        let j = parse("{\"array\": [1, 2, 3], \"@type\": \"UDF\", \"a b\": {\"c\": true}}").unwrap();
        let get = |p: &str| walk(&j, &parse_path(p).unwrap()).map(text_of);
        assert_eq!(get("$.array[0]").as_deref(), Some("1"));
        assert_eq!(get("$.array[-1]"), None);
        assert_eq!(get("$.@type").as_deref(), Some("\"UDF\""));
        assert_eq!(get("$['a b'].c").as_deref(), Some("true"));
    }
}
