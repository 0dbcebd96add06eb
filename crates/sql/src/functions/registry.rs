//! The function registry as `SHOW FUNCTIONS` and `DESCRIBE FUNCTION` present it: every scalar,
//! aggregate and table function the engine implements, with ksqlDB's categories.
//!
//! The scalar library resolves a call by name and argument types in code (`functions::resolve`)
//! and records no signatures; the signatures here are found by asking the resolvers which
//! argument types of a representative set (primitive types, `ARRAY<INT>`, `ARRAY<STRING>`,
//! `MAP<STRING, INT>`) they accept, with up to three arguments. Lambda arguments cannot be
//! probed that way: the higher-order functions' signatures are written out.

use crate::types::SqlType;
use crate::value::Value;

/// ksqlDB's function types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionType {
    Scalar,
    Aggregate,
    Table,
}

impl FunctionType {
    pub fn name(self) -> &'static str {
        match self {
            FunctionType::Scalar => "SCALAR",
            FunctionType::Aggregate => "AGGREGATE",
            FunctionType::Table => "TABLE",
        }
    }
}

/// A function of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: &'static str,
    /// ksqlDB's category (`MATHEMATICAL`, `STRING`, `DATE / TIME`...).
    pub category: &'static str,
    pub kind: FunctionType,
}

/// One accepted signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub arguments: Vec<String>,
    pub return_type: String,
}

const MATH: &str = "MATHEMATICAL";
const STRING: &str = "STRING";
const REGEX: &str = "REGULAR EXPRESSION";
const URL: &str = "URL";
const JSON: &str = "JSON";
const ARRAY: &str = "ARRAY";
const MAP: &str = "MAP";
const DATE_TIME: &str = "DATE / TIME";
const CONDITIONAL: &str = "CONDITIONAL";
const CONVERSIONS: &str = "CONVERSIONS";
const LAMBDA: &str = "LAMBDA";
const OTHER: &str = "OTHER";

