//! Expressions resolved against a row layout, type-checked and compiled into a tree that
//! evaluates without name lookups.

use std::cmp::Ordering;

use crate::ast::{BinaryOp, Expr, Pos, UnaryOp};
use crate::error::{Result, SqlError};
use crate::functions::{self, ScalarFn};
use crate::types::{Field, SqlType};
use crate::value::{decimal_digits, rescale, type_of, Value};

/// One column of a row layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeColumn {
    /// The source alias the column can be qualified with.
    pub qualifier: Option<String>,
    pub name: String,
    pub ty: SqlType,
}

/// The columns of the rows an expression is evaluated on, in row order.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub columns: Vec<ScopeColumn>,
}

impl Scope {
    pub fn push(&mut self, qualifier: Option<&str>, name: &str, ty: SqlType) {
        self.columns.push(ScopeColumn { qualifier: qualifier.map(str::to_string), name: name.to_string(), ty });
    }

    /// Finds a column; an unqualified name must be unambiguous.
    pub fn resolve(&self, qualifier: Option<&str>, name: &str) -> Result<Option<usize>> {
        let mut found = None;
        for (i, c) in self.columns.iter().enumerate() {
            if c.name != name {
                continue;
            }
            if let Some(q) = qualifier {
                if c.qualifier.as_deref() != Some(q) {
                    continue;
                }
            }
            if found.is_some() {
                return Err(SqlError::statement(format!("Column '{name}' is ambiguous: qualify it with its source")));
            }
            found = Some(i);
        }
        Ok(found)
    }
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub enum CExpr {
    Const(Value),
    Column(usize),
    /// A lambda parameter, by depth in the lambda environment.
    LambdaVar(usize),
    Field(Box<CExpr>, String),
    Subscript(Box<CExpr>, Box<CExpr>),
    Neg(Box<CExpr>),
    Not(Box<CExpr>),
    Arith(BinaryOp, Box<CExpr>, Box<CExpr>, SqlType),
    Compare(BinaryOp, Box<CExpr>, Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    IsNull(Box<CExpr>, bool),
    IsDistinct(Box<CExpr>, Box<CExpr>, bool),
    Between(Box<CExpr>, Box<CExpr>, Box<CExpr>, bool),
    InList(Box<CExpr>, Vec<CExpr>, bool),
    Like(Box<CExpr>, Box<CExpr>, Option<char>, bool),
    Case(Vec<(CExpr, CExpr)>, Option<Box<CExpr>>),
    Cast(Box<CExpr>, SqlType),
    /// A scalar function call: name (for canonical comparison), implementation, args, type.
    Call(String, ScalarFn, Vec<CExpr>, SqlType),
    /// A lambda: parameter count and body; only appears as an argument of a higher-order call.
    Lambda(usize, Box<CExpr>),
    HigherOrder(functions::HigherOrder, Vec<CExpr>),
    MakeArray(Vec<CExpr>),
    MakeMap(Vec<(CExpr, CExpr)>),
    MakeStruct(Vec<(String, CExpr)>),
}

/// Names and types of lambda parameters in scope while compiling, innermost last.
#[derive(Default)]
pub struct LambdaScope {
    pub params: Vec<(String, SqlType)>,
}

/// Maps an expression to a column that already holds its value (aggregates, group keys).
pub type ColumnLookup<'a> = dyn Fn(&Expr) -> Option<usize> + 'a;

/// What compiling needs to know besides the row layout.
pub struct Compiler<'a> {
    pub scope: &'a Scope,
    pub lambdas: LambdaScope,
    /// Aggregate calls are replaced by references to these columns (set while planning GROUP BY).
    pub aggregate_columns: Option<&'a ColumnLookup<'a>>,
}

impl<'a> Compiler<'a> {
    pub fn new(scope: &'a Scope) -> Compiler<'a> {
        Compiler { scope, lambdas: LambdaScope::default(), aggregate_columns: None }
    }

    pub fn compile(&mut self, e: &Expr) -> Result<(CExpr, SqlType)> {
        if let Some(lookup) = self.aggregate_columns {
            if let Some(i) = lookup(e) {
                return Ok((CExpr::Column(i), self.scope.columns[i].ty.clone()));
            }
        }
        Ok(match e {
            Expr::Literal(v) => {
                let ty = type_of(v).unwrap_or(SqlType::String);
                (CExpr::Const(v.clone()), ty)
            }
            Expr::Column { qualifier, name, pos } => {
                if qualifier.is_none() {
                    if let Some(i) = self.lambdas.params.iter().rposition(|(n, _)| n == name) {
                        let depth = self.lambdas.params.len() - 1 - i;
                        return Ok((CExpr::LambdaVar(depth), self.lambdas.params[i].1.clone()));
                    }
                }
                match self.scope.resolve(qualifier.as_deref(), name).map_err(|e| e.at(*pos))? {
                    Some(i) => (CExpr::Column(i), self.scope.columns[i].ty.clone()),
                    None => {
                        let shown = match qualifier {
                            Some(q) => format!("{q}.{name}"),
                            None => name.clone(),
                        };
                        return Err(SqlError::statement(format!("Column '{shown}' cannot be resolved.")).at(*pos));
                    }
                }
            }
            Expr::Field(inner, field) => {
                let (c, ty) = self.compile(inner)?;
                let SqlType::Struct(fields) = &ty else {
                    return Err(SqlError::statement(format!("Expected STRUCT type for '->{field}', got {ty}")));
                };
                let f = fields
                    .iter()
                    .find(|f| &f.name == field)
                    .or_else(|| fields.iter().find(|f| f.name.eq_ignore_ascii_case(field)))
                    .ok_or_else(|| SqlError::statement(format!("Could not find field '{field}' in '{ty}'")))?;
                (CExpr::Field(Box::new(c), f.name.clone()), f.ty.clone())
            }
            Expr::Subscript(base, idx) => {
                let (b, bt) = self.compile(base)?;
                let (i, it) = self.compile(idx)?;
                let ty = match &bt {
                    SqlType::Array(t) => {
                        if !matches!(it, SqlType::Int | SqlType::BigInt) {
                            return Err(SqlError::statement(format!("array index must be INTEGER, got {it}")));
                        }
                        (**t).clone()
                    }
                    SqlType::Map(_, v) => (**v).clone(),
                    other => {
                        return Err(SqlError::statement(format!(
                            "cannot subscript a value of type {other}: only ARRAY and MAP"
                        )))
                    }
                };
                (CExpr::Subscript(Box::new(b), Box::new(i)), ty)
            }
            Expr::Unary(UnaryOp::Not, inner) => {
                let (c, ty) = self.compile(inner)?;
                expect_bool(&ty, "NOT")?;
                (CExpr::Not(Box::new(c)), SqlType::Boolean)
            }
            Expr::Unary(UnaryOp::Neg, inner) => {
                let (c, ty) = self.compile(inner)?;
                if !ty.is_numeric() {
                    return Err(SqlError::statement(format!("cannot negate a value of type {ty}")));
                }
                (CExpr::Neg(Box::new(c)), ty)
            }
            Expr::Binary(op, a, b) => self.binary(*op, a, b)?,
            Expr::IsNull { expr, negated } => {
                let (c, _) = self.compile(expr)?;
                (CExpr::IsNull(Box::new(c), *negated), SqlType::Boolean)
            }
            Expr::IsDistinct { left, right, negated } => {
                let (l, _) = self.compile(left)?;
                let (r, _) = self.compile(right)?;
                (CExpr::IsDistinct(Box::new(l), Box::new(r), *negated), SqlType::Boolean)
            }
            Expr::Between { expr, low, high, negated } => {
                let (e, et) = self.compile(expr)?;
                let (l, lt) = self.compile(low)?;
                let (h, ht) = self.compile(high)?;
                check_comparable(&et, &lt, "BETWEEN")?;
                check_comparable(&et, &ht, "BETWEEN")?;
                (CExpr::Between(Box::new(e), Box::new(l), Box::new(h), *negated), SqlType::Boolean)
            }
            Expr::InList { expr, list, negated } => {
                let (e, et) = self.compile(expr)?;
                let mut items = vec![];
                for item in list {
                    let (c, t) = self.compile(item)?;
                    check_comparable(&et, &t, "IN")?;
                    items.push(c);
                }
                (CExpr::InList(Box::new(e), items, *negated), SqlType::Boolean)
            }
            Expr::Like { expr, pattern, escape, negated } => {
                let (e, et) = self.compile(expr)?;
                let (p, pt) = self.compile(pattern)?;
                if et != SqlType::String {
                    return Err(SqlError::statement(format!(
                        "The column type for Like condition must be VARCHAR. The column type is {et}"
                    )));
                }
                if pt != SqlType::String {
                    return Err(SqlError::statement(format!(
                        "The pattern of a Like condition must be VARCHAR. The pattern's type is {pt}"
                    )));
                }
                (CExpr::Like(Box::new(e), Box::new(p), *escape, *negated), SqlType::Boolean)
            }
            Expr::Case { operand, whens, otherwise } => {
                let mut arms = vec![];
                let mut results: Vec<(CExpr, SqlType, &Expr)> = vec![];
                let operand = match operand {
                    Some(o) => Some(self.compile(o)?),
                    None => None,
                };
                for (w, t) in whens {
                    let (wc, wt) = self.compile(w)?;
                    let cond = match &operand {
                        Some((oc, ot)) => {
                            check_comparable(ot, &wt, "CASE")?;
                            CExpr::Compare(BinaryOp::Eq, Box::new(oc.clone()), Box::new(wc))
                        }
                        None => {
                            if wt != SqlType::Boolean {
                                return Err(SqlError::statement(format!(
                                    "WHEN operand type should be BOOLEAN, got {wt}"
                                )));
                            }
                            wc
                        }
                    };
                    let (tc, tt) = self.compile(t)?;
                    results.push((tc, tt, t));
                    arms.push(cond);
                }
                let otherwise = match otherwise {
                    Some(o) => {
                        let (oc, ot) = self.compile(o)?;
                        results.push((oc, ot, o));
                        true
                    }
                    None => false,
                };
                let (ty, mut results) = common_type(results)?;
                let ty =
                    ty.ok_or_else(|| SqlError::statement("Invalid Case expression. All case branches have NULL type"))?;
                let otherwise = if otherwise { results.pop().map(Box::new) } else { None };
                let arms = arms.into_iter().zip(results).collect();
                (CExpr::Case(arms, otherwise), ty)
            }
            Expr::Cast(inner, ty) => {
                let (c, from) = self.compile(inner)?;
                if !matches!(**inner, Expr::Literal(Value::Null)) {
                    check_cast(&from, ty)?;
                }
                (CExpr::Cast(Box::new(c), ty.clone()), ty.clone())
            }
            Expr::Function { name, args, star, distinct: _, pos } => self.call(name, args, *star, *pos)?,
            Expr::Lambda { .. } => {
                return Err(SqlError::statement("a lambda can only be an argument of TRANSFORM, FILTER or REDUCE"))
            }
            Expr::Array(items) => {
                if items.is_empty() {
                    return Err(SqlError::statement(
                        "Array constructor cannot be empty. Please supply at least one element (see https://github.com/confluentinc/ksql/issues/4239).",
                    ));
                }
                if items.iter().all(|i| matches!(i, Expr::Literal(Value::Null))) {
                    return Err(SqlError::statement(
                        "Cannot construct an array with all NULL elements (see https://github.com/confluentinc/ksql/issues/4239). As a workaround, you may cast a NULL value to the desired type.",
                    ));
                }
                let mut compiled = vec![];
                for item in items {
                    let (c, t) = self.compile(item)?;
                    compiled.push((c, t, item));
                }
                let (elem, out) = common_type(compiled)?;
                let elem = elem.unwrap_or(SqlType::String);
                (CExpr::MakeArray(out), SqlType::Array(Box::new(elem)))
            }
            Expr::Map(entries) => {
                if entries.is_empty() {
                    return Err(SqlError::statement(
                        "Map constructor cannot be empty. Please supply at least one key value pair (see https://github.com/confluentinc/ksql/issues/4239).",
                    ));
                }
                if entries.iter().all(|(k, _)| matches!(k, Expr::Literal(Value::Null))) {
                    return Err(SqlError::statement("Cannot construct a map with all NULL keys"));
                }
                if entries.iter().all(|(_, v)| matches!(v, Expr::Literal(Value::Null))) {
                    return Err(SqlError::statement("Cannot construct a map with all NULL values"));
                }
                let mut keys = vec![];
                let mut values = vec![];
                for (k, v) in entries {
                    let (kc, ktt) = self.compile(k)?;
                    let (vc, vtt) = self.compile(v)?;
                    keys.push((kc, ktt, k));
                    values.push((vc, vtt, v));
                }
                let (kt, keys) = common_type(keys)?;
                // ksqlDB ends a map value's coercion error with a period (an array's without).
                let (vt, values) = common_type(values).map_err(|mut e| {
                    if e.message.starts_with("invalid input syntax for type") {
                        e.message.push('.');
                    }
                    e
                })?;
                let (kt, vt) = (kt.unwrap_or(SqlType::String), vt.unwrap_or(SqlType::String));
                let out = keys.into_iter().zip(values).collect();
                (CExpr::MakeMap(out), SqlType::Map(Box::new(kt), Box::new(vt)))
            }
            Expr::Struct(fields) => {
                let mut out = vec![];
                let mut types = vec![];
                for (name, e) in fields {
                    if types.iter().any(|f: &Field| &f.name == name) {
                        return Err(SqlError::statement("Duplicate field names found in STRUCT"));
                    }
                    let (c, t) = self.compile(e)?;
                    out.push((name.clone(), c));
                    types.push(Field { name: name.clone(), ty: t });
                }
                (CExpr::MakeStruct(out), SqlType::Struct(types))
            }
        })
    }

    fn binary(&mut self, op: BinaryOp, a: &Expr, b: &Expr) -> Result<(CExpr, SqlType)> {
        let (ac, at) = self.compile(a)?;
        let (bc, bt) = self.compile(b)?;
        let (ac, bc) = (Box::new(ac), Box::new(bc));
        Ok(match op {
            BinaryOp::And | BinaryOp::Or => {
                expect_bool(&at, op.symbol())?;
                expect_bool(&bt, op.symbol())?;
                let c = if op == BinaryOp::And { CExpr::And(ac, bc) } else { CExpr::Or(ac, bc) };
                (c, SqlType::Boolean)
            }
            BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => {
                if matches!(a, Expr::Literal(Value::Null)) && matches!(b, Expr::Literal(Value::Null)) {
                    return Err(SqlError::statement(format!(
                        "Comparison with NULL not supported: NULL {} NULL",
                        op.symbol()
                    )));
                }
                // Ordering needs primitive types; any comparison needs comparable ones.
                let ordering = !matches!(op, BinaryOp::Eq | BinaryOp::NotEq);
                let unordered = ordering && (!at.is_primitive() || !bt.is_primitive());
                if unordered || check_comparable(&at, &bt, op.symbol()).is_err() {
                    let name = match op {
                        BinaryOp::Eq => "EQUAL",
                        BinaryOp::NotEq => "NOT_EQUAL",
                        BinaryOp::Lt => "LESS_THAN",
                        BinaryOp::LtEq => "LESS_THAN_OR_EQUAL",
                        BinaryOp::Gt => "GREATER_THAN",
                        _ => "GREATER_THAN_OR_EQUAL",
                    };
                    return Err(SqlError::statement(format!(
                        "Cannot compare {} ({at}) to {} ({bt}) with {name}.",
                        display_expr(a),
                        display_expr(b)
                    )));
                }
                (CExpr::Compare(op, ac, bc), SqlType::Boolean)
            }
            BinaryOp::Concat => {
                if at != SqlType::String || bt != SqlType::String {
                    return Err(SqlError::statement(format!("|| takes STRING operands, got {at} || {bt}")));
                }
                (CExpr::Call("CONCAT".into(), functions::concat_fn(), vec![*ac, *bc], SqlType::String), SqlType::String)
            }
            BinaryOp::Add if at == SqlType::String && bt == SqlType::String => {
                (CExpr::Call("CONCAT".into(), functions::concat_fn(), vec![*ac, *bc], SqlType::String), SqlType::String)
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
                let is_null = |e: &Expr| matches!(e, Expr::Literal(Value::Null));
                if is_null(a) || is_null(b) {
                    let name = |e: &Expr, t: &SqlType| if is_null(e) { "null".to_string() } else { t.to_string() };
                    return Err(SqlError::statement(format!(
                        "Error processing expression: ({} {} {}). Arithmetic on types {} and {} are not supported.",
                        display_expr(a),
                        op.symbol(),
                        display_expr(b),
                        name(a, &at),
                        name(b, &bt)
                    )));
                }
                let ty = arithmetic_type(op, &at, &bt).ok_or_else(|| {
                    SqlError::statement(format!(
                        "Error processing expression: ({a} {} {b}). Unsupported arithmetic types. {at} {bt}",
                        op.symbol(),
                        a = display_expr(a),
                        b = display_expr(b)
                    ))
                })?;
                (CExpr::Arith(op, ac, bc, ty.clone()), ty)
            }
        })
    }

    fn call(&mut self, name: &str, args: &[Expr], star: bool, pos: Pos) -> Result<(CExpr, SqlType)> {
        let upper = name.to_ascii_uppercase();
        if let Some(h) = functions::higher_order(&upper) {
            return self.higher_order(h, args).map_err(|e| e.at(pos));
        }
        if functions::is_aggregate(&upper) {
            return Err(
                SqlError::statement(format!("Use of aggregate function {upper} requires a GROUP BY clause.")).at(pos)
            );
        }
        let _ = star;
        let mut compiled = vec![];
        let mut types = vec![];
        for (i, a) in args.iter().enumerate() {
            // DATEADD(DAYS, ...): a bare time-unit keyword is a string constant.
            if i == 0 && functions::takes_time_unit(&upper) {
                if let Expr::Column { qualifier: None, name, .. } = a {
                    if functions::is_time_unit(name) && self.scope.resolve(None, name).ok().flatten().is_none() {
                        compiled.push(CExpr::Const(Value::String(name.to_ascii_uppercase())));
                        types.push(SqlType::String);
                        continue;
                    }
                }
            }
            let (c, t) = self.compile(a)?;
            compiled.push(c);
            types.push(t);
        }
        let null_args: Vec<bool> = args.iter().map(|a| matches!(a, Expr::Literal(Value::Null))).collect();
        let (f, ty) = functions::resolve(&upper, &types, &null_args).map_err(|e| e.at(pos))?;
        Ok((CExpr::Call(upper, f, compiled, ty.clone()), ty))
    }

    fn higher_order(&mut self, h: functions::HigherOrder, args: &[Expr]) -> Result<(CExpr, SqlType)> {
        use functions::HigherOrder as H;
        if args.is_empty() {
            return Err(SqlError::statement(format!("{h:?} takes arguments")));
        }
        let (_, first_ty) = self.compile(&args[0])?;
        if h == H::Transform && matches!(first_ty, SqlType::Map(..)) {
            return self.transform_map(args, &first_ty);
        }
        let expected = match h {
            H::Transform | H::Filter | H::TransformMap => 2,
            H::Reduce => 3,
        };
        if args.len() != expected {
            return Err(SqlError::statement(format!("{h:?} takes {expected} arguments, got {}", args.len())));
        }
        let (coll, ct) = self.compile(&args[0])?;
        let lambda_arg = args.last().expect("checked above");
        let Expr::Lambda { params, body } = lambda_arg else {
            return Err(SqlError::statement(format!("the last argument of {h:?} must be a lambda")));
        };
        let mut out = vec![coll];
        let (param_types, init_ty) = match h {
            H::Reduce => {
                let (init, it) = self.compile(&args[1])?;
                out.push(init);
                let pts = match &ct {
                    SqlType::Array(e) => vec![it.clone(), (**e).clone()],
                    SqlType::Map(k, v) => vec![it.clone(), (**k).clone(), (**v).clone()],
                    other => return Err(SqlError::statement(format!("REDUCE takes an ARRAY or MAP, got {other}"))),
                };
                (pts, Some(it))
            }
            _ => match &ct {
                SqlType::Array(e) => (vec![(**e).clone()], None),
                SqlType::Map(k, v) => (vec![(**k).clone(), (**v).clone()], None),
                other => return Err(SqlError::statement(format!("{h:?} takes an ARRAY or MAP, got {other}"))),
            },
        };
        if params.len() != param_types.len() {
            return Err(SqlError::statement(format!(
                "the lambda of {h:?} must take {} parameters, got {}",
                param_types.len(),
                params.len()
            )));
        }
        for (n, t) in params.iter().zip(&param_types) {
            self.lambdas.params.push((n.clone(), t.clone()));
        }
        let result = self.compile(body);
        for _ in params {
            self.lambdas.params.pop();
        }
        let (bc, bt) = result?;
        out.push(CExpr::Lambda(params.len(), Box::new(bc)));
        let ty = match h {
            H::Transform => SqlType::Array(Box::new(bt)),
            H::Filter => {
                if bt != SqlType::Boolean {
                    return Err(SqlError::statement("the FILTER lambda must return BOOLEAN"));
                }
                ct.clone()
            }
            H::Reduce => init_ty.unwrap_or(bt),
            H::TransformMap => unreachable!("handled by transform_map"),
        };
        Ok((CExpr::HigherOrder(h, out), ty))
    }

    fn transform_map(&mut self, args: &[Expr], ct: &SqlType) -> Result<(CExpr, SqlType)> {
        let SqlType::Map(kt, vt) = ct else { unreachable!("called for maps") };
        if args.len() != 3 {
            return Err(SqlError::statement("TRANSFORM over a MAP takes the map, a key lambda and a value lambda"));
        }
        let (coll, _) = self.compile(&args[0])?;
        let mut out = vec![coll];
        let mut types = vec![];
        for lambda in &args[1..] {
            let Expr::Lambda { params, body } = lambda else {
                return Err(SqlError::statement("TRANSFORM expects lambdas"));
            };
            if params.len() != 2 {
                return Err(SqlError::statement("the lambdas of TRANSFORM over a MAP take (key, value)"));
            }
            self.lambdas.params.push((params[0].clone(), (**kt).clone()));
            self.lambdas.params.push((params[1].clone(), (**vt).clone()));
            let r = self.compile(body);
            self.lambdas.params.pop();
            self.lambdas.params.pop();
            let (bc, bt) = r?;
            out.push(CExpr::Lambda(2, Box::new(bc)));
            types.push(bt);
        }
        let vt2 = types.pop().unwrap_or(SqlType::String);
        let kt2 = types.pop().unwrap_or(SqlType::String);
        Ok((CExpr::HigherOrder(functions::HigherOrder::TransformMap, out), SqlType::Map(Box::new(kt2), Box::new(vt2))))
    }
}

/// A short textual form of an expression, for messages and generated names.
pub fn display_expr(e: &Expr) -> String {
    e.to_string()
}

fn expect_bool(t: &SqlType, what: &str) -> Result<()> {
    if *t != SqlType::Boolean {
        return Err(SqlError::statement(format!("{what} takes BOOLEAN operands, got {t}")));
    }
    Ok(())
}

fn check_comparable(a: &SqlType, b: &SqlType, what: &str) -> Result<()> {
    let ok = a == b
        || (a.is_numeric() && b.is_numeric())
        || matches!(
            (a, b),
            (SqlType::Timestamp, SqlType::Date)
                | (SqlType::Date, SqlType::Timestamp)
                | (SqlType::String, SqlType::Timestamp | SqlType::Date | SqlType::Time)
                | (SqlType::Timestamp | SqlType::Date | SqlType::Time, SqlType::String)
        );
    if !ok {
        return Err(SqlError::statement(format!("Cannot compare {a} to {b} with {what}.")));
    }
    Ok(())
}

/// Whether an expression is a literal ksqlDB may coerce to another type.
fn literal_kind(e: &Expr) -> Option<&Value> {
    match e {
        Expr::Literal(
            v @ (Value::String(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::Double(_)
            | Value::Decimal(..)
            | Value::Boolean(_)),
        ) => Some(v),
        _ => None,
    }
}

/// Two types' common type for ARRAY/MAP/CASE, merging STRUCT fields by name.
fn combine(a: &SqlType, b: &SqlType) -> Option<SqlType> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (SqlType::Struct(fa), SqlType::Struct(fb)) => {
            let mut out = fa.clone();
            for f in fb {
                match out.iter_mut().find(|o| o.name == f.name) {
                    Some(o) => o.ty = combine(&o.ty, &f.ty)?,
                    None => out.push(f.clone()),
                }
            }
            Some(SqlType::Struct(out))
        }
        (SqlType::Array(x), SqlType::Array(y)) => Some(SqlType::Array(Box::new(combine(x, y)?))),
        (SqlType::Map(k1, v1), SqlType::Map(k2, v2)) => {
            Some(SqlType::Map(Box::new(combine(k1, k2)?), Box::new(combine(v1, v2)?)))
        }
        _ => SqlType::widen(a, b),
    }
}

/// A string literal converted to `to` at compile time, as ksqlDB coerces literals.
fn coerce_string_literal(s: &str, to: &SqlType) -> Result<Value> {
    let bad = || SqlError::statement(format!("invalid input syntax for type {to}: \"{s}\""));
    let t = s.trim();
    Ok(match to {
        SqlType::Int | SqlType::BigInt => {
            let v: i64 = match t.parse::<i64>() {
                Ok(v) => v,
                Err(_) => {
                    let d: f64 = t.parse().map_err(|_| bad())?;
                    if d.fract() != 0.0 || !d.is_finite() {
                        return Err(bad());
                    }
                    d as i64
                }
            };
            if *to == SqlType::Int {
                Value::Int(i32::try_from(v).map_err(|_| bad())?)
            } else {
                Value::BigInt(v)
            }
        }
        SqlType::Double => Value::Double(t.parse().map_err(|_| bad())?),
        SqlType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" => Value::Boolean(true),
            "false" | "f" | "no" | "n" => Value::Boolean(false),
            _ => return Err(bad()),
        },
        other => cast(Value::String(s.to_string()), other).map_err(|_| bad())?,
    })
}

