//! String and BYTES functions: case, trimming, padding, splitting, regular expressions, URL
//! parts, encodings and masking.

use super::{f, Sig};
use crate::error::Result;
use crate::functions::{base64_decode, base64_encode, ScalarFn};
use crate::types::SqlType as T;
use crate::value::Value;

fn string(t: &T) -> bool {
    *t == T::String
}

fn bytes(t: &T) -> bool {
    *t == T::Bytes
}

fn int(t: &T) -> bool {
    *t == T::Int
}

fn text(v: &Value) -> Option<&str> {
    v.as_str()
}

/// Java's `String.trim`: strips every char up to and including the space.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// A string function of one STRING argument, null in null out.
fn str1(s: &Sig, func: ScalarFn) -> Result<(ScalarFn, T)> {
    s.arity(1, 1)?;
    s.check(s.is(0, string))?;
    Ok((func, T::String))
}

macro_rules! map_str {
    ($e:expr) => {
        f!(|a, _| Ok(text(&a[0]).map(|s| Value::String($e(s))).unwrap_or(Value::Null)))
    };
}

/// The start and end of SUBSTRING over a sequence of `len` units (ksqlDB semantics: 1-based,
/// negative positions count from the end, everything clamped).
fn substring_range(len: usize, pos: i64, count: Option<i64>) -> (usize, usize) {
    let len = len as i64;
    let start = if pos < 0 { (len + pos).max(0) } else { (pos - 1).clamp(0, len) };
    let end = match count {
        Some(c) => (start + c).min(len).max(start),
        None => len,
    };
    (start as usize, end as usize)
}

/// Splits `items` on every occurrence of `sep`; an empty separator splits into single units.
fn split_units<U: PartialEq + Clone>(items: &[U], sep: &[U]) -> Vec<Vec<U>> {
    if sep.is_empty() {
        if items.is_empty() {
            return vec![vec![]];
        }
        return items.iter().map(|u| vec![u.clone()]).collect();
    }
    let mut out = vec![];
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= items.len() {
        if items[i..i + sep.len()] == *sep {
            out.push(items[start..i].to_vec());
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(items[start..].to_vec());
    out
}

/// LPAD/RPAD over units: pads (or truncates) `input` to `len` units with `fill` cycled.
fn pad_units<U: Clone>(input: &[U], len: i64, fill: &[U], left: bool) -> Option<Vec<U>> {
    if len < 0 || (fill.is_empty() && len as usize > input.len()) {
        return None;
    }
    let len = len as usize;
    if input.len() >= len {
        return Some(input[..len].to_vec());
    }
    let padding: Vec<U> = fill.iter().cloned().cycle().take(len - input.len()).collect();
    Some(if left {
        padding.into_iter().chain(input.iter().cloned()).collect()
    } else {
        input.iter().cloned().chain(padding).collect()
    })
}

/// Hex digits, optionally as `0x...` (odd length allowed) or `X'...'`.
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let padded;
    let s = if let Some(rest) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        padded = if rest.len() % 2 == 1 { format!("0{rest}") } else { rest.to_string() };
        padded.as_str()
    } else if (s.starts_with("X'") || s.starts_with("x'")) && s.ends_with('\'') && s.len() >= 3 {
        &s[2..s.len() - 1]
    } else {
        s
    };
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn hex_encode(b: &[u8], upper: bool) -> String {
    b.iter().map(|x| if upper { format!("{x:02X}") } else { format!("{x:02x}") }).collect()
}

/// Bytes of a string in an encoding (utf8, ascii, hex, base64).
pub(crate) fn string_to_bytes(s: &str, enc: &str) -> std::result::Result<Vec<u8>, String> {
    Ok(match enc.to_ascii_lowercase().as_str() {
        "utf8" | "utf-8" => s.as_bytes().to_vec(),
        "ascii" => s.chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' }).collect(),
        "hex" => hex_decode(s).ok_or_else(|| format!("'{s}' is not a valid hex string"))?,
        "base64" => base64_decode(s).ok_or_else(|| format!("'{s}' is not a valid base64 string"))?,
        other => return Err(format!("Supported encoding types are: hex, utf8, ascii and base64, got '{other}'")),
    })
}

/// A string from bytes in an encoding; `upper_hex` picks the hex digit case.
pub(crate) fn bytes_to_string(b: &[u8], enc: &str, upper_hex: bool) -> std::result::Result<String, String> {
    Ok(match enc.to_ascii_lowercase().as_str() {
        "utf8" | "utf-8" => String::from_utf8_lossy(b).into_owned(),
        "ascii" => b.iter().map(|&x| if x.is_ascii() { x as char } else { '\u{FFFD}' }).collect(),
        "hex" => hex_encode(b, upper_hex),
        "base64" => base64_encode(b),
        other => return Err(format!("Supported encoding types are: hex, utf8, ascii and base64, got '{other}'")),
    })
}

// ---- regular expressions ----

/// Compiles a (Java-syntax) pattern, caching recent patterns per thread.
fn regex(pattern: &str) -> std::result::Result<regex::Regex, String> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static CACHE: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
    }
    if let Some(r) = CACHE.with(|c| c.borrow().get(pattern).cloned()) {
        return Ok(r);
    }
    let r = regex::Regex::new(pattern).map_err(|e| format!("Invalid regular expression pattern: {pattern}: {e}"))?;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(pattern.to_string(), r.clone());
    });
    Ok(r)
}

