//! Conformance-test functions.
//!
//! ksqlDB's query-validation tests call a few functions that are not part of its function
//! library: they live in ksqlDB's *test* classpath (`ksqldb-engine/src/test/java/.../function/`)
//! and exercise the UDAF framework itself: several column arguments, literal initialisation
//! arguments, variadic arguments, struct aggregates, undo over tables. Freshet implements them
//! here, with the semantics of those test classes, so that the conformance cases run against real
//! behaviour instead of being skipped. They are kept in this namespace only: they are not listed
//! by `SHOW FUNCTIONS` or `DESCRIBE FUNCTION` (see [`super::registry`]) and no production code
//! path depends on them.
//!
//! - `TEST_UDAF(x)`: sum of an INT or BIGINT column as BIGINT (undoable over tables), of a
//!   DOUBLE column as DOUBLE; `TEST_UDAF(s, 'init')`: the initial string's length plus the sum of
//!   the strings' lengths; `TEST_UDAF(STRUCT<A INT, B INT>)`: the field-wise sums.
//! - `MULTI_ARG(BIGINT, STRING, INT, STRING...)`, `FOUR_ARG(BIGINT, STRING, STRING, STRING, INT,
//!   STRING...)`, `FIVE_ARG(BIGINT, STRING, STRING, STRING, INT, INT, STRING...)`: the first two,
//!   four or five arguments are columns; the rest are literal initialisation arguments whose
//!   value (the integer plus the strings' lengths) starts the sum; each row adds its integers and
//!   its strings' lengths, a null counting as zero.
//! - `VAR_ARG(BIGINT, STRING...)`: every argument is a column (literals included); the same sum,
//!   starting from zero.
//! - `BAD_UDF(INT)`: a scalar function that always fails ("boom!"); `BAD_UDF(BOOLEAN)`: fails
//!   when its argument is true, else 0. (ksqlDB's third overload, `BAD_UDF(STRING)`, returns null
//!   on every other call of the same function instance: per-call-site state that Freshet's
//!   stateless scalar functions do not have, so it is not provided.)
//! - `TEST_UDF`: overloads returning their own names (`doStuffIntString(INT, STRING)`,
//!   `doStuffLongString(BIGINT, STRING)`, `doStuffLongLongString(BIGINT, BIGINT, STRING)`,
//!   `doStuffLongVarargs(BIGINT...)`), and `TEST_UDF(STRUCT<A STRING>)`: the field `A`.
//! - `WHENCONDITION(b, evaluate)`, `WHENRESULT(n, evaluate)`: `b` or `n`, failing when
//!   `evaluate` is false (CASE must not evaluate branches it does not take).
//! - Table functions `TEST_UDTF(x)`: one row, `x`; `TEST_UDTF(a, b, ...)`: one row per argument
//!   (per element of an array, per value of a map) as its Java text; `THROWING_UDTF(b)`: fails
//!   when `b` is true, else one row, `b`.

use super::{f, ScalarFn, Sig};
use crate::aggregate::{AggKind, AggSpec};
use crate::error::{Result, SqlError};
use crate::types::SqlType;
use crate::value::Value;

/// The conformance-test aggregate functions (see the module's documentation).
pub const TEST_AGGREGATES: &[&str] = &["TEST_UDAF", "MULTI_ARG", "FOUR_ARG", "FIVE_ARG", "VAR_ARG"];

pub fn is_test_aggregate(name: &str) -> bool {
    TEST_AGGREGATES.contains(&name)
}