/// The common type of ARRAY elements, MAP keys or values, or CASE results, with each item
/// coerced to it: NULL literals take any type, string literals convert to the others' type
/// and number or boolean literals become strings beside strings. `None` when all are NULL.
fn common_type(items: Vec<(CExpr, SqlType, &Expr)>) -> Result<(Option<SqlType>, Vec<CExpr>)> {
    let mut acc: Option<SqlType> = None;
    let mut acc_from_literal = false;
    for (_, t, e) in &items {
        if matches!(e, Expr::Literal(Value::Null)) || matches!(e, Expr::Literal(Value::String(_))) {
            continue;
        }
        let is_lit = literal_kind(e).is_some();
        acc = Some(match acc {
            None => {
                acc_from_literal = is_lit;
                t.clone()
            }
            Some(a) => match combine(&a, t) {
                Some(c) => c,
                None if *t == SqlType::String && acc_from_literal => {
                    acc_from_literal = false;
                    SqlType::String
                }
                None if a == SqlType::String && is_lit => a,
                None => {
                    return Err(SqlError::statement(format!(
                        "invalid input syntax: all results must have the same type, found {a} and {t}"
                    )))
                }
            },
        });
    }
    if acc.is_none() && items.iter().any(|(_, _, e)| matches!(e, Expr::Literal(Value::String(_)))) {
        acc = Some(SqlType::String);
    }
    let Some(ty) = acc else {
        return Ok((None, items.into_iter().map(|(c, _, _)| c).collect()));
    };
    let mut out = Vec::with_capacity(items.len());
    for (c, t, e) in items {
        out.push(match e {
            Expr::Literal(Value::Null) => c,
            Expr::Literal(Value::String(s)) if ty != SqlType::String => CExpr::Const(coerce_string_literal(s, &ty)?),
            _ if ty == SqlType::String && t != SqlType::String => match literal_kind(e) {
                Some(v) => CExpr::Const(Value::String(v.to_string())),
                None => c,
            },
            _ if t != ty && matches!(ty, SqlType::Struct(_) | SqlType::Array(_) | SqlType::Map(..)) => {
                CExpr::Cast(Box::new(c), ty.clone())
            }
            _ => coerce(c, &ty),
        });
    }
    Ok((Some(ty), out))
}

