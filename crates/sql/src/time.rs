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

/// Parses a timestamp with a Java `DateTimeFormatter` pattern in UTC, or ISO-8601 (or epoch
/// milliseconds) without a pattern. Returns ms since the epoch.
/// A timestamp written as ISO-8601 text with any trailing part left out (`2020-02-23`,
/// `2020-02-23T23:45`, `2020-02-23T23:45:12.000`), hour 24 meaning the next midnight, and an
/// optional zone offset (`Z`, `+01:00`, `-0100`); without one, UTC.
pub fn parse_partial_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (body, offset_ms) = split_zone(text)?;
    let (date, time) = match body.split_once('T') {
        Some((d, t)) => (d, t),
        None => (body, ""),
    };
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next().map(str::parse).transpose().ok()?.unwrap_or(1);
    let day: u32 = d.next().map(str::parse).transpose().ok()?.unwrap_or(1);
    if d.next().is_some() || !(1..=12).contains(&m) || day == 0 || day > days_in_month(y, m) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').filter(|p| !p.is_empty());
    let h: i64 = t.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    let min: i64 = t.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    let sec: i64 = t.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    if t.next().is_some() || h > 24 || min > 59 || sec > 59 {
        return None;
    }
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
        digits.parse().ok()?
    };
    let days = days_from_civil(y, m, day);
    Some(days * 86_400_000 + ((h * 60 + min) * 60 + sec) * 1000 + ms - offset_ms)
}

/// Splits a trailing zone offset off an ISO-8601 text: (the rest, the offset in ms).
fn split_zone(text: &str) -> Option<(&str, i64)> {
    if let Some(rest) = text.strip_suffix('Z') {
        return Some((rest, 0));
    }
    // An offset follows the time part: look for a sign after the 'T'.
    let t = text.find('T').unwrap_or(text.len());
    if let Some(i) = text[t..].rfind(['+', '-']).map(|i| i + t) {
        let zone = text[i + 1..].replace(':', "");
        if zone.len() == 4 && zone.chars().all(|c| c.is_ascii_digit()) {
            let h: i64 = zone[..2].parse().ok()?;
            let m: i64 = zone[2..].parse().ok()?;
            let sign = if text.as_bytes()[i] == b'-' { -1 } else { 1 };
            return Some((&text[..i], sign * (h * 60 + m) * 60_000));
        }
    }
    Some((text, 0))
}

pub fn parse_with_format(text: &str, pattern: Option<&str>) -> Option<i64> {
    let Some(pattern) = pattern else {
        return parse_timestamp(text).or_else(|| text.trim().parse().ok());
    };
    let p = Pattern::compile(pattern).ok()?;
    p.parse(text).ok()?.instant(&Zone::UTC).ok()
}

// ---------------------------------------------------------------------------------------------
// Time zones

/// A time zone: a fixed offset from UTC or a region with daylight-saving rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// Offset east of UTC, in seconds.
    Fixed(i32),
    Region(chrono_tz::Tz),
}

/// Java's `ZoneId.SHORT_IDS`, plus a few common daylight-time abbreviations.
const SHORT_IDS: &[(&str, &str)] = &[
    ("ACT", "Australia/Darwin"),
    ("AET", "Australia/Sydney"),
    ("AEST", "Australia/Sydney"),
    ("AGT", "America/Argentina/Buenos_Aires"),
    ("ART", "Africa/Cairo"),
    ("AST", "America/Anchorage"),
    ("BET", "America/Sao_Paulo"),
    ("BST", "Europe/London"),
    ("CAT", "Africa/Harare"),
    ("CET", "Europe/Paris"),
    ("CEST", "Europe/Paris"),
    ("CNT", "America/St_Johns"),
    ("CST", "America/Chicago"),
    ("CDT", "America/Chicago"),
    ("CTT", "Asia/Shanghai"),
    ("EAT", "Africa/Addis_Ababa"),
    ("ECT", "Europe/Paris"),
    ("EET", "Europe/Athens"),
    ("EEST", "Europe/Athens"),
    ("EDT", "America/New_York"),
    ("IET", "America/Indiana/Indianapolis"),
    ("IST", "Asia/Kolkata"),
    ("JST", "Asia/Tokyo"),
    ("MIT", "Pacific/Apia"),
    ("MDT", "America/Denver"),
    ("NET", "Asia/Yerevan"),
    ("NST", "Pacific/Auckland"),
    ("PLT", "Asia/Karachi"),
    ("PNT", "America/Phoenix"),
    ("PRT", "America/Puerto_Rico"),
    ("PST", "America/Los_Angeles"),
    ("PDT", "America/Los_Angeles"),
    ("SST", "Pacific/Guadalcanal"),
    ("VST", "Asia/Ho_Chi_Minh"),
    ("WET", "Europe/Lisbon"),
    ("WEST", "Europe/Lisbon"),
];

/// Fixed-offset abbreviations of `ZoneId.SHORT_IDS`.
const SHORT_FIXED: &[(&str, i32)] = &[("EST", -5 * 3600), ("MST", -7 * 3600), ("HST", -10 * 3600)];