/// A Java `Matcher.replaceAll` replacement (`$n`, `${name}`, `\x` escapes) in the `regex`
/// crate's syntax.
fn java_replacement(rep: &str) -> String {
    let mut out = String::new();
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(x) => out.push(x),
                None => {}
            },
            '$' => {
                if chars.peek() == Some(&'{') {
                    out.push('$');
                } else {
                    let mut digits = String::new();
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        digits.push(*d);
                        chars.next();
                    }
                    if digits.is_empty() {
                        out.push_str("$$");
                    } else {
                        out.push_str(&format!("${{{digits}}}"));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn group_index(a: &[Value], i: usize) -> std::result::Result<Option<usize>, ()> {
    match a.get(i) {
        None => Ok(Some(0)),
        Some(v) => match v.as_i64() {
            Some(g) if g >= 0 => Ok(Some(g as usize)),
            Some(_) => Ok(None),
            None => Err(()),
        },
    }
}

// ---- URLs ----

/// The parts of a URI reference (RFC 3986), as Java's `java.net.URI` splits it.
#[derive(Default, Debug, PartialEq)]
pub(crate) struct UrlParts<'a> {
    pub scheme: Option<&'a str>,
    pub host: Option<&'a str>,
    pub port: Option<i32>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

pub(crate) fn parse_url(url: &str) -> Option<UrlParts<'_>> {
    if url.chars().any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>') {
        return None;
    }
    let mut parts = UrlParts::default();
    let mut rest = url;
    if let Some(i) = rest.find('#') {
        parts.fragment = Some(&rest[i + 1..]);
        rest = &rest[..i];
    }
    if let Some(colon) = rest.find(':') {
        let scheme = &rest[..colon];
        let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid && !rest[..colon].contains(['/', '?']) {
            parts.scheme = Some(scheme);
            rest = &rest[colon + 1..];
        }
    }
    if let Some(i) = rest.find('?') {
        parts.query = Some(&rest[i + 1..]);
        rest = &rest[..i];
    }
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        let authority = &after[..end];
        parts.path = &after[end..];
        let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
        let (host, port) = if hostport.starts_with('[') {
            match hostport.find(']') {
                Some(i) => (&hostport[..=i], hostport[i + 1..].strip_prefix(':')),
                None => return None,
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !host.is_empty() {
            parts.host = Some(host);
        }
        match port {
            Some("") | None => {}
            Some(p) => parts.port = Some(p.parse().ok()?),
        }
    } else {
        parts.path = rest;
    }
    Some(parts)
}

/// Decodes `%XX` escapes (and `+` as space when `plus`); invalid escapes fail.
pub(crate) fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            x => {
                out.push(x);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Java's `URLEncoder.encode(s, UTF-8)`.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn url_part(a: &[Value], part: fn(&UrlParts) -> Option<Value>) -> Value {
    let Some(url) = text(&a[0]) else { return Value::Null };
    parse_url(url).and_then(|p| part(&p)).unwrap_or(Value::Null)
}

fn decoded(s: Option<&str>) -> Option<Value> {
    s.and_then(|s| percent_decode(s, false)).map(Value::String)
}

// ---- masking ----

#[derive(Clone, Copy)]
struct Masks {
    upper: Option<char>,
    lower: Option<char>,
    digit: Option<char>,
    other: Option<char>,
}

/// Masking characters from the optional trailing arguments; a NULL argument keeps that class.
fn masks(a: &[Value], from: usize) -> Masks {
    let get = |i: usize, default: char| -> Option<char> {
        match a.get(i) {
            None => Some(default),
            Some(Value::String(s)) => s.chars().next(),
            Some(_) => None,
        }
    };
    Masks { upper: get(from, 'X'), lower: get(from + 1, 'x'), digit: get(from + 2, 'n'), other: get(from + 3, '-') }
}

fn mask_char(c: char, m: Masks) -> char {
    let r = if c.is_uppercase() {
        m.upper
    } else if c.is_lowercase() {
        m.lower
    } else if c.is_ascii_digit() {
        m.digit
    } else {
        m.other
    };
    r.unwrap_or(c)
}

/// Masks the characters of `s` whose index satisfies `masked`.
fn mask_where(s: &str, m: Masks, masked: impl Fn(usize, usize) -> bool) -> String {
    let n = s.chars().count();
    s.chars().enumerate().map(|(i, c)| if masked(i, n) { mask_char(c, m) } else { c }).collect()
}

fn mask_fn(a: &[Value], which: u8) -> crate::expr::EvalResult {
    let Some(s) = text(&a[0]) else { return Ok(Value::Null) };
    if which == 0 {
        return Ok(Value::String(mask_where(s, masks(a, 1), |_, _| true)));
    }
    let Some(k) = a[1].as_i64() else { return Ok(Value::Null) };
    if k < 0 {
        return Err(format!("function input must be >= 0, got {k}"));
    }
    let k = k as usize;
    let m = masks(a, 2);
    Ok(Value::String(match which {
        1 => mask_where(s, m, |i, _| i >= k),     // MASK_KEEP_LEFT
        2 => mask_where(s, m, |i, n| i + k < n),  // MASK_KEEP_RIGHT
        3 => mask_where(s, m, |i, _| i < k),      // MASK_LEFT
        _ => mask_where(s, m, |i, n| i + k >= n), // MASK_RIGHT
    }))
}

fn uuid_string(b: &[u8]) -> String {
    let h = hex_encode(b, false);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

pub(super) fn resolve(s: &Sig) -> Result<Option<(ScalarFn, T)>> {
    Ok(Some(match s.name {
        "LCASE" | "LOWER" => str1(s, map_str!(|s: &str| s.to_lowercase()))?,
        "UCASE" | "UPPER" => str1(s, map_str!(|s: &str| s.to_uppercase()))?,
        "TRIM" => str1(s, map_str!(|s: &str| java_trim(s).to_string()))?,
        "LTRIM" => str1(s, map_str!(|s: &str| s.trim_start_matches(|c: char| c <= ' ').to_string()))?,
        "RTRIM" => str1(s, map_str!(|s: &str| s.trim_end_matches(|c: char| c <= ' ').to_string()))?,
        "INITCAP" => str1(
            s,
            map_str!(|s: &str| {
                let mut out = String::new();
                let mut start = true;
                for c in s.chars() {
                    if c.is_whitespace() {
                        start = true;
                        out.push(c);
                    } else if start {
                        out.extend(c.to_uppercase());
                        start = false;
                    } else {
                        out.extend(c.to_lowercase());
                    }
                }
                out
            }),
        )?,
        "LEN" | "LENGTH" => {
            s.arity(1, 1)?;
            s.check(s.is(0, |t| string(t) || bytes(t)))?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::String(s) => Value::Int(s.chars().count() as i32),
                    Value::Bytes(b) => Value::Int(b.len() as i32),
                    _ => Value::Null,
                })),
                T::Int,
            )
        }
        "CONCAT" => {
            s.check(s.n() >= 1)?;
            if s.all(string) {
                (super::concat_fn(), T::String)
            } else {
                s.check(s.all(bytes))?;
                (
                    f!(|a, _| {
                        let mut out = vec![];
                        for v in a {
                            if let Value::Bytes(b) = v {
                                out.extend_from_slice(b);
                            }
                        }
                        Ok(Value::Bytes(out))
                    }),
                    T::Bytes,
                )
            }
        }
        "CONCAT_WS" => {
            s.check(s.n() >= 2)?;
            if s.all(string) {
                (
                    f!(|a, _| {
                        let Value::String(sep) = &a[0] else { return Ok(Value::Null) };
                        let parts: Vec<&str> = a[1..].iter().filter_map(Value::as_str).collect();
                        Ok(Value::String(parts.join(sep)))
                    }),
                    T::String,
                )
            } else {
                s.check(s.all(bytes))?;
                (
                    f!(|a, _| {
                        let Value::Bytes(sep) = &a[0] else { return Ok(Value::Null) };
                        let parts: Vec<&[u8]> = a[1..]
                            .iter()
                            .filter_map(|v| match v {
                                Value::Bytes(b) => Some(b.as_slice()),
                                _ => None,
                            })
                            .collect();
                        Ok(Value::Bytes(parts.join(sep.as_slice())))
                    }),
                    T::Bytes,
                )
            }
        }
        "SUBSTRING" => {
            s.arity(2, 3)?;
            let is_bytes = s.ty(0) == Some(&T::Bytes);
            s.check(s.is(0, |t| string(t) || bytes(t)) && s.is(1, int) && (s.n() == 2 || s.is(2, int)))?;
            let func = f!(|a, _| {
                if a.iter().any(Value::is_null) {
                    return Ok(Value::Null);
                }
                let pos = a[1].as_i64().unwrap_or(1);
                let count = a.get(2).and_then(Value::as_i64);
                Ok(match &a[0] {
                    Value::String(s) => {
                        let chars: Vec<char> = s.chars().collect();
                        let (st, en) = substring_range(chars.len(), pos, count);
                        Value::String(chars[st..en].iter().collect())
                    }
                    Value::Bytes(b) => {
                        let (st, en) = substring_range(b.len(), pos, count);
                        Value::Bytes(b[st..en].to_vec())
                    }
                    _ => Value::Null,
                })
            });
            (func, if is_bytes { T::Bytes } else { T::String })
        }
        "REPLACE" => {
            s.arity(3, 3)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1], &a[2]) {
                    (Value::String(s), Value::String(from), Value::String(to)) => {
                        Value::String(s.replace(from.as_str(), to))
                    }
                    _ => Value::Null,
                })),
                T::String,
            )
        }
        "INSTR" => {
            s.arity(2, 4)?;
            s.check(s.is(0, string) && s.is(1, string) && (2..s.n()).all(|i| s.is(i, int)))?;
            (
                f!(|a, _| {
                    let (Value::String(s), Value::String(sub)) = (&a[0], &a[1]) else {
                        return Ok(Value::Null);
                    };
                    let pos = a.get(2).and_then(Value::as_i64).unwrap_or(1);
                    let occ = a.get(3).and_then(Value::as_i64).unwrap_or(1).max(1);
                    let chars: Vec<char> = s.chars().collect();
                    let subc: Vec<char> = sub.chars().collect();
                    let n = chars.len() as i64;
                    let matches_at = |i: i64| -> bool {
                        i >= 0 && i + subc.len() as i64 <= n && chars[i as usize..i as usize + subc.len()] == subc[..]
                    };
                    let mut found = 0;
                    let (mut i, step) = if pos > 0 { (pos - 1, 1) } else { (n + pos, -1) };
                    if pos == 0 {
                        return Ok(Value::Int(0));
                    }
                    while (0..n).contains(&i) || (i == n && subc.is_empty()) {
                        if matches_at(i) {
                            found += 1;
                            if found == occ {
                                return Ok(Value::Int(i as i32 + 1));
                            }
                        }
                        i += step;
                    }
                    Ok(Value::Int(0))
                }),
                T::Int,
            )
        }
        "SPLIT" => {
            s.arity(2, 2)?;
            if s.all(string) {
                (
                    f!(|a, _| Ok(match (&a[0], &a[1]) {
                        (Value::String(s), Value::String(d)) => {
                            if d.is_empty() {
                                let chars: Vec<char> = s.chars().collect();
                                Value::Array(
                                    split_units(&chars, &[])
                                        .into_iter()
                                        .map(|p| Value::String(p.into_iter().collect()))
                                        .collect(),
                                )
                            } else {
                                Value::Array(s.split(d.as_str()).map(|p| Value::String(p.into())).collect())
                            }
                        }
                        _ => Value::Null,
                    })),
                    T::Array(Box::new(T::String)),
                )
            } else {
                s.check(s.all(bytes))?;
                (
                    f!(|a, _| Ok(match (&a[0], &a[1]) {
                        (Value::Bytes(b), Value::Bytes(d)) => {
                            Value::Array(split_units(b, d).into_iter().map(Value::Bytes).collect())
                        }
                        _ => Value::Null,
                    })),
                    T::Array(Box::new(T::Bytes)),
                )
            }
        }
        "SPLIT_TO_MAP" => {
            s.arity(3, 3)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| {
                    let (Some(input), Some(entry), Some(kv)) = (text(&a[0]), text(&a[1]), text(&a[2])) else {
                        return Ok(Value::Null);
                    };
                    if entry.is_empty() || kv.is_empty() || entry == kv {
                        return Ok(Value::Null);
                    }
                    let mut out: Vec<(Value, Value)> = vec![];
                    for part in input.split(entry).filter(|p| !p.is_empty()) {
                        let Some((k, v)) = part.split_once(kv) else { continue };
                        let (k, v) = (Value::String(k.into()), Value::String(v.into()));
                        match out.iter_mut().find(|(k2, _)| *k2 == k) {
                            Some(slot) => slot.1 = v,
                            None => out.push((k, v)),
                        }
                    }
                    Ok(Value::Map(out))
                }),
                T::Map(Box::new(T::String), Box::new(T::String)),
            )
        }
        "LPAD" | "RPAD" => {
            s.arity(3, 3)?;
            let is_bytes = s.ty(0) == Some(&T::Bytes) || s.ty(2) == Some(&T::Bytes);
            let unit = if is_bytes { bytes } else { string };
            s.check(s.is(0, unit) && s.is(1, int) && s.is(2, unit))?;
            let func = if s.name == "LPAD" { f!(|a, _| Ok(pad(a, true))) } else { f!(|a, _| Ok(pad(a, false))) };
            (func, if is_bytes { T::Bytes } else { T::String })
        }
        "CHR" => {
            s.arity(1, 1)?;
            s.check(s.is(0, |t| int(t) || string(t)))?;
            (
                f!(|a, _| Ok(match &a[0] {
                    Value::Int(code) => {
                        char::from_u32(*code as u32).map(|c| Value::String(c.to_string())).unwrap_or(Value::Null)
                    }
                    Value::String(code) => {
                        let hex = code.strip_prefix("\\u").or_else(|| code.strip_prefix("\\U"));
                        let parsed = hex
                            .filter(|h| !h.is_empty() && h.len() <= 4)
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32);
                        parsed.map(|c| Value::String(c.to_string())).unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                })),
                T::String,
            )
        }
        "ELT" => {
            s.check(s.n() >= 1 && s.is(0, int) && (1..s.n()).all(|i| s.is(i, string)))?;
            (
                f!(|a, _| {
                    let Some(n) = a[0].as_i64() else { return Ok(Value::Null) };
                    if n < 1 || n as usize >= a.len() {
                        return Ok(Value::Null);
                    }
                    Ok(a[n as usize].clone())
                }),
                T::String,
            )
        }
        "FIELD" => {
            s.check(s.n() >= 1 && s.all(string))?;
            (
                f!(|a, _| {
                    let Value::String(needle) = &a[0] else { return Ok(Value::Int(0)) };
                    Ok(Value::Int(
                        a[1..].iter().position(|v| v.as_str() == Some(needle)).map(|i| i as i32 + 1).unwrap_or(0),
                    ))
                }),
                T::Int,
            )
        }
        "UUID" => {
            s.arity(0, 1)?;
            if s.n() == 0 {
                (
                    f!(|_, _| {
                        let mut b = [0u8; 16];
                        b[..8].copy_from_slice(&super::random_u64().to_be_bytes());
                        b[8..].copy_from_slice(&super::random_u64().to_be_bytes());
                        b[6] = (b[6] & 0x0f) | 0x40;
                        b[8] = (b[8] & 0x3f) | 0x80;
                        Ok(Value::String(uuid_string(&b)))
                    }),
                    T::String,
                )
            } else {
                s.check(s.is(0, bytes))?;
                (
                    f!(|a, _| Ok(match &a[0] {
                        Value::Bytes(b) if b.len() == 16 => Value::String(uuid_string(b)),
                        _ => Value::Null,
                    })),
                    T::String,
                )
            }
        }
        "MASK" | "MASK_KEEP_LEFT" | "MASK_KEEP_RIGHT" | "MASK_LEFT" | "MASK_RIGHT" => {
            let plain = s.name == "MASK";
            let fixed = if plain { 1 } else { 2 };
            s.arity(fixed, fixed + 4)?;
            s.check(s.is(0, string) && (plain || s.is(1, int)) && (fixed..s.n()).all(|i| s.is(i, string)))?;
            let func = match s.name {
                "MASK" => f!(|a, _| mask_fn(a, 0)),
                "MASK_KEEP_LEFT" => f!(|a, _| mask_fn(a, 1)),
                "MASK_KEEP_RIGHT" => f!(|a, _| mask_fn(a, 2)),
                "MASK_LEFT" => f!(|a, _| mask_fn(a, 3)),
                _ => f!(|a, _| mask_fn(a, 4)),
            };
            (func, T::String)
        }
        "ENCODE" => {
            s.arity(3, 3)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| {
                    let (Some(input), Some(from), Some(to)) = (text(&a[0]), text(&a[1]), text(&a[2])) else {
                        return Ok(Value::Null);
                    };
                    let b = string_to_bytes(input, from)?;
                    Ok(Value::String(bytes_to_string(&b, to, false)?))
                }),
                T::String,
            )
        }
        "TO_BYTES" => {
            s.arity(2, 2)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1]) {
                    (Value::String(s), Value::String(enc)) => Value::Bytes(string_to_bytes(s, enc)?),
                    _ => Value::Null,
                })),
                T::Bytes,
            )
        }
        "FROM_BYTES" => {
            s.arity(2, 2)?;
            s.check(s.is(0, bytes) && s.is(1, string))?;
            (
                f!(|a, _| Ok(match (&a[0], &a[1]) {
                    (Value::Bytes(b), Value::String(enc)) => Value::String(bytes_to_string(b, enc, true)?),
                    _ => Value::Null,
                })),
                T::String,
            )
        }
        "REGEXP_EXTRACT" => {
            s.arity(2, 3)?;
            s.check(s.is(0, string) && s.is(1, string) && (s.n() == 2 || s.is(2, int)))?;
            (
                f!(|a, _| {
                    let (Some(pattern), Some(input)) = (text(&a[0]), text(&a[1])) else { return Ok(Value::Null) };
                    let Ok(Some(g)) = group_index(a, 2) else { return Ok(Value::Null) };
                    let re = regex(pattern)?;
                    Ok(re
                        .captures(input)
                        .and_then(|c| c.get(g).map(|m| Value::String(m.as_str().into())))
                        .unwrap_or(Value::Null))
                }),
                T::String,
            )
        }
        "REGEXP_EXTRACT_ALL" => {
            s.arity(2, 3)?;
            s.check(s.is(0, string) && s.is(1, string) && (s.n() == 2 || s.is(2, int)))?;
            (
                f!(|a, _| {
                    let (Some(pattern), Some(input)) = (text(&a[0]), text(&a[1])) else { return Ok(Value::Null) };
                    let Ok(Some(g)) = group_index(a, 2) else { return Ok(Value::Null) };
                    let re = regex(pattern)?;
                    Ok(Value::Array(
                        re.captures_iter(input)
                            .map(|c| c.get(g).map(|m| Value::String(m.as_str().into())).unwrap_or(Value::Null))
                            .collect(),
                    ))
                }),
                T::Array(Box::new(T::String)),
            )
        }
        "REGEXP_REPLACE" => {
            s.arity(3, 3)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| {
                    let (Some(input), Some(pattern), Some(rep)) = (text(&a[0]), text(&a[1]), text(&a[2])) else {
                        return Ok(Value::Null);
                    };
                    let re = regex(pattern)?;
                    Ok(Value::String(re.replace_all(input, java_replacement(rep).as_str()).into_owned()))
                }),
                T::String,
            )
        }
        "REGEXP_SPLIT_TO_ARRAY" => {
            s.arity(2, 2)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| {
                    let (Some(input), Some(pattern)) = (text(&a[0]), text(&a[1])) else { return Ok(Value::Null) };
                    let re = regex(pattern)?;
                    Ok(Value::Array(re.split(input).map(|p| Value::String(p.into())).collect()))
                }),
                T::Array(Box::new(T::String)),
            )
        }
        "URL_ENCODE_PARAM" => str1(s, map_str!(form_encode))?,
        "URL_DECODE_PARAM" => str1(
            s,
            f!(|a, _| Ok(match text(&a[0]) {
                Some(x) => Value::String(percent_decode(x, true).ok_or_else(|| format!("cannot decode '{x}'"))?),
                None => Value::Null,
            })),
        )?,
        "URL_EXTRACT_FRAGMENT" => str1(s, f!(|a, _| Ok(url_part(a, |p| decoded(p.fragment)))))?,
        "URL_EXTRACT_HOST" => str1(s, f!(|a, _| Ok(url_part(a, |p| p.host.map(|h| Value::String(h.into()))))))?,
        "URL_EXTRACT_PATH" => str1(s, f!(|a, _| Ok(url_part(a, |p| decoded(Some(p.path))))))?,
        "URL_EXTRACT_PROTOCOL" => str1(s, f!(|a, _| Ok(url_part(a, |p| p.scheme.map(|h| Value::String(h.into()))))))?,
        "URL_EXTRACT_QUERY" => str1(s, f!(|a, _| Ok(url_part(a, |p| decoded(p.query)))))?,
        "URL_EXTRACT_PORT" => {
            s.arity(1, 1)?;
            s.check(s.is(0, string))?;
            (f!(|a, _| Ok(url_part(a, |p| p.port.map(Value::Int)))), T::Int)
        }
        "URL_EXTRACT_PARAMETER" => {
            s.arity(2, 2)?;
            s.check(s.all(string))?;
            (
                f!(|a, _| {
                    let (Some(url), Some(name)) = (text(&a[0]), text(&a[1])) else { return Ok(Value::Null) };
                    let Some(query) = parse_url(url).and_then(|p| p.query.and_then(|q| percent_decode(q, false)))
                    else {
                        return Ok(Value::Null);
                    };
                    for param in query.split('&') {
                        let (k, v) = param.split_once('=').unwrap_or((param, ""));
                        if k == name {
                            return Ok(Value::String(v.into()));
                        }
                    }
                    Ok(Value::Null)
                }),
                T::String,
            )
        }
        _ => return Ok(None),
    }))
}

