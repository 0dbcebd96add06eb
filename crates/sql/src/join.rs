//! Joins at run time: stream-stream (windowed, WITHIN), stream-table (lookup), table-table
//! (primary key to primary key, and foreign key).
//!
//! A joined row is the left row, then the right row (each padded with nulls when absent), then
//! `ROWKEY`: the join key (for outer joins, whichever side has it).

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

use crate::ast::JoinKind;
use crate::expr::{CExpr, Env};
use crate::query::{Failure, Row, DEFAULT_GRACE_MS, NS_JOIN, NS_JOIN_BUFFERS};
use crate::state::{Change, StateMap, StateStore};
use crate::value::Value;
use freshet_common::limits::SQL_STATE_CACHE_ENTRIES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinShape {
    /// Right records within `[left.ts - before, left.ts + after]` match. With a grace period,
    /// unmatched outer records are emitted when their window closes; without, at once.
    StreamStream {
        before: i64,
        after: i64,
        grace: Option<i64>,
    },
    StreamTable,
    TableTable,
    /// Left table's column references the right table's primary key.
    ForeignKey,
}

#[derive(Debug, Clone)]
pub struct JoinPlan {
    pub kind: JoinKind,
    pub shape: JoinShape,
    /// The join expression on a left row and on a right row.
    pub left_key: CExpr,
    pub right_key: CExpr,
    pub left_width: usize,
    pub right_width: usize,
    /// WHERE, on the joined row (what of it was not pushed below the join).
    pub filter: Option<CExpr>,
    /// Conjuncts of WHERE that read only the left's (`[0]`) or only the right's (`[1]`) columns,
    /// evaluated on that side's row before it is joined or buffered (see [`push_down`]).
    pub pushed: [Option<CExpr>; 2],
    pub key: Vec<CExpr>,
    pub value: Vec<CExpr>,
    /// A join of two windowed streams matches a key only within the same window, as the
    /// windowed key bytes ksqlDB joins on do: per side (left, right), the row positions of
    /// WINDOWSTART and WINDOWEND, and whether the end counts too (session windows serialize
    /// both bounds, time windows only the start). The output is windowed as the left is.
    pub window_key: [Option<(usize, usize, bool)>; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// A joined result before projection. A delete carries the last joined row of its key (or a
/// row with just the key), so a following stage or the projection can find the key.
#[derive(Debug, Clone)]
pub struct Joined {
    pub row: Vec<Value>,
    pub deleted: bool,
    pub timestamp: i64,
}

fn upsert(row: Vec<Value>, timestamp: i64) -> Joined {
    Joined { row, deleted: false, timestamp }
}

fn delete(row: Vec<Value>, timestamp: i64) -> Joined {
    Joined { row, deleted: true, timestamp }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Buffered {
    row: Row,
    key: Value,
    /// Not read; kept for the stored layout (stream-stream buffers store it as of arrival).
    matched: bool,
    /// For outer records waiting for their window to close.
    pending: bool,
}

/// One side's stream-stream buffer: in memory, each join key's records in arrival order; in the
/// store and the changelog, one entry per record, so a record arriving, changing or leaving
/// writes only itself (a vector per join key was re-encoded whole whenever it changed: a hot
/// key made every commit rewrite all its records).
struct Buffers {
    /// The store's side of the buffer (its namespace and file): written through
    /// [`StateMap::encode_change`], read whole at restore; it caches nothing.
    store: StateMap<Buffered>,
    /// Each join key's records: (sequence number, record), in arrival (= sequence) order.
    by_key: HashMap<Vec<u8>, Vec<(u64, Buffered)>, RandomState>,
    /// Records to write at the next drain (join key, sequence): their current value, or a
    /// tombstone once gone. Only with a store file.
    dirty: Vec<(Vec<u8>, u64)>,
}

impl Buffers {
    fn new(store: StateMap<Buffered>) -> Buffers {
        Buffers { store, by_key: HashMap::default(), dirty: vec![] }
    }

    /// A record's key in the store: its sequence number (8 bytes, big-endian), then the join
    /// key's bytes. In arrival order, so the store's B-tree grows at its end and old records
    /// leave from its start.
    fn entry_key(kb: &[u8], seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + kb.len());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(kb);
        out
    }

    /// `(join key bytes, sequence)` of an entry key.
    fn split(entry: &[u8]) -> Option<(&[u8], u64)> {
        let seq = u64::from_be_bytes(entry.get(..8)?.try_into().ok()?);
        Some((&entry[8..], seq))
    }

    fn mark(&mut self, kb: &[u8], seq: u64) {
        if self.store.tracked() {
            self.dirty.push((kb.to_vec(), seq));
        }
    }

    /// Reads every stored record back; the largest sequence seen.
    fn restore(&mut self) -> crate::Result<Option<u64>> {
        self.by_key.clear();
        self.dirty.clear();
        let mut max = None;
        let by_key = &mut self.by_key;
        self.store.for_each_stored(|entry, b| {
            if let Some((kb, seq)) = Buffers::split(entry) {
                by_key.entry(kb.to_vec()).or_default().push((seq, b));
                max = max.max(Some(seq));
            }
        })?;
        for records in self.by_key.values_mut() {
            records.sort_unstable_by_key(|(seq, _)| *seq);
        }
        Ok(max)
    }

    fn push(&mut self, kb: &[u8], seq: u64, b: Buffered) {
        match self.by_key.get_mut(kb) {
            Some(records) => records.push((seq, b)),
            None => {
                self.by_key.insert(kb.to_vec(), vec![(seq, b)]);
            }
        }
        self.mark(kb, seq);
    }

    /// The changed records as store changes (each once), in sequence order.
    fn drain_changes(&mut self, out: &mut Vec<Change>) -> crate::Result<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        dirty.dedup();
        for (kb, seq) in dirty {
            let current = self
                .by_key
                .get(&kb)
                .and_then(|records| records.binary_search_by_key(&seq, |(s, _)| *s).ok().map(|i| &records[i].1));
            out.push(self.store.encode_change(&Buffers::entry_key(&kb, seq), current)?);
        }
        Ok(())
    }
}

/// The left rows of a foreign-key join by the foreign key they hold. Only keys whose byte
/// encoding is exact for equality (strings, integers, booleans) are indexed: a left row whose
/// foreign key is of another type (a DOUBLE's ±0.0, a DECIMAL's scale) is counted instead, and
/// while any is, a right row's change scans all left rows as before.
#[derive(Default)]
struct FkIndex {
    by_key: HashMap<Vec<u8>, HashSet<Vec<u8>, RandomState>, RandomState>,
    unindexed: usize,
}

impl FkIndex {
    fn bucket(fk: &Value) -> Option<Vec<u8>> {
        match fk {
            Value::String(_) | Value::Int(_) | Value::BigInt(_) | Value::Boolean(_) => Some(key_bytes(fk)),
            _ => None,
        }
    }