/// Parses `+h`, `+hh`, `+hhmm`, `+hh:mm`, `+hhmmss`, `+hh:mm:ss` into seconds.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || digits.is_empty() {
        return None;
    }
    let (h, m, s): (i32, i32, i32) = match digits.len() {
        1 | 2 => (digits.parse().ok()?, 0, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?, 0),
        6 => (digits[..2].parse().ok()?, digits[2..4].parse().ok()?, digits[4..].parse().ok()?),
        _ => return None,
    };
    if h > 18 || m > 59 || s > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + s))
}

impl Zone {
    pub const UTC: Zone = Zone::Fixed(0);

    /// Parses a zone id the way Java's `ZoneId.of` does (offsets, `UTC`/`GMT`/`UT` with an
    /// optional offset, IANA region names), also accepting the old three-letter ids.
    pub fn parse(id: &str) -> Option<Zone> {
        let id = id.trim();
        if id == "Z" || id.eq_ignore_ascii_case("UTC") || id.eq_ignore_ascii_case("GMT") || id == "UT" {
            return Some(Zone::UTC);
        }
        if id.starts_with(['+', '-']) {
            return parse_offset(id).map(Zone::Fixed);
        }
        for prefix in ["UTC", "GMT", "UT"] {
            if let Some(rest) = id.strip_prefix(prefix) {
                if rest.starts_with(['+', '-']) {
                    return parse_offset(rest).map(Zone::Fixed);
                }
            }
        }
        if let Ok(tz) = id.parse::<chrono_tz::Tz>() {
            return Some(Zone::Region(tz));
        }
        let upper = id.to_ascii_uppercase();
        if let Some((_, secs)) = SHORT_FIXED.iter().find(|(n, _)| *n == upper) {
            return Some(Zone::Fixed(*secs));
        }
        if let Some((_, region)) = SHORT_IDS.iter().find(|(n, _)| *n == upper) {
            return region.parse::<chrono_tz::Tz>().ok().map(Zone::Region);
        }
        None
    }

    /// The offset (seconds east of UTC) in force at an instant, and the zone's short name then.
    pub fn offset_at(&self, utc_ms: i64) -> (i32, String) {
        use chrono::{Offset, TimeZone};
        use chrono_tz::OffsetName;
        match self {
            Zone::Fixed(secs) => (*secs, offset_id(*secs)),
            Zone::Region(tz) => match tz.timestamp_millis_opt(utc_ms).single() {
                Some(dt) => {
                    let off = dt.offset();
                    let secs = off.fix().local_minus_utc();
                    let name = off.abbreviation().map(str::to_string).unwrap_or_else(|| offset_id(secs));
                    (secs, name)
                }
                None => (0, "UTC".into()),
            },
        }
    }

    /// The instant at which clocks in this zone show `local_ms` (ms since 1970-01-01T00:00 local).
    /// An ambiguous time takes the earlier offset; a time in a gap is moved later by the gap.
    pub fn local_to_utc(&self, local_ms: i64) -> i64 {
        use chrono::{Offset, TimeZone};
        match self {
            Zone::Fixed(secs) => local_ms - *secs as i64 * 1000,
            Zone::Region(tz) => {
                let Some(naive) = chrono::DateTime::from_timestamp_millis(local_ms).map(|d| d.naive_utc()) else {
                    return local_ms;
                };
                match tz.from_local_datetime(&naive) {
                    chrono::LocalResult::Single(dt) | chrono::LocalResult::Ambiguous(dt, _) => dt.timestamp_millis(),
                    chrono::LocalResult::None => {
                        let before = self.offset_at(local_ms - 86_400_000).0;
                        let _ = tz.offset_from_utc_datetime(&naive).fix();
                        local_ms - before as i64 * 1000
                    }
                }
            }
        }
    }

    /// The zone's id as Java prints it (`VV`).
    pub fn id(&self) -> String {
        match self {
            Zone::Fixed(secs) => offset_id(*secs),
            Zone::Region(tz) => tz.name().to_string(),
        }
    }
}