/// Resolves a call of a conformance-test aggregate. `types` are the types of every argument and
/// `literals` their values where they are literals. Returns the spec and how many leading
/// arguments are evaluated per row (the rest are literal parameters, in `spec.params`).
pub fn resolve_aggregate(name: &str, types: &[SqlType], literals: &[Option<Value>]) -> Result<(AggSpec, usize)> {
    let bad = || {
        SqlError::statement(format!(
            "Function '{name}' does not accept parameters ({}).",
            types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
        ))
    };
    let integral = |t: &SqlType| matches!(t, SqlType::Int | SqlType::BigInt);
    let spec = |kind, columns: usize, params: Vec<Value>, result| {
        (AggSpec { kind, arg_types: types[..columns].to_vec(), params, result }, columns)
    };
    match name {
        "TEST_UDAF" => match types {
            [t] if integral(t) => Ok(spec(AggKind::TestSum, 1, vec![], SqlType::BigInt)),
            [SqlType::Double] => Ok(spec(AggKind::TestSum, 1, vec![], SqlType::Double)),
            [t @ SqlType::Struct(fields)]
                if fields.len() == 2
                    && fields.iter().zip(["A", "B"]).all(|(f, n)| f.name == n && f.ty == SqlType::Int) =>
            {
                Ok(spec(AggKind::TestStructSum, 1, vec![], t.clone()))
            }
            [SqlType::String, SqlType::String] => {
                let Some(Some(Value::String(init))) = literals.get(1) else {
                    return Err(literal_needed(name, 2));
                };
                let init = Value::BigInt(init.chars().count() as i64);
                Ok(spec(AggKind::ArgSum, 1, vec![init], SqlType::BigInt))
            }
            _ => Err(bad()),
        },
        "MULTI_ARG" | "FOUR_ARG" | "FIVE_ARG" => {
            let columns: &[fn(&SqlType) -> bool] = match name {
                "MULTI_ARG" => &[integral_type, string_type],
                "FOUR_ARG" => &[integral_type, string_type, string_type, string_type],
                _ => &[integral_type, string_type, string_type, string_type, int_type],
            };
            let n = columns.len();
            // The columns, then an INT and any number of STRING initialisation arguments.
            let shape_ok = types.len() > n
                && columns.iter().zip(types).all(|(ok, t)| ok(t))
                && types[n] == SqlType::Int
                && types[n + 1..].iter().all(|t| *t == SqlType::String);
            if !shape_ok {
                return Err(bad());
            }
            let mut init: i64 = 0;
            for (i, lit) in literals.iter().enumerate().skip(n) {
                match lit {
                    Some(Value::Int(v)) => init += *v as i64,
                    Some(Value::String(s)) => init += s.chars().count() as i64,
                    _ => return Err(literal_needed(name, i + 1)),
                }
            }
            Ok(spec(AggKind::ArgSum, n, vec![Value::BigInt(init)], SqlType::BigInt))
        }
        "VAR_ARG" => {
            let shape_ok = types.first().is_some_and(integral) && types[1..].iter().all(|t| *t == SqlType::String);
            if !shape_ok {
                return Err(bad());
            }
            Ok(spec(AggKind::ArgSum, types.len(), vec![Value::BigInt(0)], SqlType::BigInt))
        }
        _ => Err(SqlError::statement(format!("Unknown aggregate function {name}"))),
    }
}