/// The scalar functions `functions::resolve` implements, with their categories. A unit test
/// checks this list against the resolvers' sources, so a new function cannot be left out.
pub const SCALARS: &[(&str, &str)] = &[
    ("ABS", MATH),
    ("ACOS", MATH),
    ("ASIN", MATH),
    ("ATAN", MATH),
    ("ATAN2", MATH),
    ("CBRT", MATH),
    ("CEIL", MATH),
    ("COS", MATH),
    ("COSH", MATH),
    ("COT", MATH),
    ("DEGREES", MATH),
    ("EXP", MATH),
    ("FLOOR", MATH),
    ("GEO_DISTANCE", MATH),
    ("LN", MATH),
    ("LOG", MATH),
    ("PI", MATH),
    ("POWER", MATH),
    ("RADIANS", MATH),
    ("RANDOM", MATH),
    ("ROUND", MATH),
    ("SIGN", MATH),
    ("SIN", MATH),
    ("SINH", MATH),
    ("SQRT", MATH),
    ("TAN", MATH),
    ("TANH", MATH),
    ("TRUNC", MATH),
    ("GREATEST", MATH),
    ("LEAST", MATH),
    ("COALESCE", CONDITIONAL),
    ("IFNULL", CONDITIONAL),
    ("NULLIF", CONDITIONAL),
    ("AS_VALUE", OTHER),
    ("BIGINT_FROM_BYTES", CONVERSIONS),
    ("DOUBLE_FROM_BYTES", CONVERSIONS),
    ("INT_FROM_BYTES", CONVERSIONS),
    ("FILTER", LAMBDA),
    ("REDUCE", LAMBDA),
    ("TRANSFORM", LAMBDA),
    ("ARRAY_CONCAT", ARRAY),
    ("ARRAY_CONTAINS", ARRAY),
    ("ARRAY_DISTINCT", ARRAY),
    ("ARRAY_EXCEPT", ARRAY),
    ("ARRAY_INTERSECT", ARRAY),
    ("ARRAY_JOIN", ARRAY),
    ("ARRAY_LENGTH", ARRAY),
    ("ARRAY_MAX", ARRAY),
    ("ARRAY_MIN", ARRAY),
    ("ARRAY_REMOVE", ARRAY),
    ("ARRAY_SORT", ARRAY),
    ("ARRAY_UNION", ARRAY),
    ("ENTRIES", MAP),
    ("GENERATE_SERIES", ARRAY),
    ("SLICE", ARRAY),
    ("AS_MAP", MAP),
    ("MAP_KEYS", MAP),
    ("MAP_UNION", MAP),
    ("MAP_VALUES", MAP),
    ("CONVERT_TZ", DATE_TIME),
    ("DATEADD", DATE_TIME),
    ("DATESUB", DATE_TIME),
    ("DATETOSTRING", DATE_TIME),
    ("FORMAT_DATE", DATE_TIME),
    ("FORMAT_TIME", DATE_TIME),
    ("FORMAT_TIMESTAMP", DATE_TIME),
    ("FROM_DAYS", DATE_TIME),
    ("FROM_UNIXTIME", DATE_TIME),
    ("PARSE_DATE", DATE_TIME),
    ("PARSE_TIME", DATE_TIME),
    ("PARSE_TIMESTAMP", DATE_TIME),
    ("STRINGTODATE", DATE_TIME),
    ("STRINGTOTIMESTAMP", DATE_TIME),
    ("TIMEADD", DATE_TIME),
    ("TIMESTAMPADD", DATE_TIME),
    ("TIMESTAMPSUB", DATE_TIME),
    ("TIMESTAMPTOSTRING", DATE_TIME),
    ("TIMESUB", DATE_TIME),
    ("UNIX_DATE", DATE_TIME),
    ("UNIX_TIMESTAMP", DATE_TIME),
    ("EXTRACTJSONFIELD", JSON),
    ("IS_JSON_STRING", JSON),
    ("JSON_ARRAY_CONTAINS", JSON),
    ("JSON_ARRAY_LENGTH", JSON),
    ("JSON_CONCAT", JSON),
    ("JSON_ITEMS", JSON),
    ("JSON_KEYS", JSON),
    ("JSON_RECORDS", JSON),
    ("TO_JSON_STRING", JSON),
    ("CHR", STRING),
    ("CONCAT", STRING),
    ("CONCAT_WS", STRING),
    ("ELT", STRING),
    ("ENCODE", STRING),
    ("FIELD", STRING),
    ("FROM_BYTES", CONVERSIONS),
    ("INITCAP", STRING),
    ("INSTR", STRING),
    ("LCASE", STRING),
    ("LEN", STRING),
    ("LENGTH", STRING),
    ("LOWER", STRING),
    ("LPAD", STRING),
    ("LTRIM", STRING),
    ("MASK", STRING),
    ("MASK_KEEP_LEFT", STRING),
    ("MASK_KEEP_RIGHT", STRING),
    ("MASK_LEFT", STRING),
    ("MASK_RIGHT", STRING),
    ("REPLACE", STRING),
    ("RPAD", STRING),
    ("RTRIM", STRING),
    ("SPLIT", STRING),
    ("SPLIT_TO_MAP", STRING),
    ("SUBSTRING", STRING),
    ("TO_BYTES", CONVERSIONS),
    ("TRIM", STRING),
    ("UCASE", STRING),
    ("UPPER", STRING),
    ("UUID", STRING),
    ("REGEXP_EXTRACT", REGEX),
    ("REGEXP_EXTRACT_ALL", REGEX),
    ("REGEXP_REPLACE", REGEX),
    ("REGEXP_SPLIT_TO_ARRAY", REGEX),
    ("URL_DECODE_PARAM", URL),
    ("URL_ENCODE_PARAM", URL),
    ("URL_EXTRACT_FRAGMENT", URL),
    ("URL_EXTRACT_HOST", URL),
    ("URL_EXTRACT_PARAMETER", URL),
    ("URL_EXTRACT_PATH", URL),
    ("URL_EXTRACT_PORT", URL),
    ("URL_EXTRACT_PROTOCOL", URL),
    ("URL_EXTRACT_QUERY", URL),
];

/// The table functions (planned by the engine as a flat map, not by the scalar resolvers).
pub const TABLE_FUNCTIONS: &[&str] = &["EXPLODE", "CUBE_EXPLODE"];

/// Every function, sorted by name (ksqlDB's SHOW FUNCTIONS order).
pub fn all() -> Vec<FunctionInfo> {
    let mut out: Vec<FunctionInfo> = SCALARS
        .iter()
        .map(|&(name, category)| FunctionInfo { name, category, kind: FunctionType::Scalar })
        .chain(super::AGGREGATES.iter().filter(|n| aggregate_implemented(n)).map(|&name| FunctionInfo {
            name,
            category: "AGGREGATE",
            kind: FunctionType::Aggregate,
        }))
        .chain(TABLE_FUNCTIONS.iter().map(|&name| FunctionInfo { name, category: "TABLE", kind: FunctionType::Table }))
        .collect();
    out.sort_by_key(|f| f.name);
    out
}

/// Whether the aggregation operator implements an aggregate name (`functions::AGGREGATES` also
/// names ones it only recognizes, such as ATTR, to refuse them in the right place).
fn aggregate_implemented(name: &str) -> bool {
    match crate::aggregate::resolve(name, &[SqlType::Int], &[], false) {
        Ok(_) => true,
        Err(e) => !e.to_string().starts_with("Unknown aggregate function"),
    }
}

