//! The ksqlDB statement grammar, written here on top of `sqlparser`'s tokenizer and expression
//! parser. ksqlDB-only expression forms (lambdas `x => e`, `CAST(e AS ksql_type)`, `STRUCT(a := e)`,
//! `MAP(k := v)`, `ARRAY[...]`) are parsed by the dialect's prefix hook into this crate's
//! [`Expr`](crate::ast::Expr) directly and handed back to `sqlparser` as placeholders.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use sqlparser::ast as sq;
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::ast::*;
use crate::error::{ErrorKind, Result, SqlError};
use crate::types::{base_type, Field, SqlType, MAX_DECIMAL_PRECISION};
use crate::value::{parse_decimal, Value};

/// Name of the pseudo-function a parenthesized list `(a, b)` becomes (valid in GROUP BY only).
pub const TUPLE: &str = "$TUPLE";

/// Marks an identifier that stands for an expression parsed by the dialect hook.
const PLACEHOLDER_QUOTE: char = '\u{1}';

/// Custom types known to the parser (from CREATE TYPE).
pub type TypeRegistry = HashMap<String, SqlType>;

#[derive(Debug, Default)]
struct KsqlDialect {
    parsed: RefCell<Vec<Expr>>,
    types: TypeRegistry,
}

impl Dialect for KsqlDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_' || ch == '@' || ch == '$'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '@' || ch == '$'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        // ksqlDB quotes identifiers with backquotes or double quotes (both case-sensitive).
        ch == '`' || ch == '"'
    }

    fn supports_named_fn_args_with_rarrow_operator(&self) -> bool {
        false
    }

    /// ksqlDB accepts unquoted identifiers that start with digits (`AS 1R`).
    fn supports_numeric_prefix(&self) -> bool {
        true
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        if parser.peek_token().token != Token::Arrow {
            return None;
        }
        // `s->*` ends the expression (a select item); otherwise `->` binds as tightly as `[ ]`:
        // `s->a * 10` is `(s->a) * 10`, `s->a[1]` is `(s->a)[1]`.
        if parser.peek_nth_token(1).token == Token::Mul {
            return Some(Ok(0));
        }
        Some(Ok(self.prec_value(sqlparser::dialect::Precedence::DoubleColon)))
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<sq::Expr, ParserError>> {
        let parsed = match self.ksql_prefix(parser) {
            Ok(None) => return None,
            Ok(Some(e)) => e,
            Err(e) => return Some(Err(ParserError::ParserError(e.to_string()))),
        };
        let mut table = self.parsed.borrow_mut();
        table.push(parsed);
        Some(Ok(sq::Expr::Identifier(sq::Ident {
            value: (table.len() - 1).to_string(),
            quote_style: Some(PLACEHOLDER_QUOTE),
            span: sqlparser::tokenizer::Span::empty(),
        })))
    }
}

fn word_is(tok: &Token, name: &str) -> bool {
    matches!(tok, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name))
}

fn pos_of(loc: Location) -> Pos {
    Pos { line: loc.line, column: loc.column }
}

impl KsqlDialect {
    fn ksql_prefix(&self, p: &mut Parser) -> Result<Option<Expr>> {
        let t0 = p.peek_token().token;
        let t1 = p.peek_nth_token(1).token;
        // Lambda with one parameter: `x => body`.
        if let (Token::Word(w), Token::RArrow) = (&t0, &t1) {
            let name = ident_name(w);
            p.next_token();
            p.next_token();
            let body = self.expr(p)?;
            return Ok(Some(Expr::Lambda { params: vec![name], body: Box::new(body) }));
        }
        // Lambda with several: `(x, y) => body`.
        if t0 == Token::LParen {
            let mut i = 1;
            let mut params = vec![];
            while let Token::Word(w) = p.peek_nth_token(i).token {
                params.push(ident_name(&w));
                match p.peek_nth_token(i + 1).token {
                    Token::Comma => i += 2,
                    Token::RParen if p.peek_nth_token(i + 2).token == Token::RArrow => {
                        for _ in 0..i + 3 {
                            p.next_token();
                        }
                        let body = self.expr(p)?;
                        return Ok(Some(Expr::Lambda { params, body: Box::new(body) }));
                    }
                    _ => break,
                }
            }
            return Ok(None);
        }
        // Function calls are parsed here, not by sqlparser, which gives some names (TRIM,
        // SUBSTRING, POSITION, EXTRACT, CEIL...) their standard-SQL special syntax.
        if let (Token::Word(w), Token::LParen) = (&t0, &t1) {
            let upper = w.value.to_ascii_uppercase();
            let special =
                matches!(upper.as_str(), "CAST" | "STRUCT" | "MAP" | "NOT" | "CASE" | "EXISTS" | "ARRAY" | "INTERVAL");
            if w.quote_style.is_none() && !special {
                let pos = pos_of(p.peek_token().span.start);
                p.next_token();
                p.next_token();
                let mut args = vec![];
                let mut star = false;
                let mut distinct = false;
                if p.consume_token(&Token::Mul) {
                    star = true;
                } else if p.peek_token().token != Token::RParen {
                    distinct = word(p, "DISTINCT");
                    args = comma_list(p, |p| self.expr(p))?;
                }
                expect(p, Token::RParen, "')' or ',' in the argument list")?;
                return Ok(Some(Expr::Function { name: upper, args, star, distinct, pos }));
            }
        }
        if word_is(&t0, "CAST") && t1 == Token::LParen {
            p.next_token();
            p.next_token();
            let e = self.expr(p)?;
            expect_kw(p, Keyword::AS, "AS")?;
            let ty = parse_type(p, &self.types)?;
            expect(p, Token::RParen, "')'")?;
            return Ok(Some(Expr::Cast(Box::new(e), ty)));
        }
        if word_is(&t0, "STRUCT") && t1 == Token::LParen {
            p.next_token();
            p.next_token();
            let mut fields = vec![];
            if !p.consume_token(&Token::RParen) {
                fields = comma_list(p, |p| {
                    let name = identifier(p)?;
                    expect(p, Token::Assignment, "':='")?;
                    Ok((name, self.expr(p)?))
                })?;
                expect(p, Token::RParen, "')'")?;
            }
            return Ok(Some(Expr::Struct(fields)));
        }
        if word_is(&t0, "MAP") && t1 == Token::LParen {
            p.next_token();
            p.next_token();
            let mut entries = vec![];
            if !p.consume_token(&Token::RParen) {
                entries = comma_list(p, |p| {
                    // `k := v` parses as sqlparser's assignment operator.
                    let start = p.peek_token().span.start;
                    match p.parse_expr().map_err(|e| parser_error(e, start))? {
                        sq::Expr::BinaryOp { left, op: sq::BinaryOperator::Assignment, right } => {
                            Ok((self.convert(&left)?, self.convert(&right)?))
                        }
                        _ => Err(SqlError::parse(Some(pos_of(start)), "expected KEY := VALUE in MAP(...)")),
                    }
                })?;
                expect(p, Token::RParen, "')'")?;
            }
            return Ok(Some(Expr::Map(entries)));
        }
        if word_is(&t0, "ARRAY") && t1 == Token::LBracket {
            p.next_token();
            p.next_token();
            let mut items = vec![];
            if !p.consume_token(&Token::RBracket) {
                items = comma_list(p, |p| self.expr(p))?;
                expect(p, Token::RBracket, "']'")?;
            }
            return Ok(Some(Expr::Array(items)));
        }
        Ok(None)
    }

