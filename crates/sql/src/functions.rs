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

mod array;
pub mod conformance;
mod datetime;
mod json;
pub mod registry;
mod string;

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
    "SUM_LIST",
    "ATTR",
];

/// Whether `name` (upper case) is an aggregate function, including the conformance-test ones.
pub fn is_aggregate(name: &str) -> bool {
    AGGREGATES.contains(&name) || conformance::is_test_aggregate(name)
}

/// Names of table functions (one input row, many output rows).
pub fn is_table_function(name: &str) -> bool {
    matches!(name, "EXPLODE" | "CUBE_EXPLODE") || conformance::is_test_table_function(name)
}

/// Functions whose first argument is a time unit keyword (`DATEADD(DAYS, 1, d)`): the compiler
/// turns a bare identifier there into a string literal.
pub fn takes_time_unit(name: &str) -> bool {
    matches!(name, "DATEADD" | "DATESUB" | "TIMEADD" | "TIMESUB" | "TIMESTAMPADD" | "TIMESTAMPSUB")
}

/// Whether `name` is a time unit keyword (`DAYS`, `HOUR`, ...).
pub fn is_time_unit(name: &str) -> bool {
    datetime::is_time_unit(name)
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

/// The argument types of a call being resolved. A bare `NULL` literal has no type of its own
/// and matches any parameter.
pub(crate) struct Sig<'a> {
    /// Upper-case name.
    pub name: &'a str,
    pub types: &'a [SqlType],
    pub nulls: &'a [bool],
}

impl Sig<'_> {
    pub fn n(&self) -> usize {
        self.types.len()
    }

    /// Whether argument `i` is a bare NULL literal.
    pub fn null(&self, i: usize) -> bool {
        self.nulls.get(i).copied().unwrap_or(false)
    }

    /// The type of argument `i`, `None` for a bare NULL literal.
    pub fn ty(&self, i: usize) -> Option<&SqlType> {
        if self.null(i) {
            None
        } else {
            self.types.get(i)
        }
    }

    /// Argument `i` is a bare NULL or has a type accepted by `ok`.
    pub fn is(&self, i: usize, ok: impl Fn(&SqlType) -> bool) -> bool {
        self.null(i) || self.types.get(i).is_some_and(ok)
    }

    pub fn all(&self, ok: impl Fn(&SqlType) -> bool) -> bool {
        (0..self.n()).all(|i| self.is(i, &ok))
    }

    pub fn shown_types(&self) -> String {
        (0..self.n())
            .map(|i| match self.ty(i) {
                Some(t) => t.to_string(),
                None => "null".to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The function's name as ksqlDB declares it (and so prints it in errors).
    pub fn declared_name(&self) -> String {
        const UPPER: &[&str] = &["COALESCE", "AS_MAP", "GENERATE_SERIES", "JSON_CONCAT", "JSON_ITEMS", "JSON_KEYS"];
        if UPPER.contains(&self.name) {
            self.name.to_string()
        } else {
            self.name.to_ascii_lowercase()
        }
    }

    /// ksqlDB's error for a call no overload accepts.
    pub fn reject(&self) -> SqlError {
        SqlError::statement(format!(
            "Function '{}' does not accept parameters ({}).",
            self.declared_name(),
            self.shown_types()
        ))
    }

    pub fn check(&self, ok: bool) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.reject())
        }
    }

    pub fn arity(&self, min: usize, max: usize) -> Result<()> {
        self.check((min..=max).contains(&self.n()))
    }

    pub fn ambiguous(&self) -> SqlError {
        SqlError::statement(format!(
            "Function '{}' cannot be resolved due to ambiguous method parameters ({}).",
            self.declared_name(),
            self.shown_types()
        ))
    }
}

macro_rules! f {
    ($body:expr) => {
        $crate::functions::ScalarFn($body)
    };
}
pub(crate) use f;

fn num(t: &SqlType) -> bool {
    t.is_numeric()
}