    fn add(&mut self, fk: &Value, pkb: &[u8]) {
        if fk.is_null() {
            return;
        }
        match FkIndex::bucket(fk) {
            Some(b) => {
                self.by_key.entry(b).or_default().insert(pkb.to_vec());
            }
            None => self.unindexed += 1,
        }
    }

    fn remove(&mut self, fk: &Value, pkb: &[u8]) {
        if fk.is_null() {
            return;
        }
        match FkIndex::bucket(fk) {
            Some(b) => {
                if let Some(pks) = self.by_key.get_mut(&b) {
                    pks.remove(pkb);
                    if pks.is_empty() {
                        self.by_key.remove(&b);
                    }
                }
            }
            None => self.unindexed = self.unindexed.saturating_sub(1),
        }
    }

    /// The primary keys of the left rows that may reference `key`; `None`: scan them all.
    fn candidates(&self, key: &Value) -> Option<Vec<Vec<u8>>> {
        if self.unindexed > 0 {
            return None;
        }
        let b = FkIndex::bucket(key)?;
        Some(self.by_key.get(&b).map(|pks| pks.iter().cloned().collect()).unwrap_or_default())
    }
}

/// One join stage's state. Stream-stream buffers and a foreign-key join's left rows are
/// resident (loaded whole at restore, never evicted: the buffers are scanned for what is due,
/// the left rows reached through [`FkIndex`] or scanned); the others are looked up by key and
/// bounded by the store's cache.
pub struct JoinState {
    /// Tables: the current row per key (a vector of one).
    left: StateMap<Vec<Buffered>>,
    right: StateMap<Vec<Buffered>>,
    /// Table-table: keys whose last output was a row (so a later miss retracts it).
    shown: StateMap<Option<Vec<Value>>>,
    /// Stream-stream: the buffered records of the left and the right.
    buffers: [Buffers; 2],
    /// Foreign-key joins: the left rows (primary key bytes) per foreign key, so a right row's
    /// change finds the left rows that reference it without scanning them all.
    fk_index: FkIndex,
    /// The sequence number of the next buffered record.
    next_seq: u64,
    /// No buffered outer record closes before stream time passes this, and no buffered record
    /// of side `i` expires before that side's time passes `expire_due[i]` (so the buffers are
    /// scanned only when something may be due).
    next_due: i64,
    expire_due: [i64; 2],
    stream_time: i64,
    /// Per side, the latest timestamp it has seen: as Kafka Streams' window store per side,
    /// a side's records expire by its own time (retention: the join window plus the grace
    /// period), while outer records close by the stream time of both. Not stored: after a
    /// restore it is the latest buffered record's (a side's latest record never expires by
    /// its own time).
    side_time: [i64; 2],
}

fn key_bytes(v: &Value) -> Vec<u8> {
    let mut out = vec![];
    v.key_bytes(&mut out);
    out
}

fn joined(plan: &JoinPlan, left: Option<&Row>, right: Option<&Row>, key: &Value) -> Vec<Value> {
    let mut row = Vec::with_capacity(plan.left_width + plan.right_width + 1);
    if let Some(l) = left {
        row.extend(l.values.iter().take(plan.left_width).cloned());
    }
    row.resize(plan.left_width, Value::Null);
    if let Some(r) = right {
        row.extend(r.values.iter().take(plan.right_width).cloned());
    }
    row.resize(plan.left_width + plan.right_width, Value::Null);
    row.push(key.clone());
    row
}

impl JoinState {
    /// The state of join stage `stage`, its maps in `store`.
    pub fn new(store: &StateStore, stage: usize) -> JoinState {
        let ns = NS_JOIN + 3 * stage as u8;
        let buffers = NS_JOIN_BUFFERS + 2 * stage as u8;
        JoinState {
            left: store.map(ns, SQL_STATE_CACHE_ENTRIES),
            right: store.map(ns + 1, SQL_STATE_CACHE_ENTRIES),
            shown: store.map(ns + 2, SQL_STATE_CACHE_ENTRIES),
            buffers: [
                Buffers::new(store.map(buffers, SQL_STATE_CACHE_ENTRIES)),
                Buffers::new(store.map(buffers + 1, SQL_STATE_CACHE_ENTRIES)),
            ],
            fk_index: FkIndex::default(),
            next_seq: 0,
            next_due: i64::MIN,
            expire_due: [i64::MIN; 2],
            stream_time: 0,
            side_time: [i64::MIN; 2],
        }
    }