    fn expr(&self, p: &mut Parser) -> Result<Expr> {
        let start = p.peek_token().span.start;
        let e = p.parse_expr().map_err(|e| parser_error(e, start))?;
        self.convert(&e)
    }

    /// Converts a `sqlparser` expression into this crate's.
    fn convert(&self, e: &sq::Expr) -> Result<Expr> {
        use sq::Expr as E;
        Ok(match e {
            E::Identifier(id) if id.quote_style == Some(PLACEHOLDER_QUOTE) => {
                let idx: usize = id.value.parse().unwrap_or(usize::MAX);
                self.parsed
                    .borrow()
                    .get(idx)
                    .cloned()
                    .ok_or_else(|| SqlError::parse(None, "internal: lost sub-expression"))?
            }
            E::Identifier(id) => Expr::Column { qualifier: None, name: ident_value(id), pos: pos_of(id.span.start) },
            E::CompoundIdentifier(parts) => {
                let pos = pos_of(parts[0].span.start);
                match parts.as_slice() {
                    [q, n] => Expr::Column { qualifier: Some(ident_value(q)), name: ident_value(n), pos },
                    _ => {
                        return Err(SqlError::parse(
                            Some(pos),
                            format!("'{}' is not a column: use SOURCE.COLUMN, and -> for struct fields", e),
                        ))
                    }
                }
            }
            E::Value(v) => self.literal(&v.value, false, pos_of(v.span.start))?,
            E::Nested(inner) => self.convert(inner)?,
            E::UnaryOp { op, expr } => match op {
                sq::UnaryOperator::Not => Expr::Unary(UnaryOp::Not, Box::new(self.convert(expr)?)),
                sq::UnaryOperator::Plus => self.convert(expr)?,
                sq::UnaryOperator::Minus => match expr.as_ref() {
                    E::Value(v) if matches!(v.value, sq::Value::Number(..)) => {
                        self.literal(&v.value, true, pos_of(v.span.start))?
                    }
                    _ => Expr::Unary(UnaryOp::Neg, Box::new(self.convert(expr)?)),
                },
                other => return Err(SqlError::parse(None, format!("unsupported operator {other}"))),
            },
            E::BinaryOp { left, op, right } => {
                if matches!(op, sq::BinaryOperator::Arrow) {
                    // `s->f[1]`: the subscripts apply to the field.
                    if let E::CompoundFieldAccess { root, access_chain } = right.as_ref() {
                        let arrow = E::BinaryOp { left: left.clone(), op: op.clone(), right: root.clone() };
                        let whole =
                            E::CompoundFieldAccess { root: Box::new(arrow), access_chain: access_chain.clone() };
                        return self.convert(&whole);
                    }
                    let field = match right.as_ref() {
                        E::Identifier(id) => ident_value(id),
                        E::Value(v) => match &v.value {
                            sq::Value::SingleQuotedString(s) => s.clone(),
                            other => {
                                return Err(SqlError::parse(
                                    Some(pos_of(v.span.start)),
                                    format!("expected a field name after '->', found {other}"),
                                ))
                            }
                        },
                        other => {
                            return Err(SqlError::parse(
                                None,
                                format!("expected a field name after '->', found {other}"),
                            ))
                        }
                    };
                    return Ok(Expr::Field(Box::new(self.convert(left)?), field));
                }
                let op = match op {
                    sq::BinaryOperator::Plus => BinaryOp::Add,
                    sq::BinaryOperator::Minus => BinaryOp::Sub,
                    sq::BinaryOperator::Multiply => BinaryOp::Mul,
                    sq::BinaryOperator::Divide => BinaryOp::Div,
                    sq::BinaryOperator::Modulo => BinaryOp::Mod,
                    sq::BinaryOperator::StringConcat => BinaryOp::Concat,
                    sq::BinaryOperator::Eq => BinaryOp::Eq,
                    sq::BinaryOperator::NotEq => BinaryOp::NotEq,
                    sq::BinaryOperator::Lt => BinaryOp::Lt,
                    sq::BinaryOperator::LtEq => BinaryOp::LtEq,
                    sq::BinaryOperator::Gt => BinaryOp::Gt,
                    sq::BinaryOperator::GtEq => BinaryOp::GtEq,
                    sq::BinaryOperator::And => BinaryOp::And,
                    sq::BinaryOperator::Or => BinaryOp::Or,
                    other => return Err(SqlError::parse(None, format!("unsupported operator {other}"))),
                };
                Expr::Binary(op, Box::new(self.convert(left)?), Box::new(self.convert(right)?))
            }
            E::IsNull(x) => Expr::IsNull { expr: Box::new(self.convert(x)?), negated: false },
            E::IsNotNull(x) => Expr::IsNull { expr: Box::new(self.convert(x)?), negated: true },
            E::IsDistinctFrom(a, b) => {
                Expr::IsDistinct { left: Box::new(self.convert(a)?), right: Box::new(self.convert(b)?), negated: false }
            }
            E::IsNotDistinctFrom(a, b) => {
                Expr::IsDistinct { left: Box::new(self.convert(a)?), right: Box::new(self.convert(b)?), negated: true }
            }
            E::Between { expr, negated, low, high } => Expr::Between {
                expr: Box::new(self.convert(expr)?),
                low: Box::new(self.convert(low)?),
                high: Box::new(self.convert(high)?),
                negated: *negated,
            },
            E::In { expr, target: sq::InTarget::List(list), negated, .. } => Expr::InList {
                expr: Box::new(self.convert(expr)?),
                list: list.iter().map(|e| self.convert(e)).collect::<Result<_>>()?,
                negated: *negated,
            },
            E::Like { negated, expr, pattern, escape_char, any: false } => {
                let escape = match escape_char.as_deref() {
                    None => None,
                    Some(E::Value(v)) => match &v.value {
                        sq::Value::SingleQuotedString(s) if s.chars().count() == 1 => s.chars().next(),
                        _ => {
                            return Err(SqlError::parse(Some(pos_of(v.span.start)), "ESCAPE takes a single character"))
                        }
                    },
                    Some(_) => return Err(SqlError::parse(None, "ESCAPE takes a single character")),
                };
                Expr::Like {
                    expr: Box::new(self.convert(expr)?),
                    pattern: Box::new(self.convert(pattern)?),
                    escape,
                    negated: *negated,
                }
            }
            E::Case { operand, conditions, else_result, .. } => Expr::Case {
                operand: operand.as_ref().map(|o| self.convert(o).map(Box::new)).transpose()?,
                whens: conditions
                    .iter()
                    .map(|c| Ok((self.convert(&c.condition)?, self.convert(&c.result)?)))
                    .collect::<Result<_>>()?,
                otherwise: else_result.as_ref().map(|o| self.convert(o).map(Box::new)).transpose()?,
            },
            E::Function(f) => self.function(f)?,
            E::CompoundFieldAccess { root, access_chain } => {
                let mut out = self.convert(root)?;
                for access in access_chain {
                    out = match access {
                        sq::AccessExpr::Subscript(sq::Subscript::Index { index }) => {
                            Expr::Subscript(Box::new(out), Box::new(self.convert(index)?))
                        }
                        sq::AccessExpr::Dot(E::Identifier(id)) => match out {
                            Expr::Column { qualifier: None, name, pos } => {
                                Expr::Column { qualifier: Some(name), name: ident_value(id), pos }
                            }
                            other => Expr::Field(Box::new(other), ident_value(id)),
                        },
                        other => return Err(SqlError::parse(None, format!("unsupported element access {other}"))),
                    };
                }
                out
            }
            E::Tuple(items) => Expr::Function {
                name: TUPLE.into(),
                args: items.iter().map(|e| self.convert(e)).collect::<Result<_>>()?,
                star: false,
                distinct: false,
                pos: Pos::default(),
            },
            E::Array(arr) => Expr::Array(arr.elem.iter().map(|e| self.convert(e)).collect::<Result<_>>()?),
            other => return Err(SqlError::parse(None, format!("unsupported expression: {other}"))),
        })
    }