fn coerce(c: CExpr, to: &SqlType) -> CExpr {
    match &c {
        CExpr::Const(Value::Null) => c,
        CExpr::Const(v) if type_of(v).as_ref() == Some(to) => c,
        _ if to.is_numeric() => CExpr::Cast(Box::new(c), to.clone()),
        _ => c,
    }
}

fn arithmetic_type(op: BinaryOp, a: &SqlType, b: &SqlType) -> Option<SqlType> {
    use SqlType::*;
    if !a.is_numeric() || !b.is_numeric() {
        return None;
    }
    Some(match (a, b) {
        (Double, _) | (_, Double) => Double,
        (Decimal { .. }, _) | (_, Decimal { .. }) => {
            let (p1, s1) = a.as_decimal()?;
            let (p2, s2) = b.as_decimal()?;
            let (p1, s1, p2, s2) = (p1 as i32, s1 as i32, p2 as i32, s2 as i32);
            let (p, s) = match op {
                BinaryOp::Add | BinaryOp::Sub => {
                    let s = s1.max(s2);
                    ((p1 - s1).max(p2 - s2) + s + 1, s)
                }
                BinaryOp::Mul => (p1 + p2 + 1, s1 + s2),
                BinaryOp::Div => {
                    let s = 6.max(s1 + p2 + 1);
                    (p1 - s1 + s2 + s, s)
                }
                _ => {
                    let s = s1.max(s2);
                    ((p1 - s1).min(p2 - s2) + s, s)
                }
            };
            let p = p.clamp(1, 38);
            Decimal { precision: p as u8, scale: s.min(p) as u8 }
        }
        (BigInt, _) | (_, BigInt) => BigInt,
        _ => Int,
    })
}

