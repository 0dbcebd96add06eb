//! The JSON format's fast path: a JSON object scanned byte by byte straight into a row's column
//! values (no `serde_json::Value` tree, no field-name strings), and JSON text written without
//! intermediate strings.
//!
//! Results are the general path's (`from_json` over a parsed `serde_json::Value`), which stays
//! the reference: values of types the scanner does not convert itself (DECIMAL, dates and
//! times, BYTES, ARRAY, MAP, STRUCT) are parsed into a `serde_json::Value` and handed to
//! `from_json`; records that are not well-formed objects, or whose values do not convert, are
//! left to the general path whole, so errors are worded by it alone. A property test holds the
//! two paths to the same answers.

use serde_json::Value as Json;

use super::from_json;
use crate::types::{Field, SqlType};
use crate::value::Value;

/// Decodes `bytes` holding a JSON object into one value per column (fields matched by name,
/// exactly or else ignoring ASCII case; missing fields are null). `None` when the scanner
/// declines: the caller takes the general path.
#[cfg(test)]
pub(super) fn decode_object(columns: &[Field], bytes: &[u8]) -> Option<Vec<Value>> {
    let mut row = vec![];
    decode_object_into(columns, bytes, &mut row, 0).then_some(row)
}

/// [`decode_object`] appending the values to `row`. `false` (and `row` as it was) when the
/// bytes are not a well-formed JSON object whose fields all convert to their columns' types,
/// or use what the scanner leaves to serde_json (escaped field names): the general path then
/// decides, and words any error.
///
/// `unread`: bit `i` set for a VARCHAR column `i` the caller will not read: its value is
/// checked as any ignored field's (every JSON value converts to a VARCHAR, so the answer and
/// its errors are the same) and left null, its string never built.
pub(super) fn decode_object_into(columns: &[Field], bytes: &[u8], row: &mut Vec<Value>, unread: u64) -> bool {
    debug_assert!(
        columns.iter().enumerate().take(64).all(|(i, c)| unread & (1 << i) == 0 || c.ty == SqlType::String),
        "only VARCHAR columns go unread"
    );
    let start = row.len();
    let decoded = (Scanner { bytes, at: 0 }).object(columns, row, unread).is_ok();
    if !decoded {
        row.truncate(start);
    }
    decoded
}

/// The scanner declines the input; the general path takes it.
struct Decline;