    /// After a restore (maps just put in the restored store): the stream time, and the scanned
    /// maps loaded whole.
    pub fn restored(&mut self, shape: JoinShape, time: Option<i64>) -> crate::Result<()> {
        self.stream_time = time.unwrap_or(0);
        match shape {
            JoinShape::StreamStream { .. } => {
                let [left, right] = &mut self.buffers;
                let max = left.restore()?.max(right.restore()?);
                self.next_seq = max.map_or(0, |m| m + 1);
                self.next_due = i64::MIN;
                self.expire_due = [i64::MIN; 2];
                for (time, buf) in self.side_time.iter_mut().zip(&self.buffers) {
                    *time = buf.by_key.values().flatten().map(|(_, b)| b.row.timestamp).max().unwrap_or(i64::MIN);
                }
            }
            JoinShape::ForeignKey => {
                self.left.load_all()?;
                self.fk_index = FkIndex::default();
                for (pkb, rows) in self.left.iter() {
                    if let Some(b) = rows.first() {
                        self.fk_index.add(&b.key, pkb);
                    }
                }
            }
            JoinShape::StreamTable | JoinShape::TableTable => {}
        }
        Ok(())
    }

    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }

    pub fn drain_changes(&mut self, out: &mut Vec<Change>) -> crate::Result<()> {
        self.left.drain_changes(out)?;
        self.right.drain_changes(out)?;
        self.shown.drain_changes(out)?;
        for b in &mut self.buffers {
            b.drain_changes(out)?;
        }
        Ok(())
    }