    fn literal(&self, v: &sq::Value, negate: bool, pos: Pos) -> Result<Expr> {
        Ok(Expr::Literal(match v {
            sq::Value::Number(text, _) => {
                let text = if negate { format!("-{text}") } else { text.clone() };
                // ksqlDB builds literals after parsing and places the error one column right
                // of the literal's first character; the same position keeps its messages.
                let at = Pos { line: pos.line, column: pos.column + 1 };
                number_literal(&text).map_err(|m| SqlError::parse(Some(at), m).in_phase(crate::error::BUILDING))?
            }
            sq::Value::SingleQuotedString(s) => Value::String(s.clone()),
            sq::Value::Boolean(b) => Value::Boolean(*b),
            sq::Value::Null => Value::Null,
            other => return Err(SqlError::parse(Some(pos), format!("unsupported literal {other}"))),
        }))
    }

    fn function(&self, f: &sq::Function) -> Result<Expr> {
        let pos = f.name.0.first().and_then(|p| p.as_ident()).map(|i| pos_of(i.span.start)).unwrap_or_default();
        let name = f.name.0.iter().filter_map(|p| p.as_ident()).map(ident_value).collect::<Vec<_>>().join(".");
        if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
            return Err(SqlError::parse(
                Some(pos),
                format!("{name}: OVER, FILTER and WITHIN GROUP are not part of the dialect"),
            ));
        }
        let mut args = vec![];
        let mut star = false;
        let mut distinct = false;
        match &f.args {
            sq::FunctionArguments::None => {}
            sq::FunctionArguments::Subquery(_) => {
                return Err(SqlError::parse(Some(pos), "subqueries are not supported"))
            }
            sq::FunctionArguments::List(list) => {
                distinct = matches!(list.duplicate_treatment, Some(sq::DuplicateTreatment::Distinct));
                for a in &list.args {
                    match a {
                        sq::FunctionArg::Unnamed(sq::FunctionArgExpr::Expr(e)) => args.push(self.convert(e)?),
                        sq::FunctionArg::Unnamed(sq::FunctionArgExpr::Wildcard) => star = true,
                        other => {
                            return Err(SqlError::parse(Some(pos), format!("unsupported function argument {other}")))
                        }
                    }
                }
            }
        }
        Ok(Expr::Function { name, args, star, distinct, pos })
    }
}

/// A numeric literal: INT, BIGINT, DECIMAL (with a point) or DOUBLE (with an exponent).
pub fn number_literal(text: &str) -> std::result::Result<Value, String> {
    if text.contains(['e', 'E']) {
        let d: f64 = text.parse().map_err(|_| format!("Invalid numeric literal: {text}"))?;
        if d.is_infinite() {
            return Err(format!("Number overflows DOUBLE: {text}"));
        }
        return Ok(Value::Double(d));
    }
    if text.contains('.') {
        let (u, s) = parse_decimal(text).ok_or_else(|| format!("Invalid numeric literal: {text}"))?;
        return Ok(Value::Decimal(u, s));
    }
    let v: i64 = text.parse().map_err(|_| format!("Invalid numeric literal: {text}"))?;
    Ok(match i32::try_from(v) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::BigInt(v),
    })
}

fn ident_name(w: &sqlparser::tokenizer::Word) -> String {
    if w.quote_style.is_some() {
        w.value.clone()
    } else {
        w.value.to_ascii_uppercase()
    }
}

fn ident_value(id: &sq::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_ascii_uppercase()
    }
}

fn parser_error(e: ParserError, fallback: Location) -> SqlError {
    let text = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "expression nested too deeply".into(),
    };
    // sqlparser appends " at Line: L, Column: C"; turn it into our position.
    if let Some(i) = text.rfind(" at Line: ") {
        let tail = &text[i + 10..];
        if let Some((l, c)) = tail.split_once(", Column: ") {
            if let (Ok(line), Ok(column)) = (l.trim().parse(), c.trim().parse()) {
                return SqlError::parse(Some(Pos { line, column }), text[..i].to_string());
            }
        }
    }
    if let Some(rest) = text.strip_prefix("line ") {
        // Positioned by our own hook, whose error sqlparser carries as text: its position and
        // message again.
        let positioned = rest.split_once(": ").and_then(|(at, message)| {
            let (line, column) = at.split_once(':')?;
            let pos = Pos { line: line.parse().ok()?, column: column.parse().ok()? };
            Some(SqlError::parse(Some(pos), message.strip_prefix("Syntax Error\n").unwrap_or(message)))
        });
        return positioned.unwrap_or_else(|| SqlError::parse(None, text));
    }
    SqlError::parse(Some(pos_of(fallback)), text)
}

/// Parses `item (, item)*`.
fn comma_list<T>(p: &mut Parser, mut item: impl FnMut(&mut Parser) -> Result<T>) -> Result<Vec<T>> {
    let mut out = vec![item(p)?];
    while p.consume_token(&Token::Comma) {
        out.push(item(p)?);
    }
    Ok(out)
}

fn here(p: &Parser) -> Pos {
    pos_of(p.peek_token().span.start)
}

fn describe(tok: &Token) -> String {
    match tok {
        Token::EOF => "end of input".into(),
        other => format!("'{other}'"),
    }
}

fn expect(p: &mut Parser, tok: Token, what: &str) -> Result<()> {
    let next = p.peek_token();
    if next.token == tok {
        p.next_token();
        Ok(())
    } else {
        Err(SqlError::parse(Some(pos_of(next.span.start)), format!("expected {what}, found {}", describe(&next.token))))
    }
}

fn expect_kw(p: &mut Parser, kw: Keyword, what: &str) -> Result<()> {
    if p.parse_keyword(kw) {
        Ok(())
    } else {
        let next = p.peek_token();
        Err(SqlError::parse(Some(pos_of(next.span.start)), format!("expected {what}, found {}", describe(&next.token))))
    }
}

/// Consumes the next token if it is the (unquoted) word `name`.
fn word(p: &mut Parser, name: &str) -> bool {
    if word_is(&p.peek_token().token, name) {
        p.next_token();
        true
    } else {
        false
    }
}

fn expect_word(p: &mut Parser, name: &str) -> Result<()> {
    if word(p, name) {
        Ok(())
    } else {
        let next = p.peek_token();
        Err(SqlError::parse(Some(pos_of(next.span.start)), format!("expected {name}, found {}", describe(&next.token))))
    }
}

fn identifier(p: &mut Parser) -> Result<String> {
    let next = p.next_token();
    match &next.token {
        Token::Word(w) => Ok(ident_name(w)),
        other => {
            Err(SqlError::parse(Some(pos_of(next.span.start)), format!("expected a name, found {}", describe(other))))
        }
    }
}

/// A ksqlDB type: base types, DECIMAL(p, s), ARRAY<T>, MAP<K, V>, STRUCT<name T, ...>, or a type
/// created with CREATE TYPE.
pub fn parse_type(p: &mut Parser, types: &TypeRegistry) -> Result<SqlType> {
    let mut pending_gt = 0;
    let ty = type_inner(p, types, &mut pending_gt)?;
    if pending_gt > 0 {
        return Err(SqlError::parse(Some(here(p)), "unbalanced '>' in type"));
    }
    Ok(ty)
}