/// A JSON object scanned byte by byte into a row: no tokens, no field-name strings, string
/// values copied once into their `Value::String`. Strict: what it does not accept (malformed
/// JSON, a value its column's type cannot take), the general path parses instead
/// ([`Decline`]), so both agree on what is valid and on every error.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, b: u8) -> Result<(), Decline> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(Decline)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Decline> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Decline)
        }
    }

    fn object(&mut self, columns: &[Field], row: &mut Vec<Value>, unread: u64) -> Result<(), Decline> {
        let base = row.len();
        row.extend(std::iter::repeat_with(|| Value::Null).take(columns.len()));
        let mut exact = Flags::new(columns.len());
        let mut loose = Flags::new(columns.len());
        self.skip_ws();
        self.expect(b'{')?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                self.skip_ws();
                let (key, escaped) = self.string_span()?;
                if escaped {
                    return Err(Decline);
                }
                let target = match match_column(columns, key) {
                    KeyMatch::Exact(i) => {
                        exact.set(i);
                        Some(i)
                    }
                    KeyMatch::Loose(i) if !loose.get(i) => {
                        loose.set(i);
                        (!exact.get(i)).then_some(i)
                    }
                    // Two fields for one column, neither of its exact name: which one the
                    // general path takes depends on its map's order.
                    KeyMatch::Loose(_) => return Err(Decline),
                    // serde_json checks every field name's UTF-8; a matched one is a column's name.
                    KeyMatch::None => {
                        std::str::from_utf8(key).map_err(|_| Decline)?;
                        None
                    }
                };
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
                let target = target.filter(|&i| i >= 64 || unread & (1 << i) == 0);
                match target {
                    Some(i) => row[base + i] = self.value(&columns[i].ty)?,
                    None => {
                        let span = self.skip_value()?;
                        // The general path parses every value, ignored or not: what skipping
                        // does not check (UTF-8, escapes, numbers out of range, nesting), the
                        // same parse checks here.
                        let plain = match span[0] {
                            b'"' => !span.contains(&b'\\') && std::str::from_utf8(span).is_ok(),
                            b'-' | b'0'..=b'9' => span.len() < 20 && !span.iter().any(|b| matches!(b, b'e' | b'E')),
                            b'[' | b'{' => false,
                            _ => true,
                        };
                        if !plain {
                            serde_json::from_slice::<Json>(span).map_err(|_| Decline)?;
                        }
                    }
                }
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(Decline),
                }
            }
        }
        self.skip_ws();
        if self.at != self.bytes.len() {
            return Err(Decline);
        }
        Ok(())
    }

    /// At a string's opening quote: its raw contents (between the quotes), and whether they
    /// hold escapes. The position moves past the closing quote.
    #[inline]
    fn string_span(&mut self) -> Result<(&'a [u8], bool), Decline> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at = find_special(self.bytes, self.at);
            match self.peek() {
                Some(b'"') => {
                    let span = &self.bytes[start..self.at];
                    self.at += 1;
                    return Ok((span, escaped));
                }
                Some(b'\\') if self.at + 1 < self.bytes.len() => {
                    escaped = true;
                    self.at += 2;
                }
                // A control character, or the end of the input.
                _ => return Err(Decline),
            }
        }
    }

    /// At a string: its text (escapes resolved by serde_json, UTF-8 checked).
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, Decline> {
        let from = self.at;
        let (span, escaped) = self.string_span()?;
        if escaped {
            let text: String = serde_json::from_slice(&self.bytes[from..self.at]).map_err(|_| Decline)?;
            Ok(text.into())
        } else {
            std::str::from_utf8(span).map(Into::into).map_err(|_| Decline)
        }
    }

    /// At a number: its text, checked against JSON's grammar, and whether it is an integer.
    fn number(&mut self) -> Result<(&'a [u8], bool), Decline> {
        let start = self.at;
        let digits = |s: &mut Self| {
            let from = s.at;
            while let Some(b'0'..=b'9') = s.peek() {
                s.at += 1;
            }
            s.at - from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let first = self.at;
        let n = digits(self);
        if n == 0 || (n > 1 && self.bytes[first] == b'0') {
            return Err(Decline);
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            if digits(self) == 0 {
                return Err(Decline);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(Decline);
            }
        }
        Ok((&self.bytes[start..self.at], integer))
    }

    /// At a value: converted to the column's type.
    fn value(&mut self, ty: &SqlType) -> Result<Value, Decline> {
        let scalar =
            matches!(ty, SqlType::Boolean | SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::String);
        if !scalar {
            let span = self.skip_value()?;
            let json: Json = serde_json::from_slice(span).map_err(|_| Decline)?;
            return from_json(ty, &json).map_err(|_| Decline);
        }
        let converted = match self.peek() {
            Some(b'"') => match (self.string()?, ty) {
                (std::borrow::Cow::Owned(s), SqlType::String) => Some(Value::String(s)),
                (s, ty) => from_str(ty, &s),
            },
            Some(b't') => {
                self.literal(b"true")?;
                from_bool(ty, true)
            }
            Some(b'f') => {
                self.literal(b"false")?;
                from_bool(ty, false)
            }
            Some(b'n') => {
                self.literal(b"null")?;
                Some(Value::Null)
            }
            Some(b'-' | b'0'..=b'9') => {
                let (text, integer) = self.number()?;
                // Integers as serde_json reads them: i64 when negative, u64 otherwise, f64
                // when out of range; fractions by serde_json's own float parser.
                let as_int = if !integer || text == b"-0" {
                    // serde_json reads -0 as the float -0.0.
                    None
                } else if let Some(digits) = text.strip_prefix(b"-") {
                    parse_u64(digits).and_then(|n| 0i64.checked_sub_unsigned(n)).map(|n| from_i64(ty, n))
                } else {
                    parse_u64(text).map(|n| from_u64(ty, n))
                };
                match as_int {
                    Some(v) => v,
                    None => from_f64(ty, serde_json::from_slice::<f64>(text).map_err(|_| Decline)?),
                }
            }
            Some(b'[' | b'{') => {
                let span = self.skip_value()?;
                match ty {
                    SqlType::String => {
                        let json: Json = serde_json::from_slice(span).map_err(|_| Decline)?;
                        Some(Value::String(json.to_string()))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        converted.ok_or(Decline)
    }

    /// Skips a value, checking only that brackets balance and strings end (serde_json checks
    /// the rest where the value is used): returns its text.
    fn skip_value(&mut self) -> Result<&'a [u8], Decline> {
        let start = self.at;
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(Decline),
                Some(b'"') => {
                    self.string_span()?;
                }
                Some(b'[' | b'{') => {
                    depth += 1;
                    self.at += 1;
                }
                Some(b']' | b'}') => {
                    if depth == 0 {
                        return Err(Decline);
                    }
                    depth -= 1;
                    self.at += 1;
                }
                Some(b',' | b':' | b' ' | b'\n' | b'\r' | b'\t') if depth > 0 => self.at += 1,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(_) => return Err(Decline),
            }
            if depth == 0 {
                return Ok(&self.bytes[start..self.at]);
            }
        }
    }
}

/// Which column a field name belongs to: the one of exactly its name, else the first of its
/// name in another ASCII case. One pass; names of another length cost a comparison each.
fn match_column(columns: &[Field], key: &[u8]) -> KeyMatch {
    let mut loose = None;
    for (i, c) in columns.iter().enumerate() {
        let name = c.name.as_bytes();
        if name.len() != key.len() {
            continue;
        }
        // Byte by byte (names are short: no memcmp call), exactness noted on the way.
        let mut exact = true;
        let mut same = true;
        for (a, b) in name.iter().zip(key) {
            if a != b {
                if !a.eq_ignore_ascii_case(b) {
                    same = false;
                    break;
                }
                exact = false;
            }
        }
        if same && exact {
            return KeyMatch::Exact(i);
        }
        if same && loose.is_none() {
            loose = Some(i);
        }
    }
    loose.map_or(KeyMatch::None, KeyMatch::Loose)
}

/// Decimal digits (checked by the caller) as a u64; `None` when they overflow it.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add((d - b'0') as u64))
}