/// Whether CAST(from AS to) is allowed.
fn check_cast(from: &SqlType, to: &SqlType) -> Result<()> {
    use SqlType::*;
    let ok = from == to
        || matches!(to, String)
        || (from.is_numeric() && to.is_numeric())
        || matches!(from, String) && (to.is_numeric() || matches!(to, Boolean | Date | Time | Timestamp | Bytes))
        || matches!((from, to), (Timestamp, Date | Time) | (Date, Timestamp))
        || match (from, to) {
            (Array(a), Array(b)) => check_cast(a, b).is_ok(),
            (Map(k1, v1), Map(k2, v2)) => check_cast(k1, k2).is_ok() && check_cast(v1, v2).is_ok(),
            (Struct(_), Struct(_)) => true,
            _ => false,
        };
    if !ok {
        return Err(SqlError::statement(format!("Cast of {from} to {to} is not supported")));
    }
    Ok(())
}

/// Evaluation state: the lambda environment, innermost last.
#[derive(Default)]
pub struct Env {
    pub lambda: Vec<Value>,
    /// Errors raised by function calls since the caller last drained this: a failing call
    /// evaluates to NULL (as in ksqlDB) and leaves its message here for the processing log.
    pub errors: Vec<String>,
}

pub type EvalResult = std::result::Result<Value, String>;

