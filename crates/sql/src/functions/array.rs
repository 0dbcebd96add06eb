//! ARRAY and MAP functions.

use super::{f, Sig};
use crate::error::Result;
use crate::functions::ScalarFn;
use crate::types::{Field, SqlType as T};
use crate::value::Value;
use std::cmp::Ordering;

/// Most elements GENERATE_SERIES will produce in one call.
const MAX_SERIES: i64 = 1_000_000;

fn elem(t: Option<&T>) -> Option<T> {
    match t {
        Some(T::Array(e)) => Some((**e).clone()),
        _ => None,
    }
}

/// Order of primitive values for ARRAY_SORT/MIN/MAX, nulls last.
fn order(a: &Value, b: &Value) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.compare(b).unwrap_or(Ordering::Equal),
    }
}

/// Distinct elements in first-seen order (nulls count as one value).
pub(crate) fn distinct(items: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = vec![];
    let mut seen = std::collections::HashSet::new();
    for v in items {
        let mut key = vec![];
        v.key_bytes(&mut key);
        if seen.insert(key) {
            out.push(v);
        }
    }
    out
}

fn contains(items: &[Value], v: &Value) -> bool {
    let mut key = vec![];
    v.key_bytes(&mut key);
    items.iter().any(|i| {
        let mut k = vec![];
        i.key_bytes(&mut k);
        k == key
    })
}

fn array_or_unknown(s: &Sig, i: usize) -> bool {
    s.is(i, |t| matches!(t, T::Array(_)))
}

/// The common array type of two array arguments (either may be a bare NULL).
fn pair_type(s: &Sig) -> Result<T> {
    s.arity(2, 2)?;
    s.check(array_or_unknown(s, 0) && array_or_unknown(s, 1))?;
    let t = match (s.ty(0), s.ty(1)) {
        (Some(a), Some(b)) if a == b => a.clone(),
        (Some(T::Array(a)), Some(T::Array(b))) => T::Array(Box::new(T::widen(a, b).ok_or_else(|| s.reject())?)),
        (Some(a), None) | (None, Some(a)) => a.clone(),
        (None, None) => T::Array(Box::new(T::String)),
        _ => return Err(s.reject()),
    };
    Ok(t)
}

