//! Runtime values and their conversions.

use std::cmp::Ordering;
use std::fmt;

use crate::types::SqlType;

/// A value of some [`SqlType`]; `Null` belongs to every type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Boolean(bool),
    Int(i32),
    BigInt(i64),
    Double(f64),
    /// Unscaled value and scale: `unscaled * 10^-scale`.
    Decimal(i128, u8),
    String(String),
    Bytes(Vec<u8>),
    Date(i32),
    Time(i64),
    Timestamp(i64),
    Array(Vec<Value>),
    /// Entries in insertion order, keys unique.
    Map(Vec<(Value, Value)>),
    /// Field values in the order of the struct type's fields.
    Struct(Vec<(String, Value)>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v as i64),
            Value::BigInt(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::BigInt(v) => Some(*v as f64),
            Value::Double(v) => Some(*v),
            Value::Decimal(u, s) => Some(*u as f64 / 10f64.powi(*s as i32)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a decimal with the given scale (rounding half up), if numeric.
    pub fn to_decimal(&self, scale: u8) -> Option<i128> {
        match self {
            Value::Int(v) => Some(*v as i128 * pow10(scale)),
            Value::BigInt(v) => Some(*v as i128 * pow10(scale)),
            Value::Decimal(u, s) => Some(rescale(*u, *s, scale)),
            Value::Double(d) => {
                if !d.is_finite() {
                    return None;
                }
                Some((d * 10f64.powi(scale as i32)).round() as i128)
            }
            _ => None,
        }
    }

    /// Total order used by comparisons, ORDER-like functions and MIN/MAX: `None` when the two
    /// values are not comparable (different kinds, or a null).
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Null, _) | (_, Null) => None,
            (Boolean(a), Boolean(b)) => Some(a.cmp(b)),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Int(_) | BigInt(_), Int(_) | BigInt(_)) => Some(self.as_i64()?.cmp(&other.as_i64()?)),
            (Decimal(..), Int(_) | BigInt(_) | Decimal(..)) | (Int(_) | BigInt(_), Decimal(..)) => {
                let scale = decimal_scale(self).max(decimal_scale(other));
                Some(self.to_decimal(scale)?.cmp(&other.to_decimal(scale)?))
            }
            (Double(_), _) | (_, Double(_)) => self.as_f64()?.partial_cmp(&other.as_f64()?),
            (String(a), String(b)) => Some(a.cmp(b)),
            (Bytes(a), Bytes(b)) => Some(a.cmp(b)),
            (Date(a), Date(b)) => Some(a.cmp(b)),
            (Time(a), Time(b)) => Some(a.cmp(b)),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            (Timestamp(a), Date(b)) => Some(a.cmp(&(*b as i64 * MS_PER_DAY))),
            (Date(a), Timestamp(b)) => Some((*a as i64 * MS_PER_DAY).cmp(b)),
            (Array(a), Array(b)) => {
                for (x, y) in a.iter().zip(b) {
                    match x.compare(y)? {
                        Ordering::Equal => continue,
                        o => return Some(o),
                    }
                }
                Some(a.len().cmp(&b.len()))
            }
            _ => None,
        }
    }

    /// Equality with SQL-ish numeric widening; nulls are equal to each other here (used for
    /// grouping keys and map lookups, not for `=`).
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y)),
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| b.iter().find(|(k2, _)| k2.same(k)).is_some_and(|(_, v2)| v2.same(v)))
            }
            (Value::Struct(a), Value::Struct(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|((n1, v1), (n2, v2))| n1 == n2 && v1.same(v2))
            }
            _ => self.compare(other) == Some(Ordering::Equal),
        }
    }

    /// A stable byte encoding, used as a key in state stores and hash maps.
    pub fn key_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Boolean(b) => out.extend_from_slice(&[1, *b as u8]),
            Value::Int(v) => {
                out.push(2);
                out.extend_from_slice(&(*v as i64).to_be_bytes())
            }
            Value::BigInt(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_be_bytes())
            }
            Value::Double(v) => {
                out.push(3);
                out.extend_from_slice(&v.to_bits().to_be_bytes())
            }
            Value::Decimal(u, s) => {
                out.push(4);
                out.extend_from_slice(&u.to_be_bytes());
                out.push(*s)
            }
            Value::String(s) => {
                out.push(5);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes())
            }
            Value::Bytes(b) => {
                out.push(6);
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(b)
            }
            Value::Date(d) => {
                out.push(7);
                out.extend_from_slice(&d.to_be_bytes())
            }
            Value::Time(t) => {
                out.push(8);
                out.extend_from_slice(&t.to_be_bytes())
            }
            Value::Timestamp(t) => {
                out.push(9);
                out.extend_from_slice(&t.to_be_bytes())
            }
            Value::Array(items) => {
                out.push(10);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                items.iter().for_each(|v| v.key_bytes(out));
            }
            Value::Map(entries) => {
                out.push(11);
                out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (k, v) in entries {
                    k.key_bytes(out);
                    v.key_bytes(out);
                }
            }
            Value::Struct(fields) => {
                out.push(12);
                out.extend_from_slice(&(fields.len() as u32).to_be_bytes());
                fields.iter().for_each(|(_, v)| v.key_bytes(out));
            }
        }
    }
}