/// A function by name (case-insensitive).
pub fn lookup(name: &str) -> Option<FunctionInfo> {
    let upper = name.to_ascii_uppercase();
    all().into_iter().find(|f| f.name == upper)
}

/// What a function does, for the functions whose behaviour is not evident from the name and
/// signatures; `None` for the rest.
pub fn description(name: &str) -> Option<&'static str> {
    Some(match name {
        "EXPLODE" => "Outputs one row per element of an array; the other columns are repeated.",
        "CUBE_EXPLODE" => "Outputs one row per combination of the array's elements and nulls (a cube).",
        "COUNT" => "Counts the rows, or the rows whose argument is not null.",
        "SUM" => "Sums the argument over the rows.",
        "AVG" => "Averages the argument over the rows.",
        "MIN" | "MAX" => "The smallest or largest value of the argument over the rows.",
        "COUNT_DISTINCT" => "Counts the distinct non-null values of the argument.",
        "COLLECT_LIST" => "Collects the values into an array.",
        "COLLECT_SET" => "Collects the distinct values into an array.",
        "EARLIEST_BY_OFFSET" => "The value of the record with the lowest offset (or the first n values).",
        "LATEST_BY_OFFSET" => "The value of the record with the highest offset (or the last n values).",
        "TOPK" => "The k largest values.",
        "TOPKDISTINCT" => "The k largest distinct values.",
        "HISTOGRAM" => "Counts each distinct string value.",
        "STDDEV_SAMPLE" => "The sample standard deviation.",
        "STDDEV_SAMP" => "The sample variance (as ksqlDB computes STDDEV_SAMP; STDDEV_SAMPLE is the deviation).",
        "STDDEV_POP" => "The population standard deviation.",
        "VAR_SAMP" => "The sample variance.",
        "VAR_POP" => "The population variance.",
        "CORRELATION" => "The correlation coefficient of two numeric arguments.",
        "SUM_LIST" => "Sums the elements of an array argument over the rows.",
        "TRANSFORM" => "Applies a lambda to each element of an array, or to each key and value of a map.",
        "FILTER" => "Keeps the elements of an array, or the entries of a map, for which a lambda is true.",
        "REDUCE" => "Folds an array or a map into one value with a lambda and an initial state.",
        _ => return None,
    })
}

/// The argument types probed for signatures.
fn probe_types() -> Vec<SqlType> {
    use SqlType as T;
    vec![
        T::Boolean,
        T::Int,
        T::BigInt,
        T::Double,
        T::Decimal { precision: 10, scale: 2 },
        T::String,
        T::Bytes,
        T::Date,
        T::Time,
        T::Timestamp,
        T::Array(Box::new(T::Int)),
        T::Array(Box::new(T::String)),
        T::Map(Box::new(T::String), Box::new(T::Int)),
    ]
}

/// The most signatures reported per function (variadic functions accept many combinations).
pub const MAX_SIGNATURES: usize = 24;

fn combinations(types: &[SqlType], n: usize) -> Vec<Vec<SqlType>> {
    let mut out = vec![vec![]];
    for _ in 0..n {
        out = out
            .into_iter()
            .flat_map(|prefix| types.iter().map(move |t| [prefix.clone(), vec![t.clone()]].concat()))
            .collect();
    }
    out
}

