//! SQL types of the ksqlDB dialect and their textual form.

use std::fmt;

/// A column or expression type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SqlType {
    Boolean,
    Int,
    BigInt,
    Double,
    /// `DECIMAL(precision, scale)`.
    Decimal {
        precision: u8,
        scale: u8,
    },
    String,
    Bytes,
    /// Days since the epoch.
    Date,
    /// Milliseconds since midnight.
    Time,
    /// Milliseconds since the epoch, UTC.
    Timestamp,
    Array(Box<SqlType>),
    Map(Box<SqlType>, Box<SqlType>),
    Struct(Vec<Field>),
}

/// A named field of a STRUCT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub ty: SqlType,
}

/// Largest DECIMAL precision ksqlDB allows.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

impl SqlType {
    pub fn is_numeric(&self) -> bool {
        matches!(self, SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::Decimal { .. })
    }

    pub fn is_primitive(&self) -> bool {
        !matches!(self, SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_))
    }

    /// The decimal form of an integral or decimal type (the precision a value of it needs).
    pub fn as_decimal(&self) -> Option<(u8, u8)> {
        match self {
            SqlType::Int => Some((10, 0)),
            SqlType::BigInt => Some((19, 0)),
            SqlType::Decimal { precision, scale } => Some((*precision, *scale)),
            _ => None,
        }
    }

    /// The wider of two numeric types, for arithmetic and comparisons (INT < BIGINT < DECIMAL < DOUBLE).
    pub fn widen(a: &SqlType, b: &SqlType) -> Option<SqlType> {
        use SqlType::*;
        Some(match (a, b) {
            (Double, x) | (x, Double) if x.is_numeric() => Double,
            (Decimal { .. }, _) | (_, Decimal { .. }) => {
                let (p1, s1) = a.as_decimal()?;
                let (p2, s2) = b.as_decimal()?;
                let scale = s1.max(s2);
                let int = (p1 - s1).max(p2 - s2);
                Decimal { precision: (int + scale).min(MAX_DECIMAL_PRECISION), scale }
            }
            (BigInt, Int | BigInt) | (Int, BigInt) => BigInt,
            (Int, Int) => Int,
            _ => return None,
        })
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::Int => f.write_str("INTEGER"),
            SqlType::BigInt => f.write_str("BIGINT"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::String => f.write_str("STRING"),
            SqlType::Bytes => f.write_str("BYTES"),
            SqlType::Date => f.write_str("DATE"),
            SqlType::Time => f.write_str("TIME"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
            SqlType::Array(t) => write!(f, "ARRAY<{t}>"),
            SqlType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
            SqlType::Struct(fields) => {
                f.write_str("STRUCT<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{}` {}", field.name, field.ty)?;
                }
                f.write_str(">")
            }
        }
    }
}

/// Whether a type name is a ksqlDB base type name (as opposed to a custom type from CREATE TYPE).
pub fn base_type(name: &str) -> Option<SqlType> {
    Some(match name.to_ascii_uppercase().as_str() {
        "BOOLEAN" => SqlType::Boolean,
        "INT" | "INTEGER" => SqlType::Int,
        "BIGINT" => SqlType::BigInt,
        "DOUBLE" => SqlType::Double,
        "STRING" | "VARCHAR" => SqlType::String,
        "BYTES" => SqlType::Bytes,
        "DATE" => SqlType::Date,
        "TIME" => SqlType::Time,
        "TIMESTAMP" => SqlType::Timestamp,
        _ => return None,
    })
}
