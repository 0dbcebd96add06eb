//! The scalar function library.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (how ksqlDB prints BYTES).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padding optional.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

use crate::error::{Result, SqlError};
use crate::expr::{CExpr, Env, EvalResult};
use crate::types::SqlType;
use crate::value::Value;

/// A scalar function implementation: arguments and the resolved return type.
#[derive(Clone, Copy)]
pub struct ScalarFn(pub fn(&[Value], &SqlType) -> EvalResult);

impl std::fmt::Debug for ScalarFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScalarFn")
    }
}

/// Functions that take lambdas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HigherOrder {
    Transform,
    TransformMap,
    Filter,
    Reduce,
}

pub fn higher_order(name: &str) -> Option<HigherOrder> {
    Some(match name {
        "TRANSFORM" => HigherOrder::Transform,
        "FILTER" => HigherOrder::Filter,
        "REDUCE" => HigherOrder::Reduce,
        _ => return None,
    })
}

/// Names of the aggregate functions (planned by the aggregation operator, not here).
pub const AGGREGATES: &[&str] = &[
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "COUNT_DISTINCT",
    "COLLECT_LIST",
    "COLLECT_SET",
    "EARLIEST_BY_OFFSET",
    "LATEST_BY_OFFSET",
    "TOPK",
    "TOPKDISTINCT",
    "HISTOGRAM",
    "STDDEV_SAMPLE",
    "STDDEV_SAMP",
    "STDDEV_POP",
    "VAR_SAMP",
    "VAR_POP",
    "CORRELATION",
    "ATTR",
];

pub fn is_aggregate(name: &str) -> bool {
    AGGREGATES.contains(&name)
}

/// Names of table functions (one input row, many output rows).
pub fn is_table_function(name: &str) -> bool {
    matches!(name, "EXPLODE" | "CUBE_EXPLODE")
}

pub fn concat_fn() -> ScalarFn {
    ScalarFn(|args, _| {
        let mut out = String::new();
        for a in args {
            if let Value::String(s) = a {
                out.push_str(s);
            }
        }
        Ok(Value::String(out))
    })
}