/// The signatures of a function as far as the registry can tell (see the module's doc), at
/// most [`MAX_SIGNATURES`]; the flag says whether more were left out.
pub fn signatures(f: &FunctionInfo) -> (Vec<Signature>, bool) {
    let text = |ts: &[SqlType]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let mut out = vec![];
    match f.kind {
        FunctionType::Table => {
            let ret = if f.name == "EXPLODE" { "T" } else { "ARRAY<T>" };
            out.push(Signature { arguments: vec!["ARRAY<T>".into()], return_type: ret.into() });
        }
        FunctionType::Scalar if super::higher_order(f.name).is_some() => {
            let (arguments, ret): (Vec<&str>, &str) = match f.name {
                "TRANSFORM" => (vec!["ARRAY<T>", "T => U"], "ARRAY<U>"),
                "FILTER" => (vec!["ARRAY<T>", "T => BOOLEAN"], "ARRAY<T>"),
                _ => (vec!["ARRAY<T>", "S", "(S, T) => S"], "S"),
            };
            out.push(Signature {
                arguments: arguments.into_iter().map(String::from).collect(),
                return_type: ret.into(),
            });
            let (arguments, ret): (Vec<&str>, &str) = match f.name {
                "TRANSFORM" => (vec!["MAP<K, V>", "(K, V) => K2", "(K, V) => V2"], "MAP<K2, V2>"),
                "FILTER" => (vec!["MAP<K, V>", "(K, V) => BOOLEAN"], "MAP<K, V>"),
                _ => (vec!["MAP<K, V>", "S", "(S, K, V) => S"], "S"),
            };
            out.push(Signature {
                arguments: arguments.into_iter().map(String::from).collect(),
                return_type: ret.into(),
            });
        }
        FunctionType::Scalar => {
            let types = probe_types();
            for n in 0..=3 {
                // Three arguments only for functions that take no fewer (the combinations grow fast).
                if n == 3 && !out.is_empty() {
                    break;
                }
                for args in combinations(&types, n) {
                    let nulls = vec![false; args.len()];
                    if let Ok((_, ret)) = super::resolve(f.name, &args, &nulls) {
                        out.push(Signature { arguments: text(&args), return_type: ret.to_string() });
                    }
                }
            }
        }
        FunctionType::Aggregate => {
            let types = probe_types();
            for n in 0..=2 {
                for args in combinations(&types, n) {
                    if let Ok(spec) = crate::aggregate::resolve(f.name, &args, &[], n == 0) {
                        out.push(Signature { arguments: text(&args), return_type: spec.result.to_string() });
                    }
                }
            }
            // TOPK(col, k), EARLIEST_BY_OFFSET(col, n): a trailing constant.
            for t in &types {
                let args = [t.clone()];
                let consts = [Value::Int(2)];
                if let Ok(spec) = crate::aggregate::resolve(f.name, &args, &consts, false) {
                    let sig = Signature {
                        arguments: vec![t.to_string(), "INT (constant)".into()],
                        return_type: spec.result.to_string(),
                    };
                    if !out.contains(&sig) {
                        out.push(sig);
                    }
                }
            }
        }
    }
    let more = out.len() > MAX_SIGNATURES;
    out.truncate(MAX_SIGNATURES);
    (out, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name a resolver matches on that resolves as a function is in [`SCALARS`], and
    /// every entry of [`SCALARS`] exists.
    #[test]
    fn scalars_match_the_resolvers() {
        let sources = [
            include_str!("../functions.rs"),
            include_str!("array.rs"),
            include_str!("datetime.rs"),
            include_str!("json.rs"),
            include_str!("string.rs"),
        ];
        let listed: Vec<&str> = SCALARS.iter().map(|(n, _)| *n).collect();
        for (name, _) in SCALARS {
            let known = super::super::exists(name) || super::super::higher_order(name).is_some();
            assert!(known, "{name} is listed but does not resolve");
        }
        let mut missing = vec![];
        for src in sources {
            for line in src.lines() {
                let line = line.trim_start();
                let Some(arm) = line.split("=>").next().filter(|_| line.starts_with('"') && line.contains("=>")) else {
                    continue;
                };
                for part in arm.split('|') {
                    let name = part.trim().trim_matches('"');
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                        && super::super::exists(name)
                        && !listed.contains(&name)
                    {
                        missing.push(name.to_string());
                    }
                }
            }
        }
        missing.sort();
        missing.dedup();
        assert!(missing.is_empty(), "functions missing from the registry: {missing:?}");
    }

    #[test]
    fn registry_lists_every_kind() {
        let all = all();
        assert!(all.iter().any(|f| f.name == "ABS" && f.kind == FunctionType::Scalar && f.category == MATH));
        assert!(all.iter().any(|f| f.name == "COUNT" && f.kind == FunctionType::Aggregate));
        assert!(all.iter().any(|f| f.name == "EXPLODE" && f.kind == FunctionType::Table));
        assert!(all.windows(2).all(|w| w[0].name < w[1].name), "sorted, no duplicates");
        assert!(lookup("nope").is_none());
        assert!(lookup("ATTR").is_none(), "recognized, not implemented");
    }

    #[test]
    fn signatures_are_probed() {
        let (abs, _) = signatures(&lookup("abs").unwrap());
        assert!(
            abs.contains(&Signature { arguments: vec!["INTEGER".into()], return_type: "INTEGER".into() }),
            "{abs:?}"
        );
        assert!(abs.iter().all(|s| s.arguments.len() == 1), "{abs:?}");
        let (lpad, _) = signatures(&lookup("LPAD").unwrap());
        assert!(lpad.iter().any(|s| s.arguments == ["STRING", "INTEGER", "STRING"]), "{lpad:?}");
        let (count, _) = signatures(&lookup("COUNT").unwrap());
        assert!(count.iter().any(|s| s.arguments.is_empty() && s.return_type == "BIGINT"), "{count:?}");
        let (topk, _) = signatures(&lookup("TOPK").unwrap());
        assert!(topk.iter().any(|s| s.arguments == ["INTEGER", "INT (constant)"]), "{topk:?}");
        let (explode, _) = signatures(&lookup("EXPLODE").unwrap());
        assert_eq!(explode[0].return_type, "T");
        // Every function resolves without panicking.
        for f in all() {
            signatures(&f);
        }
    }
}