fn arr(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

fn cast_items(items: &[Value], ty: &T) -> std::result::Result<Vec<Value>, String> {
    let T::Array(e) = ty else { return Ok(items.to_vec()) };
    items.iter().map(|v| crate::expr::cast(v.clone(), e)).collect()
}

pub(super) fn resolve(s: &Sig) -> Result<Option<(ScalarFn, T)>> {
    Ok(Some(match s.name {
        "ARRAY_LENGTH" => {
            s.arity(1, 1)?;
            s.check(array_or_unknown(s, 0))?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::Array(x) => Value::Int(x.len() as i32),
                    _ => Value::Null,
                })),
                T::Int,
            )
        }
        "ARRAY_CONTAINS" => {
            s.arity(2, 2)?;
            s.check(array_or_unknown(s, 0))?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::Array(x) => Value::Boolean(x.iter().any(|v| {
                        if v.is_null() || a[1].is_null() {
                            v.is_null() && a[1].is_null()
                        } else {
                            v.same(&a[1])
                        }
                    })),
                    _ => Value::Boolean(false),
                })),
                T::Boolean,
            )
        }
        "ARRAY_MAX" | "ARRAY_MIN" => {
            s.arity(1, 1)?;
            let e = elem(s.ty(0)).ok_or_else(|| s.reject())?;
            s.check(e.is_primitive())?;
            let func = if s.name == "ARRAY_MAX" {
                f!(|a, _| Ok(arr(&a[0])
                    .and_then(|x| x.iter().filter(|v| !v.is_null()).max_by(|p, q| order(p, q)).cloned())
                    .unwrap_or(Value::Null)))
            } else {
                f!(|a, _| Ok(arr(&a[0])
                    .and_then(|x| x.iter().filter(|v| !v.is_null()).min_by(|p, q| order(p, q)).cloned())
                    .unwrap_or(Value::Null)))
            };
            (func, e)
        }
        "ARRAY_SORT" => {
            s.arity(1, 2)?;
            let e = elem(s.ty(0)).ok_or_else(|| s.reject())?;
            s.check(e.is_primitive() && (s.n() == 1 || s.is(1, |t| *t == T::String)))?;
            (
                f!(|a, _| {
                    let Some(items) = arr(&a[0]) else { return Ok(Value::Null) };
                    let desc = match a.get(1) {
                        None => false,
                        Some(Value::String(d)) => match d.to_ascii_uppercase().as_str() {
                            "ASC" | "ASCENDING" => false,
                            "DESC" | "DESCENDING" => true,
                            _ => return Ok(Value::Null),
                        },
                        Some(_) => return Ok(Value::Null),
                    };
                    let mut items = items.clone();
                    if desc {
                        items.sort_by(|p, q| match (p.is_null(), q.is_null()) {
                            (false, false) => order(q, p),
                            _ => order(p, q),
                        });
                    } else {
                        items.sort_by(order);
                    }
                    Ok(Value::Array(items))
                }),
                T::Array(Box::new(e)),
            )
        }
        "ARRAY_DISTINCT" => {
            s.arity(1, 1)?;
            let t = s.ty(0).cloned().ok_or_else(|| s.reject())?;
            s.check(matches!(t, T::Array(_)))?;
            (f!(|a, _| Ok(arr(&a[0]).map(|x| Value::Array(distinct(x.iter().cloned()))).unwrap_or(Value::Null))), t)
        }
        "ARRAY_EXCEPT" | "ARRAY_INTERSECT" | "ARRAY_UNION" | "ARRAY_CONCAT" => {
            let t = pair_type(s)?;
            let func = match s.name {
                "ARRAY_EXCEPT" => f!(|a, ty| Ok(match (arr(&a[0]), arr(&a[1])) {
                    (Some(x), Some(y)) => {
                        let (x, y) = (cast_items(x, ty)?, cast_items(y, ty)?);
                        Value::Array(distinct(x.into_iter().filter(|v| !contains(&y, v))))
                    }
                    _ => Value::Null,
                })),
                "ARRAY_INTERSECT" => f!(|a, ty| Ok(match (arr(&a[0]), arr(&a[1])) {
                    (Some(x), Some(y)) => {
                        let (x, y) = (cast_items(x, ty)?, cast_items(y, ty)?);
                        Value::Array(distinct(x.into_iter().filter(|v| contains(&y, v))))
                    }
                    _ => Value::Null,
                })),
                "ARRAY_UNION" => f!(|a, ty| Ok(match (arr(&a[0]), arr(&a[1])) {
                    (Some(x), Some(y)) => {
                        let (x, y) = (cast_items(x, ty)?, cast_items(y, ty)?);
                        Value::Array(distinct(x.into_iter().chain(y)))
                    }
                    _ => Value::Null,
                })),
                _ => f!(|a, ty| Ok(match (arr(&a[0]), arr(&a[1])) {
                    (None, None) => Value::Null,
                    (x, y) => {
                        let mut out = cast_items(x.map(Vec::as_slice).unwrap_or(&[]), ty)?;
                        out.extend(cast_items(y.map(Vec::as_slice).unwrap_or(&[]), ty)?);
                        Value::Array(out)
                    }
                })),
            };
            (func, t)
        }
        "ARRAY_REMOVE" => {
            s.arity(2, 2)?;
            let t = s.ty(0).cloned().ok_or_else(|| s.reject())?;
            s.check(matches!(t, T::Array(_)))?;
            (
                f!(|a, _| Ok(match arr(&a[0]) {
                    Some(x) => Value::Array(
                        x.iter()
                            .filter(|v| if a[1].is_null() { !v.is_null() } else { v.is_null() || !v.same(&a[1]) })
                            .cloned()
                            .collect(),
                    ),
                    None => Value::Null,
                })),
                t,
            )
        }
        "ARRAY_JOIN" => {
            s.arity(1, 2)?;
            let ok = match s.ty(0) {
                Some(T::Array(e)) => e.is_primitive(),
                None => true,
                _ => false,
            };
            s.check(ok && (s.n() == 1 || s.is(1, |t| *t == T::String)))?;
            (
                f!(|a, _| {
                    let Some(items) = arr(&a[0]) else { return Ok(Value::Null) };
                    let sep = match a.get(1) {
                        None => ",",
                        Some(Value::String(d)) => d.as_str(),
                        Some(_) => "",
                    };
                    let parts: Vec<String> = items.iter().map(|v| v.to_string()).collect();
                    Ok(Value::String(parts.join(sep)))
                }),
                T::String,
            )
        }
        "SLICE" => {
            s.arity(3, 3)?;
            let t = s.ty(0).cloned().ok_or_else(|| s.reject())?;
            s.check(matches!(t, T::Array(_)) && s.is(1, |t| *t == T::Int) && s.is(2, |t| *t == T::Int))?;
            (
                f!(|a, _| {
                    let Some(items) = arr(&a[0]) else { return Ok(Value::Null) };
                    let start = a[1].as_i64().map(|v| v - 1).unwrap_or(0);
                    let end = a[2].as_i64().unwrap_or(items.len() as i64);
                    if start < 0 || end > items.len() as i64 || start > end {
                        return Ok(Value::Null);
                    }
                    Ok(Value::Array(items[start as usize..end as usize].to_vec()))
                }),
                t,
            )
        }
        "GENERATE_SERIES" => {
            s.arity(2, 3)?;
            let int = |t: &T| matches!(t, T::Int | T::BigInt);
            s.check(s.is(0, int) && s.is(1, int) && (s.n() == 2 || s.is(2, |t| *t == T::Int)))?;
            let big = s.ty(0) == Some(&T::BigInt) || s.ty(1) == Some(&T::BigInt);
            let et = if big { T::BigInt } else { T::Int };
            (
                f!(|a, ty| {
                    let (Some(start), Some(end)) = (a[0].as_i64(), a[1].as_i64()) else {
                        return Err("GENERATE_SERIES does not take null arguments".into());
                    };
                    let step = match a.get(2) {
                        None => {
                            if end - start > 0 {
                                1
                            } else {
                                -1
                            }
                        }
                        Some(v) => v.as_i64().ok_or("GENERATE_SERIES does not take null arguments")?,
                    };
                    if step == 0 {
                        return Err("GENERATE_SERIES step cannot be zero".into());
                    }
                    let diff = end - start;
                    if (diff > 0 && step < 0) || (diff < 0 && step > 0) {
                        return Err("GENERATE_SERIES step has wrong sign".into());
                    }
                    let size = 1 + diff / step;
                    if size > MAX_SERIES {
                        return Err(format!("GENERATE_SERIES would produce {size} elements, more than {MAX_SERIES}"));
                    }
                    let big = matches!(ty, T::Array(e) if **e == T::BigInt);
                    let out = (0..size)
                        .map(|i| {
                            let v = start + i * step;
                            if big {
                                Value::BigInt(v)
                            } else {
                                Value::Int(v as i32)
                            }
                        })
                        .collect();
                    Ok(Value::Array(out))
                }),
                T::Array(Box::new(et)),
            )
        }
        "ENTRIES" => {
            s.arity(2, 2)?;
            let Some(T::Map(_, v)) = s.ty(0) else { return Err(s.reject()) };
            s.check(s.is(1, |t| *t == T::Boolean))?;
            let st = T::Struct(vec![
                Field { name: "K".into(), ty: T::String },
                Field { name: "V".into(), ty: (**v).clone() },
            ]);
            (
                f!(|a, _| {
                    let Value::Map(entries) = &a[0] else { return Ok(Value::Null) };
                    let mut entries = entries.clone();
                    if a[1] == Value::Boolean(true) {
                        entries.sort_by(|p, q| order(&p.0, &q.0));
                    }
                    Ok(Value::Array(
                        entries
                            .into_iter()
                            .map(|(k, v)| Value::Struct(vec![("K".into(), k), ("V".into(), v)]))
                            .collect(),
                    ))
                }),
                T::Array(Box::new(st)),
            )
        }
        "MAP_KEYS" | "MAP_VALUES" => {
            s.arity(1, 1)?;
            let Some(T::Map(k, v)) = s.ty(0) else { return Err(s.reject()) };
            if s.name == "MAP_KEYS" {
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
        "MAP_UNION" => {
            s.arity(2, 2)?;
            let map = |t: &T| matches!(t, T::Map(..));
            s.check(s.is(0, map) && s.is(1, map))?;
            let t = match (s.ty(0), s.ty(1)) {
                (Some(a), Some(b)) if a != b => return Err(s.reject()),
                (Some(a), _) | (None, Some(a)) => a.clone(),
                (None, None) => T::Map(Box::new(T::String), Box::new(T::String)),
            };
            (
                f!(|a, _| Ok(match (&a[0], &a[1]) {
                    (Value::Null, Value::Null) => Value::Null,
                    (x, y) => {
                        let mut out: Vec<(Value, Value)> = vec![];
                        for m in [x, y] {
                            if let Value::Map(entries) = m {
                                for (k, v) in entries {
                                    match out.iter_mut().find(|(k2, _)| k2.same(k)) {
                                        Some(slot) => slot.1 = v.clone(),
                                        None => out.push((k.clone(), v.clone())),
                                    }
                                }
                            }
                        }
                        Value::Map(out)
                    }
                })),
                t,
            )
        }
        "AS_MAP" => {
            s.arity(2, 2)?;
            let (Some(T::Array(k)), Some(T::Array(v))) = (s.ty(0), s.ty(1)) else { return Err(s.reject()) };
            s.check(**k == T::String)?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1]) {
                    (Value::Array(ks), Value::Array(vs)) => {
                        let mut out: Vec<(Value, Value)> = vec![];
                        for (k, v) in ks.iter().zip(vs.iter().map(Some).chain(std::iter::repeat(None))) {
                            let v = v.cloned().unwrap_or(Value::Null);
                            match out.iter_mut().find(|(k2, _)| k2.same(k)) {
                                Some(slot) => slot.1 = v,
                                None => out.push((k.clone(), v)),
                            }
                        }
                        Value::Map(out)
                    }
                    _ => Value::Null,
                })),
                T::Map(k.clone(), v.clone()),
            )
        }
        _ => return Ok(None),
    }))
}