/// Resolves a call of a conformance-test scalar function (`None`: not one of them).
pub(super) fn resolve_scalar(s: &Sig) -> Result<Option<(ScalarFn, SqlType)>> {
    Ok(Some(match s.name {
        "BAD_UDF" => {
            s.arity(1, 1)?;
            if s.is(0, |t| *t == SqlType::Int) {
                (f!(|_, _| Err("boom!".to_string())), SqlType::String)
            } else if s.is(0, |t| *t == SqlType::Boolean) {
                (
                    f!(|a, _| match a[0] {
                        Value::Boolean(true) => Err("You asked me to throw...".to_string()),
                        _ => Ok(Value::Int(0)),
                    }),
                    SqlType::Int,
                )
            } else {
                return Err(s.reject());
            }
        }
        "TEST_UDF" => {
            // ksqlDB's TestUdf: overloads that name themselves, and a struct's field A.
            macro_rules! named {
                ($n:literal) => {
                    (f!(|_, _| Ok(Value::String($n.to_string()))), SqlType::String)
                };
            }
            let long = |i: usize| s.is(i, integral_type);
            match s.n() {
                1 if matches!(s.ty(0), Some(SqlType::Struct(fields)) if fields.iter().any(|f| f.name == "A")) => (
                    f!(|a, _| Ok(match &a[0] {
                        Value::Struct(fields) =>
                            fields.iter().find(|(n, _)| n == "A").map(|(_, v)| v.clone()).unwrap_or(Value::Null),
                        _ => Value::Null,
                    })),
                    SqlType::String,
                ),
                2 if s.ty(0) == Some(&SqlType::Int) && s.is(1, string_type) => named!("doStuffIntString"),
                2 if long(0) && s.is(1, string_type) => named!("doStuffLongString"),
                3 if long(0) && long(1) && s.is(2, string_type) => named!("doStuffLongLongString"),
                n if n > 0 && s.all(integral_type) => named!("doStuffLongVarargs"),
                _ => return Err(s.reject()),
            }
        }
        // ksqlDB's checks that CASE evaluates lazily: each fails when it is evaluated but should
        // not have been.
        "WHENCONDITION" | "WHENRESULT" => {
            s.arity(2, 2)?;
            let first = if s.name == "WHENCONDITION" { SqlType::Boolean } else { SqlType::Int };
            if !s.is(0, |t| *t == first) || !s.is(1, |t| *t == SqlType::Boolean) {
                return Err(s.reject());
            }
            (
                f!(|a, _| match a[1] {
                    Value::Boolean(true) => Ok(a[0].clone()),
                    _ => Err("a CASE branch was evaluated though it should not have been".to_string()),
                }),
                first,
            )
        }
        "TEST_UDTF" => match s.n() {
            // One argument: one row, the argument itself.
            1 => {
                let ty = s.ty(0).cloned().unwrap_or(SqlType::String);
                (f!(|a, _| Ok(Value::Array(vec![a[0].clone()]))), SqlType::Array(Box::new(ty)))
            }
            // Several: one row per argument (or per element or map value of one), as Java text.
            0 => return Err(s.reject()),
            _ => (
                f!(|a, _| {
                    let mut rows = vec![];
                    for v in a {
                        match v {
                            Value::Array(items) => rows.extend(items.iter().map(java_text)),
                            Value::Map(entries) => rows.extend(entries.iter().map(|(_, v)| java_text(v))),
                            Value::Null => {}
                            other => rows.push(java_text(other)),
                        }
                    }
                    Ok(Value::Array(rows))
                }),
                SqlType::Array(Box::new(SqlType::String)),
            ),
        },
        "THROWING_UDTF" => {
            s.arity(1, 1)?;
            if !s.is(0, |t| *t == SqlType::Boolean) {
                return Err(s.reject());
            }
            (
                f!(|a, _| match a[0] {
                    Value::Boolean(true) => Err("You asked me to throw...".to_string()),
                    ref v => Ok(Value::Array(vec![v.clone()])),
                }),
                SqlType::Array(Box::new(SqlType::Boolean)),
            )
        }
        _ => return Ok(None),
    }))
}

/// ksqlDB's test-only table functions (used as `SELECT TEST_UDTF(...)`, not listed).
pub fn is_test_table_function(name: &str) -> bool {
    matches!(name, "TEST_UDTF" | "THROWING_UDTF")
}