    pub fn evict(&mut self) {
        self.left.evict();
        self.right.evict();
        self.shown.evict();
    }

    /// Processes one record of one side. `row` is None for a table tombstone; `key_row` is then a
    /// row holding just the record's key columns (to find what it deletes).
    pub fn process(
        &mut self,
        plan: &JoinPlan,
        side: Side,
        row: Option<Row>,
        key_row: &Row,
        env: &mut Env,
        out: &mut Vec<Joined>,
    ) -> Result<(), Failure> {
        let key_expr = match side {
            Side::Left => &plan.left_key,
            Side::Right => &plan.right_key,
        };
        let key = key_expr.eval(row.as_ref().map(|r| &r.values).unwrap_or(&key_row.values), env)?;
        match plan.shape {
            JoinShape::StreamStream { before, after, grace } => {
                let Some(row) = row else { return Ok(()) };
                if key.is_null() {
                    return Ok(());
                }
                self.stream_stream(plan, side, row, key, before, after, grace, out)?;
                Ok(())
            }
            JoinShape::StreamTable => {
                match side {
                    Side::Right => {
                        let kb = key_bytes(&key);
                        match row {
                            Some(r) => {
                                self.right
                                    .insert(kb, vec![Buffered { row: r, key, matched: false, pending: false }])?;
                            }
                            None => {
                                self.right.remove(&kb)?;
                            }
                        }
                    }
                    Side::Left => {
                        let Some(row) = row else { return Ok(()) };
                        if key.is_null() {
                            return Ok(());
                        }
                        let found = self.right.get(&key_bytes(&key))?.and_then(|v| v.first());
                        match (found, plan.kind) {
                            (Some(r), _) => {
                                out.push(upsert(joined(plan, Some(&row), Some(&r.row), &key), row.timestamp))
                            }
                            (None, JoinKind::Left | JoinKind::Full) => {
                                out.push(upsert(joined(plan, Some(&row), None, &key), row.timestamp))
                            }
                            (None, _) => {}
                        }
                    }
                }
                Ok(())
            }
            JoinShape::TableTable => {
                let kb = key_bytes(&key);
                if key.is_null() {
                    return Ok(());
                }
                let own = match side {
                    Side::Left => &mut self.left,
                    Side::Right => &mut self.right,
                };
                let ts = row.as_ref().map(|r| r.timestamp).unwrap_or(key_row.timestamp);
                match row {
                    Some(r) => {
                        own.insert(
                            kb.clone(),
                            vec![Buffered { row: r, key: key.clone(), matched: false, pending: false }],
                        )?;
                    }
                    None => {
                        own.remove(&kb)?;
                    }
                }
                let l = self.left.get(&kb)?.and_then(|v| v.first()).map(|b| &b.row);
                let r = self.right.get(&kb)?.and_then(|v| v.first()).map(|b| &b.row);
                let ts = [l.map(|x| x.timestamp), r.map(|x| x.timestamp), Some(ts)]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(ts);
                let result = match plan.kind {
                    JoinKind::Inner => l.zip(r).map(|(l, r)| joined(plan, Some(l), Some(r), &key)),
                    JoinKind::Left => l.map(|l| joined(plan, Some(l), r, &key)),
                    JoinKind::Right => r.map(|r| joined(plan, l, Some(r), &key)),
                    JoinKind::Full => {
                        if l.is_some() || r.is_some() {
                            Some(joined(plan, l, r, &key))
                        } else {
                            None
                        }
                    }
                };
                let last = self.shown.get(&kb)?.cloned().flatten();
                let was_shown = last.is_some();
                // The other side's change never retracts what was never shown.
                let own_side_drives = matches!(
                    (plan.kind, side),
                    (JoinKind::Inner | JoinKind::Full, _)
                        | (JoinKind::Left, Side::Left)
                        | (JoinKind::Right, Side::Right)
                );
                match result {
                    Some(row) => {
                        self.shown.insert(kb, Some(row.clone()))?;
                        out.push(upsert(row, ts));
                    }
                    None => {
                        if was_shown || (own_side_drives && plan.kind != JoinKind::Inner) {
                            let row = last.unwrap_or_else(|| joined(plan, None, None, &key));
                            out.push(delete(row, ts));
                        }
                        self.shown.insert(kb, None)?;
                    }
                }
                Ok(())
            }
            JoinShape::ForeignKey => self.foreign_key(plan, side, row, key_row, key, env, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn foreign_key(
        &mut self,
        plan: &JoinPlan,
        side: Side,
        row: Option<Row>,
        key_row: &Row,
        key: Value,
        env: &mut Env,
        out: &mut Vec<Joined>,
    ) -> Result<(), Failure> {
        // Left rows are stored by their own primary key (the first column); right rows by theirs.
        match side {
            Side::Left => {
                let pk = row.as_ref().map(|r| r.values[0].clone()).unwrap_or_else(|| key_row.values[0].clone());
                let pkb = key_bytes(&pk);
                let ts = row.as_ref().map(|r| r.timestamp).unwrap_or(key_row.timestamp);
                let Some(row) = row else {
                    if let Some(old) = self.left.remove(&pkb)? {
                        if let Some(b) = old.first() {
                            self.fk_index.remove(&b.key, &pkb);
                        }
                        let old_row = old.first().map(|b| b.row.clone());
                        out.push(delete(joined(plan, old_row.as_ref(), None, &pk), ts));
                    }
                    return Ok(());
                };
                let fk = key;
                let right = if fk.is_null() { None } else { self.right.get(&key_bytes(&fk))?.and_then(|v| v.first()) };
                let old_fk = self.left.get(&pkb)?.and_then(|v| v.first()).map(|b| b.key.clone());
                let had = old_fk.is_some();
                if let Some(old) = &old_fk {
                    self.fk_index.remove(old, &pkb);
                }
                self.fk_index.add(&fk, &pkb);
                self.left.insert(
                    pkb,
                    vec![Buffered { row: row.clone(), key: fk.clone(), matched: false, pending: false }],
                )?;
                match (right, plan.kind) {
                    (Some(r), _) => {
                        let ts = ts.max(r.row.timestamp);
                        out.push(upsert(joined(plan, Some(&row), Some(&r.row), &pk), ts));
                    }
                    (None, JoinKind::Left) => out.push(upsert(joined(plan, Some(&row), None, &pk), ts)),
                    (None, _) => {
                        if had {
                            out.push(delete(joined(plan, Some(&row), None, &pk), ts));
                        }
                    }
                }
            }
            Side::Right => {
                let kb = key_bytes(&key);
                let ts = row.as_ref().map(|r| r.timestamp).unwrap_or(key_row.timestamp);
                match &row {
                    Some(r) => {
                        self.right.insert(
                            kb.clone(),
                            vec![Buffered { row: r.clone(), key: key.clone(), matched: false, pending: false }],
                        )?;
                    }
                    None => {
                        self.right.remove(&kb)?;
                    }
                }
                // Every left row referencing this key is joined again.
                // In input order (the offset, the left's last column), then by primary key: not by
                // the hash map's order.
                let mut lefts: Vec<(Vec<u8>, Buffered)> = vec![];
                match self.fk_index.candidates(&key) {
                    Some(pks) => {
                        for pkb in pks {
                            if let Some(b) = self.left.get(&pkb)?.and_then(|v| v.first()) {
                                if b.key.same(&key) {
                                    lefts.push((pkb, b.clone()));
                                }
                            }
                        }
                    }
                    None => {
                        for (pk, v) in self.left.iter() {
                            if let Some(b) = v.first().filter(|b| b.key.same(&key)) {
                                lefts.push((pk.to_vec(), b.clone()));
                            }
                        }
                    }
                }
                lefts.sort_by(|(pa, a), (pb, b)| {
                    let offset =
                        |b: &Buffered| b.row.values.get(plan.left_width.saturating_sub(1)).and_then(Value::as_i64);
                    offset(a).cmp(&offset(b)).then_with(|| pa.cmp(pb))
                });
                for (_, l) in &lefts {
                    let pk = l.row.values[0].clone();
                    match (&row, plan.kind) {
                        (Some(r), _) => {
                            out.push(upsert(joined(plan, Some(&l.row), Some(r), &pk), ts.max(l.row.timestamp)))
                        }
                        (None, JoinKind::Left) => out.push(upsert(joined(plan, Some(&l.row), None, &pk), ts)),
                        (None, _) => out.push(delete(joined(plan, Some(&l.row), None, &pk), ts)),
                    }
                }
                let _ = env;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn stream_stream(
        &mut self,
        plan: &JoinPlan,
        side: Side,
        row: Row,
        key: Value,
        before: i64,
        after: i64,
        grace: Option<i64>,
        out: &mut Vec<Joined>,
    ) -> Result<(), Failure> {
        let mut kb = key_bytes(&key);
        if let Some((start, end, both)) = plan.window_key[side as usize] {
            row.values[start].key_bytes(&mut kb);
            if both {
                row.values[end].key_bytes(&mut kb);
            }
        }
        let ts = row.timestamp;
        self.stream_time = self.stream_time.max(ts);
        let own_side = side as usize;
        self.side_time[own_side] = self.side_time[own_side].max(ts);
        let outer_here = matches!(
            (plan.kind, side),
            (JoinKind::Left, Side::Left) | (JoinKind::Right, Side::Right) | (JoinKind::Full, _)
        );
        let (own, other) = match side {
            Side::Left => (0, 1),
            Side::Right => (1, 0),
        };
        let mut matched = false;
        {
            let buf = &mut self.buffers[other];
            let mut unpended = vec![];
            // The other side's records of this key, in arrival order.
            for (seq, o) in buf.by_key.get_mut(&kb).map(Vec::as_mut_slice).unwrap_or_default() {
                let ok = match side {
                    Side::Left => o.row.timestamp >= ts - before && o.row.timestamp <= ts + after,
                    Side::Right => ts >= o.row.timestamp - before && ts <= o.row.timestamp + after,
                };
                if !ok {
                    continue;
                }
                matched = true;
                let (l, r) = match side {
                    Side::Left => (&row, &o.row),
                    Side::Right => (&o.row, &row),
                };
                out.push(upsert(joined(plan, Some(l), Some(r), &key), ts.max(o.row.timestamp)));
                if o.pending {
                    // Matched after all: no longer waiting to be emitted unmatched (the only
                    // change worth writing to the changelog).
                    o.pending = false;
                    unpended.push(*seq);
                }
            }
            for seq in unpended {
                buf.mark(&kb, seq);
            }
        }
        let mut pending = false;
        if !matched && outer_here {
            match grace {
                None => {
                    let j = match side {
                        Side::Left => joined(plan, Some(&row), None, &key),
                        Side::Right => joined(plan, None, Some(&row), &key),
                    };
                    out.push(upsert(j, ts));
                }
                Some(_) => pending = true,
            }
        }
        // Without a grace period records are kept for ksqlDB's default of 24 hours past their
        // window (unmatched outer records were emitted at once, so nothing is pending): the
        // buffers are resident in memory and must not grow without bound.
        let g = grace.unwrap_or(DEFAULT_GRACE_MS);
        let horizon = before.max(after) + g;
        if ts.saturating_add(horizon) < self.side_time[own_side] {
            // Older than its own side's retention: not kept (Kafka Streams' window store drops
            // it), and an unmatched outer record is emitted at once, its window long closed.
            if pending {
                let j = match side {
                    Side::Left => joined(plan, Some(&row), None, &key),
                    Side::Right => joined(plan, None, Some(&row), &key),
                };
                out.push(upsert(j, ts));
            }
        } else {
            // When this record closes (pending) or expires: the scan must not start later.
            let span = match side {
                Side::Left => after,
                Side::Right => before,
            };
            if pending {
                self.next_due = self.next_due.min(ts.saturating_add(span + g));
            }
            self.expire_due[own_side] = self.expire_due[own_side].min(ts.saturating_add(horizon));
            let seq = self.next_seq;
            self.next_seq += 1;
            self.buffers[own].push(&kb, seq, Buffered { row, key: key.clone(), matched, pending });
        }
        if self.stream_time > self.next_due
            || self.side_time[0] > self.expire_due[0]
            || self.side_time[1] > self.expire_due[1]
        {
            self.flush_closed(plan, before, after, g, out)?;
        }
        Ok(())
    }

    /// Emits outer records whose window has closed without a match, and forgets records no
    /// later record can match.
    fn flush_closed(
        &mut self,
        plan: &JoinPlan,
        before: i64,
        after: i64,
        grace: i64,
        out: &mut Vec<Joined>,
    ) -> Result<(), Failure> {
        let now = self.stream_time;
        let horizon = before.max(after) + grace;
        let mut ready: Vec<(Side, u64, Buffered)> = vec![];
        let mut next_due = i64::MAX;
        for (side, i, span) in [(Side::Left, 0, after), (Side::Right, 1, before)] {
            let side_now = self.side_time[i];
            let mut expire_due = i64::MAX;
            let buf = &mut self.buffers[i];
            let closes_at = |b: &Buffered| b.row.timestamp.saturating_add(span + grace);
            let expires_at = |b: &Buffered| b.row.timestamp.saturating_add(horizon);
            // The buffers are resident: a scan sees them all; only the records that change are
            // marked (and so written to the changelog).
            let mut changed: Vec<(Vec<u8>, u64)> = vec![];
            buf.by_key.retain(|kb, records| {
                records.retain_mut(|(seq, b)| {
                    if b.pending {
                        if closes_at(b) >= now {
                            next_due = next_due.min(closes_at(b));
                            return true;
                        }
                        b.pending = false;
                        ready.push((side, *seq, b.clone()));
                        changed.push((kb.clone(), *seq));
                    }
                    if expires_at(b) < side_now {
                        changed.push((kb.clone(), *seq));
                        return false;
                    }
                    expire_due = expire_due.min(expires_at(b));
                    true
                });
                !records.is_empty()
            });
            for (kb, seq) in changed {
                buf.mark(&kb, seq);
            }
            self.expire_due[i] = expire_due;
        }
        self.next_due = next_due;
        // By timestamp, then side (the right's first), then key, as Kafka Streams' outer-join
        // store orders them, not by the hash map's order; a key's records of one side stay in
        // arrival order.
        ready.sort_by(|(sa, qa, a), (sb, qb, b)| {
            let side = |s: &Side| matches!(s, Side::Left);
            (a.row.timestamp, side(sa))
                .cmp(&(b.row.timestamp, side(sb)))
                .then_with(|| key_bytes(&a.key).cmp(&key_bytes(&b.key)))
                .then(qa.cmp(qb))
        });
        for (side, _, b) in ready {
            let j = match side {
                Side::Left => joined(plan, Some(&b.row), None, &b.key),
                Side::Right => joined(plan, None, Some(&b.row), &b.key),
            };
            out.push(upsert(j, b.row.timestamp));
        }
        Ok(())
    }
}

/// Splits a single-stage stream-stream inner join's WHERE into the conjuncts that read one side
/// only, which are evaluated on that side's records before they are buffered (a record one of
/// them rejects can join nothing that passes WHERE), and the rest, evaluated on the joined row.
/// Only conjuncts that cannot fail or depend on anything but the row are moved: comparisons,
/// AND/OR/NOT, IS [NOT] NULL, IN, BETWEEN, LIKE of columns and constants (no function calls,
/// casts or arithmetic, whose errors would then be reported for records that join nothing).
/// The right's conjuncts are rewritten to the right row's own column positions.
pub fn push_down(plan: &mut JoinPlan) {
    if !matches!((plan.shape, plan.kind), (JoinShape::StreamStream { .. }, JoinKind::Inner)) {
        return;
    }
    let Some(filter) = plan.filter.take() else { return };
    let (lw, rw) = (plan.left_width, plan.right_width);
    let mut conjuncts = vec![];
    flatten_and(filter, &mut conjuncts);
    let (mut left, mut right, mut rest) = (vec![], vec![], vec![]);
    for c in conjuncts {
        let mut cols = vec![];
        if !pushable(&c, &mut cols) || cols.is_empty() {
            rest.push(c);
        } else if cols.iter().all(|&i| i < lw) {
            left.push(c);
        } else if cols.iter().all(|&i| i >= lw && i < lw + rw) {
            right.push(shift_columns(&c, lw));
        } else {
            rest.push(c);
        }
    }
    plan.pushed = [and_all(left), and_all(right)];
    plan.filter = and_all(rest);
}

fn flatten_and(e: CExpr, out: &mut Vec<CExpr>) {
    match e {
        CExpr::And(a, b) => {
            flatten_and(*a, out);
            flatten_and(*b, out);
        }
        other => out.push(other),
    }
}

fn and_all(conjuncts: Vec<CExpr>) -> Option<CExpr> {
    conjuncts.into_iter().reduce(|a, b| CExpr::And(Box::new(a), Box::new(b)))
}

/// Whether `e` is made only of the shapes [`push_down`] moves; collects its columns.
fn pushable(e: &CExpr, cols: &mut Vec<usize>) -> bool {
    match e {
        CExpr::Const(_) => true,
        CExpr::Column(i) => {
            cols.push(*i);
            true
        }
        CExpr::Not(a) | CExpr::IsNull(a, _) => pushable(a, cols),
        CExpr::Compare(_, a, b) | CExpr::And(a, b) | CExpr::Or(a, b) | CExpr::IsDistinct(a, b, _) => {
            pushable(a, cols) && pushable(b, cols)
        }
        CExpr::Between(a, b, c, _) => pushable(a, cols) && pushable(b, cols) && pushable(c, cols),
        CExpr::InList(a, items, _) => pushable(a, cols) && items.iter().all(|i| pushable(i, cols)),
        CExpr::Like(a, b, _, _) => pushable(a, cols) && pushable(b, cols),
        _ => false,
    }
}

/// A [`pushable`] expression with every column position lowered by `by`.
fn shift_columns(e: &CExpr, by: usize) -> CExpr {
    let s = |x: &CExpr| Box::new(shift_columns(x, by));
    match e {
        CExpr::Column(i) => CExpr::Column(i - by),
        CExpr::Not(a) => CExpr::Not(s(a)),
        CExpr::IsNull(a, n) => CExpr::IsNull(s(a), *n),
        CExpr::Compare(op, a, b) => CExpr::Compare(*op, s(a), s(b)),
        CExpr::And(a, b) => CExpr::And(s(a), s(b)),
        CExpr::Or(a, b) => CExpr::Or(s(a), s(b)),
        CExpr::IsDistinct(a, b, n) => CExpr::IsDistinct(s(a), s(b), *n),
        CExpr::Between(a, b, c, n) => CExpr::Between(s(a), s(b), s(c), *n),
        CExpr::InList(a, items, n) => CExpr::InList(s(a), items.iter().map(|i| shift_columns(i, by)).collect(), *n),
        CExpr::Like(a, b, esc, n) => CExpr::Like(s(a), s(b), *esc, *n),
        other => other.clone(),
    }
}