fn close_angle(p: &mut Parser, pending: &mut u32) -> Result<()> {
    if *pending > 0 {
        *pending -= 1;
        return Ok(());
    }
    let next = p.peek_token();
    match next.token {
        Token::Gt => {
            p.next_token();
            Ok(())
        }
        Token::ShiftRight => {
            p.next_token();
            *pending += 1;
            Ok(())
        }
        other => {
            Err(SqlError::parse(Some(pos_of(next.span.start)), format!("expected '>', found {}", describe(&other))))
        }
    }
}

fn type_inner(p: &mut Parser, types: &TypeRegistry, pending: &mut u32) -> Result<SqlType> {
    let next = p.next_token();
    let pos = pos_of(next.span.start);
    let Token::Word(w) = &next.token else {
        return Err(SqlError::parse(Some(pos), format!("expected a type, found {}", describe(&next.token))));
    };
    let name = ident_name(w);
    if let Some(t) = base_type(&name) {
        // The grammar lets any base type take parameters, `VARCHAR(STRING)`; only DECIMAL's mean anything.
        if p.consume_token(&Token::LParen) {
            loop {
                let param = p.next_token();
                let ok = matches!(&param.token, Token::Number(..))
                    || matches!(&param.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("STRING"));
                if !ok {
                    return Err(SqlError::parse(Some(pos_of(param.span.start)), "Expecting {'STRING', INTEGER_VALUE}"));
                }
                let sep = p.next_token();
                match sep.token {
                    Token::Comma => continue,
                    Token::RParen => break,
                    _ => return Err(SqlError::parse(Some(pos_of(sep.span.start)), "Expecting {',', ')'}")),
                }
            }
        }
        return Ok(t);
    }
    match name.as_str() {
        "DECIMAL" => {
            expect(p, Token::LParen, "'(' after DECIMAL")?;
            let precision = p.parse_literal_uint().map_err(|e| parser_error(e, next.span.start))?;
            expect(p, Token::Comma, "',' between DECIMAL precision and scale")?;
            let scale = p.parse_literal_uint().map_err(|e| parser_error(e, next.span.start))?;
            expect(p, Token::RParen, "')'")?;
            if precision == 0 || precision > MAX_DECIMAL_PRECISION as u64 {
                return Err(SqlError::parse(
                    Some(pos),
                    format!("DECIMAL precision must be between 1 and {MAX_DECIMAL_PRECISION}: {precision}"),
                ));
            }
            if scale > precision {
                return Err(SqlError::parse(
                    Some(pos),
                    format!("DECIMAL scale must not exceed precision: DECIMAL({precision}, {scale})"),
                ));
            }
            Ok(SqlType::Decimal { precision: precision as u8, scale: scale as u8 })
        }
        "ARRAY" => {
            expect(p, Token::Lt, "'<' after ARRAY")?;
            let inner = type_inner(p, types, pending)?;
            close_angle(p, pending)?;
            Ok(SqlType::Array(Box::new(inner)))
        }
        "MAP" => {
            expect(p, Token::Lt, "'<' after MAP")?;
            let k = type_inner(p, types, pending)?;
            expect(p, Token::Comma, "',' between MAP key and value types")?;
            let v = type_inner(p, types, pending)?;
            close_angle(p, pending)?;
            Ok(SqlType::Map(Box::new(k), Box::new(v)))
        }
        "STRUCT" => {
            expect(p, Token::Lt, "'<' after STRUCT")?;
            let mut fields = vec![];
            if !p.consume_token(&Token::Gt) {
                loop {
                    let name = identifier(p)?;
                    let ty = type_inner(p, types, pending)?;
                    if fields.iter().any(|f: &Field| f.name == name) {
                        return Err(SqlError::parse(Some(pos), format!("duplicate field name {name} in STRUCT")));
                    }
                    fields.push(Field { name, ty });
                    if *pending > 0 || !p.consume_token(&Token::Comma) {
                        break;
                    }
                }
                close_angle(p, pending)?;
            }
            Ok(SqlType::Struct(fields))
        }
        _ => types.get(&name).cloned().ok_or_else(|| SqlError::parse(Some(pos), format!("Unknown type: {name}"))),
    }
}

/// A parsed statement with its text.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub statement: Statement,
    pub text: String,
}

/// Splits a script into statement texts at top-level semicolons (outside quotes and comments).
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        cur.push(c);
        match quote {
            Some(q) => {
                if c == q {
                    if chars.peek() == Some(&q) {
                        cur.push(chars.next().unwrap_or(q));
                    } else {
                        quote = None;
                    }
                }
            }
            None => match c {
                '\'' | '`' | '"' => quote = Some(c),
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        cur.push(c);
                        if c == '\n' {
                            break;
                        }
                    }
                }
                ';' => {
                    let stmt = cur.trim().to_string();
                    if stmt != ";" {
                        out.push(stmt);
                    }
                    cur.clear();
                }
                _ => {}
            },
        }
    }
    let rest = cur.trim();
    if !rest.is_empty() && !strip_comments(rest).trim().is_empty() {
        out.push(rest.to_string());
    }
    out
}

fn strip_comments(s: &str) -> String {
    s.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Parses one statement (an optional trailing `;` is allowed).
pub fn parse_statement(text: &str, types: &TypeRegistry) -> Result<Statement> {
    parse_statement_inner(text, types).map_err(|mut e| {
        if e.kind == ErrorKind::Parse {
            e.message = format!("{}\nStatement: {text}", e.message);
        }
        e
    })
}

fn parse_statement_inner(text: &str, types: &TypeRegistry) -> Result<Statement> {
    let dialect = KsqlDialect { parsed: RefCell::new(vec![]), types: types.clone() };
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| SqlError::parse(Some(pos_of(e.location)), e.message.to_string()))?;
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let stmt = StatementParser { d: &dialect }.statement(&mut p)?;
    let _ = p.consume_token(&Token::SemiColon);
    let next = p.peek_token();
    if next.token != Token::EOF {
        return Err(SqlError::parse(
            Some(pos_of(next.span.start)),
            format!("unexpected {} after the end of the statement", describe(&next.token)),
        ));
    }
    Ok(stmt)
}

/// Parses a standalone expression (used by tests and by the REST API's property values).
pub fn parse_expression(text: &str) -> Result<Expr> {
    let dialect = KsqlDialect::default();
    let mut p =
        Parser::new(&dialect).try_with_sql(text).map_err(|e| parser_error(e, Location { line: 1, column: 1 }))?;
    dialect.expr(&mut p)
}

struct StatementParser<'d> {
    d: &'d KsqlDialect,
}