fn arity(name: &str, args: &[SqlType], min: usize, max: usize) -> Result<()> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(SqlError::statement(format!(
            "Function '{name}' does not accept parameters ({}): it takes {want} argument(s)",
            args.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

fn want(name: &str, args: &[SqlType], ok: bool) -> Result<()> {
    if !ok {
        return Err(SqlError::statement(format!(
            "Function '{name}' does not accept parameters ({}).",
            args.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

fn str_arg(v: &Value) -> Option<&str> {
    v.as_str()
}

macro_rules! f {
    ($body:expr) => {
        ScalarFn($body)
    };
}

/// Resolves a scalar function by name and argument types.
pub fn resolve(name: &str, args: &[SqlType], null_args: &[bool]) -> Result<(ScalarFn, SqlType)> {
    use SqlType as T;
    let _ = null_args;
    let first = args.first().cloned().unwrap_or(T::String);
    let all_str = args.iter().all(|t| *t == T::String);
    Ok(match name {
        "ABS" => {
            arity(name, args, 1, 1)?;
            want(name, args, first.is_numeric())?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::Int(v) => Value::Int(v.wrapping_abs()),
                    Value::BigInt(v) => Value::BigInt(v.wrapping_abs()),
                    Value::Double(v) => Value::Double(v.abs()),
                    Value::Decimal(u, s) => Value::Decimal(u.abs(), *s),
                    _ => Value::Null,
                })),
                first,
            )
        }
        "CEIL" | "FLOOR" => {
            arity(name, args, 1, 1)?;
            want(name, args, first.is_numeric())?;
            let func = if name == "CEIL" {
                f!(|a, _| Ok(match &a[0] {
                    Value::Double(v) => Value::Double(v.ceil()),
                    Value::Decimal(u, s) => {
                        let p = crate::value::pow10(*s);
                        Value::Decimal((u.div_euclid(p) + i128::from(u.rem_euclid(p) != 0)) * p, *s)
                    }
                    other => other.clone(),
                }))
            } else {
                f!(|a, _| Ok(match &a[0] {
                    Value::Double(v) => Value::Double(v.floor()),
                    Value::Decimal(u, s) => {
                        let p = crate::value::pow10(*s);
                        Value::Decimal(u.div_euclid(p) * p, *s)
                    }
                    other => other.clone(),
                }))
            };
            (func, first)
        }
        "SQRT" | "EXP" | "LN" | "LOG" | "CBRT" | "SIN" | "COS" | "TAN" | "ASIN" | "ACOS" | "ATAN" | "SINH" | "COSH"
        | "TANH" | "COT" | "DEGREES" | "RADIANS" => {
            arity(name, args, 1, 1)?;
            want(name, args, first.is_numeric())?;
            let func: ScalarFn = match name {
                "SQRT" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.sqrt())).unwrap_or(Value::Null))),
                "EXP" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.exp())).unwrap_or(Value::Null))),
                "LN" | "LOG" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.ln())).unwrap_or(Value::Null))),
                "CBRT" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.cbrt())).unwrap_or(Value::Null))),
                "SIN" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.sin())).unwrap_or(Value::Null))),
                "COS" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.cos())).unwrap_or(Value::Null))),
                "TAN" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.tan())).unwrap_or(Value::Null))),
                "ASIN" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.asin())).unwrap_or(Value::Null))),
                "ACOS" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.acos())).unwrap_or(Value::Null))),
                "ATAN" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.atan())).unwrap_or(Value::Null))),
                "SINH" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.sinh())).unwrap_or(Value::Null))),
                "COSH" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.cosh())).unwrap_or(Value::Null))),
                "TANH" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.tanh())).unwrap_or(Value::Null))),
                "COT" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(1.0 / v.tan())).unwrap_or(Value::Null))),
                "DEGREES" => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.to_degrees())).unwrap_or(Value::Null))),
                _ => f!(|a, _| Ok(a[0].as_f64().map(|v| Value::Double(v.to_radians())).unwrap_or(Value::Null))),
            };
            (func, T::Double)
        }
        "SIGN" => {
            arity(name, args, 1, 1)?;
            want(name, args, first.is_numeric())?;
            (
                f!(|a, _| Ok(a[0]
                    .as_f64()
                    .map(|v| Value::Int(if v > 0.0 {
                        1
                    } else if v < 0.0 {
                        -1
                    } else {
                        0
                    }))
                    .unwrap_or(Value::Null))),
                T::Int,
            )
        }
        "POWER" => {
            arity(name, args, 2, 2)?;
            (
                f!(|a, _| Ok(match (a[0].as_f64(), a[1].as_f64()) {
                    (Some(x), Some(y)) => Value::Double(x.powf(y)),
                    _ => Value::Null,
                })),
                T::Double,
            )
        }
        "ROUND" => {
            arity(name, args, 1, 2)?;
            want(name, args, first.is_numeric())?;
            let ty = match (&first, args.len()) {
                (T::Double, 1) => T::BigInt,
                (T::Decimal { precision, .. }, 1) => T::Decimal { precision: *precision, scale: 0 },
                (t, _) => t.clone(),
            };
            (
                f!(|a, ty| {
                    let places = a.get(1).and_then(Value::as_i64).unwrap_or(0);
                    if a.len() > 1 && a[1].is_null() {
                        return Ok(Value::Null);
                    }
                    Ok(match (&a[0], ty) {
                        (Value::Double(v), SqlType::BigInt) => Value::BigInt(java_round(*v) as i64),
                        (Value::Double(v), _) => {
                            let m = 10f64.powi(places as i32);
                            Value::Double(java_round(v * m) / m)
                        }
                        (Value::Decimal(u, s), SqlType::Decimal { scale, .. }) => {
                            let keep = places.clamp(-30, *s as i64);
                            let r = if keep >= 0 {
                                crate::value::rescale(*u, *s, keep as u8)
                            } else {
                                crate::value::rescale(*u, *s, 0)
                            };
                            Value::Decimal(crate::value::rescale(r, keep.max(0) as u8, *scale), *scale)
                        }
                        (Value::Int(v), _) if places < 0 => {
                            let m = 10i64.pow((-places) as u32) as f64;
                            Value::Int((java_round(*v as f64 / m) * m) as i32)
                        }
                        (Value::BigInt(v), _) if places < 0 => {
                            let m = 10i64.pow((-places) as u32) as f64;
                            Value::BigInt((java_round(*v as f64 / m) * m) as i64)
                        }
                        (other, _) => other.clone(),
                    })
                }),
                ty,
            )
        }
        "RANDOM" => {
            arity(name, args, 0, 0)?;
            (
                f!(|_, _| {
                    use std::time::{SystemTime, UNIX_EPOCH};
                    let n = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
                    Ok(Value::Double((n % 1_000_000) as f64 / 1_000_000.0))
                }),
                T::Double,
            )
        }
        "LCASE" | "LOWER" => {
            arity(name, args, 1, 1)?;
            want(name, args, first == T::String)?;
            (f!(|a, _| Ok(str_arg(&a[0]).map(|s| Value::String(s.to_lowercase())).unwrap_or(Value::Null))), T::String)
        }
        "UCASE" | "UPPER" => {
            arity(name, args, 1, 1)?;
            want(name, args, first == T::String)?;
            (f!(|a, _| Ok(str_arg(&a[0]).map(|s| Value::String(s.to_uppercase())).unwrap_or(Value::Null))), T::String)
        }
        "TRIM" | "LTRIM" | "RTRIM" => {
            arity(name, args, 1, 1)?;
            want(name, args, first == T::String)?;
            let func = match name {
                "TRIM" => f!(|a, _| Ok(str_arg(&a[0]).map(|s| Value::String(s.trim().into())).unwrap_or(Value::Null))),
                "LTRIM" => {
                    f!(|a, _| Ok(str_arg(&a[0]).map(|s| Value::String(s.trim_start().into())).unwrap_or(Value::Null)))
                }
                _ => f!(|a, _| Ok(str_arg(&a[0]).map(|s| Value::String(s.trim_end().into())).unwrap_or(Value::Null))),
            };
            (func, T::String)
        }
        "LEN" | "LENGTH" => {
            arity(name, args, 1, 1)?;
            want(name, args, matches!(first, T::String | T::Bytes))?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::String(s) => Value::Int(s.chars().count() as i32),
                    Value::Bytes(b) => Value::Int(b.len() as i32),
                    _ => Value::Null,
                })),
                T::Int,
            )
        }
        "CONCAT" => {
            arity(name, args, 1, usize::MAX)?;
            want(name, args, all_str || args.iter().all(|t| *t == T::Bytes))?;
            if first == T::Bytes {
                (
                    f!(|a, _| {
                        let mut out = vec![];
                        for v in a {
                            if let Value::Bytes(b) = v {
                                out.extend_from_slice(b);
                            }
                        }
                        Ok(Value::Bytes(out))
                    }),
                    T::Bytes,
                )
            } else {
                (concat_fn(), T::String)
            }
        }
        "CONCAT_WS" => {
            arity(name, args, 2, usize::MAX)?;
            want(name, args, all_str)?;
            (
                f!(|a, _| {
                    let Value::String(sep) = &a[0] else {
                        return Ok(Value::Null);
                    };
                    let parts: Vec<&str> = a[1..].iter().filter_map(Value::as_str).collect();
                    Ok(Value::String(parts.join(sep)))
                }),
                T::String,
            )
        }
        "SUBSTRING" => {
            arity(name, args, 2, 3)?;
            want(name, args, first == T::String && args[1..].iter().all(|t| *t == T::Int))?;
            (
                f!(|a, _| {
                    let (Value::String(s), Some(pos)) = (&a[0], a[1].as_i64()) else {
                        return Ok(Value::Null);
                    };
                    if a.len() > 2 && a[2].is_null() {
                        return Ok(Value::Null);
                    }
                    let chars: Vec<char> = s.chars().collect();
                    let n = chars.len() as i64;
                    let start = if pos > 0 {
                        pos - 1
                    } else if pos < 0 {
                        (n + pos).max(0)
                    } else {
                        0
                    };
                    let end = match a.get(2).and_then(Value::as_i64) {
                        Some(len) => (start + len).min(n),
                        None => n,
                    };
                    if start >= n || end <= start {
                        return Ok(Value::String(String::new()));
                    }
                    Ok(Value::String(chars[start as usize..end as usize].iter().collect()))
                }),
                T::String,
            )
        }
        "REPLACE" => {
            arity(name, args, 3, 3)?;
            want(name, args, all_str)?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1], &a[2]) {
                    (Value::String(s), Value::String(from), Value::String(to)) => {
                        Value::String(s.replace(from.as_str(), to))
                    }
                    _ => Value::Null,
                })),
                T::String,
            )
        }
        "INSTR" => {
            arity(name, args, 2, 4)?;
            (
                f!(|a, _| {
                    let (Value::String(s), Value::String(sub)) = (&a[0], &a[1]) else {
                        return Ok(Value::Null);
                    };
                    let pos = a.get(2).and_then(Value::as_i64).unwrap_or(1);
                    let occ = a.get(3).and_then(Value::as_i64).unwrap_or(1).max(1);
                    let chars: Vec<char> = s.chars().collect();
                    let subc: Vec<char> = sub.chars().collect();
                    let n = chars.len() as i64;
                    let matches_at = |i: i64| -> bool {
                        i >= 0 && i + subc.len() as i64 <= n && chars[i as usize..i as usize + subc.len()] == subc[..]
                    };
                    let mut found = 0;
                    if pos > 0 {
                        let mut i = pos - 1;
                        while i < n {
                            if matches_at(i) {
                                found += 1;
                                if found == occ {
                                    return Ok(Value::Int(i as i32 + 1));
                                }
                            }
                            i += 1;
                        }
                    } else if pos < 0 {
                        let mut i = n + pos;
                        while i >= 0 {
                            if matches_at(i) {
                                found += 1;
                                if found == occ {
                                    return Ok(Value::Int(i as i32 + 1));
                                }
                            }
                            i -= 1;
                        }
                    }
                    Ok(Value::Int(0))
                }),
                T::Int,
            )
        }
        "SPLIT" => {
            arity(name, args, 2, 2)?;
            want(name, args, all_str)?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1]) {
                    (Value::String(s), Value::String(d)) => {
                        if d.is_empty() {
                            Value::Array(s.chars().map(|c| Value::String(c.to_string())).collect())
                        } else {
                            Value::Array(s.split(d.as_str()).map(|p| Value::String(p.into())).collect())
                        }
                    }
                    _ => Value::Null,
                })),
                T::Array(Box::new(T::String)),
            )
        }
        "LPAD" | "RPAD" => {
            arity(name, args, 3, 3)?;
            let left = name == "LPAD";
            let func = if left { f!(|a, _| Ok(pad(a, true))) } else { f!(|a, _| Ok(pad(a, false))) };
            (func, T::String)
        }
        "INITCAP" => {
            arity(name, args, 1, 1)?;
            (
                f!(|a, _| Ok(str_arg(&a[0])
                    .map(|s| {
                        let mut out = String::new();
                        let mut start = true;
                        for c in s.chars() {
                            if c.is_whitespace() {
                                start = true;
                                out.push(c);
                            } else if start {
                                out.extend(c.to_uppercase());
                                start = false;
                            } else {
                                out.extend(c.to_lowercase());
                            }
                        }
                        Value::String(out)
                    })
                    .unwrap_or(Value::Null))),
                T::String,
            )
        }
        "IFNULL" | "COALESCE" => {
            arity(name, args, 1, usize::MAX)?;
            let mut ty: Option<T> = None;
            for (t, n) in args.iter().zip(null_args) {
                if *n {
                    continue;
                }
                ty = Some(match ty {
                    None => t.clone(),
                    Some(acc) if acc == *t => acc,
                    Some(acc) => SqlType::widen(&acc, t).ok_or_else(|| {
                        SqlError::statement(format!(
                            "Function '{name}' does not accept parameters of mixed types {acc} and {t}"
                        ))
                    })?,
                });
            }
            (
                f!(|a, ty| {
                    for v in a {
                        if !v.is_null() {
                            return crate::expr::cast(v.clone(), ty);
                        }
                    }
                    Ok(Value::Null)
                }),
                ty.unwrap_or(T::String),
            )
        }
        "NULLIF" => {
            arity(name, args, 2, 2)?;
            (f!(|a, _| Ok(if !a[0].is_null() && a[0].same(&a[1]) { Value::Null } else { a[0].clone() })), first)
        }
        "GREATEST" | "LEAST" => {
            arity(name, args, 1, usize::MAX)?;
            let mut ty = first.clone();
            for t in &args[1..] {
                ty = if *t == ty {
                    ty
                } else {
                    SqlType::widen(&ty, t)
                        .ok_or_else(|| SqlError::statement(format!("Function '{name}' cannot compare {ty} and {t}")))?
                };
            }
            let func = if name == "GREATEST" {
                f!(|a, ty| extreme(a, ty, std::cmp::Ordering::Greater))
            } else {
                f!(|a, ty| extreme(a, ty, std::cmp::Ordering::Less))
            };
            (func, ty)
        }
        "ARRAY_LENGTH" => {
            arity(name, args, 1, 1)?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::Array(x) => Value::Int(x.len() as i32),
                    _ => Value::Null,
                })),
                T::Int,
            )
        }
        "ARRAY_CONTAINS" => {
            arity(name, args, 2, 2)?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::Array(x) => Value::Boolean(x.iter().any(|v| v.same(&a[1]))),
                    _ => Value::Boolean(false),
                })),
                T::Boolean,
            )
        }
        "MAP_KEYS" | "MAP_VALUES" => {
            arity(name, args, 1, 1)?;
            let T::Map(k, v) = &first else {
                return Err(SqlError::statement(format!("Function '{name}' takes a MAP")));
            };
            if name == "MAP_KEYS" {
                (
                    f!(|a, _| Ok(match &a[0] {
                        Value::Map(m) => Value::Array(m.iter().map(|(k, _)| k.clone()).collect()),
                        _ => Value::Null,
                    })),
                    T::Array(k.clone()),
                )
            } else {
                (
                    f!(|a, _| Ok(match &a[0] {
                        Value::Map(m) => Value::Array(m.iter().map(|(_, v)| v.clone()).collect()),
                        _ => Value::Null,
                    })),
                    T::Array(v.clone()),
                )
            }
        }
        "AS_VALUE" => {
            arity(name, args, 1, 1)?;
            (f!(|a, _| Ok(a[0].clone())), first)
        }
        "UNIX_TIMESTAMP" => {
            arity(name, args, 0, 1)?;
            (
                f!(|a, _| Ok(match a.first() {
                    Some(Value::Timestamp(t)) => Value::BigInt(*t),
                    Some(Value::Null) => Value::Null,
                    _ => Value::BigInt(now_ms()),
                })),
                T::BigInt,
            )
        }
        "UNIX_DATE" => {
            arity(name, args, 0, 1)?;
            (
                f!(|a, _| Ok(match a.first() {
                    Some(Value::Date(d)) => Value::Int(*d),
                    Some(Value::Null) => Value::Null,
                    _ => Value::Int((now_ms() / crate::value::MS_PER_DAY) as i32),
                })),
                T::Int,
            )
        }
        "FROM_UNIXTIME" => {
            arity(name, args, 1, 1)?;
            (f!(|a, _| Ok(a[0].as_i64().map(Value::Timestamp).unwrap_or(Value::Null))), T::Timestamp)
        }
        "FROM_DAYS" => {
            arity(name, args, 1, 1)?;
            (f!(|a, _| Ok(a[0].as_i64().map(|d| Value::Date(d as i32)).unwrap_or(Value::Null))), T::Date)
        }
        "TO_BYTES" => {
            arity(name, args, 2, 2)?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1]) {
                    (Value::String(s), Value::String(enc)) => match enc.to_ascii_lowercase().as_str() {
                        "utf8" | "ascii" => Value::Bytes(s.as_bytes().to_vec()),
                        "base64" => Value::Bytes(base64_decode(s).ok_or("invalid base64")?),
                        "hex" => Value::Bytes(hex_decode(s).ok_or("invalid hex")?),
                        other => return Err(format!("unknown encoding {other}")),
                    },
                    _ => Value::Null,
                })),
                T::Bytes,
            )
        }
        "FROM_BYTES" => {
            arity(name, args, 2, 2)?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1]) {
                    (Value::Bytes(b), Value::String(enc)) => match enc.to_ascii_lowercase().as_str() {
                        "utf8" | "ascii" => Value::String(String::from_utf8_lossy(b).into_owned()),
                        "base64" => Value::String(base64_encode(b)),
                        "hex" => Value::String(b.iter().map(|x| format!("{x:02X}")).collect()),
                        other => return Err(format!("unknown encoding {other}")),
                    },
                    _ => Value::Null,
                })),
                T::String,
            )
        }
        _ => return Err(SqlError::statement(format!("Can't find any functions with the name '{name}'"))),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Java's `Math.round`: half up toward positive infinity.