/// A one-argument DOUBLE function of a numeric argument.
fn unary_double(s: &Sig, func: ScalarFn) -> Result<(ScalarFn, SqlType)> {
    s.arity(1, 1)?;
    s.check(s.is(0, num))?;
    Ok((func, SqlType::Double))
}

macro_rules! double_fn {
    ($e:expr) => {
        f!(|a, _| Ok(a[0].as_f64().map(|v: f64| Value::Double($e(v))).unwrap_or(Value::Null)))
    };
}

/// Resolves a scalar function by name and argument types.
pub fn resolve(name: &str, args: &[SqlType], null_args: &[bool]) -> Result<(ScalarFn, SqlType)> {
    let s = Sig { name, types: args, nulls: null_args };
    for sub in [array::resolve, string::resolve, json::resolve, datetime::resolve, conformance::resolve_scalar] {
        if let Some(found) = sub(&s)? {
            return Ok(found);
        }
    }
    core(&s)
}

/// Whether a function of this name exists (whatever its arguments).
pub fn exists(name: &str) -> bool {
    let no_args = Sig { name, types: &[], nulls: &[] };
    for sub in [array::resolve, string::resolve, json::resolve, datetime::resolve, conformance::resolve_scalar] {
        match sub(&no_args) {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => {}
        }
    }
    match core(&no_args) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("Can't find any functions"),
    }
}