impl CExpr {
    /// Whether the expression reads a column of the row for which `pred` holds.
    pub fn reads_column(&self, pred: &dyn Fn(usize) -> bool) -> bool {
        let any = |items: &[CExpr]| items.iter().any(|e| e.reads_column(pred));
        match self {
            CExpr::Const(_) | CExpr::LambdaVar(_) => false,
            CExpr::Column(i) => pred(*i),
            CExpr::Field(e, _)
            | CExpr::Neg(e)
            | CExpr::Not(e)
            | CExpr::IsNull(e, _)
            | CExpr::Cast(e, _)
            | CExpr::Lambda(_, e) => e.reads_column(pred),
            CExpr::Subscript(a, b)
            | CExpr::Arith(_, a, b, _)
            | CExpr::Compare(_, a, b)
            | CExpr::And(a, b)
            | CExpr::Or(a, b)
            | CExpr::IsDistinct(a, b, _)
            | CExpr::Like(a, b, _, _) => a.reads_column(pred) || b.reads_column(pred),
            CExpr::Between(a, b, c, _) => a.reads_column(pred) || b.reads_column(pred) || c.reads_column(pred),
            CExpr::InList(e, items, _) => e.reads_column(pred) || any(items),
            CExpr::Case(arms, default) => {
                arms.iter().any(|(w, t)| w.reads_column(pred) || t.reads_column(pred))
                    || default.as_ref().is_some_and(|d| d.reads_column(pred))
            }
            CExpr::Call(_, _, args, _) | CExpr::HigherOrder(_, args) | CExpr::MakeArray(args) => any(args),
            CExpr::MakeMap(entries) => entries.iter().any(|(k, v)| k.reads_column(pred) || v.reads_column(pred)),
            CExpr::MakeStruct(fields) => fields.iter().any(|(_, e)| e.reads_column(pred)),
        }
    }

