//! Date, time and timestamp functions. Patterns are Java `DateTimeFormatter` patterns
//! ([`crate::time::Pattern`]); zones are Java zone ids ([`crate::time::Zone`]).

use super::{f, Sig};
use crate::error::Result;
use crate::expr::EvalResult;
use crate::functions::ScalarFn;
use crate::time::{Pattern, Zone};
use crate::types::SqlType as T;
use crate::value::{Value, MS_PER_DAY};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Compiles a pattern, caching recent ones per thread.
fn pattern(p: &str) -> std::result::Result<Pattern, String> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static CACHE: RefCell<HashMap<String, Pattern>> = RefCell::new(HashMap::new());
    }
    if let Some(c) = CACHE.with(|c| c.borrow().get(p).cloned()) {
        return Ok(c);
    }
    let compiled = Pattern::compile(p).map_err(|e| format!("Failed to parse pattern '{p}': {e}"))?;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(p.to_string(), compiled.clone());
    });
    Ok(compiled)
}

fn zone(v: Option<&Value>) -> std::result::Result<Zone, String> {
    match v {
        None => Ok(Zone::UTC),
        Some(Value::String(z)) => Zone::parse(z).ok_or_else(|| format!("Unknown time-zone ID: {z}")),
        Some(_) => Ok(Zone::UTC),
    }
}

/// Milliseconds in one unit of a `TimeUnit` name (DAYS, HOURS, ... NANOSECONDS as a fraction).
fn unit_ms(unit: &str) -> Option<(i64, i64)> {
    // (numerator, denominator) in ms
    Some(match unit.to_ascii_uppercase().trim_end_matches('S') {
        "DAY" => (MS_PER_DAY, 1),
        "HOUR" => (3_600_000, 1),
        "MINUTE" => (60_000, 1),
        "SECOND" => (1000, 1),
        "MILLISECOND" => (1, 1),
        "MICROSECOND" => (1, 1000),
        "NANOSECOND" => (1, 1_000_000),
        _ => return None,
    })
}

/// `interval` units as ms (truncating toward zero, like `TimeUnit.toMillis`).
fn interval_ms(unit: &Value, interval: &Value) -> std::result::Result<Option<i64>, String> {
    let (Value::String(u), Some(n)) = (unit, interval.as_i64()) else { return Ok(None) };
    let (num, den) = unit_ms(u).ok_or_else(|| format!("Unknown time unit: {u}"))?;
    Ok(Some(n.saturating_mul(num) / den))
}

fn is_unit(t: &T) -> bool {
    *t == T::String
}

fn string(t: &T) -> bool {
    *t == T::String
}

fn parse_with(a: &[Value]) -> std::result::Result<Option<crate::time::Parsed>, String> {
    let (Some(text), Some(p)) = (a[0].as_str(), a[1].as_str()) else { return Ok(None) };
    let p = pattern(p)?;
    p.parse(text).map(Some)
}

fn add_fn(a: &[Value], sign: i64, kind: u8) -> EvalResult {
    if a.iter().any(Value::is_null) {
        return Ok(Value::Null);
    }
    let Some(ms) = interval_ms(&a[0], &a[1])? else { return Ok(Value::Null) };
    let ms = ms * sign;
    Ok(match (&a[2], kind) {
        (Value::Date(d), _) => Value::Date((*d as i64 + ms / MS_PER_DAY) as i32),
        (Value::Time(t), _) => Value::Time((t + ms).rem_euclid(MS_PER_DAY)),
        (Value::Timestamp(t), _) => Value::Timestamp(t + ms),
        _ => Value::Null,
    })
}