pub const MS_PER_DAY: i64 = 86_400_000;

pub fn pow10(n: u8) -> i128 {
    10i128.pow(n as u32)
}

fn decimal_scale(v: &Value) -> u8 {
    match v {
        Value::Decimal(_, s) => *s,
        _ => 0,
    }
}

/// Changes the scale of an unscaled decimal, rounding half up when digits are dropped.
pub fn rescale(unscaled: i128, from: u8, to: u8) -> i128 {
    match from.cmp(&to) {
        Ordering::Equal => unscaled,
        Ordering::Less => unscaled * pow10(to - from),
        Ordering::Greater => {
            let div = pow10(from - to);
            let q = unscaled / div;
            let r = unscaled % div;
            if r.abs() * 2 >= div {
                q + unscaled.signum()
            } else {
                q
            }
        }
    }
}

/// The digits of a decimal as ksqlDB prints it (`BigDecimal.toPlainString`).
pub fn decimal_to_string(unscaled: i128, scale: u8) -> String {
    let mut out = String::new();
    push_decimal(unscaled, scale, &mut out);
    out
}

/// Appends a decimal's text (as [`decimal_to_string`]) without an intermediate string.
pub fn push_decimal(unscaled: i128, scale: u8, out: &mut String) {
    if unscaled < 0 {
        out.push('-');
    }
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(unscaled.unsigned_abs());
    let s = scale as usize;
    if s == 0 {
        out.push_str(digits);
    } else if digits.len() > s {
        out.push_str(&digits[..digits.len() - s]);
        out.push('.');
        out.push_str(&digits[digits.len() - s..]);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', s - digits.len()));
        out.push_str(digits);
    }
}

/// Parses a decimal literal into (unscaled, scale).
pub fn parse_decimal(text: &str) -> Option<(i128, u8)> {
    let text = text.trim();
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let unscaled: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    Some((if neg { -unscaled } else { unscaled }, frac.len() as u8))
}