/// The index of the first byte at or after `from` that a JSON string cannot hold as it is
/// (`"`, `\`, or a control character below 0x20), or `bytes.len()`. Eight bytes at a time.
#[inline]
fn find_special(bytes: &[u8], mut from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bytes that are zero have their high bit set here; the lowest set bit is always a real
    // match (a borrow only spreads to higher bytes).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = bytes.get(from..from + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let special = zero(x ^ (ONES * b'"' as u64))
            | zero(x ^ (ONES * b'\\' as u64))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if special != 0 {
            return from + (special.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while let Some(&b) = bytes.get(from) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return from;
        }
        from += 1;
    }
    from
}

/// One flag per column, without an allocation for up to 64 columns.
enum Flags {
    Small(u64),
    Large(Vec<bool>),
}

impl Flags {
    fn new(n: usize) -> Flags {
        if n <= 64 {
            Flags::Small(0)
        } else {
            Flags::Large(vec![false; n])
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Flags::Small(bits) => bits & (1 << i) != 0,
            Flags::Large(v) => v[i],
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Flags::Small(bits) => *bits |= 1 << i,
            Flags::Large(v) => v[i] = true,
        }
    }
}

enum KeyMatch {
    Exact(usize),
    Loose(usize),
    None,
}

// Conversions of JSON scalars to a column of a scalar type (BOOLEAN, INT, BIGINT, DOUBLE,
// STRING), as `from_json` converts them; `None` where it fails (the general path then words
// the error).

fn from_bool(ty: &SqlType, b: bool) -> Option<Value> {
    match ty {
        SqlType::Boolean => Some(Value::Boolean(b)),
        SqlType::String => Some(Value::String(b.to_string())),
        _ => None,
    }
}

fn from_i64(ty: &SqlType, n: i64) -> Option<Value> {
    match ty {
        SqlType::Int => Some(Value::Int(n as i32)),
        SqlType::BigInt => Some(Value::BigInt(n)),
        SqlType::Double => Some(Value::Double(n as f64)),
        SqlType::String => Some(Value::String(n.to_string())),
        _ => None,
    }
}

fn from_u64(ty: &SqlType, n: u64) -> Option<Value> {
    match ty {
        SqlType::Double => Some(Value::Double(n as f64)),
        SqlType::String => Some(Value::String(n.to_string())),
        // As serde_json's `Number::as_i64`, else `as_f64`, would have it.
        _ => from_i64(ty, i64::try_from(n).unwrap_or(n as f64 as i64)),
    }
}