impl StatementParser<'_> {
    fn statement(&self, p: &mut Parser) -> Result<Statement> {
        let start = here(p);
        let first = p.peek_token();
        let Token::Word(w) = &first.token else {
            return Err(SqlError::parse(
                Some(start),
                format!("expected a statement, found {}", describe(&first.token)),
            ));
        };
        match w.value.to_ascii_uppercase().as_str() {
            "CREATE" => {
                p.next_token();
                self.create(p, start)
            }
            "INSERT" => {
                p.next_token();
                self.insert(p, start)
            }
            "DROP" => {
                p.next_token();
                self.drop(p)
            }
            "ALTER" => {
                p.next_token();
                self.alter(p)
            }
            "SELECT" => Ok(Statement::Select(Box::new(self.select(p)?))),
            "TERMINATE" => {
                p.next_token();
                if word(p, "ALL") {
                    Ok(Statement::Terminate(None))
                } else {
                    Ok(Statement::Terminate(Some(identifier(p)?)))
                }
            }
            "SHOW" | "LIST" => {
                p.next_token();
                self.show(p)
            }
            "DESCRIBE" => {
                p.next_token();
                if word(p, "FUNCTION") {
                    return Ok(Statement::Describe {
                        name: Some(identifier(p)?),
                        extended: false,
                        functions: true,
                    });
                }
                if word(p, "STREAMS") || word(p, "TABLES") {
                    let extended = word(p, "EXTENDED");
                    return Ok(Statement::Describe {
                        name: None,
                        extended,
                        functions: false,
                    });
                }
                let name = identifier(p)?;
                let extended = word(p, "EXTENDED");
                Ok(Statement::Describe {
                    name: Some(name),
                    extended,
                    functions: false,
                })
            }
            "EXPLAIN" => {
                p.next_token();
                let next = p.peek_token().token;
                if ["SELECT", "CREATE", "INSERT"].iter().any(|w| word_is(&next, w)) {
                    let inner = self.statement(p)?;
                    return Ok(Statement::Explain(ExplainTarget::Statement(Box::new(inner))));
                }
                Ok(Statement::Explain(ExplainTarget::Query(identifier(p)?)))
            }
            "PRINT" => {
                p.next_token();
                let topic = match p.next_token().token {
                    Token::Word(w) => w.value.clone(),
                    Token::SingleQuotedString(s) => s,
                    other => {
                        return Err(SqlError::parse(
                            Some(start),
                            format!("expected a topic name, found {}", describe(&other)),
                        ))
                    }
                };
                let from_beginning = word(p, "FROM") && {
                    expect_word(p, "BEGINNING")?;
                    true
                };
                let mut limit = None;
                let mut interval = None;
                loop {
                    if word(p, "LIMIT") {
                        limit = Some(self.uint(p)?);
                    } else if word(p, "INTERVAL") || word(p, "SAMPLE") {
                        interval = Some(self.uint(p)?);
                    } else {
                        break;
                    }
                }
                Ok(Statement::Print {
                    topic,
                    from_beginning,
                    interval,
                    limit,
                })
            }
            "SET" => {
                p.next_token();
                let name = self.string(p)?;
                expect(p, Token::Eq, "'='")?;
                let value = self.string(p)?;
                Ok(Statement::Set { name, value })
            }
            "UNSET" => {
                p.next_token();
                Ok(Statement::Unset(self.string(p)?))
            }
            "DEFINE" => {
                p.next_token();
                let name = identifier(p)?;
                expect(p, Token::Eq, "'='")?;
                let value = self.string(p)?;
                Ok(Statement::Define { name, value })
            }
            "UNDEFINE" => {
                p.next_token();
                Ok(Statement::Undefine(identifier(p)?))
            }
            "ASSERT" => {
                while p.next_token().token != Token::EOF {}
                Ok(Statement::Assert)
            }
            other => Err(SqlError::parse(
                Some(start),
                format!("unknown statement {other}: expected CREATE, INSERT, DROP, ALTER, SELECT, TERMINATE, SHOW, LIST, DESCRIBE, EXPLAIN, PRINT, SET, UNSET, DEFINE"),
            )),
        }
    }

    fn string(&self, p: &mut Parser) -> Result<String> {
        let next = p.next_token();
        match next.token {
            Token::SingleQuotedString(s) => Ok(s),
            other => Err(SqlError::parse(
                Some(pos_of(next.span.start)),
                format!("expected a quoted string, found {}", describe(&other)),
            )),
        }
    }

    /// A SELECT's LIMIT: a whole number, with ksqlDB's words for a negative or fractional one.
    fn limit(&self, p: &mut Parser) -> Result<u64> {
        match &p.peek_token().token {
            Token::Minus => Err(SqlError::statement(
                "Pull queries don't support negative integers in the LIMIT clause. See https://cnfl.io/queries for more info.",
            )),
            Token::Number(n, _) if n.parse::<u64>().is_err() && n.parse::<f64>().is_ok() => {
                Err(SqlError::statement("Value must be integer for command: LIMIT").in_phase(crate::error::BUILDING))
            }
            _ => self.uint(p),
        }
    }

    fn uint(&self, p: &mut Parser) -> Result<u64> {
        let next = p.next_token();
        match &next.token {
            Token::Number(n, _) => n.parse().map_err(|_| {
                SqlError::parse(Some(pos_of(next.span.start)), format!("expected a whole number, found {n}"))
            }),
            other => Err(SqlError::parse(
                Some(pos_of(next.span.start)),
                format!("expected a number, found {}", describe(other)),
            )),
        }
    }

    fn show(&self, p: &mut Parser) -> Result<Statement> {
        let what = identifier(p)?;
        let extended = word(p, "EXTENDED");
        Ok(Statement::Show(match what.as_str() {
            "STREAMS" => Show::Streams { extended },
            "TABLES" => Show::Tables { extended },
            "QUERIES" => Show::Queries { extended },
            "TOPICS" => Show::Topics { extended },
            "ALL" if word(p, "TOPICS") => Show::Topics { extended },
            "FUNCTIONS" => Show::Functions,
            "TYPES" => Show::Types,
            "PROPERTIES" => Show::Properties,
            "VARIABLES" => Show::Variables,
            other => {
                return Err(SqlError::parse(
                    Some(here(p)),
                    format!("cannot SHOW {other}: expected STREAMS, TABLES, QUERIES, TOPICS, FUNCTIONS, TYPES, PROPERTIES or VARIABLES"),
                ))
            }
        }))
    }

    fn alter(&self, p: &mut Parser) -> Result<Statement> {
        let kind = if word(p, "STREAM") {
            SourceKind::Stream
        } else if word(p, "TABLE") {
            SourceKind::Table
        } else {
            return Err(SqlError::parse(Some(here(p)), "expected STREAM or TABLE after ALTER"));
        };
        let name = identifier(p)?;
        let columns = comma_list(p, |p| {
            expect_kw(p, Keyword::ADD, "ADD")?;
            word(p, "COLUMN");
            let name = identifier(p)?;
            let ty = parse_type(p, &self.d.types)?;
            Ok(Field { name, ty })
        })?;
        Ok(Statement::Alter { kind, name, columns })
    }

    fn drop(&self, p: &mut Parser) -> Result<Statement> {
        if word(p, "TYPE") {
            let if_exists = self.if_exists(p)?;
            return Ok(Statement::DropType { name: identifier(p)?, if_exists });
        }
        let kind = if word(p, "STREAM") {
            SourceKind::Stream
        } else if word(p, "TABLE") {
            SourceKind::Table
        } else {
            return Err(SqlError::parse(Some(here(p)), "expected STREAM, TABLE or TYPE after DROP"));
        };
        let if_exists = self.if_exists(p)?;
        let name = identifier(p)?;
        let delete_topic = word(p, "DELETE") && {
            expect_word(p, "TOPIC")?;
            true
        };
        Ok(Statement::Drop { kind, name, if_exists, delete_topic })
    }

    fn if_exists(&self, p: &mut Parser) -> Result<bool> {
        if word(p, "IF") {
            expect_word(p, "EXISTS")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn create(&self, p: &mut Parser, pos: Pos) -> Result<Statement> {
        let or_replace = word(p, "OR") && {
            expect_word(p, "REPLACE")?;
            true
        };
        let source = word(p, "SOURCE");
        if word(p, "TYPE") {
            let if_not_exists = self.if_not_exists(p)?;
            let name = identifier(p)?;
            expect_kw(p, Keyword::AS, "AS")?;
            let ty = parse_type(p, &self.d.types)?;
            return Ok(Statement::CreateType { name, ty, if_not_exists });
        }
        let kind = if word(p, "STREAM") {
            SourceKind::Stream
        } else if word(p, "TABLE") {
            SourceKind::Table
        } else {
            return Err(SqlError::parse(Some(here(p)), "expected STREAM, TABLE or TYPE after CREATE"));
        };
        let if_not_exists = self.if_not_exists(p)?;
        let name = identifier(p)?;
        let mut columns = vec![];
        if p.consume_token(&Token::LParen) {
            columns = comma_list(p, |p| self.column(p))?;
            let next = p.next_token();
            if next.token != Token::RParen {
                return Err(SqlError::parse(Some(pos_of(next.span.start)), "Expecting {',', ')'}"));
            }
        }
        let properties = self.with_properties(p)?;
        if p.parse_keyword(Keyword::AS) {
            if !columns.is_empty() {
                return Err(SqlError::parse(
                    Some(pos),
                    "a CREATE ... AS SELECT statement takes its columns from the query: remove the column list",
                ));
            }
            let query = self.select(p)?;
            return Ok(Statement::CreateAs(CreateAs {
                kind,
                name,
                or_replace,
                if_not_exists,
                properties,
                query: Box::new(query),
                pos,
            }));
        }
        Ok(Statement::CreateSource(CreateSource {
            kind,
            name,
            or_replace,
            if_not_exists,
            source,
            columns,
            properties,
            pos,
        }))
    }

    fn if_not_exists(&self, p: &mut Parser) -> Result<bool> {
        if word(p, "IF") {
            expect_word(p, "NOT")?;
            expect_word(p, "EXISTS")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn column(&self, p: &mut Parser) -> Result<ColumnDef> {
        let pos = here(p);
        let name = identifier(p)?;
        let ty = parse_type(p, &self.d.types)?;
        let mut def = ColumnDef { name, ty, key: false, primary_key: false, header: None, pos };
        loop {
            if word(p, "KEY") {
                def.key = true;
            } else if word(p, "PRIMARY") {
                expect_word(p, "KEY")?;
                def.key = true;
                def.primary_key = true;
            } else if word(p, "HEADERS") {
                def.header = Some(None);
            } else if word(p, "HEADER") {
                expect(p, Token::LParen, "'(' after HEADER")?;
                def.header = Some(Some(self.string(p)?));
                expect(p, Token::RParen, "')'")?;
            } else {
                break;
            }
        }
        Ok(def)
    }

    fn with_properties(&self, p: &mut Parser) -> Result<BTreeMap<String, Value>> {
        let mut props = BTreeMap::new();
        if !p.parse_keyword(Keyword::WITH) {
            return Ok(props);
        }
        expect(p, Token::LParen, "'(' after WITH")?;
        for (name, value) in comma_list(p, |p| {
            let pos = here(p);
            let name = identifier(p)?;
            expect(p, Token::Eq, "'=' after the property name")?;
            match self.d.expr(p)? {
                Expr::Literal(v) => Ok((name, v)),
                _ => Err(SqlError::parse(Some(pos), format!("the value of {name} must be a literal"))),
            }
        })? {
            props.insert(name, value);
        }
        expect(p, Token::RParen, "')' or ',' in WITH")?;
        Ok(props)
    }

    fn insert(&self, p: &mut Parser, pos: Pos) -> Result<Statement> {
        expect_kw(p, Keyword::INTO, "INTO")?;
        let target_pos = here(p);
        let target = identifier(p)?;
        let mut columns = None;
        if p.consume_token(&Token::LParen) {
            let mut cols = vec![];
            cols = comma_list(p, identifier)?;
            expect(p, Token::RParen, "')'")?;
            columns = Some(cols);
        }
        if word(p, "VALUES") {
            expect(p, Token::LParen, "'(' after VALUES")?;
            let mut values = vec![];
            if !p.consume_token(&Token::RParen) {
                values = comma_list(p, |p| self.d.expr(p))?;
                expect(p, Token::RParen, "')'")?;
            }
            return Ok(Statement::InsertValues { target, columns, values, pos });
        }
        if columns.is_some() {
            return Err(SqlError::parse(Some(here(p)), "INSERT INTO ... SELECT takes no column list"));
        }
        let properties = self.with_properties(p)?;
        let query = self.select(p)?;
        Ok(Statement::InsertInto { target, query: Box::new(query), properties, target_pos })
    }

    fn select(&self, p: &mut Parser) -> Result<Select> {
        let pos = here(p);
        expect_kw(p, Keyword::SELECT, "SELECT")?;
        let mut items = vec![];
        items = comma_list(p, |p| self.select_item(p))?;
        expect_kw(p, Keyword::FROM, "FROM")?;
        let from = self.source_ref(p)?;
        let mut joins = vec![];
        loop {
            let kind = if word(p, "JOIN") {
                JoinKind::Inner
            } else if word(p, "INNER") {
                expect_word(p, "JOIN")?;
                JoinKind::Inner
            } else if word(p, "LEFT") {
                word(p, "OUTER");
                expect_word(p, "JOIN")?;
                JoinKind::Left
            } else if word(p, "RIGHT") {
                word(p, "OUTER");
                expect_word(p, "JOIN")?;
                JoinKind::Right
            } else if word(p, "FULL") {
                word(p, "OUTER");
                expect_word(p, "JOIN")?;
                JoinKind::Full
            } else {
                break;
            };
            let source = self.source_ref(p)?;
            let mut within = None;
            let mut grace = None;
            if word(p, "WITHIN") {
                if p.consume_token(&Token::LParen) {
                    let before = self.duration(p)?;
                    expect(p, Token::Comma, "','")?;
                    let after = self.duration(p)?;
                    expect(p, Token::RParen, "')'")?;
                    within = Some((before, after));
                } else {
                    let d = self.duration(p)?;
                    within = Some((d, d));
                }
                if word(p, "GRACE") {
                    expect_word(p, "PERIOD")?;
                    grace = Some(self.duration(p)?);
                }
            }
            expect_kw(p, Keyword::ON, "ON")?;
            let on = self.d.expr(p)?;
            joins.push(Join { kind, source, within, grace, on });
        }
        let window = if word(p, "WINDOW") { Some(self.window(p)?) } else { None };
        let filter = if p.parse_keyword(Keyword::WHERE) { Some(self.d.expr(p)?) } else { None };
        let mut group_by = vec![];
        if p.parse_keywords(&[Keyword::GROUP, Keyword::BY]) {
            let elements = self.value_items(p, "GROUP BY")?;
            // A parenthesized list is the whole grouping (`GROUP BY (a, b)`), never one item
            // of several: ksqlDB's grammar stops at its comma.
            if elements.len() > 1 {
                if let Some(comma) = elements.iter().find_map(|(e, c)| {
                    matches!(e, Expr::Function { name, .. } if name == TUPLE).then_some(*c).flatten()
                }) {
                    return Err(SqlError::parse(Some(comma), "missing ')' at ','"));
                }
            }
            for (e, _) in elements {
                match e {
                    Expr::Function { name, args, .. } if name == TUPLE => group_by.extend(args),
                    e => group_by.push(e),
                }
            }
        }
        let mut partition_by = vec![];
        if p.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
            let at = p.peek_token();
            if matches!(at.token, Token::EOF | Token::SemiColon | Token::RParen)
                || (matches!(at.token, Token::LParen) && matches!(p.peek_nth_token(1).token, Token::RParen))
            {
                return Err(SqlError::statement("PARTITION BY requires at least one expression"));
            }
            for (e, _) in self.value_items(p, "PARTITION BY")? {
                match e {
                    Expr::Function { name, args, .. } if name == TUPLE => partition_by.extend(args),
                    e => partition_by.push(e),
                }
            }
        }
        let having = if p.parse_keyword(Keyword::HAVING) { Some(self.d.expr(p)?) } else { None };
        let emit = if word(p, "EMIT") {
            if word(p, "CHANGES") {
                Some(Emit::Changes)
            } else if word(p, "FINAL") {
                Some(Emit::Final)
            } else {
                return Err(SqlError::parse(Some(here(p)), "expected CHANGES or FINAL after EMIT"));
            }
        } else {
            None
        };
        let limit = if p.parse_keyword(Keyword::LIMIT) { Some(self.limit(p)?) } else { None };
        Ok(Select { items, from, joins, window, filter, group_by, partition_by, having, emit, limit, pos })
    }

    /// The items of GROUP BY or PARTITION BY (`clause`): value expressions — a bare boolean
    /// expression (AND, OR, NOT, a comparison or predicate) is not one, unless in parentheses,
    /// as in ksqlDB's grammar — each with, if it is a parenthesized list, where its first comma
    /// is.
    fn value_items(&self, p: &mut Parser, clause: &str) -> Result<Vec<(Expr, Option<Pos>)>> {
        comma_list(p, |p| {
            let pos = here(p);
            let parenthesized = matches!(p.peek_token().token, Token::LParen);
            let mut comma = None;
            if parenthesized {
                let mut depth = 0;
                for i in 0.. {
                    let t = p.peek_nth_token(i);
                    match t.token {
                        Token::LParen => depth += 1,
                        Token::RParen if depth == 1 => break,
                        Token::RParen => depth -= 1,
                        Token::Comma if depth == 1 => {
                            comma = Some(pos_of(t.span.start));
                            break;
                        }
                        Token::EOF => break,
                        _ => {}
                    }
                }
            }
            let e = self.d.expr(p)?;
            if !parenthesized && is_boolean_expression(&e) {
                return Err(SqlError::parse(Some(pos), format!("{clause} takes value expressions, not boolean ones")));
            }
            Ok((e, comma))
        })
    }

    fn select_item(&self, p: &mut Parser) -> Result<SelectItem> {
        if p.consume_token(&Token::Mul) {
            return Ok(SelectItem::Wildcard(None));
        }
        if let (Token::Word(w), Token::Period, Token::Mul) =
            (p.peek_token().token, p.peek_nth_token(1).token, p.peek_nth_token(2).token)
        {
            p.next_token();
            p.next_token();
            p.next_token();
            return Ok(SelectItem::Wildcard(Some(ident_name(&w))));
        }
        let expr = self.d.expr(p)?;
        if p.peek_token().token == Token::Arrow && p.peek_nth_token(1).token == Token::Mul {
            p.next_token();
            p.next_token();
            return Ok(SelectItem::StructAll(expr));
        }
        let alias = if p.parse_keyword(Keyword::AS) {
            Some(identifier(p)?)
        } else {
            match p.peek_token().token {
                Token::Word(w) if w.quote_style.is_some() || !is_clause_word(&w.value) => {
                    p.next_token();
                    Some(ident_name(&w))
                }
                _ => None,
            }
        };
        Ok(SelectItem::Expr { expr, alias })
    }

    fn source_ref(&self, p: &mut Parser) -> Result<SourceRef> {
        let pos = here(p);
        let name = identifier(p)?;
        let alias = if p.parse_keyword(Keyword::AS) {
            Some(identifier(p)?)
        } else {
            match p.peek_token().token {
                Token::Word(w) if w.quote_style.is_some() || !is_clause_word(&w.value) => {
                    p.next_token();
                    Some(ident_name(&w))
                }
                _ => None,
            }
        };
        Ok(SourceRef { name, alias, pos })
    }

    fn window(&self, p: &mut Parser) -> Result<WindowSpec> {
        let mut kind_word = identifier(p)?;
        // ksqlDB's grammar allows a name before the window type (`WINDOW w TUMBLING (...)`).
        if !matches!(kind_word.as_str(), "TUMBLING" | "HOPPING" | "SESSION")
            && matches!(p.peek_token().token, Token::Word(_))
        {
            kind_word = identifier(p)?;
        }
        expect(p, Token::LParen, "'(' after the window type")?;
        let mut size = None;
        let mut advance = None;
        let mut gap = None;
        let mut retention = None;
        let mut grace = None;
        loop {
            if kind_word == "SESSION" && gap.is_none() && matches!(p.peek_token().token, Token::Number(..)) {
                gap = Some(self.duration(p)?);
            } else if word(p, "SIZE") {
                size = Some(self.duration(p)?);
            } else if word(p, "ADVANCE") {
                expect_word(p, "BY")?;
                advance = Some(self.duration(p)?);
            } else if word(p, "RETENTION") {
                retention = Some(self.duration(p)?);
            } else if word(p, "GRACE") {
                expect_word(p, "PERIOD")?;
                grace = Some(self.duration(p)?);
            } else {
                return Err(SqlError::parse(
                    Some(here(p)),
                    "expected SIZE, ADVANCE BY, RETENTION or GRACE PERIOD in the window",
                ));
            }
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        expect(p, Token::RParen, "')' after the window")?;
        let pos = here(p);
        let kind = match kind_word.as_str() {
            "TUMBLING" => WindowKind::Tumbling {
                size: size.ok_or_else(|| SqlError::parse(Some(pos), "TUMBLING windows need a SIZE"))?,
            },
            "HOPPING" => WindowKind::Hopping {
                size: size.ok_or_else(|| SqlError::parse(Some(pos), "HOPPING windows need a SIZE"))?,
                advance: advance.ok_or_else(|| SqlError::parse(Some(pos), "HOPPING windows need ADVANCE BY"))?,
            },
            "SESSION" => WindowKind::Session {
                gap: gap.ok_or_else(|| SqlError::parse(Some(pos), "SESSION windows need a gap"))?,
            },
            other => {
                return Err(SqlError::parse(
                    Some(pos),
                    format!("unknown window type {other}: expected TUMBLING, HOPPING or SESSION"),
                ))
            }
        };
        Ok(WindowSpec { kind, retention, grace })
    }

    /// `N UNIT` in milliseconds.
    fn duration(&self, p: &mut Parser) -> Result<i64> {
        let n = self.uint(p)? as i64;
        let pos = here(p);
        let unit = identifier(p)?;
        let ms = time_unit_ms(&unit).ok_or_else(|| {
            SqlError::parse(
                Some(pos),
                format!("unknown time unit {unit}: expected MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS"),
            )
        })?;
        n.checked_mul(ms).ok_or_else(|| SqlError::parse(Some(pos), "duration too large"))
    }
}

/// Milliseconds in a time unit (`SECOND`, `SECONDS`, ... `WEEKS`), case-insensitive.
pub fn time_unit_ms(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        "WEEK" => 7 * 86_400_000,
        _ => return None,
    })
}

/// Words that end a select item or source reference rather than name an alias.
fn is_clause_word(w: &str) -> bool {
    matches!(
        w.to_ascii_uppercase().as_str(),
        "FROM"
            | "WHERE"
            | "GROUP"
            | "PARTITION"
            | "HAVING"
            | "EMIT"
            | "LIMIT"
            | "WINDOW"
            | "JOIN"
            | "INNER"
            | "LEFT"
            | "RIGHT"
            | "FULL"
            | "OUTER"
            | "ON"
            | "WITHIN"
            | "GRACE"
            | "AS"
    )
}

/// A boolean-level expression (not a value expression in ksqlDB's grammar).
fn is_boolean_expression(e: &Expr) -> bool {
    match e {
        Expr::Binary(op, ..) => matches!(op, BinaryOp::And | BinaryOp::Or) || op.is_comparison(),
        Expr::Unary(UnaryOp::Not, _) => true,
        Expr::IsNull { .. }
        | Expr::IsDistinct { .. }
        | Expr::Between { .. }
        | Expr::InList { .. }
        | Expr::Like { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Statement {
        parse_statement(s, &TypeRegistry::new()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn group_by_takes_value_expressions_and_names_windows() {
        let reg = TypeRegistry::new();
        let err = parse_statement("SELECT COUNT(*) FROM t GROUP BY a AND b EMIT CHANGES;", &reg).unwrap_err();
        assert!(err.to_string().contains("Syntax Error"), "{err}");
        assert!(parse_statement("SELECT COUNT(*) FROM t GROUP BY x, a = b EMIT CHANGES;", &reg).is_err());
        // In parentheses a comparison is a value; a single parenthesized list is a grouping set.
        parse("SELECT COUNT(*) FROM t GROUP BY (a = b) EMIT CHANGES;");
        let Statement::Select(q) =
            parse("SELECT COUNT(*) FROM t WINDOW w TUMBLING (SIZE 1 SECOND) GROUP BY (a, b, c);")
        else {
            panic!()
        };
        assert_eq!(q.group_by.len(), 3);
        assert!(q.window.is_some());
        // ... but never one item of several: the error is at its comma, as ksqlDB's.
        let err = parse_statement("SELECT COUNT(*) FROM t GROUP BY c, (a, b);", &reg).unwrap_err();
        assert_eq!(err.to_string().lines().next(), Some("line 1:38: Syntax Error"), "{err}");
        assert!(err.to_string().contains("missing ')' at ','"), "{err}");
    }

    #[test]
    fn errors_inside_expressions_keep_their_position() {
        // CAST's type is read by our hook inside sqlparser's expression parser: its error
        // comes back through sqlparser as text, and is positioned once, where the type is.
        let reg = TypeRegistry::new();
        let err = parse_statement("SELECT ID, cast(f0 as NOPE) FROM TEST;", &reg).unwrap_err();
        let text = err.to_string();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("line 1:23: Syntax Error"), "{err}");
        assert_eq!(lines.next(), Some("Unknown type: NOPE"), "{err}");
        assert_eq!(err.pos, Some(Pos { line: 1, column: 23 }));
    }

    #[test]
    fn base_types_take_ignored_parameters() {
        let Statement::CreateSource(c) =
            parse("CREATE STREAM S (K VARCHAR(STRING) KEY, V INT(10)) WITH (kafka_topic='s');")
        else {
            panic!("not a CREATE STREAM")
        };
        assert_eq!(c.columns[0].ty, SqlType::String);
        assert_eq!(c.columns[1].ty, SqlType::Int);
        let text = "CREATE STREAM S (K STRING (KEY)) WITH (kafka_topic='s');";
        let e = parse_statement(text, &TypeRegistry::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("line 1:28: Syntax Error\nExpecting {{'STRING', INTEGER_VALUE}}\nStatement: {text}")
        );
    }

    #[test]
    fn create_stream_with_columns() {
        let Statement::CreateSource(c) = parse(
            "CREATE STREAM TEST (K STRING KEY, ID bigint, `Name` varchar, M MAP<STRING, ARRAY<INT>>) WITH (kafka_topic='t', value_format='JSON');",
        ) else {
            panic!()
        };
        assert_eq!(c.name, "TEST");
        assert_eq!(c.columns.len(), 4);
        assert!(c.columns[0].key);
        assert_eq!(c.columns[2].name, "Name");
        assert_eq!(
            c.columns[3].ty,
            SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Array(Box::new(SqlType::Int))))
        );
        assert_eq!(c.properties.get("KAFKA_TOPIC"), Some(&Value::String("t".into())));
    }

    #[test]
    fn select_with_ksql_expressions() {
        let Statement::CreateAs(c) = parse(
            "CREATE STREAM S AS SELECT K, TRANSFORM(A, x => x + 1) AS T, STRUCT(F := 1), S->F1, CAST(ID AS DECIMAL(4, 2)), A[1] FROM I WHERE ID > 100 EMIT CHANGES;",
        ) else {
            panic!()
        };
        assert_eq!(c.query.items.len(), 6);
        assert!(matches!(c.query.filter, Some(Expr::Binary(BinaryOp::Gt, ..))));
    }

    #[test]
    fn errors_are_positioned() {
        let e = parse_statement("CREATE STREAM S AS SELECT FROM", &TypeRegistry::new()).unwrap_err();
        assert!(e.pos.is_some(), "{e}");
        let e = parse_statement("SELECT 9223372036854775808 FROM X;", &TypeRegistry::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Failed to prepare statement: line 1:9: Invalid numeric literal: 9223372036854775808"),
            "{e}"
        );
    }

    #[test]
    fn explain_print_and_functions() {
        let Statement::Explain(ExplainTarget::Query(id)) = parse("EXPLAIN CSAS_OUT_0;") else { panic!() };
        assert_eq!(id, "CSAS_OUT_0");
        let Statement::Explain(ExplainTarget::Statement(inner)) =
            parse("explain CREATE STREAM OUT AS SELECT * FROM S WHERE X > 1;")
        else {
            panic!()
        };
        assert!(matches!(*inner, Statement::CreateAs(_)));
        let Statement::Explain(ExplainTarget::Statement(inner)) = parse("EXPLAIN SELECT * FROM S EMIT CHANGES;") else {
            panic!()
        };
        assert!(matches!(*inner, Statement::Select(_)));
        assert!(matches!(
            parse("EXPLAIN INSERT INTO T SELECT * FROM S;"),
            Statement::Explain(ExplainTarget::Statement(_))
        ));
        let Statement::Print { topic, from_beginning, interval, limit } =
            parse("PRINT 'my-topic' FROM BEGINNING INTERVAL 2 LIMIT 10;")
        else {
            panic!()
        };
        assert_eq!((topic.as_str(), from_beginning, interval, limit), ("my-topic", true, Some(2), Some(10)));
        let Statement::Print { topic, from_beginning, interval, limit } = parse("PRINT orders SAMPLE 3") else {
            panic!()
        };
        assert_eq!((topic.as_str(), from_beginning, interval, limit), ("orders", false, Some(3), None));
        assert!(matches!(parse("SHOW FUNCTIONS;"), Statement::Show(Show::Functions)));
        assert!(matches!(parse("LIST FUNCTIONS"), Statement::Show(Show::Functions)));
        let Statement::Describe { name, functions: true, .. } = parse("DESCRIBE FUNCTION explode;") else { panic!() };
        assert_eq!(name.as_deref(), Some("EXPLODE"));
        assert!(parse_statement("PRINT 'x' LIMIT x", &TypeRegistry::new()).is_err());
    }

    #[test]
    fn windows_and_joins() {
        let Statement::Select(s) = parse(
            "SELECT * FROM A a JOIN B b WITHIN 1 HOUR GRACE PERIOD 10 SECONDS ON a.id = b.id WINDOW TUMBLING (SIZE 30 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY a.id EMIT FINAL;",
        ) else {
            panic!()
        };
        assert_eq!(s.joins[0].within, Some((3_600_000, 3_600_000)));
        assert_eq!(s.window.unwrap().kind, WindowKind::Tumbling { size: 30_000 });
        assert_eq!(s.emit, Some(Emit::Final));
    }
}
