//! Aggregate functions: typing, accumulators, and undo for aggregations over tables.

use crate::error::{Result, SqlError};
use crate::types::{Field, SqlType};
use crate::value::{type_of, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    CountStar,
    Sum,
    Avg,
    Min,
    Max,
    CountDistinct,
    CollectList,
    CollectSet,
    EarliestByOffset,
    LatestByOffset,
    TopK,
    TopKDistinct,
    Histogram,
    StddevSamp,
    StddevPop,
    VarSamp,
    VarPop,
    Correlation,
    /// SUM_LIST: the sum of the elements of an array column (nulls skipped).
    SumList,
    /// Conformance-test UDAFs (`functions::conformance`): a BIGINT sum of integers and string
    /// lengths over every column argument, starting from `params[0]`.
    ArgSum,
    /// Conformance-test UDAF: a sum of an INT/BIGINT (as BIGINT) or DOUBLE column.
    TestSum,
    /// Conformance-test UDAF: the field-wise sum of `STRUCT<A INT, B INT>` values.
    TestStructSum,
}

/// A typed aggregate call: how many expression arguments it evaluates per row, its constant
/// parameters (TOPK's k, EARLIEST_BY_OFFSET's n and ignore-nulls flag) and its result type.
#[derive(Debug, Clone)]
pub struct AggSpec {
    pub kind: AggKind,
    pub arg_types: Vec<SqlType>,
    pub params: Vec<Value>,
    pub result: SqlType,
}

/// Resolves `name(args)`; `consts` are the trailing literal arguments.
pub fn resolve(name: &str, arg_types: &[SqlType], consts: &[Value], star: bool) -> Result<AggSpec> {
    use AggKind::*;
    let first = arg_types.first().cloned();
    let bad = || {
        SqlError::statement(format!(
            "Function '{name}' does not accept parameters ({}).",
            arg_types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
        ))
    };
    let one = || first.clone().ok_or_else(bad);
    let (kind, result) = match name {
        "COUNT" if star || arg_types.is_empty() => (CountStar, SqlType::BigInt),
        "COUNT" => (Count, SqlType::BigInt),
        "SUM" => {
            let t = one()?;
            if !t.is_numeric() {
                return Err(bad());
            }
            (Sum, t)
        }
        "AVG" => {
            let t = one()?;
            if !t.is_numeric() {
                return Err(bad());
            }
            let result = match t {
                SqlType::Decimal { .. } => t,
                _ => SqlType::Double,
            };
            (Avg, result)
        }
        "MIN" | "MAX" => {
            let t = one()?;
            if !t.is_primitive() || t == SqlType::Boolean {
                return Err(bad());
            }
            (if name == "MIN" { Min } else { Max }, t)
        }
        "COUNT_DISTINCT" => (CountDistinct, SqlType::BigInt),
        "COLLECT_LIST" => (CollectList, SqlType::Array(Box::new(one()?))),
        "COLLECT_SET" => (CollectSet, SqlType::Array(Box::new(one()?))),
        "EARLIEST_BY_OFFSET" | "LATEST_BY_OFFSET" => {
            let t = one()?;
            let kind = if name == "EARLIEST_BY_OFFSET" { EarliestByOffset } else { LatestByOffset };
            let n = consts.first().and_then(Value::as_i64);
            let result = match n {
                Some(_) => SqlType::Array(Box::new(t)),
                None => t,
            };
            (kind, result)
        }
        "TOPK" | "TOPKDISTINCT" => {
            let t = one()?;
            if consts.is_empty() {
                return Err(bad());
            }
            if arg_types.len() > 1 {
                // TOPK(sort_col, col0, col1, ..., k): the top rows by sort_col, as structs.
                if name != "TOPK" {
                    return Err(bad());
                }
                let fields = arg_types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| Field { name: topk_field_name(i), ty: ty.clone() })
                    .collect();
                (TopK, SqlType::Array(Box::new(SqlType::Struct(fields))))
            } else {
                (if name == "TOPK" { TopK } else { TopKDistinct }, SqlType::Array(Box::new(t)))
            }
        }
        "HISTOGRAM" => (Histogram, SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::BigInt))),
        "STDDEV_SAMPLE" => (StddevSamp, SqlType::Double),
        // ksqlDB's STDDEV_SAMP returns the sample variance, not its square root (a long-standing
        // bug its own tests pin down); Freshet follows it for compatibility.
        "STDDEV_SAMP" => (VarSamp, SqlType::Double),
        "STDDEV_POP" => (StddevPop, SqlType::Double),
        "VAR_SAMP" => (VarSamp, SqlType::Double),
        "VAR_POP" => (VarPop, SqlType::Double),
        "CORRELATION" => (Correlation, SqlType::Double),
        "SUM_LIST" => match one()? {
            SqlType::Array(e) if matches!(*e, SqlType::Int | SqlType::BigInt | SqlType::Double) => (SumList, *e),
            _ => return Err(bad()),
        },
        _ => return Err(SqlError::statement(format!("Unknown aggregate function {name}"))),
    };
    Ok(AggSpec { kind, arg_types: arg_types.to_vec(), params: consts.to_vec(), result })
}

