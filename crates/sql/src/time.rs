//! Dates and times in UTC: civil calendar conversions and the ISO forms ksqlDB prints and parses.

use crate::value::MS_PER_DAY;

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn format_time(ms: i64) -> String {
    let ms = ms.rem_euclid(MS_PER_DAY);
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    if milli == 0 {
        format!("{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{h:02}:{mi:02}:{s:02}.{milli:03}")
    }
}

pub fn format_timestamp(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let rest = ms.rem_euclid(MS_PER_DAY);
    let (h, rest) = (rest / 3_600_000, rest % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}")
}

/// Parses `yyyy-MM-dd`.
pub fn parse_date(text: &str) -> Option<i32> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) as i32)
}

/// Parses `HH:mm[:ss[.SSS]]` into milliseconds since midnight.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let mut parts = text.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let mi: i64 = parts.next()?.parse().ok()?;
    let (s, milli) = match parts.next() {
        None => (0, 0),
        Some(sec) => match sec.split_once('.') {
            None => (sec.parse().ok()?, 0),
            Some((s, frac)) => {
                let frac = format!("{frac:0<3}");
                (s.parse().ok()?, frac[..3].parse().ok()?)
            }
        },
    };
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(h * 3_600_000 + mi * 60_000 + s * 1000 + milli)
}

/// Parses an ISO-8601 timestamp `yyyy-MM-dd['T'HH:mm[:ss[.SSS]]][Z|±HH:mm]` (UTC when no zone).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = match text.find(['T', ' ']) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    let days = parse_date(date)? as i64;
    if rest.is_empty() {
        return Some(days * MS_PER_DAY);
    }
    let (time, offset_ms) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = &z[1..];
        let (zh, zm) = z.split_once(':').unwrap_or((z, "0"));
        let off = zh.parse::<i64>().ok()? * 3_600_000 + zm.parse::<i64>().ok()? * 60_000;
        (t, sign * off)
    } else {
        (rest, 0)
    };
    Some(days * MS_PER_DAY + parse_time(time)? - offset_ms)
}

/// Parses a timestamp with a Java `DateTimeFormatter` pattern (the common letters: y M d H h m s
/// S a, quoted literals, X/Z offsets), or ISO-8601 without a pattern. Returns ms since the epoch.
pub fn parse_with_format(text: &str, pattern: Option<&str>) -> Option<i64> {
    let Some(pattern) = pattern else {
        return parse_timestamp(text).or_else(|| text.trim().parse().ok());
    };
    let (mut y, mut mo, mut d, mut h, mut mi, mut s, mut ms) = (1970i64, 1u32, 1u32, 0i64, 0i64, 0i64, 0i64);
    let mut pm: Option<bool> = None;
    let mut offset_ms = 0i64;
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0usize, 0usize);
    let digits = |ti: &mut usize, max: usize| -> Option<i64> {
        let start = *ti;
        while *ti < t.len() && *ti - start < max && t[*ti].is_ascii_digit() {
            *ti += 1;
        }
        if *ti == start {
            return None;
        }
        t[start..*ti].iter().collect::<String>().parse().ok()
    };
    while pi < p.len() {
        let c = p[pi];
        if c == '\'' {
            pi += 1;
            while pi < p.len() && p[pi] != '\'' {
                if ti >= t.len() || t[ti] != p[pi] {
                    return None;
                }
                ti += 1;
                pi += 1;
            }
            pi += 1;
            continue;
        }
        let mut n = 1;
        while pi + n < p.len() && p[pi + n] == c {
            n += 1;
        }
        pi += n;
        let width = if n >= 2 { n } else { 9 };
        match c {
            'y' | 'u' => y = digits(&mut ti, if n == 2 { 2 } else { 9 })?,
            'M' => mo = digits(&mut ti, 2)? as u32,
            'd' => d = digits(&mut ti, width.min(2))? as u32,
            'H' | 'k' => h = digits(&mut ti, 2)?,
            'h' | 'K' => h = digits(&mut ti, 2)? % 12,
            'm' => mi = digits(&mut ti, 2)?,
            's' => s = digits(&mut ti, 2)?,
            'S' => {
                let start = ti;
                let v = digits(&mut ti, n)?;
                let len = (ti - start) as u32;
                ms = if len >= 3 { v / 10i64.pow(len - 3) } else { v * 10i64.pow(3 - len) };
            }
            'a' => {
                let rest: String = t[ti..].iter().take(2).collect();
                pm = Some(rest.eq_ignore_ascii_case("PM"));
                ti += 2;
            }
            'X' | 'Z' | 'x' => {
                if ti < t.len() && t[ti] == 'Z' {
                    ti += 1;
                } else if ti < t.len() && (t[ti] == '+' || t[ti] == '-') {
                    let sign = if t[ti] == '-' { -1 } else { 1 };
                    ti += 1;
                    let hh = digits(&mut ti, 2)?;
                    if ti < t.len() && t[ti] == ':' {
                        ti += 1;
                    }
                    let mm = digits(&mut ti, 2).unwrap_or(0);
                    offset_ms = sign * (hh * 3_600_000 + mm * 60_000);
                }
            }
            other => {
                for _ in 0..n {
                    if ti >= t.len() || t[ti] != other {
                        return None;
                    }
                    ti += 1;
                }
            }
        }
    }
    if pm == Some(true) {
        h += 12;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, mo, d) * MS_PER_DAY + h * 3_600_000 + mi * 60_000 + s * 1000 + ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 59, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_timestamp(1_000), "1970-01-01T00:00:01.000");
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.000"), Some(1000));
        assert_eq!(parse_timestamp("2020-01-01T00:00:00+01:00"), Some(1_577_833_200_000));
    }
}