    pub fn eval(&self, row: &[Value], env: &mut Env) -> EvalResult {
        Ok(match self {
            CExpr::Const(v) => v.clone(),
            CExpr::Column(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            CExpr::LambdaVar(depth) => {
                env.lambda.get(env.lambda.len().wrapping_sub(1 + depth)).cloned().unwrap_or(Value::Null)
            }
            CExpr::Field(b, name) => match b.eval(row, env)? {
                Value::Struct(fields) => {
                    fields.into_iter().find(|(n, _)| n == name).map(|(_, v)| v).unwrap_or(Value::Null)
                }
                _ => Value::Null,
            },
            CExpr::Subscript(b, i) => {
                let base = b.eval(row, env)?;
                let idx = i.eval(row, env)?;
                subscript(base, &idx)
            }
            CExpr::Neg(e) => match e.eval(row, env)? {
                Value::Int(v) => Value::Int(v.wrapping_neg()),
                Value::BigInt(v) => Value::BigInt(v.wrapping_neg()),
                Value::Double(v) => Value::Double(-v),
                Value::Decimal(u, s) => Value::Decimal(-u, s),
                _ => Value::Null,
            },
            CExpr::Not(e) => match e.eval(row, env)? {
                Value::Boolean(b) => Value::Boolean(!b),
                _ => Value::Null,
            },
            CExpr::Arith(op, a, b, ty) => {
                let x = a.eval(row, env)?;
                let y = b.eval(row, env)?;
                // ksqlDB's lambda bodies do arithmetic on unboxed values: a null lambda
                // parameter is an error (the whole call becomes null), not a null result.
                let lambda_null = |e: &CExpr, v: &Value| matches!(e, CExpr::LambdaVar(_)) && v.is_null();
                if lambda_null(a, &x) || lambda_null(b, &y) {
                    return Err("null value in lambda arithmetic".into());
                }
                arith(*op, &x, &y, ty)?
            }
            CExpr::Compare(op, a, b) => {
                let x = a.eval(row, env)?;
                let y = b.eval(row, env)?;
                compare(*op, &x, &y)
            }
            CExpr::And(a, b) => match a.eval(row, env)? {
                Value::Boolean(false) => Value::Boolean(false),
                x => match (x, b.eval(row, env)?) {
                    (_, Value::Boolean(false)) => Value::Boolean(false),
                    (Value::Boolean(true), Value::Boolean(true)) => Value::Boolean(true),
                    _ => Value::Null,
                },
            },
            CExpr::Or(a, b) => match a.eval(row, env)? {
                Value::Boolean(true) => Value::Boolean(true),
                x => match (x, b.eval(row, env)?) {
                    (_, Value::Boolean(true)) => Value::Boolean(true),
                    (Value::Boolean(false), Value::Boolean(false)) => Value::Boolean(false),
                    _ => Value::Null,
                },
            },
            CExpr::IsNull(e, negated) => Value::Boolean(e.eval(row, env)?.is_null() != *negated),
            CExpr::IsDistinct(a, b, negated) => {
                let x = a.eval(row, env)?;
                let y = b.eval(row, env)?;
                let distinct = match (x.is_null(), y.is_null()) {
                    (true, true) => false,
                    (true, false) | (false, true) => true,
                    _ => !x.same(&y),
                };
                Value::Boolean(distinct != *negated)
            }
            CExpr::Between(e, l, h, negated) => {
                let v = e.eval(row, env)?;
                let lo = l.eval(row, env)?;
                let hi = h.eval(row, env)?;
                match (compare_values(&v, &lo), compare_values(&v, &hi)) {
                    (Some(a), Some(b)) => Value::Boolean((a != Ordering::Less && b != Ordering::Greater) != *negated),
                    _ => Value::Null,
                }
            }
            CExpr::InList(e, list, negated) => {
                let v = e.eval(row, env)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut found = false;
                for item in list {
                    let x = item.eval(row, env)?;
                    if compare_values(&v, &x) == Some(Ordering::Equal) || (!x.is_null() && v.same(&x)) {
                        found = true;
                        break;
                    }
                }
                Value::Boolean(found != *negated)
            }
            CExpr::Like(e, p, escape, negated) => {
                let v = e.eval(row, env)?;
                let pat = p.eval(row, env)?;
                match (v, pat) {
                    (Value::String(s), Value::String(p)) => Value::Boolean(like(&s, &p, *escape) != *negated),
                    _ => Value::Null,
                }
            }
            CExpr::Case(arms, otherwise) => {
                for (cond, then) in arms {
                    if cond.eval(row, env)? == Value::Boolean(true) {
                        return then.eval(row, env);
                    }
                }
                match otherwise {
                    Some(o) => o.eval(row, env)?,
                    None => Value::Null,
                }
            }
            CExpr::Cast(e, ty) => cast(e.eval(row, env)?, ty)?,
            CExpr::Call(_, f, args, ty) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(row, env)?);
                }
                match (f.0)(&vals, ty) {
                    Ok(v) => v,
                    Err(e) => {
                        env.errors.push(e);
                        Value::Null
                    }
                }
            }
            CExpr::Lambda(_, body) => body.eval(row, env)?,
            CExpr::HigherOrder(h, args) => match functions::eval_higher_order(*h, args, row, env) {
                Ok(v) => v,
                Err(e) => {
                    env.errors.push(e);
                    Value::Null
                }
            },
            CExpr::MakeArray(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(i.eval(row, env)?);
                }
                Value::Array(out)
            }
            CExpr::MakeMap(entries) => {
                let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let k = k.eval(row, env)?;
                    let v = v.eval(row, env)?;
                    if let Some(slot) = out.iter_mut().find(|(k2, _)| k2.same(&k)) {
                        slot.1 = v;
                    } else {
                        out.push((k, v));
                    }
                }
                Value::Map(out)
            }
            CExpr::MakeStruct(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for (n, e) in fields {
                    out.push((n.clone(), e.eval(row, env)?));
                }
                Value::Struct(out)
            }
        })
    }
}

