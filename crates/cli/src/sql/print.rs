//! `PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]` over `POST /query`: the topic's
//! records as ksqlDB prints them, one line each
//! (`rowtime: 2026/11/26 10:00:00.000 Z, key: k1, value: {"A":1}, partition: 0`), after two lines
//! naming the key and value formats guessed from the first record. Keys and values are printed
//! as text when they are UTF-8, else as hex (`0x...`); a missing one is `<null>`.
//!
//! A print runs as a push query does (see `query.rs`): the engine thread polls it a bounded
//! batch at a time and hands its lines to the client through the same bounded channel; it ends
//! at LIMIT or when the client goes away.

use std::sync::Arc;

use freshet_common::limits::SQL_POLL_BATCH;
use freshet_sql::topics::{Consumed, Topics};

/// A running PRINT.
pub struct PrintCursor {
    pub topic: String,
    /// Next offset to read, per partition.
    offsets: Vec<i64>,
    /// Print every n-th record.
    interval: u64,
    limit: Option<u64>,
    /// Records read, printed or not.
    seen: u64,
    /// Records printed.
    sent: u64,
    /// The format lines have been printed.
    announced: bool,
    /// The next partition to read first (round robin).
    next: usize,
}

impl PrintCursor {
    /// A print of `topic`, from the start of each partition or from its end.
    pub fn new(
        topics: &Arc<dyn Topics>,
        topic: &str,
        partitions: i32,
        from_beginning: bool,
        interval: Option<u64>,
        limit: Option<u64>,
    ) -> freshet_sql::topics::Result<PrintCursor> {
        let mut offsets = vec![];
        for p in 0..partitions {
            offsets.push(if from_beginning { 0 } else { topics.end_offset(topic, p)? });
        }
        Ok(PrintCursor {
            topic: topic.to_string(),
            offsets,
            interval: interval.unwrap_or(1).max(1),
            limit,
            seen: 0,
            sent: 0,
            announced: false,
            next: 0,
        })
    }

    /// Whether LIMIT records have been printed.
    pub fn finished(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= l)
    }

    /// Reads what is new (a bounded batch per partition); returns the lines to print.
    pub fn poll(&mut self, topics: &Arc<dyn Topics>) -> freshet_sql::topics::Result<Vec<String>> {
        let mut lines = vec![];
        let n = self.offsets.len();
        for i in 0..n {
            let p = (self.next + i) % n;
            if self.finished() {
                break;
            }
            let batch = topics.read(&self.topic, p as i32, self.offsets[p], SQL_POLL_BATCH)?;
            for c in batch {
                self.offsets[p] = c.offset + 1;
                let printed = self.seen.is_multiple_of(self.interval);
                self.seen += 1;
                if !printed || self.finished() {
                    continue;
                }
                if !self.announced {
                    self.announced = true;
                    lines.push(format!("Key format: {}", guess_format(c.record.key.as_deref())));
                    lines.push(format!("Value format: {}", guess_format(c.record.value.as_deref())));
                }
                lines.push(format_record(&c));
                self.sent += 1;
            }
        }
        self.next = (self.next + 1) % n.max(1);
        Ok(lines)
    }
}

/// The format a key or value looks like (ksqlDB guesses among its formats; this guesses
/// among JSON, a string, or bytes).
fn guess_format(data: Option<&[u8]>) -> &'static str {
    match data {
        None => "¯\\_(ツ)_/¯ - no data processed",
        Some(d) => match std::str::from_utf8(d) {
            Ok(s) if serde_json::from_str::<serde_json::Value>(s).is_ok_and(|v| v.is_object() || v.is_array()) => {
                "JSON"
            }
            Ok(_) => "KAFKA_STRING",
            Err(_) => "BYTES (printed as hex)",
        },
    }
}

/// A key or value as printed: text when UTF-8, else hex; `<null>` when missing.
pub fn printable(data: Option<&[u8]>) -> String {
    match data {
        None => "<null>".into(),
        Some(d) => match std::str::from_utf8(d) {
            Ok(s) => s.to_string(),
            Err(_) => {
                let mut hex = String::with_capacity(2 + d.len() * 2);
                hex.push_str("0x");
                for b in d {
                    hex.push_str(&format!("{b:02x}"));
                }
                hex
            }
        },
    }
}

/// ksqlDB's record time format (`yyyy/MM/dd HH:mm:ss.SSS z`, in UTC); `N/A` without a time.
pub fn format_rowtime(ms: i64) -> String {
    if ms < 0 {
        return "N/A".into();
    }
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y/%m/%d %H:%M:%S%.3f Z").to_string(),
        None => "N/A".into(),
    }
}

pub fn format_record(c: &Consumed) -> String {
    format!(
        "rowtime: {}, key: {}, value: {}, partition: {}",
        format_rowtime(c.record.timestamp),
        printable(c.record.key.as_deref()),
        printable(c.record.value.as_deref()),
        c.partition
    )
}

#[cfg(test)]
mod tests {
    use freshet_sql::topics::{MemTopics, Record};

    use super::*;

    fn record(key: &[u8], value: &str, ts: i64) -> Record {
        Record {
            key: Some(key.to_vec().into()),
            value: Some(value.as_bytes().to_vec().into()),
            timestamp: ts,
            headers: vec![],
        }
    }

    #[test]
    fn prints_as_ksqldb() {
        assert_eq!(format_rowtime(1_700_000_000_123), "2023/11/14 22:13:20.123 Z");
        assert_eq!(format_rowtime(-1), "N/A");
        assert_eq!(printable(Some(&[0xff, 0x01])), "0xff01");
        assert_eq!(printable(None), "<null>");
        let topics: Arc<dyn Topics> = Arc::new(MemTopics::new());
        topics.create_topic("t", 2).unwrap();
        topics.append("t", 0, vec![record(b"a", "{\"X\":1}", 1000), record(b"b", "{\"X\":2}", 2000)]).unwrap();
        topics.append("t", 1, vec![record(&[0xff], "{\"X\":3}", 3000)]).unwrap();
        let mut all = PrintCursor::new(&topics, "t", 2, true, None, None).unwrap();
        let lines = all.poll(&topics).unwrap();
        assert_eq!(lines[0], "Key format: KAFKA_STRING");
        assert_eq!(lines[1], "Value format: JSON");
        assert_eq!(lines[2], "rowtime: 1970/01/01 00:00:01.000 Z, key: a, value: {\"X\":1}, partition: 0");
        assert_eq!(lines[4], "rowtime: 1970/01/01 00:00:03.000 Z, key: 0xff, value: {\"X\":3}, partition: 1");
        assert!(all.poll(&topics).unwrap().is_empty());
        // INTERVAL 2 LIMIT 1: the first record only, then finished.
        let mut some = PrintCursor::new(&topics, "t", 2, true, Some(2), Some(1)).unwrap();
        assert_eq!(some.poll(&topics).unwrap().len(), 3);
        assert!(some.finished());
        // Not FROM BEGINNING: only what comes next.
        let mut tail = PrintCursor::new(&topics, "t", 2, false, None, None).unwrap();
        assert!(tail.poll(&topics).unwrap().is_empty());
        topics.append("t", 1, vec![record(b"c", "x", 4000)]).unwrap();
        assert_eq!(tail.poll(&topics).unwrap().len(), 3);
    }
}
