//! Joins at run time: stream-stream (windowed, WITHIN), stream-table (lookup), table-table
//! (primary key to primary key, and foreign key).
//!
//! A joined row is the left row, then the right row (each padded with nulls when absent), then
//! `ROWKEY`: the join key (for outer joins, whichever side has it).

use serde::{Deserialize, Serialize};

use crate::ast::JoinKind;
use crate::expr::{CExpr, Env};
use crate::query::{Failure, Row, NS_JOIN};
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

#[derive(Debug)]
pub struct JoinPlan {
    pub kind: JoinKind,
    pub shape: JoinShape,
    /// The join expression on a left row and on a right row.
    pub left_key: CExpr,
    pub right_key: CExpr,
    pub left_width: usize,
    pub right_width: usize,
    /// WHERE, on the joined row.
    pub filter: Option<CExpr>,
    pub key: Vec<CExpr>,
    pub value: Vec<CExpr>,
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
    matched: bool,
    /// For outer records waiting for their window to close.
    pending: bool,
}

/// One join stage's state. Stream-stream buffers and a foreign-key join's left rows are
/// scanned, so those maps are resident (loaded whole, never evicted); the others are looked up
/// by key and bounded by the store's cache.
pub struct JoinState {
    /// Stream-stream: buffered records per join key. Tables: the current row per key.
    left: StateMap<Vec<Buffered>>,
    right: StateMap<Vec<Buffered>>,
    /// Table-table: keys whose last output was a row (so a later miss retracts it).
    shown: StateMap<Option<Vec<Value>>>,
    stream_time: i64,
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
        JoinState {
            left: store.map(ns, SQL_STATE_CACHE_ENTRIES),
            right: store.map(ns + 1, SQL_STATE_CACHE_ENTRIES),
            shown: store.map(ns + 2, SQL_STATE_CACHE_ENTRIES),
            stream_time: 0,
        }
    }

    /// After a restore (maps just put in the restored store): the stream time, and the scanned
    /// maps loaded whole.
    pub fn restored(&mut self, shape: JoinShape, time: Option<i64>) -> crate::Result<()> {
        self.stream_time = time.unwrap_or(0);
        match shape {
            JoinShape::StreamStream { .. } => {
                self.left.load_all()?;
                self.right.load_all()?;
            }
            JoinShape::ForeignKey => self.left.load_all()?,
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
        self.shown.drain_changes(out)
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
                        let old_row = old.first().map(|b| b.row.clone());
                        out.push(delete(joined(plan, old_row.as_ref(), None, &pk), ts));
                    }
                    return Ok(());
                };
                let fk = key;
                let right = if fk.is_null() { None } else { self.right.get(&key_bytes(&fk))?.and_then(|v| v.first()) };
                let had = self.left.contains_key(&pkb)?;
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
                let mut lefts: Vec<(&[u8], &Buffered)> = self
                    .left
                    .iter()
                    .filter_map(|(pk, v)| v.first().map(|b| (pk, b)))
                    .filter(|(_, b)| b.key.same(&key))
                    .collect();
                lefts.sort_by(|(pa, a), (pb, b)| {
                    let offset =
                        |b: &Buffered| b.row.values.get(plan.left_width.saturating_sub(1)).and_then(Value::as_i64);
                    offset(a).cmp(&offset(b)).then_with(|| pa.cmp(pb))
                });
                for (_, l) in lefts {
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
        let kb = key_bytes(&key);
        let ts = row.timestamp;
        self.stream_time = self.stream_time.max(ts);
        let outer_here = matches!(
            (plan.kind, side),
            (JoinKind::Left, Side::Left) | (JoinKind::Right, Side::Right) | (JoinKind::Full, _)
        );
        let mut matched = false;
        {
            let other = match side {
                Side::Left => self.right.get_mut(&kb)?,
                Side::Right => self.left.get_mut(&kb)?,
            };
            if let Some(others) = other {
                for o in others.iter_mut() {
                    let ok = match side {
                        Side::Left => o.row.timestamp >= ts - before && o.row.timestamp <= ts + after,
                        Side::Right => ts >= o.row.timestamp - before && ts <= o.row.timestamp + after,
                    };
                    if !ok {
                        continue;
                    }
                    matched = true;
                    o.matched = true;
                    o.pending = false;
                    let (l, r) = match side {
                        Side::Left => (&row, &o.row),
                        Side::Right => (&o.row, &row),
                    };
                    out.push(upsert(joined(plan, Some(l), Some(r), &key), ts.max(o.row.timestamp)));
                }
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
        let own = match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        };
        own.get_or_insert_with(&kb, Vec::new)?.push(Buffered { row, key: key.clone(), matched, pending });
        if let Some(g) = grace {
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
        let mut ready: Vec<(Side, Buffered)> = vec![];
        for (side, buf, span) in [(Side::Left, &mut self.left, after), (Side::Right, &mut self.right, before)] {
            let closes = |b: &Buffered| b.pending && b.row.timestamp + span + grace < now;
            let expires = |b: &Buffered| !b.pending && b.row.timestamp + horizon < now;
            // The buffers are resident: a scan sees them all; only the keys that change are
            // touched (and so written to the changelog).
            let keys: Vec<Vec<u8>> = buf
                .iter()
                .filter(|(_, items)| items.iter().any(|b| closes(b) || expires(b)))
                .map(|(k, _)| k.to_vec())
                .collect();
            for k in keys {
                let Some(items) = buf.get_mut(&k)? else { continue };
                for b in items.iter_mut() {
                    if closes(b) {
                        b.pending = false;
                        ready.push((side, b.clone()));
                    }
                }
                items.retain(|b| b.pending || b.row.timestamp + horizon >= now);
                if items.is_empty() {
                    buf.remove(&k)?;
                }
            }
        }
        // By timestamp, then side (the right's first), then key, as Kafka Streams' outer-join
        // store orders them, not by the hash map's order; a key's records of one side stay in
        // arrival order.
        ready.sort_by(|(sa, a), (sb, b)| {
            let side = |s: &Side| matches!(s, Side::Left);
            (a.row.timestamp, side(sa))
                .cmp(&(b.row.timestamp, side(sb)))
                .then_with(|| key_bytes(&a.key).cmp(&key_bytes(&b.key)))
        });
        for (side, b) in ready {
            let j = match side {
                Side::Left => joined(plan, Some(&b.row), None, &b.key),
                Side::Right => joined(plan, None, Some(&b.row), &b.key),
            };
            out.push(upsert(j, b.row.timestamp));
        }
        Ok(())
    }
}