/// The running state of one aggregate for one group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Acc {
    Count(i64),
    Sum(Value),
    Avg(Value, i64),
    Extreme(Value),
    List(Vec<Value>),
    /// Sum, sum of squares, count (variance); or sums for correlation.
    Moments(f64, f64, i64),
    Corr {
        n: i64,
        sx: f64,
        sy: f64,
        sxx: f64,
        syy: f64,
        sxy: f64,
    },
    Histogram(Vec<(String, i64)>),
    /// EARLIEST/LATEST_BY_OFFSET: the kept values with the sequence number of their row, in
    /// sequence order (so that merged sessions keep the earliest or latest by arrival).
    Seq(Vec<(u64, Value)>),
}

/// The arrival sequence of the rows that EARLIEST/LATEST_BY_OFFSET keep: one counter for the
/// process, as ksqlDB's UDAFs share one, so it only grows in the order rows are aggregated.
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_sequence() -> u64 {
    SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The next arrival sequence number (persisted with a query's state).
pub fn current_sequence() -> u64 {
    SEQUENCE.load(std::sync::atomic::Ordering::Relaxed)
}

/// After a restore: sequence numbers continue above those of the restored state.
pub fn sequence_at_least(n: u64) {
    SEQUENCE.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
}

impl AggSpec {
    pub fn init(&self) -> Acc {
        use AggKind::*;
        match self.kind {
            Count | CountStar => Acc::Count(0),
            Sum | SumList | TestSum => Acc::Sum(zero(&self.result)),
            ArgSum => Acc::Sum(self.params.first().cloned().unwrap_or(Value::BigInt(0))),
            TestStructSum => {
                Acc::Extreme(Value::Struct(vec![("A".to_string(), Value::Int(0)), ("B".to_string(), Value::Int(0))]))
            }
            Avg => Acc::Avg(Value::Null, 0),
            Min | Max => Acc::Extreme(Value::Null),
            EarliestByOffset | LatestByOffset => Acc::Seq(vec![]),
            CountDistinct | CollectList | CollectSet | TopK | TopKDistinct => Acc::List(vec![]),
            StddevSamp | StddevPop | VarSamp | VarPop => Acc::Moments(0.0, 0.0, 0),
            Correlation => Acc::Corr { n: 0, sx: 0.0, sy: 0.0, sxx: 0.0, syy: 0.0, sxy: 0.0 },
            Histogram => Acc::Histogram(vec![]),
        }
    }

    fn limit(&self) -> usize {
        self.params.first().and_then(Value::as_i64).unwrap_or(1).max(0) as usize
    }

    /// How many values COLLECT_LIST/COLLECT_SET keep: the configured limit (the planner puts
    /// `ksql.functions.collect_*.limit` in `params`), never more than the engine's own limit.
    fn collect_limit(&self) -> usize {
        let configured = self.params.first().and_then(Value::as_i64).map(|l| l.max(0) as usize);
        configured.unwrap_or(crate::limits::MAX_COLLECT_ITEMS).min(crate::limits::MAX_COLLECT_ITEMS)
    }

    /// EARLIEST/LATEST_BY_OFFSET(col, n[, ignore_nulls]) keep n values; (col[, ignore_nulls]) one.
    fn multi(&self) -> bool {
        self.params.first().and_then(Value::as_i64).is_some()
    }

    fn ignore_nulls(&self) -> bool {
        let at = if self.multi() { 1 } else { 0 };
        self.params.get(at).and_then(Value::as_bool).unwrap_or(true)
    }

    /// Adds one row's arguments.
    pub fn add(&self, acc: &mut Acc, args: &[Value]) {
        use AggKind::*;
        let v = args.first().cloned().unwrap_or(Value::Null);
        match (self.kind, acc) {
            (CountStar, Acc::Count(n)) => *n += 1,
            (Count, Acc::Count(n)) if !v.is_null() => *n += 1,
            (Sum | TestSum, Acc::Sum(s)) if !v.is_null() => *s = add_values(s, &v, &self.result),
            (SumList, Acc::Sum(s)) => {
                if let Value::Array(items) = &v {
                    for item in items.iter().filter(|x| !x.is_null()) {
                        *s = add_values(s, item, &self.result);
                    }
                }
            }
            (ArgSum, Acc::Sum(s)) => {
                let mut total = s.as_i64().unwrap_or(0);
                for a in args {
                    total = total.wrapping_add(match a {
                        Value::String(text) => text.chars().count() as i64,
                        other => other.as_i64().unwrap_or(0),
                    });
                }
                *s = Value::BigInt(total);
            }
            (TestStructSum, Acc::Extreme(Value::Struct(fields))) => {
                if let Value::Struct(row) = &v {
                    for (name, total) in fields.iter_mut() {
                        let x = row.iter().find(|(n, _)| n == name).and_then(|(_, x)| x.as_i64()).unwrap_or(0);
                        *total = Value::Int((total.as_i64().unwrap_or(0) as i32).wrapping_add(x as i32));
                    }
                }
            }
            (Avg, Acc::Avg(s, n)) if !v.is_null() => {
                *s = if s.is_null() { v } else { add_values(s, &v, &widen_sum(&self.arg_types[0])) };
                *n += 1;
            }
            (Min | Max, Acc::Extreme(cur)) => {
                if v.is_null() {
                    return;
                }
                let want = if self.kind == Min { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater };
                if cur.is_null() || v.compare(cur) == Some(want) {
                    *cur = v;
                }
            }
            (EarliestByOffset | LatestByOffset, Acc::Seq(items)) => {
                if v.is_null() && self.ignore_nulls() {
                    return;
                }
                let n = if self.multi() { self.limit() } else { 1 };
                if self.kind == EarliestByOffset {
                    if items.len() < n {
                        items.push((next_sequence(), v));
                    }
                } else {
                    items.push((next_sequence(), v));
                    if items.len() > n {
                        items.remove(0);
                    }
                }
            }
            (CountDistinct, Acc::List(items)) if !v.is_null() && !items.iter().any(|x| x.same(&v)) => items.push(v),
            (CollectList, Acc::List(items)) if items.len() < self.collect_limit() => items.push(v),
            (CollectSet, Acc::List(items))
                if !items.iter().any(|x| x.same(&v)) && items.len() < self.collect_limit() =>
            {
                items.push(v)
            }
            (TopK | TopKDistinct, Acc::List(items)) => {
                if v.is_null() {
                    return;
                }
                if self.kind == TopKDistinct && items.iter().any(|x| x.same(&v)) {
                    return;
                }
                let item = if self.arg_types.len() > 1 {
                    let values = self
                        .arg_types
                        .iter()
                        .enumerate()
                        .map(|(i, _)| (topk_field_name(i), args.get(i).cloned().unwrap_or(Value::Null)));
                    Value::Struct(values.collect())
                } else {
                    v
                };
                items.push(item);
                // Stable: a value equal to one already kept goes after it.
                items.sort_by(|a, b| {
                    topk_sort_value(b).compare(topk_sort_value(a)).unwrap_or(std::cmp::Ordering::Equal)
                });
                items.truncate(self.limit());
            }
            (Histogram, Acc::Histogram(h)) => {
                let Value::String(s) = v else {
                    return;
                };
                if let Some(slot) = h.iter_mut().find(|(k, _)| *k == s) {
                    slot.1 += 1;
                } else if h.len() < crate::limits::MAX_HISTOGRAM_BUCKETS {
                    h.push((s, 1));
                }
            }
            (StddevSamp | StddevPop | VarSamp | VarPop, Acc::Moments(s, sq, n)) => {
                if let Some(x) = v.as_f64() {
                    *s += x;
                    *sq += x * x;
                    *n += 1;
                }
            }
            (Correlation, Acc::Corr { n, sx, sy, sxx, syy, sxy }) => {
                if let (Some(x), Some(y)) = (v.as_f64(), args.get(1).and_then(Value::as_f64)) {
                    *n += 1;
                    *sx += x;
                    *sy += y;
                    *sxx += x * x;
                    *syy += y * y;
                    *sxy += x * y;
                }
            }
            _ => {}
        }
    }

    /// Removes one row's arguments (aggregations over tables). Returns false if this aggregate
    /// cannot be undone.
    pub fn undo(&self, acc: &mut Acc, args: &[Value]) -> bool {
        use AggKind::*;
        let v = args.first().cloned().unwrap_or(Value::Null);
        match (self.kind, acc) {
            (CountStar, Acc::Count(n)) => *n -= 1,
            (Count, Acc::Count(n)) => {
                if !v.is_null() {
                    *n -= 1
                }
            }
            (Sum, Acc::Sum(s)) => {
                if !v.is_null() {
                    *s = add_values(s, &negate(&v), &self.result);
                }
            }
            (TestSum, Acc::Sum(s)) if self.result == SqlType::BigInt => {
                if !v.is_null() {
                    *s = add_values(s, &negate(&v), &self.result);
                }
            }
            (SumList, Acc::Sum(s)) => {
                if let Value::Array(items) = &v {
                    for item in items.iter().filter(|x| !x.is_null()) {
                        *s = add_values(s, &negate(item), &self.result);
                    }
                }
            }
            (Avg, Acc::Avg(s, n)) => {
                if !v.is_null() && !s.is_null() {
                    *s = add_values(s, &negate(&v), &widen_sum(&self.arg_types[0]));
                    *n -= 1;
                }
            }
            (CollectList | CollectSet, Acc::List(items)) => {
                if let Some(i) = items.iter().position(|x| x.same(&v)) {
                    items.remove(i);
                }
            }
            (CountDistinct, Acc::List(_)) => return false,
            (Histogram, Acc::Histogram(h)) => {
                if let Value::String(s) = v {
                    if let Some(i) = h.iter().position(|(k, _)| *k == s) {
                        h[i].1 -= 1;
                        if h[i].1 == 0 {
                            h.remove(i);
                        }
                    }
                }
            }
            (StddevSamp | StddevPop | VarSamp | VarPop, Acc::Moments(s, sq, n)) => {
                if let Some(x) = v.as_f64() {
                    *s -= x;
                    *sq -= x * x;
                    *n -= 1;
                }
            }
            _ => return false,
        }
        true
    }

    pub fn result(&self, acc: &Acc) -> Value {
        use AggKind::*;
        match (self.kind, acc) {
            (Count | CountStar, Acc::Count(n)) => Value::BigInt(*n),
            (Sum | SumList | ArgSum | TestSum, Acc::Sum(s)) => s.clone(),
            (TestStructSum, Acc::Extreme(v)) => v.clone(),
            (Avg, Acc::Avg(s, n)) => {
                if *n == 0 || s.is_null() {
                    return match self.result {
                        SqlType::Double => Value::Double(0.0),
                        _ => Value::Null,
                    };
                }
                match (&self.result, s) {
                    (SqlType::Decimal { scale, .. }, Value::Decimal(u, sc)) => {
                        let u = crate::value::rescale(*u, *sc, *scale);
                        Value::Decimal(u / *n as i128, *scale)
                    }
                    _ => Value::Double(s.as_f64().unwrap_or(0.0) / *n as f64),
                }
            }
            (Min | Max, Acc::Extreme(v)) => v.clone(),
            (EarliestByOffset | LatestByOffset, Acc::Seq(items)) => {
                if self.multi() {
                    Value::Array(items.iter().map(|(_, v)| v.clone()).collect())
                } else {
                    items.first().map(|(_, v)| v.clone()).unwrap_or(Value::Null)
                }
            }
            (CountDistinct, Acc::List(items)) => Value::BigInt(items.len() as i64),
            (CollectList | CollectSet | TopK | TopKDistinct, Acc::List(items)) => Value::Array(items.clone()),
            (Histogram, Acc::Histogram(h)) => {
                Value::Map(h.iter().map(|(k, n)| (Value::String(k.clone()), Value::BigInt(*n))).collect())
            }
            (StddevSamp | StddevPop | VarSamp | VarPop, Acc::Moments(s, sq, n)) => {
                let n = *n as f64;
                let pop = matches!(self.kind, StddevPop | VarPop);
                let denom = if pop { n } else { n - 1.0 };
                if denom <= 0.0 {
                    return Value::Double(0.0);
                }
                let var = (sq - s * s / n) / denom;
                Value::Double(if matches!(self.kind, StddevSamp | StddevPop) { var.max(0.0).sqrt() } else { var })
            }
            (Correlation, Acc::Corr { n, sx, sy, sxx, syy, sxy }) => {
                let n = *n as f64;
                let cov = sxy - sx * sy / n;
                let vx = sxx - sx * sx / n;
                let vy = syy - sy * sy / n;
                Value::Double(cov / (vx * vy).sqrt())
            }
            _ => Value::Null,
        }
    }
}

impl AggSpec {
    /// Whether the aggregate's intermediate state is a structured value (ksqlDB keeps it as a
    /// STRUCT, ARRAY or MAP in the aggregation's internal topics), which the DELIMITED and KAFKA
    /// value formats cannot hold.
    pub fn structured_state(&self) -> bool {
        use AggKind::*;
        match self.kind {
            Count | CountStar | Sum | Min | Max | SumList | ArgSum | TestSum => false,
            Avg | CountDistinct | CollectList | CollectSet | EarliestByOffset | LatestByOffset | TopK
            | TopKDistinct | Histogram | StddevSamp | StddevPop | VarSamp | VarPop | Correlation | TestStructSum => {
                true
            }
        }
    }

    /// Combines the kept values of two EARLIEST/LATEST_BY_OFFSET accumulators (merged
    /// sessions): the earliest or latest of both by arrival.
    pub fn merge_seq(&self, a: &[(u64, Value)], b: &[(u64, Value)]) -> Acc {
        let mut items: Vec<(u64, Value)> = a.iter().chain(b).cloned().collect();
        items.sort_by_key(|(seq, _)| *seq);
        let n = if self.multi() { self.limit() } else { 1 };
        if self.kind == AggKind::EarliestByOffset {
            items.truncate(n);
        } else if items.len() > n {
            items.drain(..items.len() - n);
        }
        Acc::Seq(items)
    }
}

/// The struct fields of TOPK with extra columns: `sort_col`, then `col0`, `col1`, ...
fn topk_field_name(i: usize) -> String {
    if i == 0 {
        "sort_col".to_string()
    } else {
        format!("col{}", i - 1)
    }
}

/// What TOPK orders by: the value itself, or a struct's `sort_col`.
fn topk_sort_value(v: &Value) -> &Value {
    match v {
        Value::Struct(fields) => fields.first().map(|(_, x)| x).unwrap_or(v),
        _ => v,
    }
}

fn zero(t: &SqlType) -> Value {
    match t {
        SqlType::Int => Value::Int(0),
        SqlType::BigInt => Value::BigInt(0),
        SqlType::Double => Value::Double(0.0),
        SqlType::Decimal { scale, .. } => Value::Decimal(0, *scale),
        _ => Value::Null,
    }
}

fn widen_sum(t: &SqlType) -> SqlType {
    match t {
        SqlType::Int | SqlType::BigInt => SqlType::BigInt,
        other => other.clone(),
    }
}

fn negate(v: &Value) -> Value {
    match v {
        Value::Int(i) => Value::Int(-i),
        Value::BigInt(i) => Value::BigInt(-i),
        Value::Double(d) => Value::Double(-d),
        Value::Decimal(u, s) => Value::Decimal(-u, *s),
        other => other.clone(),
    }
}

pub(crate) fn add_values(a: &Value, b: &Value, ty: &SqlType) -> Value {
    match ty {
        SqlType::Int => Value::Int((a.as_i64().unwrap_or(0) as i32).wrapping_add(b.as_i64().unwrap_or(0) as i32)),
        SqlType::BigInt => Value::BigInt(a.as_i64().unwrap_or(0).wrapping_add(b.as_i64().unwrap_or(0))),
        SqlType::Double => Value::Double(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
        SqlType::Decimal { scale, .. } => {
            Value::Decimal(a.to_decimal(*scale).unwrap_or(0) + b.to_decimal(*scale).unwrap_or(0), *scale)
        }
        _ => {
            let _ = type_of(a);
            Value::Null
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_with_extra_columns_keeps_the_top_rows_as_structs() {
        let spec = resolve("TOPK", &[SqlType::Int, SqlType::String], &[Value::Int(2)], false).unwrap();
        let field = |n: &str, ty| Field { name: n.to_string(), ty };
        assert_eq!(
            spec.result,
            SqlType::Array(Box::new(SqlType::Struct(vec![
                field("sort_col", SqlType::Int),
                field("col0", SqlType::String)
            ])))
        );
        let mut acc = spec.init();
        for (v, name) in
            [(Value::Int(0), "zero"), (Value::Int(100), "one"), (Value::Null, "three"), (Value::Int(100), "x")]
        {
            spec.add(&mut acc, &[v, Value::String(name.into())]);
        }
        let row = |v: i32, n: &str| {
            Value::Struct(vec![("sort_col".into(), Value::Int(v)), ("col0".into(), Value::String(n.into()))])
        };
        // A null sort value is skipped; ties keep their arrival order.
        assert_eq!(spec.result(&acc), Value::Array(vec![row(100, "one"), row(100, "x")]));
        assert!(resolve("TOPKDISTINCT", &[SqlType::Int, SqlType::String], &[Value::Int(2)], false).is_err());
    }

    #[test]
    fn stddev_samp_is_the_sample_variance_as_in_ksqldb() {
        let samp = resolve("STDDEV_SAMP", &[SqlType::Double], &[], false).unwrap();
        let sample = resolve("STDDEV_SAMPLE", &[SqlType::Double], &[], false).unwrap();
        let (mut a, mut b) = (samp.init(), sample.init());
        for x in [10.0, 12.0, 13.0] {
            samp.add(&mut a, &[Value::Double(x)]);
            sample.add(&mut b, &[Value::Double(x)]);
        }
        let var = 7.0 / 3.0;
        assert!(matches!(samp.result(&a), Value::Double(v) if (v - var).abs() < 1e-9));
        assert!(matches!(sample.result(&b), Value::Double(v) if (v - var.sqrt()).abs() < 1e-9));
    }
}