pub fn subscript(base: Value, idx: &Value) -> Value {
    match base {
        Value::Array(items) => {
            let Some(i) = idx.as_i64() else {
                return Value::Null;
            };
            let n = items.len() as i64;
            let pos = if i > 0 {
                i - 1
            } else if i < 0 {
                n + i
            } else {
                return Value::Null;
            };
            if pos < 0 || pos >= n {
                return Value::Null;
            }
            items.into_iter().nth(pos as usize).unwrap_or(Value::Null)
        }
        Value::Map(entries) => entries.into_iter().find(|(k, _)| k.same(idx)).map(|(_, v)| v).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(s), Value::Timestamp(_) | Value::Date(_) | Value::Time(_)) => {
            cast(Value::String(s.clone()), &type_of(b)?).ok()?.compare(b)
        }
        (Value::Timestamp(_) | Value::Date(_) | Value::Time(_), Value::String(s)) => {
            a.compare(&cast(Value::String(s.clone()), &type_of(a)?).ok()?)
        }
        _ => a.compare(b),
    }
}

/// A comparison as ksqlDB evaluates it: a NULL operand makes it false (not NULL).
pub fn compare(op: BinaryOp, x: &Value, y: &Value) -> Value {
    if x.is_null() || y.is_null() {
        return Value::Boolean(false);
    }
    let ord = match compare_values(x, y) {
        Some(o) => o,
        None => {
            // Non-orderable values (maps, structs) support only equality.
            return match op {
                BinaryOp::Eq => Value::Boolean(x.same(y)),
                BinaryOp::NotEq => Value::Boolean(!x.same(y)),
                _ => Value::Null,
            };
        }
    };
    Value::Boolean(match op {
        BinaryOp::Eq => ord == Ordering::Equal,
        BinaryOp::NotEq => ord != Ordering::Equal,
        BinaryOp::Lt => ord == Ordering::Less,
        BinaryOp::LtEq => ord != Ordering::Greater,
        BinaryOp::Gt => ord == Ordering::Greater,
        BinaryOp::GtEq => ord != Ordering::Less,
        _ => return Value::Null,
    })
}

pub fn arith(op: BinaryOp, x: &Value, y: &Value, ty: &SqlType) -> EvalResult {
    if x.is_null() || y.is_null() {
        return Ok(Value::Null);
    }
    Ok(match ty {
        SqlType::Int => {
            let (a, b) = (x.as_i64().unwrap_or(0) as i32, y.as_i64().unwrap_or(0) as i32);
            Value::Int(match op {
                BinaryOp::Add => a.wrapping_add(b),
                BinaryOp::Sub => a.wrapping_sub(b),
                BinaryOp::Mul => a.wrapping_mul(b),
                BinaryOp::Div => {
                    if b == 0 {
                        return Err("/ by zero".into());
                    }
                    a.wrapping_div(b)
                }
                _ => {
                    if b == 0 {
                        return Err("/ by zero".into());
                    }
                    a.wrapping_rem(b)
                }
            })
        }
        SqlType::BigInt => {
            let (a, b) = (x.as_i64().unwrap_or(0), y.as_i64().unwrap_or(0));
            Value::BigInt(match op {
                BinaryOp::Add => a.wrapping_add(b),
                BinaryOp::Sub => a.wrapping_sub(b),
                BinaryOp::Mul => a.wrapping_mul(b),
                BinaryOp::Div => {
                    if b == 0 {
                        return Err("/ by zero".into());
                    }
                    a.wrapping_div(b)
                }
                _ => {
                    if b == 0 {
                        return Err("/ by zero".into());
                    }
                    a.wrapping_rem(b)
                }
            })
        }
        SqlType::Double => {
            let (a, b) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            Value::Double(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div => a / b,
                _ => a % b,
            })
        }
        SqlType::Decimal { precision, scale } => {
            let s = *scale;
            let v = match op {
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mod => {
                    let a = x.to_decimal(s).ok_or("not a number")?;
                    let b = y.to_decimal(s).ok_or("not a number")?;
                    match op {
                        BinaryOp::Add => a + b,
                        BinaryOp::Sub => a - b,
                        _ => {
                            if b == 0 {
                                return Err("Division by zero".into());
                            }
                            a % b
                        }
                    }
                }
                BinaryOp::Mul => {
                    let (a, sa) = as_decimal(x);
                    let (b, sb) = as_decimal(y);
                    rescale(a * b, sa + sb, s)
                }
                _ => {
                    let (a, sa) = as_decimal(x);
                    let (b, sb) = as_decimal(y);
                    if b == 0 {
                        return Err("Division by zero".into());
                    }
                    // a/b at scale s: (a * 10^(s + sb - sa + 1)) / b, then round.
                    let shift = s as i32 + sb as i32 - sa as i32 + 1;
                    let num = if shift >= 0 { a * 10i128.pow(shift as u32) } else { a / 10i128.pow((-shift) as u32) };
                    rescale(num / b, s + 1, s)
                }
            };
            if decimal_digits(v) > *precision {
                return Err(format!("Numeric field overflow: DECIMAL({precision}, {scale})"));
            }
            Value::Decimal(v, s)
        }
        _ => Value::Null,
    })
}