fn java_round(v: f64) -> f64 {
    (v + 0.5).floor()
}

fn pad(a: &[Value], left: bool) -> Value {
    let (Value::String(s), Some(len), Value::String(fill)) = (&a[0], a[1].as_i64(), &a[2]) else {
        return Value::Null;
    };
    if len < 0 || (fill.is_empty() && (len as usize) > s.chars().count()) {
        return Value::Null;
    }
    let len = len as usize;
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= len {
        return Value::String(chars[..len].iter().collect());
    }
    let need = len - chars.len();
    let padding: String = fill.chars().cycle().take(need).collect();
    Value::String(if left { format!("{padding}{s}") } else { format!("{s}{padding}") })
}

fn extreme(a: &[Value], ty: &SqlType, want: std::cmp::Ordering) -> EvalResult {
    let mut best: Option<Value> = None;
    for v in a {
        if v.is_null() {
            continue;
        }
        let v = crate::expr::cast(v.clone(), ty)?;
        best = Some(match best {
            None => v,
            Some(b) => {
                if v.compare(&b) == Some(want) {
                    v
                } else {
                    b
                }
            }
        });
    }
    Ok(best.unwrap_or(Value::Null))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// TRANSFORM, FILTER and REDUCE.
pub fn eval_higher_order(h: HigherOrder, args: &[CExpr], row: &[Value], env: &mut Env) -> EvalResult {
    let coll = args[0].eval(row, env)?;
    let call = |lambda: &CExpr, params: Vec<Value>, env: &mut Env| -> EvalResult {
        let n = params.len();
        env.lambda.extend(params);
        let r = lambda.eval(row, env);
        env.lambda.truncate(env.lambda.len() - n);
        r
    };
    match (h, coll) {
        (_, Value::Null) => Ok(Value::Null),
        (HigherOrder::Transform, Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(call(&args[1], vec![i], env)?);
            }
            Ok(Value::Array(out))
        }
        (HigherOrder::Filter, Value::Array(items)) => {
            let mut out = vec![];
            for i in items {
                if call(&args[1], vec![i.clone()], env)? == Value::Boolean(true) {
                    out.push(i);
                }
            }
            Ok(Value::Array(out))
        }
        (HigherOrder::Filter, Value::Map(entries)) => {
            let mut out = vec![];
            for (k, v) in entries {
                if call(&args[1], vec![k.clone(), v.clone()], env)? == Value::Boolean(true) {
                    out.push((k, v));
                }
            }
            Ok(Value::Map(out))
        }
        (HigherOrder::TransformMap, Value::Map(entries)) => {
            let mut out: Vec<(Value, Value)> = vec![];
            for (k, v) in entries {
                let k2 = call(&args[1], vec![k.clone(), v.clone()], env)?;
                let v2 = call(&args[2], vec![k, v], env)?;
                out.push((k2, v2));
            }
            Ok(Value::Map(out))
        }
        (HigherOrder::Reduce, Value::Array(items)) => {
            let mut acc = args[1].eval(row, env)?;
            for i in items {
                acc = call(&args[2], vec![acc, i], env)?;
            }
            Ok(acc)
        }
        (HigherOrder::Reduce, Value::Map(entries)) => {
            let mut acc = args[1].eval(row, env)?;
            for (k, v) in entries {
                acc = call(&args[2], vec![acc, k, v], env)?;
            }
            Ok(acc)
        }
        _ => Ok(Value::Null),
    }
}