/// Number of significant digits of an unscaled decimal (at least 1).
pub fn decimal_digits(unscaled: i128) -> u8 {
    let mut n = unscaled.unsigned_abs();
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Java's `Double.toString`, which ksqlDB uses to print doubles.
pub fn double_to_string(d: f64) -> String {
    let mut s = String::new();
    push_double(d, &mut s);
    s
}

/// [`double_to_string`] appended to `out`.
pub fn push_double(d: f64, out: &mut String) {
    if d.is_nan() {
        return out.push_str("NaN");
    }
    if d.is_infinite() {
        return out.push_str(if d > 0.0 { "Infinity" } else { "-Infinity" });
    }
    if d == 0.0 {
        return out.push_str(if d.is_sign_negative() { "-0.0" } else { "0.0" });
    }
    let abs = d.abs();
    if abs == f64::from_bits(1) {
        // The smallest subnormal: Java writes two digits (the shortest form would be 5.0E-324).
        return out.push_str(if d > 0.0 { "4.9E-324" } else { "-4.9E-324" });
    }
    if (1e-3..1e7).contains(&abs) {
        // Shortest round-trip digits; in this range ryu writes plain decimals, with ".0" on
        // whole numbers, as Java does.
        out.push_str(ryu::Buffer::new().format_finite(d));
    } else {
        // Scientific: shortest digits, mantissa with at least one fractional digit.
        let s = format!("{d:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        out.push_str(mantissa);
        if !mantissa.contains('.') {
            out.push_str(".0");
        }
        out.push('E');
        out.push_str(exp);
    }
}

impl fmt::Display for Value {
    /// ksqlDB's textual form of a value (as `CAST(x AS STRING)` produces it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::BigInt(v) => write!(f, "{v}"),
            Value::Double(v) => f.write_str(&double_to_string(*v)),
            Value::Decimal(u, s) => f.write_str(&decimal_to_string(*u, *s)),
            Value::String(s) => f.write_str(s),
            Value::Bytes(b) => f.write_str(&crate::functions::base64_encode(b)),
            Value::Date(d) => f.write_str(&crate::time::format_date(*d)),
            Value::Time(t) => f.write_str(&crate::time::format_time(*t)),
            Value::Timestamp(t) => f.write_str(&crate::time::format_timestamp(*t)),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str("}")
            }
            Value::Struct(fields) => {
                f.write_str("Struct{")?;
                let mut first = true;
                for (name, v) in fields {
                    if v.is_null() {
                        continue;
                    }
                    if !first {
                        f.write_str(",")?;
                    }
                    first = false;
                    write!(f, "{name}={v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// The type of a value, when it can be told from the value alone.
pub fn type_of(v: &Value) -> Option<SqlType> {
    Some(match v {
        Value::Null => return None,
        Value::Boolean(_) => SqlType::Boolean,
        Value::Int(_) => SqlType::Int,
        Value::BigInt(_) => SqlType::BigInt,
        Value::Double(_) => SqlType::Double,
        Value::Decimal(u, s) => SqlType::Decimal { precision: decimal_digits(*u).max(*s), scale: *s },
        Value::String(_) => SqlType::String,
        Value::Bytes(_) => SqlType::Bytes,
        Value::Date(_) => SqlType::Date,
        Value::Time(_) => SqlType::Time,
        Value::Timestamp(_) => SqlType::Timestamp,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_with_their_scale() {
        let cases: &[(i128, u8, &str)] = &[
            (12345, 2, "123.45"),
            (-5, 3, "-0.005"),
            (0, 2, "0.00"),
            (100, 0, "100"),
            (-120, 1, "-12.0"),
            (i128::MIN, 0, "-170141183460469231731687303715884105728"),
            (7, 1, "0.7"),
        ];
        for &(unscaled, scale, text) in cases {
            assert_eq!(decimal_to_string(unscaled, scale), text);
            // Read back, but for i128::MIN, whose digits overflow the reader's magnitude.
            if unscaled != i128::MIN {
                assert_eq!(parse_decimal(text), Some((unscaled, scale)));
            }
        }
    }

    /// Java's `Double.toString` in the plain range, as Rust's shortest `Display` digits give it.
    fn plain_reference(d: f64) -> String {
        let s = format!("{d}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    }

    #[test]
    fn doubles_print_as_java_prints_them() {
        let cases = [
            (1.0, "1.0"),
            (0.001, "0.001"),
            (9_999_999.5, "9999999.5"),
            (1e7, "1.0E7"),
            (123_456_789.0, "1.23456789E8"),
            (1e-4, "1.0E-4"),
            (-2.5, "-2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::from_bits(1), "4.9E-324"),
        ];
        for (d, text) in cases {
            assert_eq!(double_to_string(d), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_doubles_have_the_shortest_digits(bits in any_plain_double()) {
            proptest::prop_assert_eq!(double_to_string(bits), plain_reference(bits));
        }
    }

    fn any_plain_double() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            (1e-3f64..1e7).prop_map(|d| d),
            (-1e7f64..-1e-3).prop_map(|d| d),
            (1i64..10_000_000).prop_map(|n| n as f64),
            (1i64..10_000_000, 1u32..6).prop_map(|(n, e)| n as f64 / 10f64.powi(e as i32)),
        ]
        .prop_filter("plain range", |d| (1e-3..1e7).contains(&d.abs()))
    }
}