fn as_decimal(v: &Value) -> (i128, u8) {
    match v {
        Value::Decimal(u, s) => (*u, *s),
        other => (other.to_decimal(0).unwrap_or(0), 0),
    }
}

/// SQL LIKE with `%` and `_`, and an optional escape character.
pub fn like(s: &str, pattern: &str, escape: Option<char>) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    // Tokens: Some(c) literal, None any-one; Star any-many.
    #[derive(Clone, Copy, PartialEq)]
    enum T {
        Lit(char),
        One,
        Many,
    }
    let mut toks = vec![];
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        if Some(c) == escape && i + 1 < p.len() {
            toks.push(T::Lit(p[i + 1]));
            i += 2;
            continue;
        }
        toks.push(match c {
            '%' => T::Many,
            '_' => T::One,
            c => T::Lit(c),
        });
        i += 1;
    }
    // Iterative wildcard matching with backtracking on the last '%'.
    let (mut si, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if ti < toks.len() && (toks[ti] == T::One || toks[ti] == T::Lit(s[si])) {
            si += 1;
            ti += 1;
        } else if ti < toks.len() && toks[ti] == T::Many {
            star = Some((ti, si));
            ti += 1;
        } else if let Some((st, ss)) = star {
            ti = st + 1;
            si = ss + 1;
            star = Some((st, ss + 1));
        } else {
            return false;
        }
    }
    while ti < toks.len() && toks[ti] == T::Many {
        ti += 1;
    }
    ti == toks.len()
}

/// CAST semantics of ksqlDB.
pub fn cast(v: Value, to: &SqlType) -> EvalResult {
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match (v, to) {
        (v, SqlType::String) => match v {
            Value::String(s) => Value::String(s),
            other => Value::String(other.to_string()),
        },
        (Value::String(s), t) => {
            let s = s.trim();
            match t {
                SqlType::Boolean => match s.to_ascii_lowercase().as_str() {
                    "true" | "t" | "yes" | "y" => Value::Boolean(true),
                    "false" | "f" | "no" | "n" => Value::Boolean(false),
                    _ => return Err(format!("Cannot cast '{s}' to BOOLEAN")),
                },
                SqlType::Int => Value::Int(s.parse().map_err(|_| format!("Cannot cast '{s}' to INTEGER"))?),
                SqlType::BigInt => Value::BigInt(s.parse().map_err(|_| format!("Cannot cast '{s}' to BIGINT"))?),
                SqlType::Double => Value::Double(s.parse().map_err(|_| format!("Cannot cast '{s}' to DOUBLE"))?),
                SqlType::Decimal { .. } => {
                    let (u, sc) = crate::value::parse_decimal(s).ok_or_else(|| format!("Cannot cast '{s}' to {t}"))?;
                    cast(Value::Decimal(u, sc), t)?
                }
                SqlType::Date => {
                    Value::Date(crate::time::parse_date(s).ok_or_else(|| format!("Cannot cast '{s}' to DATE"))?)
                }
                SqlType::Time => {
                    Value::Time(crate::time::parse_time(s).ok_or_else(|| format!("Cannot cast '{s}' to TIME"))?)
                }
                SqlType::Timestamp => Value::Timestamp(
                    crate::time::parse_timestamp(s).ok_or_else(|| format!("Cannot cast '{s}' to TIMESTAMP"))?,
                ),
                SqlType::Bytes => Value::Bytes(s.as_bytes().to_vec()),
                _ => return Err(format!("Cannot cast STRING to {t}")),
            }
        }
        (v, SqlType::Int) => match v {
            Value::Double(d) => Value::Int(d as i32),
            Value::Decimal(u, s) => Value::Int((u / crate::value::pow10(s)) as i32),
            other => Value::Int(other.as_i64().ok_or("not a number")? as i32),
        },
        (v, SqlType::BigInt) => match v {
            Value::Double(d) => Value::BigInt(d as i64),
            Value::Decimal(u, s) => Value::BigInt((u / crate::value::pow10(s)) as i64),
            other => Value::BigInt(other.as_i64().ok_or("not a number")?),
        },
        (v, SqlType::Double) => Value::Double(v.as_f64().ok_or("not a number")?),
        (v, SqlType::Decimal { precision, scale }) => {
            let u = v.to_decimal(*scale).ok_or("not a number")?;
            if decimal_digits(u) > *precision {
                return Err(format!("Cannot fit decimal '{v}' into DECIMAL({precision}, {scale}) without rounding."));
            }
            Value::Decimal(u, *scale)
        }
        (Value::Timestamp(t), SqlType::Date) => Value::Date(t.div_euclid(crate::value::MS_PER_DAY) as i32),
        (Value::Timestamp(t), SqlType::Time) => Value::Time(t.rem_euclid(crate::value::MS_PER_DAY)),
        (Value::Date(d), SqlType::Timestamp) => Value::Timestamp(d as i64 * crate::value::MS_PER_DAY),
        (Value::Array(items), SqlType::Array(t)) => {
            Value::Array(items.into_iter().map(|i| cast(i, t)).collect::<std::result::Result<_, _>>()?)
        }
        (Value::Map(entries), SqlType::Map(kt, vt)) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((cast(k, kt)?, cast(v, vt)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        (Value::Struct(fields), SqlType::Struct(types)) => Value::Struct(
            types
                .iter()
                .map(|f| {
                    let v = fields.iter().find(|(n, _)| n == &f.name).map(|(_, v)| v.clone()).unwrap_or(Value::Null);
                    Ok((f.name.clone(), cast(v, &f.ty)?))
                })
                .collect::<std::result::Result<_, String>>()?,
        ),
        (v, t) if type_of(&v).as_ref() == Some(t) => v,
        (v, t) => return Err(format!("Cannot cast {v} to {t}")),
    })
}