fn pad(a: &[Value], left: bool) -> Value {
    let Some(len) = a[1].as_i64() else { return Value::Null };
    match (&a[0], &a[2]) {
        (Value::String(s), Value::String(fill)) => {
            let s: Vec<char> = s.chars().collect();
            let fill: Vec<char> = fill.chars().collect();
            pad_units(&s, len, &fill, left).map(|v| Value::String(v.into_iter().collect())).unwrap_or(Value::Null)
        }
        (Value::Bytes(b), Value::Bytes(fill)) => pad_units(b, len, fill, left).map(Value::Bytes).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = parse_url("http://test@confluent.io:8080/nested/path?query&jobs#frag").unwrap();
        assert_eq!(p.scheme, Some("http"));
        assert_eq!(p.host, Some("confluent.io"));
        assert_eq!(p.port, Some(8080));
        assert_eq!(p.path, "/nested/path");
        assert_eq!(p.query, Some("query&jobs"));
        assert_eq!(p.fragment, Some("frag"));
        let p = parse_url("www.confluent.io").unwrap();
        assert_eq!(p.scheme, None);
        assert_eq!(p.host, None);
        assert_eq!(form_encode("?foo $bar"), "%3Ffoo+%24bar");
        assert_eq!(percent_decode("%3Ffoo+%24bar", true).as_deref(), Some("?foo $bar"));
    }

    #[test]
    fn replacement_syntax() {
        assert_eq!(java_replacement("$1-\\$"), "${1}-$$");
        assert_eq!(java_replacement("${name}x"), "${name}x");
    }

    #[test]
    fn split_and_substring() {
        assert_eq!(
            split_units(b"..a..", b"."),
            vec![b"".to_vec(), b"".to_vec(), b"a".to_vec(), b"".to_vec(), b"".to_vec()]
        );
        assert_eq!(split_units::<u8>(b"", b""), vec![Vec::<u8>::new()]);
        assert_eq!(substring_range(11, 6, None), (5, 11));
        assert_eq!(substring_range(5, 6, None), (5, 5));
        assert_eq!(substring_range(5, -3, Some(2)), (2, 4));
        assert_eq!(substring_range(5, 0, Some(2)), (0, 2));
    }

    #[test]
    fn masking() {
        let m = masks(&[Value::Null], 1);
        assert_eq!(mask_where("AbC-12", m, |_, _| true), "XxX-nn");
        let v = mask_fn(&[Value::String("AbCd".into()), Value::Int(2)], 1).unwrap();
        assert_eq!(v, Value::String("AbXx".into()));
    }
}