/// `Z` or `+hh:mm[:ss]`, as Java's `ZoneOffset.getId`.
fn offset_id(secs: i32) -> String {
    if secs == 0 {
        return "Z".into();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    if s == 0 {
        format!("{sign}{h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}:{m:02}:{s:02}")
    }
}

/// Long names for `zzzz`, for the zones people use most; others print their id.
fn long_zone_name(short: &str) -> Option<&'static str> {
    Some(match short {
        "PST" => "Pacific Standard Time",
        "PDT" => "Pacific Daylight Time",
        "MST" => "Mountain Standard Time",
        "MDT" => "Mountain Daylight Time",
        "CST" => "Central Standard Time",
        "CDT" => "Central Daylight Time",
        "EST" => "Eastern Standard Time",
        "EDT" => "Eastern Daylight Time",
        "GMT" => "Greenwich Mean Time",
        "BST" => "British Summer Time",
        "UTC" | "Z" => "Coordinated Universal Time",
        "CET" => "Central European Standard Time",
        "CEST" => "Central European Summer Time",
        "EET" => "Eastern European Standard Time",
        "EEST" => "Eastern European Summer Time",
        "IST" => "India Standard Time",
        "JST" => "Japan Standard Time",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Java DateTimeFormatter patterns

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(String),
    /// Pattern letter and its repeat count.
    Field(char, usize),
    OptStart,
    OptEnd,
}

/// A compiled Java `DateTimeFormatter` pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    toks: Vec<Tok>,
}

/// What parsing a text with a pattern found.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    year: Option<i64>,
    month: Option<u32>,
    day: Option<u32>,
    day_of_year: Option<u32>,
    hour: Option<i64>,
    hour12: Option<i64>,
    pm: Option<bool>,
    minute: Option<i64>,
    second: Option<i64>,
    nano: Option<i64>,
    milli_of_day: Option<i64>,
    offset: Option<i32>,
    zone: Option<Zone>,
}

impl Parsed {
    /// Days since the epoch of the parsed local date (missing fields default to 1970-01-01).
    pub fn date(&self) -> Result<i64, String> {
        let y = self.year.unwrap_or(1970);
        if let Some(doy) = self.day_of_year {
            if self.month.is_none() && self.day.is_none() {
                let max = if is_leap(y) { 366 } else { 365 };
                if !(1..=max).contains(&doy) {
                    return Err(format!("Invalid day of year {doy}"));
                }
                return Ok(days_from_civil(y, 1, 1) + doy as i64 - 1);
            }
        }
        let m = self.month.unwrap_or(1);
        let d = self.day.unwrap_or(1);
        if !(1..=12).contains(&m) {
            return Err(format!("Invalid value for MonthOfYear: {m}"));
        }
        if !(1..=31).contains(&d) {
            return Err(format!("Invalid value for DayOfMonth: {d}"));
        }
        // Java's SMART resolver clamps the day to the month's length.
        let d = d.min(days_in_month(y, m));
        Ok(days_from_civil(y, m, d))
    }

    /// Whether a time-of-day field was parsed.
    pub fn has_time(&self) -> bool {
        self.hour.is_some()
            || self.hour12.is_some()
            || self.minute.is_some()
            || self.second.is_some()
            || self.nano.is_some()
            || self.milli_of_day.is_some()
    }

    /// Whether a date field was parsed.
    pub fn has_date(&self) -> bool {
        self.year.is_some() || self.month.is_some() || self.day.is_some() || self.day_of_year.is_some()
    }

    /// Milliseconds since local midnight (missing fields are zero).
    pub fn time_of_day(&self) -> Result<i64, String> {
        if let Some(ms) = self.milli_of_day {
            return Ok(ms);
        }
        let h = match (self.hour, self.hour12) {
            (Some(h), _) => h,
            (None, Some(h)) => h % 12 + if self.pm == Some(true) { 12 } else { 0 },
            (None, None) => 0,
        };
        let (mi, s, n) = (self.minute.unwrap_or(0), self.second.unwrap_or(0), self.nano.unwrap_or(0));
        if !(0..=24).contains(&h) || !(0..60).contains(&mi) || !(0..60).contains(&s) {
            return Err(format!("Invalid time {h}:{mi}:{s}"));
        }
        Ok(h * 3_600_000 + mi * 60_000 + s * 1000 + n / 1_000_000)
    }

    /// Local date and time as ms since 1970-01-01T00:00 local.
    pub fn local_ms(&self) -> Result<i64, String> {
        Ok(self.date()? * MS_PER_DAY + self.time_of_day()?)
    }

    /// The instant: the parsed offset or zone wins over `default_zone`.
    pub fn instant(&self, default_zone: &Zone) -> Result<i64, String> {
        let local = self.local_ms()?;
        Ok(match (self.offset, &self.zone) {
            (Some(off), _) => local - off as i64 * 1000,
            (None, Some(z)) => z.local_to_utc(local),
            (None, None) => default_zone.local_to_utc(local),
        })
    }
}

pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Calendar fields of a local date-time, for formatting.
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    /// 1 = Monday ... 7 = Sunday.
    dow: u32,
    doy: u32,
    /// Ms since local midnight.
    tod: i64,
    offset: i32,
    zone_name: String,
    zone_id: String,
}

fn fields(local_ms: i64) -> Fields {
    let days = local_ms.div_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    Fields {
        year,
        month,
        day,
        dow: ((days + 3).rem_euclid(7) + 1) as u32,
        doy: (days - days_from_civil(year, 1, 1) + 1) as u32,
        tod: local_ms.rem_euclid(MS_PER_DAY),
        offset: 0,
        zone_name: "UTC".into(),
        zone_id: "Z".into(),
    }
}

fn pad(v: i64, width: usize) -> String {
    if v < 0 {
        format!("-{:0width$}", -v, width = width)
    } else {
        format!("{v:0width$}")
    }
}