pub(super) fn resolve(s: &Sig) -> Result<Option<(ScalarFn, T)>> {
    Ok(Some(match s.name {
        "UNIX_TIMESTAMP" => {
            s.arity(0, 1)?;
            s.check(s.n() == 0 || s.is(0, |t| *t == T::Timestamp))?;
            (
                f!(|a, _| Ok(match a.first() {
                    Some(Value::Timestamp(t)) => Value::BigInt(*t),
                    Some(_) => Value::Null,
                    None => Value::BigInt(now_ms()),
                })),
                T::BigInt,
            )
        }
        "UNIX_DATE" => {
            s.arity(0, 1)?;
            s.check(s.n() == 0 || s.is(0, |t| *t == T::Date))?;
            (
                f!(|a, _| Ok(match a.first() {
                    Some(Value::Date(d)) => Value::Int(*d),
                    Some(_) => Value::Null,
                    None => Value::Int(now_ms().div_euclid(MS_PER_DAY) as i32),
                })),
                T::Int,
            )
        }
        "FROM_UNIXTIME" => {
            s.arity(1, 1)?;
            s.check(s.is(0, |t| matches!(t, T::Int | T::BigInt)))?;
            (f!(|a, _| Ok(a[0].as_i64().map(Value::Timestamp).unwrap_or(Value::Null))), T::Timestamp)
        }
        "FROM_DAYS" => {
            s.arity(1, 1)?;
            s.check(s.is(0, |t| *t == T::Int))?;
            (f!(|a, _| Ok(a[0].as_i64().map(|d| Value::Date(d as i32)).unwrap_or(Value::Null))), T::Date)
        }
        "TIMESTAMPTOSTRING" | "FORMAT_TIMESTAMP" => {
            s.arity(2, 3)?;
            let src = if s.name == "FORMAT_TIMESTAMP" { T::Timestamp } else { T::BigInt };
            s.check(
                s.is(0, |t| *t == src || (src == T::BigInt && *t == T::Int))
                    && s.is(1, string)
                    && (s.n() == 2 || s.is(2, string)),
            )?;
            (
                f!(|a, _| {
                    let ms = match &a[0] {
                        Value::Timestamp(t) => *t,
                        v => match v.as_i64() {
                            Some(t) => t,
                            None => return Ok(Value::Null),
                        },
                    };
                    let Some(p) = a[1].as_str() else { return Ok(Value::Null) };
                    if a.get(2).is_some_and(Value::is_null) {
                        return Ok(Value::Null);
                    }
                    let z = zone(a.get(2))?;
                    Ok(Value::String(pattern(p)?.format_instant(ms, &z)?))
                }),
                T::String,
            )
        }
        "STRINGTOTIMESTAMP" | "PARSE_TIMESTAMP" => {
            s.arity(2, 3)?;
            s.check(s.all(string))?;
            let ty = if s.name == "PARSE_TIMESTAMP" { T::Timestamp } else { T::BigInt };
            (
                f!(|a, ty| {
                    if a.iter().any(Value::is_null) {
                        return Ok(Value::Null);
                    }
                    let Some(parsed) = parse_with(a)? else { return Ok(Value::Null) };
                    let ms = parsed.instant(&zone(a.get(2))?)?;
                    Ok(if *ty == T::Timestamp { Value::Timestamp(ms) } else { Value::BigInt(ms) })
                }),
                ty,
            )
        }
        "STRINGTODATE" | "PARSE_DATE" => {
            s.arity(2, 2)?;
            s.check(s.all(string))?;
            let ty = if s.name == "PARSE_DATE" { T::Date } else { T::Int };
            (
                f!(|a, ty| {
                    // PARSE_DATE reads the start of the text; STRINGTODATE all of it.
                    let parsed = match (a[0].as_str(), a[1].as_str()) {
                        (Some(text), Some(p)) if *ty == T::Date => pattern(p)?.parse_prefix(text)?,
                        _ => match parse_with(a)? {
                            Some(parsed) => parsed,
                            None => return Ok(Value::Null),
                        },
                    };
                    if parsed.has_time() {
                        return Err("Date format contains time field.".into());
                    }
                    let days = parsed.date()? as i32;
                    Ok(if *ty == T::Date { Value::Date(days) } else { Value::Int(days) })
                }),
                ty,
            )
        }
        "PARSE_TIME" => {
            s.arity(2, 2)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| {
                    let Some(parsed) = parse_with(a)? else { return Ok(Value::Null) };
                    if parsed.has_date() {
                        return Err("Time format contains date field.".into());
                    }
                    Ok(Value::Time(parsed.time_of_day()?.rem_euclid(MS_PER_DAY)))
                }),
                T::Time,
            )
        }
        "DATETOSTRING" | "FORMAT_DATE" => {
            s.arity(2, 2)?;
            let src = if s.name == "FORMAT_DATE" { T::Date } else { T::Int };
            s.check(s.is(0, |t| *t == src) && s.is(1, string))?;
            (
                f!(|a, _| {
                    let days = match &a[0] {
                        Value::Date(d) => *d as i64,
                        Value::Int(d) => *d as i64,
                        _ => return Ok(Value::Null),
                    };
                    let Some(p) = a[1].as_str() else { return Ok(Value::Null) };
                    Ok(Value::String(pattern(p)?.format_date(days)?))
                }),
                T::String,
            )
        }
        "FORMAT_TIME" => {
            s.arity(2, 2)?;
            s.check(s.is(0, |t| *t == T::Time) && s.is(1, string))?;
            (
                f!(|a, _| {
                    let (Value::Time(t), Some(p)) = (&a[0], a[1].as_str()) else { return Ok(Value::Null) };
                    Ok(Value::String(pattern(p)?.format_time(*t)?))
                }),
                T::String,
            )
        }
        "CONVERT_TZ" => {
            s.arity(3, 3)?;
            s.check(s.is(0, |t| *t == T::Timestamp) && s.is(1, string) && s.is(2, string))?;
            (
                f!(|a, _| {
                    let (Value::Timestamp(t), Some(from), Some(to)) = (&a[0], a[1].as_str(), a[2].as_str()) else {
                        return Ok(Value::Null);
                    };
                    let from = Zone::parse(from).ok_or_else(|| format!("Unknown time-zone ID: {from}"))?;
                    let to = Zone::parse(to).ok_or_else(|| format!("Unknown time-zone ID: {to}"))?;
                    let shift = to.offset_at(*t).0 as i64 - from.offset_at(*t).0 as i64;
                    Ok(Value::Timestamp(t + shift * 1000))
                }),
                T::Timestamp,
            )
        }
        "DATEADD" | "DATESUB" | "TIMEADD" | "TIMESUB" | "TIMESTAMPADD" | "TIMESTAMPSUB" => {
            s.arity(3, 3)?;
            let target = match &s.name[..4] {
                "DATE" => T::Date,
                "TIME" if s.name.starts_with("TIMESTAMP") => T::Timestamp,
                _ => T::Time,
            };
            s.check(s.is(0, is_unit) && s.is(1, |t| matches!(t, T::Int | T::BigInt)) && s.is(2, |t| *t == target))?;
            let func = if s.name.ends_with("ADD") { f!(|a, _| add_fn(a, 1, 0)) } else { f!(|a, _| add_fn(a, -1, 0)) };
            (func, target)
        }
        _ => return Ok(None),
    }))
}

/// Whether `name` is a time unit keyword (`DAYS`, `HOUR`, ...).
pub fn is_time_unit(name: &str) -> bool {
    unit_ms(name).is_some()
}