fn core(s: &Sig) -> Result<(ScalarFn, SqlType)> {
    use SqlType as T;
    let name = s.name;
    let first = s.ty(0).cloned().unwrap_or(T::String);
    Ok(match name {
        "ABS" => {
            s.arity(1, 1)?;
            s.check(s.is(0, num))?;
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
            s.arity(1, 1)?;
            s.check(s.is(0, num))?;
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
        "SQRT" => unary_double(s, double_fn!(f64::sqrt))?,
        "EXP" => unary_double(s, double_fn!(f64::exp))?,
        "LN" => unary_double(s, double_fn!(f64::ln))?,
        "CBRT" => unary_double(s, double_fn!(f64::cbrt))?,
        "SIN" => unary_double(s, double_fn!(f64::sin))?,
        "COS" => unary_double(s, double_fn!(f64::cos))?,
        "TAN" => unary_double(s, double_fn!(f64::tan))?,
        "ASIN" => unary_double(s, double_fn!(f64::asin))?,
        "ACOS" => unary_double(s, double_fn!(f64::acos))?,
        "ATAN" => unary_double(s, double_fn!(f64::atan))?,
        "SINH" => unary_double(s, double_fn!(f64::sinh))?,
        "COSH" => unary_double(s, double_fn!(f64::cosh))?,
        "TANH" => unary_double(s, double_fn!(f64::tanh))?,
        "COT" => unary_double(s, double_fn!(|v: f64| 1.0 / v.tan()))?,
        "DEGREES" => unary_double(s, double_fn!(f64::to_degrees))?,
        "RADIANS" => unary_double(s, double_fn!(f64::to_radians))?,
        "LOG" => {
            s.arity(1, 2)?;
            s.check(s.all(num))?;
            if s.n() == 1 {
                (double_fn!(f64::ln), T::Double)
            } else {
                (
                    f!(|a, _| Ok(match (a[0].as_f64(), a[1].as_f64()) {
                        (Some(base), Some(v)) => {
                            if base <= 0.0 || base == 1.0 {
                                Value::Double(f64::NAN)
                            } else {
                                Value::Double(v.ln() / base.ln())
                            }
                        }
                        _ => Value::Null,
                    })),
                    T::Double,
                )
            }
        }
        "ATAN2" => {
            s.arity(2, 2)?;
            s.check(s.all(num))?;
            (
                f!(|a, _| Ok(match (a[0].as_f64(), a[1].as_f64()) {
                    (Some(y), Some(x)) => Value::Double(y.atan2(x)),
                    _ => Value::Null,
                })),
                T::Double,
            )
        }
        "PI" => {
            s.arity(0, 0)?;
            (f!(|_, _| Ok(Value::Double(std::f64::consts::PI))), T::Double)
        }
        "SIGN" => {
            s.arity(1, 1)?;
            s.check(s.is(0, num))?;
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
            s.arity(2, 2)?;
            s.check(s.all(num))?;
            (
                f!(|a, _| Ok(match (a[0].as_f64(), a[1].as_f64()) {
                    (Some(x), Some(y)) => Value::Double(x.powf(y)),
                    _ => Value::Null,
                })),
                T::Double,
            )
        }
        "ROUND" | "TRUNC" => {
            s.arity(1, 2)?;
            s.check(s.is(0, num) && (s.n() == 1 || s.is(1, |t| *t == T::Int)))?;
            let ty = match (&first, s.n()) {
                (T::Int | T::BigInt | T::Double, 1) => T::BigInt,
                (T::Int | T::BigInt, _) => T::Double,
                (T::Decimal { precision, scale }, 1) => {
                    T::Decimal { precision: precision.saturating_sub(*scale).max(1), scale: 0 }
                }
                (t, _) => t.clone(),
            };
            let func = if name == "ROUND" {
                f!(|a, ty| round_or_trunc(a, ty, true))
            } else {
                f!(|a, ty| round_or_trunc(a, ty, false))
            };
            (func, ty)
        }
        "RANDOM" => {
            s.arity(0, 0)?;
            (f!(|_, _| Ok(Value::Double(random_f64()))), T::Double)
        }
        "GEO_DISTANCE" => {
            s.arity(4, 5)?;
            s.check((0..4).all(|i| s.is(i, num)) && (s.n() == 4 || s.is(4, |t| *t == T::String)))?;
            (
                f!(|a, _| {
                    let mut c = [0f64; 4];
                    for (i, slot) in c.iter_mut().enumerate() {
                        match a[i].as_f64() {
                            Some(v) => *slot = v,
                            None => return Ok(Value::Null),
                        }
                    }
                    let radius = match a.get(4) {
                        None => 6371.0,
                        Some(Value::String(u)) => match u.to_ascii_lowercase().as_str() {
                            "km" | "kilometers" | "kilometres" => 6371.0,
                            "mi" | "miles" => 3959.0,
                            other => return Err(format!("GEO_DISTANCE: unknown unit {other}: use KM or MI")),
                        },
                        Some(_) => return Ok(Value::Null),
                    };
                    let (lat1, lon1, lat2, lon2) = (c[0], c[1], c[2], c[3]);
                    if !(-90.0..=90.0).contains(&lat1) || !(-90.0..=90.0).contains(&lat2) {
                        return Err("valid latitude values for GEO_DISTANCE are in the range -90 to 90".into());
                    }
                    if !(-180.0..=180.0).contains(&lon1) || !(-180.0..=180.0).contains(&lon2) {
                        return Err("valid longitude values for GEO_DISTANCE are in the range -180 to 180".into());
                    }
                    let dlat = (lat2 - lat1).to_radians();
                    let dlon = (lon2 - lon1).to_radians();
                    let h = (dlat / 2.0).sin().powi(2)
                        + lat1.to_radians().cos() * lat2.to_radians().cos() * (dlon / 2.0).sin().powi(2);
                    Ok(Value::Double(2.0 * radius * h.sqrt().asin()))
                }),
                T::Double,
            )
        }
        "IFNULL" | "COALESCE" => {
            if name == "IFNULL" {
                s.arity(2, 2)?;
            } else {
                s.arity(1, usize::MAX)?;
            }
            let mut ty: Option<T> = None;
            for i in 0..s.n() {
                let Some(t) = s.ty(i) else { continue };
                ty = Some(match ty {
                    None => t.clone(),
                    Some(acc) if acc == *t => acc,
                    Some(acc) => common_type(&acc, t).ok_or_else(|| s.reject())?,
                });
            }
            let ty = ty.ok_or_else(|| s.ambiguous())?;
            (
                f!(|a, ty| {
                    for v in a {
                        if !v.is_null() {
                            return crate::expr::cast(v.clone(), ty);
                        }
                    }
                    Ok(Value::Null)
                }),
                ty,
            )
        }
        "NULLIF" => {
            s.arity(2, 2)?;
            (f!(|a, _| Ok(if !a[0].is_null() && a[0].same(&a[1]) { Value::Null } else { a[0].clone() })), first)
        }
        "GREATEST" | "LEAST" => {
            s.check(s.n() >= 1)?;
            let ty = extreme_type(s)?;
            let func = if name == "GREATEST" {
                f!(|a, ty| extreme(a, ty, std::cmp::Ordering::Greater))
            } else {
                f!(|a, ty| extreme(a, ty, std::cmp::Ordering::Less))
            };
            (func, ty)
        }
        "AS_VALUE" => {
            s.arity(1, 1)?;
            (f!(|a, _| Ok(a[0].clone())), first)
        }
        "INT_FROM_BYTES" | "BIGINT_FROM_BYTES" | "DOUBLE_FROM_BYTES" => {
            s.arity(1, 2)?;
            s.check(s.is(0, |t| *t == T::Bytes) && (s.n() == 1 || s.is(1, |t| *t == T::String)))?;
            let (func, ty) = match name {
                "INT_FROM_BYTES" => (
                    f!(|a, _| from_bytes(a, 4, |b| Value::Int(i32::from_be_bytes(b.try_into().unwrap_or([0; 4]))))),
                    T::Int,
                ),
                "BIGINT_FROM_BYTES" => (
                    f!(|a, _| from_bytes(a, 8, |b| Value::BigInt(i64::from_be_bytes(b.try_into().unwrap_or([0; 8]))))),
                    T::BigInt,
                ),
                _ => (
                    f!(|a, _| from_bytes(a, 8, |b| Value::Double(f64::from_be_bytes(b.try_into().unwrap_or([0; 8]))))),
                    T::Double,
                ),
            };
            (func, ty)
        }
        _ => return Err(SqlError::statement(format!("Can't find any functions with the name '{name}'"))),
    })
}

/// Decodes a big-endian number of exactly `size` bytes; a second argument 'LITTLE_ENDIAN'
/// reverses the byte order.
fn from_bytes(a: &[Value], size: usize, make: fn(&[u8]) -> Value) -> EvalResult {
    let Value::Bytes(b) = &a[0] else { return Ok(Value::Null) };
    if b.len() != size {
        return Err(format!("Number of bytes must be equal to {size}, but found {}", b.len()));
    }
    let mut b = b.clone();
    match a.get(1) {
        None => {}
        Some(Value::String(order)) => match order.to_ascii_uppercase().as_str() {
            "BIG_ENDIAN" => {}
            "LITTLE_ENDIAN" => b.reverse(),
            other => return Err(format!("byte order must be BIG_ENDIAN or LITTLE_ENDIAN, got {other}")),
        },
        Some(_) => return Ok(Value::Null),
    }
    Ok(make(&b))
}

/// A uniformly distributed double in [0, 1), from a per-thread xorshift generator seeded from
/// the clock.
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
            let addr = &t as *const u64 as u64;
            (t ^ addr.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

fn random_f64() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The common type of two argument types for COALESCE/IFNULL-like functions.
fn common_type(a: &SqlType, b: &SqlType) -> Option<SqlType> {
    if a == b {
        return Some(a.clone());
    }
    SqlType::widen(a, b)
}

/// The type GREATEST/LEAST compare in, following ksqlDB's overloads: one of INT, BIGINT,
/// DOUBLE, DECIMAL, STRING, BYTES, DATE, TIME, TIMESTAMP; strings may stand for temporal values.
fn extreme_type(s: &Sig) -> Result<SqlType> {
    use SqlType as T;
    let typed: Vec<&T> = (0..s.n()).filter_map(|i| s.ty(i)).collect();
    let Some(first) = typed.first() else { return Err(s.ambiguous()) };
    if typed.iter().all(|t| t == first) {
        return Ok((*first).clone());
    }
    if let Some(temporal) = typed.iter().find(|t| matches!(t, T::Date | T::Time | T::Timestamp)) {
        if typed.iter().all(|t| t == temporal || **t == T::String) {
            return Ok((*temporal).clone());
        }
        return Err(s.reject());
    }
    if !typed.iter().all(|t| t.is_numeric()) {
        return Err(s.reject());
    }
    if typed.iter().any(|t| **t == T::Double) {
        return Ok(T::Double);
    }
    if typed.iter().all(|t| matches!(t, T::Decimal { .. })) {
        let mut acc = (*first).clone();
        for t in &typed[1..] {
            acc = T::widen(&acc, t).ok_or_else(|| s.reject())?;
        }
        return Ok(acc);
    }
    Err(s.ambiguous())
}

fn extreme(a: &[Value], ty: &SqlType, want: std::cmp::Ordering) -> EvalResult {
    let mut best: Option<Value> = None;
    for v in a {
        if v.is_null() {
            continue;
        }
        let v = match ty {
            SqlType::Decimal { .. } => v.clone(),
            _ => crate::expr::cast(v.clone(), ty)?,
        };
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

/// Rounds (half toward positive infinity, like ksqlDB) or truncates (toward zero) `unscaled`
/// at `from` decimal places to `places` decimal places (negative: to the left of the point),
/// returning the value still at scale `from`.
pub(crate) fn round_decimal(unscaled: i128, from: u8, places: i64, round: bool) -> Option<i128> {
    let drop = from as i64 - places;
    if drop <= 0 {
        return Some(unscaled);
    }
    if drop > 38 {
        return Some(0);
    }
    let p = 10i128.checked_pow(drop as u32)?;
    let q = unscaled.div_euclid(p);
    let r = unscaled.rem_euclid(p);
    let kept = if !round {
        // toward zero
        if unscaled < 0 && r != 0 {
            q + 1
        } else {
            q
        }
    } else if r * 2 >= p {
        q + 1
    } else {
        q
    };
    kept.checked_mul(p)
}

/// The decimal digits of a double as Java's `BigDecimal.valueOf` sees them.
fn double_as_decimal(v: f64) -> Option<(i128, u8)> {
    if !v.is_finite() {
        return None;
    }
    let text = crate::value::double_to_string(v);
    let (mantissa, exp) = match text.split_once('E') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().ok()?),
        None => (text.clone(), 0),
    };
    let (u, s) = crate::value::parse_decimal(&mantissa)?;
    let scale = s as i32 - exp;
    if scale < 0 {
        let u = u.checked_mul(10i128.checked_pow((-scale) as u32)?)?;
        Some((u, 0))
    } else if scale > 60 {
        None
    } else {
        Some((u, scale as u8))
    }
}

fn round_or_trunc(a: &[Value], ty: &SqlType, round: bool) -> EvalResult {
    if a.iter().any(Value::is_null) {
        return Ok(Value::Null);
    }
    let places = a.get(1).and_then(Value::as_i64);
    Ok(match (&a[0], ty) {
        (Value::Int(v), SqlType::BigInt) => Value::BigInt(*v as i64),
        (Value::BigInt(v), SqlType::BigInt) => Value::BigInt(*v),
        (Value::Double(v), SqlType::BigInt) => {
            Value::BigInt(if round { (v + 0.5).floor() as i64 } else { v.trunc() as i64 })
        }
        (v, SqlType::Double) => {
            let d = v.as_f64().unwrap_or(0.0);
            let places = places.unwrap_or(0);
            match double_as_decimal(d) {
                Some((u, s)) => match round_decimal(u, s, places, round) {
                    Some(r) => Value::Double(crate::value::decimal_to_string(r, s).parse().unwrap_or(d)),
                    None => Value::Double(d),
                },
                None => Value::Double(d),
            }
        }
        (Value::Decimal(u, s), SqlType::Decimal { scale, .. }) => {
            let places = places.unwrap_or(0);
            let r = round_decimal(*u, *s, places, round).ok_or("decimal overflow")?;
            Value::Decimal(crate::value::rescale(r, *s, *scale), *scale)
        }
        (other, _) => other.clone(),
    })
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
        // REDUCE over a missing collection yields the initial state.
        (HigherOrder::Reduce, Value::Null) => args[1].eval(row, env),
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

#[cfg(test)]
mod tests {
    use super::*;
    use SqlType as T;

    fn call(name: &str, types: &[T], args: &[Value]) -> (Value, SqlType) {
        let nulls: Vec<bool> = args.iter().map(|_| false).collect();
        let (f, ty) = resolve(name, types, &nulls).unwrap();
        ((f.0)(args, &ty).unwrap(), ty)
    }

    #[test]
    fn round_and_trunc_follow_ksqldb() {
        let d = |v: f64| Value::Double(v);
        assert_eq!(call("ROUND", &[T::Double], &[d(-1.5)]).0, Value::BigInt(-1));
        assert_eq!(call("ROUND", &[T::Double], &[d(1.5)]).0, Value::BigInt(2));
        assert_eq!(call("ROUND", &[T::Double, T::Int], &[d(1.234567), Value::Int(2)]).0, d(1.23));
        assert_eq!(call("ROUND", &[T::Double, T::Int], &[d(111.0), Value::Int(-1)]).0, d(110.0));
        assert_eq!(call("TRUNC", &[T::Double, T::Int], &[d(1.789), Value::Int(1)]).0, d(1.7));
        assert_eq!(call("TRUNC", &[T::Double], &[d(-1.7)]).0, Value::BigInt(-1));
        let dec = T::Decimal { precision: 12, scale: 7 };
        let (v, ty) = call("TRUNC", std::slice::from_ref(&dec), &[Value::Decimal(17_000_000, 7)]);
        assert_eq!((v, ty), (Value::Decimal(1, 0), T::Decimal { precision: 5, scale: 0 }));
        let (v, _) = call("ROUND", &[dec.clone(), T::Int], &[Value::Decimal(-15_000_000, 7), Value::Int(0)]);
        assert_eq!(v, Value::Decimal(-10_000_000, 7));
    }

    #[test]
    fn parse_date_reads_the_start_of_its_text_and_stringtodate_all_of_it() {
        let s = |v: &str| Value::String(v.into());
        let (v, _) = call("PARSE_DATE", &[T::String, T::String], &[s("2003-12-24-01-01"), s("yyyy-MM-dd")]);
        assert_eq!(v, Value::Date(12410));
        let nulls = [false, false];
        let (f, ty) = resolve("STRINGTODATE", &[T::String, T::String], &nulls).unwrap();
        assert!((f.0)(&[s("2003-12-24-01-01"), s("yyyy-MM-dd")], &ty).is_err());
        let (f, ty) = resolve("PARSE_DATE", &[T::String, T::String], &nulls).unwrap();
        assert!((f.0)(&[s("2004"), s("yyyy-MM-dd")], &ty).is_err(), "too short is still an error");
    }

    #[test]
    fn greatest_resolves_like_ksqldb() {
        let nulls = [false, false];
        assert!(resolve("GREATEST", &[T::Int, T::BigInt], &nulls).unwrap_err().to_string().contains("ambiguous"));
        assert!(resolve("GREATEST", &[T::String, T::Int], &nulls).unwrap_err().to_string().contains("does not accept"));
        let (_, ty) = resolve("GREATEST", &[T::Int, T::Double], &nulls).unwrap();
        assert_eq!(ty, T::Double);
        let (_, ty) = resolve("GREATEST", &[T::Date, T::String], &nulls).unwrap();
        assert_eq!(ty, T::Date);
        assert!(resolve("GREATEST", &[T::String, T::String], &[true, true]).is_err());
        let (v, _) = call("LEAST", &[T::Int, T::Int], &[Value::Int(3), Value::Null]);
        assert_eq!(v, Value::Int(3));
    }

    #[test]
    fn null_literals_match_any_parameter() {
        let (f, ty) = resolve("SUBSTRING", &[T::String, T::String], &[false, true]).unwrap();
        assert_eq!(ty, T::String);
        assert_eq!((f.0)(&[Value::String("abc".into()), Value::Null], &ty).unwrap(), Value::Null);
        assert!(resolve("SUBSTRING", &[T::String, T::String], &[false, false]).is_err());
    }

    #[test]
    fn array_functions() {
        let arr = |v: Vec<i32>| Value::Array(v.into_iter().map(Value::Int).collect());
        let at = T::Array(Box::new(T::Int));
        let (v, _) = call("ARRAY_UNION", &[at.clone(), at.clone()], &[arr(vec![0, 0, 1]), arr(vec![1, -2])]);
        assert_eq!(v, arr(vec![0, 1, -2]));
        let (v, _) = call("ARRAY_EXCEPT", &[at.clone(), at.clone()], &[arr(vec![0, 0, 1, -1]), arr(vec![1])]);
        assert_eq!(v, arr(vec![0, -1]));
        let (v, _) =
            call("GENERATE_SERIES", &[T::Int, T::Int, T::Int], &[Value::Int(9), Value::Int(0), Value::Int(-3)]);
        assert_eq!(v, arr(vec![9, 6, 3, 0]));
        let (v, _) = call("SLICE", &[at.clone(), T::Int, T::Int], &[arr(vec![1, 2, 3]), Value::Int(2), Value::Int(3)]);
        assert_eq!(v, arr(vec![2, 3]));
        let (v, _) = call(
            "ARRAY_SORT",
            &[at.clone(), T::String],
            &[Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)]), Value::String("desc".into())],
        );
        assert_eq!(v, Value::Array(vec![Value::Int(3), Value::Int(1), Value::Null]));
    }

    #[test]
    fn dates_and_times() {
        let (v, _) = call(
            "FORMAT_TIMESTAMP",
            &[T::Timestamp, T::String, T::String],
            &[
                Value::Timestamp(1_526_075_913_000),
                Value::String("yyyy-MM-dd HH:mm:ss zzz".into()),
                Value::String("America/Los_Angeles".into()),
            ],
        );
        assert_eq!(v, Value::String("2018-05-11 14:58:33 PDT".into()));
        let (v, _) = call(
            "DATEADD",
            &[T::String, T::Int, T::Date],
            &[Value::String("DAYS".into()), Value::Int(-5), Value::Date(2)],
        );
        assert_eq!(v, Value::Date(-3));
        let (v, _) = call(
            "CONVERT_TZ",
            &[T::Timestamp, T::String, T::String],
            &[
                Value::Timestamp(100),
                Value::String("America/Los_Angeles".into()),
                Value::String("America/New_York".into()),
            ],
        );
        assert_eq!(v, Value::Timestamp(10_800_100));
    }

    #[test]
    fn json_and_strings() {
        let s = |x: &str| Value::String(x.into());
        let (v, _) = call("EXTRACTJSONFIELD", &[T::String, T::String], &[s("{\"array\": [1.23450]}"), s("$.array[0]")]);
        assert_eq!(v, s("1.23450"));
        let (v, _) =
            call("ENCODE", &[T::String, T::String, T::String], &[s("0x578616d706C6521"), s("hex"), s("base64")]);
        assert_eq!(v, s("BXhhbXBsZSE="));
        let (v, _) = call("REGEXP_REPLACE", &[T::String, T::String, T::String], &[s("a1b22"), s("(\\d+)"), s("<$1>")]);
        assert_eq!(v, s("a<1>b<22>"));
        let (v, _) =
            call("URL_EXTRACT_PARAMETER", &[T::String, T::String], &[s("http://x.com/?one=a&two=b%20c"), s("two")]);
        assert_eq!(v, s("b c"));
        let (v, _) = call("TO_JSON_STRING", &[T::Time], &[Value::Time(60_220_000)]);
        assert_eq!(v, s("\"16:43:40\""));
    }
}