/// `+HHMM`-style offsets. `colons`: separator between parts; `z_for_zero`: print `Z` for zero;
/// `seconds`: include seconds when non-zero; `minutes`: always print minutes.
fn format_offset(secs: i32, colons: bool, z_for_zero: bool, minutes: bool) -> String {
    if secs == 0 && z_for_zero {
        return "Z".into();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    let sep = if colons { ":" } else { "" };
    let mut out = format!("{sign}{h:02}");
    if minutes || m != 0 || s != 0 {
        out.push_str(&format!("{sep}{m:02}"));
    }
    if s != 0 {
        out.push_str(&format!("{sep}{s:02}"));
    }
    out
}

fn localized_offset(secs: i32, full: bool) -> String {
    if secs == 0 {
        return "GMT".into();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    let mut out = if full { format!("GMT{sign}{h:02}:{m:02}") } else { format!("GMT{sign}{h}") };
    if !full && (m != 0 || s != 0) {
        out.push_str(&format!(":{m:02}"));
    }
    if s != 0 {
        out.push_str(&format!(":{s:02}"));
    }
    out
}

/// US-locale week of year: weeks start on Sunday and week 1 holds January 1st.
fn week_of_year(f: &Fields) -> i64 {
    let jan1_dow = {
        let days = days_from_civil(f.year, 1, 1);
        (days + 4).rem_euclid(7) // 0 = Sunday
    };
    (f.doy as i64 - 1 + jan1_dow) / 7 + 1
}

impl Pattern {
    pub fn compile(pattern: &str) -> Result<Pattern, String> {
        let p: Vec<char> = pattern.chars().collect();
        let mut toks = vec![];
        let mut i = 0;
        let mut depth = 0i32;
        while i < p.len() {
            let c = p[i];
            if c == '\'' {
                let mut lit = String::new();
                i += 1;
                if i < p.len() && p[i] == '\'' {
                    toks.push(Tok::Lit("'".into()));
                    i += 1;
                    continue;
                }
                loop {
                    if i >= p.len() {
                        return Err(format!("Pattern ends with an incomplete string literal: {pattern}"));
                    }
                    if p[i] == '\'' {
                        if i + 1 < p.len() && p[i + 1] == '\'' {
                            lit.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    lit.push(p[i]);
                    i += 1;
                }
                toks.push(Tok::Lit(lit));
                continue;
            }
            if c.is_ascii_alphabetic() {
                let mut n = 1;
                while i + n < p.len() && p[i + n] == c {
                    n += 1;
                }
                if !"GuyDMLdQqYwWEecFaBhKkHmsSAnNVvzOXxZp".contains(c) {
                    return Err(format!("Unknown pattern letter: {c}"));
                }
                let max = match c {
                    'G' | 'E' | 'M' | 'L' | 'Q' | 'q' | 'e' | 'c' | 'z' | 'X' | 'x' | 'Z' => 5,
                    'a' | 'W' | 'F' | 'v' => 1,
                    'd' | 'h' | 'K' | 'k' | 'H' | 'm' | 's' | 'w' | 'V' => 2,
                    'D' => 3,
                    _ => 19,
                };
                if n > max || (c == 'V' && n != 2) || (c == 'O' && n != 1 && n != 4) {
                    return Err(format!("Too many pattern letters: {c}"));
                }
                toks.push(Tok::Field(c, n));
                i += n;
                continue;
            }
            match c {
                '[' => {
                    depth += 1;
                    toks.push(Tok::OptStart)
                }
                ']' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(format!("Pattern invalid as it contains ] without previous [: {pattern}"));
                    }
                    toks.push(Tok::OptEnd)
                }
                '{' | '}' | '#' => return Err(format!("Pattern includes reserved character: '{c}'")),
                _ => match toks.last_mut() {
                    Some(Tok::Lit(s)) => s.push(c),
                    _ => toks.push(Tok::Lit(c.to_string())),
                },
            }
            i += 1;
        }
        Ok(Pattern { toks })
    }

    /// Formats an instant as seen in `zone`.
    pub fn format_instant(&self, utc_ms: i64, zone: &Zone) -> Result<String, String> {
        let (offset, name) = zone.offset_at(utc_ms);
        let mut f = fields(utc_ms + offset as i64 * 1000);
        f.offset = offset;
        f.zone_name = name;
        f.zone_id = zone.id();
        self.format_fields(&f, true, true)
    }

    /// Formats a local date (days since the epoch); time and zone letters are errors.
    pub fn format_date(&self, days: i64) -> Result<String, String> {
        self.format_fields(&fields(days * MS_PER_DAY), true, false)
    }

    /// Formats a local time of day; date and zone letters are errors.
    pub fn format_time(&self, ms: i64) -> Result<String, String> {
        let f = fields(ms.rem_euclid(MS_PER_DAY));
        self.format_fields(&f, false, true)
    }

    fn format_fields(&self, f: &Fields, has_date: bool, has_time: bool) -> Result<String, String> {
        let mut out = String::new();
        let has_zone = has_date && has_time;
        let tod = f.tod;
        let (hour, minute, second, milli) = (tod / 3_600_000, tod / 60_000 % 60, tod / 1000 % 60, tod % 1000);
        let unsupported = |c: char| Err(format!("Unsupported field: {c}"));
        for t in &self.toks {
            let (c, n) = match t {
                Tok::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Tok::OptStart | Tok::OptEnd => continue,
                Tok::Field(c, n) => (*c, *n),
            };
            let date_letter = "GuyDMLdQqYwWEecF".contains(c);
            let time_letter = "aBhKkHmsSAnN".contains(c);
            let zone_letter = "VvzOXxZ".contains(c);
            if (date_letter && !has_date) || (time_letter && !has_time) || (zone_letter && !has_zone) {
                return unsupported(c);
            }
            let num = |v: i64, out: &mut String| match n {
                1 => out.push_str(&v.to_string()),
                _ => out.push_str(&pad(v, n)),
            };
            match c {
                'G' => out.push_str(match n {
                    4 => {
                        if f.year > 0 {
                            "Anno Domini"
                        } else {
                            "Before Christ"
                        }
                    }
                    5 => {
                        if f.year > 0 {
                            "A"
                        } else {
                            "B"
                        }
                    }
                    _ => {
                        if f.year > 0 {
                            "AD"
                        } else {
                            "BC"
                        }
                    }
                }),
                'u' | 'y' | 'Y' => {
                    let y = if c == 'y' && f.year <= 0 { 1 - f.year } else { f.year };
                    match n {
                        2 => out.push_str(&pad(y.rem_euclid(100), 2)),
                        1 => out.push_str(&y.to_string()),
                        _ => {
                            if n == 4 && y > 9999 {
                                out.push('+');
                            }
                            out.push_str(&pad(y, n))
                        }
                    }
                }
                'M' | 'L' => match n {
                    1 | 2 => num(f.month as i64, &mut out),
                    3 => out.push_str(&MONTHS[f.month as usize - 1][..3]),
                    4 => out.push_str(MONTHS[f.month as usize - 1]),
                    _ => out.push_str(&MONTHS[f.month as usize - 1][..1]),
                },
                'Q' | 'q' => {
                    let q = (f.month as i64 - 1) / 3 + 1;
                    match n {
                        1 | 2 => num(q, &mut out),
                        3 => out.push_str(&format!("Q{q}")),
                        4 => out.push_str(["1st quarter", "2nd quarter", "3rd quarter", "4th quarter"][q as usize - 1]),
                        _ => out.push_str(&q.to_string()),
                    }
                }
                'd' => num(f.day as i64, &mut out),
                'D' => num(f.doy as i64, &mut out),
                'F' => num((f.day as i64 - 1) / 7 + 1, &mut out),
                'w' => num(week_of_year(f), &mut out),
                'W' => {
                    let first_dow = (f.dow as i64 - (f.day as i64 - 1)).rem_euclid(7); // Sunday = 0
                    num((f.day as i64 - 1 + first_dow) / 7 + 1, &mut out)
                }
                'E' => match n {
                    4 => out.push_str(DAYS[f.dow as usize - 1]),
                    5 => out.push_str(&DAYS[f.dow as usize - 1][..1]),
                    _ => out.push_str(&DAYS[f.dow as usize - 1][..3]),
                },
                'e' | 'c' => match n {
                    1 | 2 => num((f.dow % 7 + 1) as i64, &mut out),
                    3 => out.push_str(&DAYS[f.dow as usize - 1][..3]),
                    4 => out.push_str(DAYS[f.dow as usize - 1]),
                    _ => out.push_str(&DAYS[f.dow as usize - 1][..1]),
                },
                'a' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
                'B' => out.push_str(if hour < 12 { "in the morning" } else { "in the afternoon" }),
                'h' => num(if hour % 12 == 0 { 12 } else { hour % 12 }, &mut out),
                'K' => num(hour % 12, &mut out),
                'k' => num(if hour == 0 { 24 } else { hour }, &mut out),
                'H' => num(hour, &mut out),
                'm' => num(minute, &mut out),
                's' => num(second, &mut out),
                'S' => {
                    let nanos = format!("{:09}", milli * 1_000_000);
                    if n <= 9 {
                        out.push_str(&nanos[..n]);
                    } else {
                        out.push_str(&nanos);
                        out.push_str(&"0".repeat(n - 9));
                    }
                }
                'A' => num(tod, &mut out),
                'n' => num(milli * 1_000_000, &mut out),
                'N' => num(tod * 1_000_000, &mut out),
                'V' => out.push_str(&f.zone_id),
                'v' => out.push_str(&f.zone_id),
                'z' => {
                    if n == 4 {
                        out.push_str(
                            long_zone_name(&f.zone_name).map(str::to_string).unwrap_or(f.zone_id.clone()).as_str(),
                        )
                    } else {
                        out.push_str(if f.zone_name == "Z" { "UTC" } else { &f.zone_name })
                    }
                }
                'O' => out.push_str(&localized_offset(f.offset, n == 4)),
                'X' | 'x' => {
                    let z = c == 'X';
                    out.push_str(&match n {
                        1 => format_offset(f.offset, false, z, false),
                        2 | 4 => format_offset(f.offset, false, z, true),
                        _ => format_offset(f.offset, true, z, true),
                    })
                }
                'Z' => out.push_str(&match n {
                    1..=3 => format_offset(f.offset, false, false, true),
                    4 => localized_offset(f.offset, true),
                    _ => format_offset(f.offset, true, true, true),
                }),
                other => return unsupported(other),
            }
        }
        Ok(out)
    }

    /// Parses `text` (case-insensitively, as ksqlDB's formatters do).
    pub fn parse(&self, text: &str) -> Result<Parsed, String> {
        self.parse_from_start(text, false)
    }

    /// Parses the start of `text`, ignoring what follows what the pattern reads (as Java's
    /// `DateTimeFormatter.parse(text, ParsePosition)`, which ksqlDB's PARSE_DATE uses).
    pub fn parse_prefix(&self, text: &str) -> Result<Parsed, String> {
        self.parse_from_start(text, true)
    }

    fn parse_from_start(&self, text: &str, prefix: bool) -> Result<Parsed, String> {
        let t: Vec<char> = text.chars().collect();
        let mut st = ParseState { t: &t, i: 0, p: Parsed::default() };
        let toks = &self.toks;
        let mut k = 0;
        let fail = || format!("Text '{text}' could not be parsed");
        while k < toks.len() {
            match &toks[k] {
                Tok::OptStart => {
                    // Try the optional section; on failure skip it.
                    let end = matching_end(toks, k);
                    let saved = (st.i, st.p.clone());
                    let inner = Pattern { toks: toks[k + 1..end].to_vec() };
                    if inner.parse_into(&mut st).is_err() {
                        st.i = saved.0;
                        st.p = saved.1;
                    }
                    k = end + 1;
                    continue;
                }
                Tok::OptEnd => {}
                tok => {
                    st.token(tok, &toks[k + 1..]).map_err(|_| fail())?;
                }
            }
            k += 1;
        }
        if st.i != t.len() && !prefix {
            return Err(format!("Text '{text}' could not be parsed, unparsed text found at index {}", st.i));
        }
        Ok(st.p)
    }

    fn parse_into(&self, st: &mut ParseState) -> Result<(), ()> {
        let mut k = 0;
        while k < self.toks.len() {
            match &self.toks[k] {
                Tok::OptStart => {
                    let end = matching_end(&self.toks, k);
                    let saved = (st.i, st.p.clone());
                    let inner = Pattern { toks: self.toks[k + 1..end].to_vec() };
                    if inner.parse_into(st).is_err() {
                        st.i = saved.0;
                        st.p = saved.1;
                    }
                    k = end + 1;
                    continue;
                }
                Tok::OptEnd => {}
                tok => st.token(tok, &self.toks[k + 1..])?,
            }
            k += 1;
        }
        Ok(())
    }
}

fn matching_end(toks: &[Tok], start: usize) -> usize {
    let mut depth = 0;
    for (i, t) in toks.iter().enumerate().skip(start) {
        match t {
            Tok::OptStart => depth += 1,
            Tok::OptEnd => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

struct ParseState<'a> {
    t: &'a [char],
    i: usize,
    p: Parsed,
}

/// Whether a pattern letter parses as a number, and the fixed width it then needs.
fn numeric_width(c: char, n: usize) -> Option<usize> {
    match c {
        'u' | 'y' | 'Y' => Some(if n == 2 { 2 } else { n.max(1) }),
        'M' | 'L' | 'Q' | 'q' | 'e' | 'c' if n <= 2 => Some(n),
        'd' | 'D' | 'h' | 'K' | 'k' | 'H' | 'm' | 's' | 'w' | 'W' | 'F' | 'A' | 'n' | 'N' => Some(n),
        'S' => Some(n),
        _ => None,
    }
}

impl ParseState<'_> {
    fn digits_available(&self) -> usize {
        self.t[self.i..].iter().take_while(|c| c.is_ascii_digit()).count()
    }

    fn take_digits(&mut self, count: usize) -> Result<i64, ()> {
        if count == 0 || count > 19 || self.digits_available() < count {
            return Err(());
        }
        let s: String = self.t[self.i..self.i + count].iter().collect();
        self.i += count;
        s.parse().map_err(|_| ())
    }

    /// Reads a number for a field of `n` letters: a fixed width for `n >= 2`, otherwise as many
    /// digits as there are, leaving enough for adjacent fixed-width numeric fields.
    fn number(&mut self, c: char, n: usize, rest: &[Tok]) -> Result<i64, ()> {
        let avail = self.digits_available();
        let mut reserved = 0;
        for t in rest {
            match t {
                Tok::Field(c2, n2) => match numeric_width(*c2, *n2) {
                    Some(w) => reserved += w,
                    None => break,
                },
                _ => break,
            }
        }
        let greedy = n == 1 || (matches!(c, 'u' | 'y' | 'Y') && n > 2);
        let want = if greedy {
            let max = if matches!(c, 'u' | 'y' | 'Y' | 'A' | 'n' | 'N') { 19 } else { 2.max(n) };
            avail.saturating_sub(reserved).clamp(n.min(avail), max)
        } else {
            n
        };
        self.take_digits(want)
    }

    fn text(&mut self, options: &[&str]) -> Result<usize, ()> {
        // Longest match first.
        let mut best: Option<(usize, usize)> = None;
        for (idx, o) in options.iter().enumerate() {
            let len = o.chars().count();
            if self.i + len <= self.t.len() {
                let cand: String = self.t[self.i..self.i + len].iter().collect();
                if cand.eq_ignore_ascii_case(o) && best.is_none_or(|(_, l)| len > l) {
                    best = Some((idx, len));
                }
            }
        }
        let (idx, len) = best.ok_or(())?;
        self.i += len;
        Ok(idx)
    }

    fn offset(&mut self, allow_z: bool, gmt: bool) -> Result<i32, ()> {
        if gmt {
            let rest: String = self.t[self.i..].iter().take(3).collect();
            if rest.eq_ignore_ascii_case("GMT") || rest.eq_ignore_ascii_case("UTC") {
                self.i += 3;
                if !matches!(self.t.get(self.i), Some('+' | '-')) {
                    return Ok(0);
                }
            }
        }
        match self.t.get(self.i) {
            Some('Z' | 'z') if allow_z => {
                self.i += 1;
                Ok(0)
            }
            Some(&s @ ('+' | '-')) => {
                self.i += 1;
                let sign = if s == '-' { -1 } else { 1 };
                let hd = self.digits_available().min(2);
                let h = self.take_digits(hd)?;
                let mut m = 0;
                if self.t.get(self.i) == Some(&':') {
                    self.i += 1;
                    m = self.take_digits(2)?;
                } else if self.digits_available() >= 2 {
                    m = self.take_digits(2)?;
                }
                let mut sec = 0;
                if self.t.get(self.i) == Some(&':') && self.t.get(self.i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                    sec = self.take_digits(2)?;
                } else if self.digits_available() >= 2 {
                    sec = self.take_digits(2)?;
                }
                Ok(sign * (h * 3600 + m * 60 + sec) as i32)
            }
            _ => Err(()),
        }
    }

    fn zone_name(&mut self) -> Result<Zone, ()> {
        if let Ok(off) = self.offset(true, true) {
            return Ok(Zone::Fixed(off));
        }
        let word: String = self.t[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
            .collect();
        // Longest prefix that names a zone.
        let chars: Vec<char> = word.chars().collect();
        for len in (1..=chars.len()).rev() {
            let cand: String = chars[..len].iter().collect();
            if let Some(z) = Zone::parse(&cand) {
                self.i += len;
                return Ok(z);
            }
        }
        Err(())
    }

    fn token(&mut self, tok: &Tok, rest: &[Tok]) -> Result<(), ()> {
        let (c, n) = match tok {
            Tok::Lit(s) => {
                for ch in s.chars() {
                    match self.t.get(self.i) {
                        Some(x) if x.eq_ignore_ascii_case(&ch) => self.i += 1,
                        _ => return Err(()),
                    }
                }
                return Ok(());
            }
            Tok::Field(c, n) => (*c, *n),
            _ => return Ok(()),
        };
        match c {
            'G' => {
                let idx = self.text(&["AD", "BC", "Anno Domini", "Before Christ"])?;
                if idx % 2 == 1 {
                    if let Some(y) = self.p.year {
                        self.p.year = Some(1 - y);
                    }
                }
            }
            'u' | 'y' | 'Y' => {
                let neg = c == 'u' && self.t.get(self.i) == Some(&'-');
                if neg || self.t.get(self.i) == Some(&'+') {
                    self.i += 1;
                }
                let v = self.number(c, n, rest)?;
                self.p.year = Some(if n == 2 {
                    2000 + v
                } else if neg {
                    -v
                } else {
                    v
                });
            }
            'M' | 'L' => {
                let m = match n {
                    1 | 2 => self.number(c, n, rest)? as u32,
                    3 => {
                        let short: Vec<&str> = MONTHS.iter().map(|m| &m[..3]).collect();
                        self.text(&short)? as u32 + 1
                    }
                    _ => self.text(&MONTHS)? as u32 + 1,
                };
                self.p.month = Some(m);
            }
            'd' => self.p.day = Some(self.number(c, n, rest)? as u32),
            'D' => self.p.day_of_year = Some(self.number(c, n, rest)? as u32),
            'E' => {
                let short: Vec<&str> = DAYS.iter().map(|d| &d[..3]).collect();
                if n == 4 {
                    self.text(&DAYS)?;
                } else {
                    self.text(&short)?;
                }
            }
            'e' | 'c' if n <= 2 => {
                self.number(c, n, rest)?;
            }
            'e' | 'c' => {
                let mut all: Vec<&str> = DAYS.to_vec();
                all.extend(DAYS.iter().map(|d| &d[..3]));
                self.text(&all)?;
            }
            'Q' | 'q' | 'w' | 'W' | 'F' => {
                self.number(c, n, rest)?;
            }
            'a' => self.p.pm = Some(self.text(&["AM", "PM"])? == 1),
            'h' => self.p.hour12 = Some(self.number(c, n, rest)?),
            'K' => self.p.hour12 = Some(self.number(c, n, rest)?),
            'k' => self.p.hour = Some(self.number(c, n, rest)? % 24),
            'H' => self.p.hour = Some(self.number(c, n, rest)?),
            'm' => self.p.minute = Some(self.number(c, n, rest)?),
            's' => self.p.second = Some(self.number(c, n, rest)?),
            'S' => {
                let v = self.take_digits(n)?;
                let digits = n as u32;
                self.p.nano = Some(if digits <= 9 { v * 10i64.pow(9 - digits) } else { v / 10i64.pow(digits - 9) });
            }
            'A' => self.p.milli_of_day = Some(self.number(c, n, rest)?),
            'n' => self.p.nano = Some(self.number(c, n, rest)?),
            'N' => {
                let v = self.number(c, n, rest)?;
                self.p.milli_of_day = Some(v / 1_000_000);
            }
            'X' => self.p.offset = Some(self.offset(true, false)?),
            'x' => self.p.offset = Some(self.offset(false, false)?),
            'Z' => self.p.offset = Some(self.offset(true, true)?),
            'O' => self.p.offset = Some(self.offset(false, true)?),
            'z' | 'V' | 'v' => {
                let z = self.zone_name()?;
                self.p.zone = Some(z);
            }
            _ => return Err(()),
        }
        Ok(())
    }
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

    fn fmt(ms: i64, pattern: &str, zone: &str) -> String {
        Pattern::compile(pattern).unwrap().format_instant(ms, &Zone::parse(zone).unwrap()).unwrap()
    }

    fn parse(text: &str, pattern: &str) -> Option<i64> {
        Pattern::compile(pattern).ok()?.parse(text).ok()?.instant(&Zone::UTC).ok()
    }

    #[test]
    fn java_patterns_format() {
        assert_eq!(fmt(1_526_075_913_000, "yyyy-MM-dd HH:mm:ss zzz", "America/Los_Angeles"), "2018-05-11 14:58:33 PDT");
        assert_eq!(fmt(1_526_075_913_000, "yyyy-MM-dd HH:mm:ss zzz", "Europe/London"), "2018-05-11 22:58:33 BST");
        assert_eq!(fmt(1_526_075_913_000, "yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "+05:30"), "2018-05-12T03:28:33.000+05:30");
        assert_eq!(fmt(0, "EEE, d MMM yy h:mm a Z", "UTC"), "Thu, 1 Jan 70 12:00 AM +0000");
        assert_eq!(fmt(-86_400_000, "dd-MM-yyyy'Sophia'", "UTC"), "31-12-1969Sophia");
        assert!(Pattern::compile("yyyy-bb").is_err());
    }

    #[test]
    fn java_patterns_parse() {
        assert_eq!(parse("2018-05-11T21:58:33Z", "yyyy-MM-dd'T'HH:mm:ssX"), Some(1_526_075_913_000));
        assert_eq!(parse("2020-05-11T21:58:33z", "yyyy-MM-dd'T'HH:mm:ssX"), Some(1_589_234_313_000));
        assert_eq!(parse("2018-05-11T21:58:33 PST", "yyyy-MM-dd'T'HH:mm:ss zzz"), Some(1_526_101_113_000));
        assert_eq!(parse("20180511", "yyyyMMdd"), Some(1_525_996_800_000));
        assert_eq!(parse("01-JAN-2022", "dd-MMM-yyyy"), Some(18_993 * MS_PER_DAY));
        assert_eq!(parse("JAN-2022", "MMM-yyyy"), Some(18_993 * MS_PER_DAY));
        assert_eq!(parse("2018-05-11Lit", "yyyy-MM-dd'Lit'"), Some(17_662 * MS_PER_DAY));
        assert_eq!(parse("foo", "yyyyMMdd"), None);
        assert_eq!(parse("1970-01-01 00:00:01.5", "yyyy-MM-dd HH:mm:ss[.S]"), Some(1_500));
        assert_eq!(parse("1970-01-01 00:00:01", "yyyy-MM-dd HH:mm:ss[.S]"), Some(1_000));
    }

    #[test]
    fn zones() {
        assert_eq!(Zone::parse("+0200"), Some(Zone::Fixed(7200)));
        assert_eq!(Zone::parse("UTC-03:30"), Some(Zone::Fixed(-12_600)));
        assert!(matches!(Zone::parse("America/New_York"), Some(Zone::Region(_))));
        assert!(Zone::parse("Nowhere/Special").is_none());
        let la = Zone::parse("America/Los_Angeles").unwrap();
        assert_eq!(la.offset_at(1_589_234_313_000).0, -7 * 3600);
        assert_eq!(la.offset_at(0).0, -8 * 3600);
    }
}