/// A value as Java's `toString` writes it (`Struct{A=bar}` for a struct, as Kafka Connect).
fn java_text(v: &Value) -> Value {
    fn text(v: &Value) -> String {
        match v {
            Value::Struct(fields) => {
                let shown: Vec<String> =
                    fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k}={}", text(v))).collect();
                format!("Struct{{{}}}", shown.join(","))
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    Value::String(text(v))
}

fn integral_type(t: &SqlType) -> bool {
    matches!(t, SqlType::Int | SqlType::BigInt)
}

fn string_type(t: &SqlType) -> bool {
    *t == SqlType::String
}

fn int_type(t: &SqlType) -> bool {
    *t == SqlType::Int
}

fn literal_needed(name: &str, position: usize) -> SqlError {
    SqlError::statement(format!(
        "Parameter {position} passed to function {name} must be a literal constant: it initialises the aggregate."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Field;

    fn lits(values: &[Option<Value>]) -> Vec<Option<Value>> {
        values.to_vec()
    }

    #[test]
    fn multi_arg_splits_columns_from_initialisation_arguments() {
        use SqlType as T;
        let types = [T::BigInt, T::String, T::Int, T::String, T::String];
        let literals =
            lits(&[None, None, Some(Value::Int(5)), Some(Value::String("10".into())), Some(Value::String("3".into()))]);
        let (spec, columns) = resolve_aggregate("MULTI_ARG", &types, &literals).unwrap();
        assert_eq!(columns, 2);
        assert_eq!(spec.params, vec![Value::BigInt(8)]);
        let mut acc = spec.init();
        spec.add(&mut acc, &[Value::BigInt(6), Value::String("hi".into())]);
        spec.add(&mut acc, &[Value::Null, Value::String("hello".into())]);
        spec.add(&mut acc, &[Value::BigInt(5), Value::Null]);
        assert_eq!(spec.result(&acc), Value::BigInt(8 + 8 + 5 + 5));
    }

    #[test]
    fn shapes_that_do_not_match_are_refused_with_every_argument_type() {
        use SqlType as T;
        let err = resolve_aggregate("MULTI_ARG", &[T::BigInt, T::String], &[None, None]).unwrap_err();
        assert!(err.to_string().contains("Function 'MULTI_ARG' does not accept parameters (BIGINT, STRING)."));
        let err = resolve_aggregate("VAR_ARG", &[T::BigInt, T::Int], &[None, None]).unwrap_err();
        assert!(err.to_string().contains("(BIGINT, INTEGER)"), "{err}");
        // An initialisation argument that is not a literal.
        let err = resolve_aggregate("MULTI_ARG", &[T::BigInt, T::String, T::Int], &[None, None, None]).unwrap_err();
        assert!(err.to_string().contains("must be a literal"), "{err}");
    }

    #[test]
    fn var_arg_takes_every_argument_as_a_column() {
        use SqlType as T;
        let types = [T::BigInt, T::String, T::String];
        let (spec, columns) =
            resolve_aggregate("VAR_ARG", &types, &[None, Some(Value::String("hello".into())), None]).unwrap();
        assert_eq!(columns, 3);
        let mut acc = spec.init();
        spec.add(&mut acc, &[Value::BigInt(6), Value::String("hello".into()), Value::Null]);
        assert_eq!(spec.result(&acc), Value::BigInt(11));
    }

    #[test]
    fn bad_udf_fails_as_asked() {
        let (int, ty) = crate::functions::resolve("BAD_UDF", &[SqlType::Int], &[false]).unwrap();
        assert_eq!(ty, SqlType::String);
        assert_eq!((int.0)(&[Value::Int(1)], &ty), Err("boom!".to_string()));
        let (b, ty) = crate::functions::resolve("BAD_UDF", &[SqlType::Boolean], &[false]).unwrap();
        assert!((b.0)(&[Value::Boolean(true)], &ty).is_err());
        assert_eq!((b.0)(&[Value::Boolean(false)], &ty), Ok(Value::Int(0)));
        assert!(crate::functions::resolve("BAD_UDF", &[SqlType::String], &[false]).is_err());
    }

    #[test]
    fn test_udaf_overloads() {
        use SqlType as T;
        let (sum, _) = resolve_aggregate("TEST_UDAF", &[T::Int], &[None]).unwrap();
        assert_eq!(sum.result, T::BigInt);
        let mut acc = sum.init();
        sum.add(&mut acc, &[Value::Int(i32::MIN + 1)]);
        sum.add(&mut acc, &[Value::Int(-5)]);
        assert_eq!(sum.result(&acc), Value::BigInt(i32::MIN as i64 - 4));
        assert!(sum.undo(&mut acc, &[Value::Int(-5)]));
        assert_eq!(sum.result(&acc), Value::BigInt(i32::MIN as i64 + 1));

        let st = T::Struct(vec![Field { name: "A".into(), ty: T::Int }, Field { name: "B".into(), ty: T::Int }]);
        let (structs, _) = resolve_aggregate("TEST_UDAF", std::slice::from_ref(&st), &[None]).unwrap();
        let mut acc = structs.init();
        let row = |a, b| Value::Struct(vec![("A".into(), Value::Int(a)), ("B".into(), Value::Int(b))]);
        structs.add(&mut acc, &[row(1, 2)]);
        structs.add(&mut acc, &[row(2, 3)]);
        assert_eq!(structs.result(&acc), row(3, 5));

        let (lengths, columns) =
            resolve_aggregate("TEST_UDAF", &[T::String, T::String], &[None, Some(Value::String("abc".into()))])
                .unwrap();
        assert_eq!(columns, 1);
        let mut acc = lengths.init();
        lengths.add(&mut acc, &[Value::String("hello".into())]);
        assert_eq!(lengths.result(&acc), Value::BigInt(8));
        assert!(resolve_aggregate("TEST_UDAF", &[T::Boolean], &[None]).is_err());
    }
}