fn from_f64(ty: &SqlType, f: f64) -> Option<Value> {
    match ty {
        SqlType::Int => Some(Value::Int(f as i64 as i32)),
        SqlType::BigInt => Some(Value::BigInt(f as i64)),
        SqlType::Double => Some(Value::Double(f)),
        SqlType::String => Some(Value::String(Json::from(f).to_string())),
        _ => None,
    }
}

fn from_str(ty: &SqlType, s: &str) -> Option<Value> {
    match ty {
        SqlType::Boolean => Some(Value::Boolean(s.eq_ignore_ascii_case("true"))),
        SqlType::Int => s.trim().parse().map(Value::Int).ok(),
        SqlType::BigInt => s.trim().parse().map(Value::BigInt).ok(),
        SqlType::Double => s.trim().parse().map(Value::Double).ok(),
        _ => Some(Value::String(s.to_string())),
    }
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
pub(super) fn write_json_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let i = find_special(bytes, start);
        out.push_str(&s[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push('"');
}

/// Writes an integer without an intermediate string.
pub(super) fn write_int<I: itoa::Integer>(n: I, out: &mut String) {
    out.push_str(itoa::Buffer::new().format(n));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, Serde};

    fn field(name: &str, ty: SqlType) -> Field {
        Field { name: name.into(), ty }
    }

    /// The general path: a parsed `serde_json::Value`, each column through `from_json`.
    fn reference(columns: &[Field], bytes: &[u8]) -> Result<Vec<Value>, String> {
        let json: Json = serde_json::from_slice(bytes).map_err(|e| format!("Failed to deserialize JSON: {e}"))?;
        let Json::Object(map) = &json else { panic!("objects only") };
        columns
            .iter()
            .map(|c| {
                let v = map
                    .get(&c.name)
                    .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(&c.name)).map(|(_, v)| v));
                v.map_or(Ok(Value::Null), |v| from_json(&c.ty, v))
            })
            .collect()
    }

    /// Columns of every type the scanner converts itself, and some it hands to `from_json`.
    fn test_columns() -> [Field; 8] {
        [
            field("ID", SqlType::BigInt),
            field("N", SqlType::Int),
            field("NAME", SqlType::String),
            field("PRICE", SqlType::Double),
            field("OK", SqlType::Boolean),
            field("PRICE_D", SqlType::Decimal { precision: 6, scale: 2 }),
            field("TAGS", SqlType::Array(Box::new(SqlType::String))),
            field("TS", SqlType::Timestamp),
        ]
    }

    #[test]
    fn the_fast_path_decodes_as_the_general_path() {
        let columns = test_columns();
        let cases: &[&str] = &[
            r#"{"ID": 1, "N": 2, "NAME": "a\"b\u00e9", "PRICE": 1.5, "OK": true, "PRICE_D": 12.25, "TAGS": ["x"], "TS": 5}"#,
            r#"{"id": 7, "Name": "loose", "NAME": "exact", "extra": {"deep": [1, 2, {"x": null}]}}"#,
            r#"{"ID": "42", "N": " 3 ", "PRICE": "2.5", "OK": "TRUE", "NAME": 12}"#,
            r#"{"ID": 18446744073709551615, "N": 3.9, "PRICE": 7, "NAME": 1.5e300}"#,
            r#"{"NAME": [1, "a"], "ID": null, "TS": "2026-01-01T00:00:00.000"}"#,
            r#"{"NAME": {"b": 1, "a": [true]}}"#,
            r#"{}"#,
            r#"{"ID": 1, "ID": 2}"#,
            r#"{"ID": true}"#,
            r#"{"N": "x"}"#,
            r#"{"PRICE_D": "abc"}"#,
            r#"{"TAGS": 3}"#,
            r#"{"ID": 1,"#,
            r#"{"ID": 1} x"#,
        ];
        // Well-formed objects whose values convert: the scanner takes them.
        for case in &cases[..8] {
            let fast = decode_object(&columns, case.as_bytes()).unwrap_or_else(|| panic!("scanned: {case}"));
            assert_eq!(Ok(fast), reference(&columns, case.as_bytes()), "{case}");
        }
        // The others are left to the general path.
        for case in &cases[8..] {
            assert!(decode_object(&columns, case.as_bytes()).is_none(), "{case}");
        }
        assert!(decode_object(&columns, b" [1]").is_none());
        assert!(decode_object(&columns, b"null").is_none());
    }

    /// JSON text from pieces that exercise the scanner: fields in any case, every kind of
    /// value, escapes, nesting, whitespace; then sometimes damaged (cut, or a byte changed).
    fn json_object() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just("ID"),
            Just("id"),
            Just("N"),
            Just("NAME"),
            Just("Name"),
            Just("PRICE"),
            Just("OK"),
            Just("PRICE_D"),
            Just("TAGS"),
            Just("TS"),
            Just("other"),
            Just("na\\u004dE"),
            Just("é"),
        ];
        let scalar = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
            Just("-0".to_string()),
            Just("1e400".to_string()),
            Just("01".to_string()),
            Just("1.".to_string()),
            Just("-".to_string()),
            Just("2.5E-3".to_string()),
            "[a-zA-Z0-9 é\"\\\\\n]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u00e9\ud83d\ude00""#.to_string()),
            Just(r#""bad \x escape""#.to_string()),
            Just("\"12.25\"".to_string()),
            Just("\" 42 \"".to_string()),
        ];
        let value = scalar.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(inner, 0..3).prop_map(|v| {
                    let fields: Vec<String> = v.iter().enumerate().map(|(i, x)| format!("\"k{i}\": {x}")).collect();
                    format!("{{{}}}", fields.join(", "))
                }),
            ]
        });
        let fields = proptest::collection::vec((name, value, prop_oneof![Just(""), Just(" "), Just("\n\t ")]), 0..8);
        (fields, 0..4u8, any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(fields, damage, at, byte)| {
            let body: Vec<String> = fields.iter().map(|(n, v, ws)| format!("{ws}\"{n}\"{ws}:{ws}{v}{ws}")).collect();
            let mut text = format!("{{{}}}", body.join(",")).into_bytes();
            match damage {
                0 if text.len() > 1 => text.truncate(at.index(text.len())),
                1 => {
                    let i = at.index(text.len());
                    text[i] = byte;
                }
                _ => {}
            }
            text
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]
        #[test]
        fn the_scanner_agrees_with_the_general_path(text in json_object()) {
            let columns = test_columns();
            // What the scanner answers is the general path's answer.
            if let Some(fast) = decode_object(&columns, &text) {
                proptest::prop_assert_eq!(Ok(fast), reference(&columns, &text));
            }
        }

        #[test]
        fn unread_strings_change_nothing_else(text in json_object()) {
            // NAME (column 2) unread: the scanner accepts and declines the same texts, and
            // answers the same row but for NAME, left null.
            let columns = test_columns();
            let mut all = vec![];
            let mut unread = vec![];
            let read_all = decode_object_into(&columns, &text, &mut all, 0);
            proptest::prop_assert_eq!(decode_object_into(&columns, &text, &mut unread, 1 << 2), read_all);
            if read_all {
                all[2] = Value::Null;
                proptest::prop_assert_eq!(unread, all);
            }
        }
    }

    #[test]
    fn wide_rows_decode_too() {
        let columns: Vec<Field> = (0..70).map(|i| field(&format!("C{i}"), SqlType::Int)).collect();
        let row = decode_object(&columns, br#"{"c69": 1, "C69": 2, "c0": 3, "C68": 4}"#).unwrap();
        assert_eq!(
            (&row[0], &row[68], &row[69], &row[1]),
            (&Value::Int(3), &Value::Int(4), &Value::Int(2), &Value::Null)
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in ["plain", "q\"uote\\", "nl\n\r\t\u{8}\u{c}", "ctl\u{1}\u{1f}\u{7f}", "é✓", ""] {
            let mut out = String::new();
            write_json_string(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn serialize_then_deserialize_round_trips() {
        let columns = [field("A", SqlType::String), field("B", SqlType::BigInt), field("C", SqlType::Int)];
        let serde = Serde::new(Format::Json);
        let row = vec![Value::String("x\"y".into()), Value::BigInt(-5), Value::Null];
        let bytes = serde.serialize(&columns, &row).unwrap().unwrap();
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), r#"{"A":"x\"y","B":-5,"C":null}"#);
        assert_eq!(serde.deserialize(&columns, Some(&bytes)).unwrap(), row);
    }
}
