//! Event filters of topic triggers, in the style of EventBridge / Lambda event-source filters:
//! a JSON pattern matched against the record's JSON value. A record whose value is not JSON
//! matches no pattern (except the empty pattern `{}`).
//!
//! - `{"field": [v1, v2]}`: the field equals one of the listed values (strings, numbers,
//!   booleans, null).
//! - `{"field": {"nested": [...]}}`: patterns nest into objects.
//! - `{"prefix": "ab"}`, `{"suffix": "yz"}`, `{"exists": true|false}`,
//!   `{"anything-but": [..]}`, `{"numeric": [">", 10, "<=", 20]}` as list items.
//!
//! Fields of one pattern must all match (AND); values of one list match if any does (OR).

use serde_json::Value;

/// A checked pattern.
#[derive(Debug, Clone)]
pub struct Filter(Value);

impl Filter {
    pub fn new(pattern: &Value) -> Result<Filter, String> {
        check_pattern(pattern, "")?;
        Ok(Filter(pattern.clone()))
    }

    /// Whether a record value matches.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        let empty = self.0.as_object().is_some_and(|o| o.is_empty());
        if empty {
            return true;
        }
        let Some(doc) = value.and_then(|v| serde_json::from_slice::<Value>(v).ok()) else {
            return false;
        };
        matches_object(&self.0, Some(&doc))
    }
}

fn check_pattern(p: &Value, path: &str) -> Result<(), String> {
    let obj = p.as_object().ok_or_else(|| format!("filter at '{path}': expected an object of fields"))?;
    for (k, v) in obj {
        let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match v {
            Value::Object(_) => check_pattern(v, &here)?,
            Value::Array(items) => {
                for item in items {
                    check_item(item, &here)?;
                }
            }
            _ => return Err(format!("filter at '{here}': expected a list of values or a nested object")),
        }
    }
    Ok(())
}

fn check_item(item: &Value, path: &str) -> Result<(), String> {
    let Value::Object(o) = item else { return Ok(()) };
    let (op, arg) = o.iter().next().ok_or_else(|| format!("filter at '{path}': empty matcher {{}}"))?;
    let ok = match op.as_str() {
        "prefix" | "suffix" => arg.is_string(),
        "exists" => arg.is_boolean(),
        "anything-but" => true,
        "numeric" => arg.as_array().is_some_and(|a| {
            a.len() % 2 == 0
                && !a.is_empty()
                && a.chunks(2).all(|c| matches!(c[0].as_str(), Some("<" | "<=" | "=" | ">=" | ">")) && c[1].is_number())
        }),
        _ => return Err(format!("filter at '{path}': unknown matcher '{op}'")),
    };
    if !ok || o.len() != 1 {
        return Err(format!("filter at '{path}': malformed '{op}' matcher"));
    }
    Ok(())
}

fn matches_object(pattern: &Value, doc: Option<&Value>) -> bool {
    let Some(p) = pattern.as_object() else { return false };
    p.iter().all(|(k, v)| {
        let field = doc.and_then(|d| d.get(k));
        match v {
            Value::Object(_) => matches_object(v, field),
            Value::Array(items) => items.iter().any(|i| matches_item(i, field)),
            _ => false,
        }
    })
}

fn matches_item(item: &Value, field: Option<&Value>) -> bool {
    match item {
        Value::Object(o) => {
            let Some((op, arg)) = o.iter().next() else { return false };
            match op.as_str() {
                "exists" => arg.as_bool() == Some(field.is_some()),
                "prefix" => {
                    matches!((field, arg), (Some(Value::String(f)), Value::String(a)) if f.starts_with(a.as_str()))
                }
                "suffix" => {
                    matches!((field, arg), (Some(Value::String(f)), Value::String(a)) if f.ends_with(a.as_str()))
                }
                "anything-but" => {
                    let Some(f) = field else { return false };
                    match arg {
                        Value::Array(a) => !a.contains(f),
                        v => v != f,
                    }
                }
                "numeric" => {
                    let (Some(f), Some(conds)) = (field.and_then(Value::as_f64), arg.as_array()) else {
                        return false;
                    };
                    conds.chunks(2).all(|c| {
                        let n = c[1].as_f64().unwrap_or(f64::NAN);
                        match c[0].as_str() {
                            Some("<") => f < n,
                            Some("<=") => f <= n,
                            Some("=") => f == n,
                            Some(">=") => f >= n,
                            Some(">") => f > n,
                            _ => false,
                        }
                    })
                }
                _ => false,
            }
        }
        literal => match field {
            // A list field matches if any of its elements equals the literal.
            Some(Value::Array(a)) => a.contains(literal),
            Some(f) => f == literal,
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(p: Value, v: &str) -> bool {
        Filter::new(&p).unwrap().matches(Some(v.as_bytes()))
    }

    #[test]
    fn literals_nesting_and_matchers() {
        assert!(m(json!({"status": ["paid", "shipped"]}), r#"{"status":"paid"}"#));
        assert!(!m(json!({"status": ["paid"]}), r#"{"status":"open"}"#));
        assert!(m(json!({"a": {"b": [1]}}), r#"{"a":{"b":1}}"#));
        assert!(!m(json!({"a": {"b": [1]}}), r#"{"a":{"b":2}}"#));
        assert!(m(json!({"id": [{"prefix": "ord-"}]}), r#"{"id":"ord-1"}"#));
        assert!(m(json!({"x": [{"exists": false}]}), r#"{"y":1}"#));
        assert!(m(json!({"n": [{"numeric": [">", 10, "<=", 20]}]}), r#"{"n":15}"#));
        assert!(!m(json!({"n": [{"numeric": [">", 10]}]}), r#"{"n":5}"#));
        assert!(m(json!({"s": [{"anything-but": ["x"]}]}), r#"{"s":"y"}"#));
        assert!(m(json!({"tags": ["red"]}), r#"{"tags":["blue","red"]}"#));
        assert!(!m(json!({"status": ["paid"]}), "not json"));
        assert!(Filter::new(&json!({})).unwrap().matches(Some(b"not json")));
    }

    #[test]
    fn bad_patterns_say_where() {
        let e = Filter::new(&json!({"a": 1})).unwrap_err();
        assert!(e.contains("'a'"), "{e}");
        let e = Filter::new(&json!({"a": [{"regex": "x"}]})).unwrap_err();
        assert!(e.contains("unknown matcher 'regex'"), "{e}");
        assert!(Filter::new(&json!([1])).is_err());
    }
}
