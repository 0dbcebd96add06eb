//! The current contents of tables for pull queries: the latest record per key of a table's
//! topic, per partition, kept in an embedded store (redb, as the query state stores) and brought
//! up to date incrementally: each pull query first reads what is new on the topic.
//!
//! The topic is the changelog (as ksqlDB does for source tables): the store holds, in one redb
//! transaction, the rows and the topic offset per partition they reflect, so after a crash the
//! store is at its last durable commit and the next refresh reads the rest. Rows live in the
//! file, not in memory: a table queried by pull queries is bounded by the disk, not by RAM.
//! Without a directory (`freshet sql-test`, in-memory topics) the store is redb's in-memory
//! backend.
//!
//! One file per table: `DIR/<table name in hex>.redb` (a quoted table name may hold any
//! character). Keys are the partition (4 bytes, big-endian) followed by the record key, so a
//! scan goes partition by partition, in key byte order.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::catalog::SourceDef;
use crate::error::{Result, SqlError};
use crate::topics::{Bytes, Consumed, Record, Topics};
use freshet_common::limits::{SQL_POLL_BATCH, SQL_STATE_DURABLE_INTERVAL_MS, SQL_TABLE_STORE_CACHE_BYTES};

/// Rows: partition (u32, big-endian) + record key → [`StoredRow`] (postcard).
const ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rows");
/// Next offset to read, per partition.
const OFFSETS: TableDefinition<u32, i64> = TableDefinition::new("offsets");
/// [`META_SQL`] → the statement that created the table.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const META_SQL: &str = "sql";

/// A row as stored: the record without its key (which is the store key).
#[derive(Deserialize)]
struct StoredRow {
    offset: i64,
    timestamp: i64,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A [`StoredRow`] encoded from borrowed parts (postcard writes a byte slice as a `Vec<u8>`).
#[derive(Serialize)]
struct RowRef<'a> {
    offset: i64,
    timestamp: i64,
    value: &'a [u8],
    headers: &'a [(String, Option<Vec<u8>>)],
}

fn storage<E: Display>(what: &'static str) -> impl Fn(E) -> SqlError {
    move |e| SqlError::server(format!("table store: {what}: {e}"))
}

fn row_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The materialized tables pull queries have read.
#[derive(Default)]
pub struct Materialized {
    /// Where the table files live; `None`: in memory.
    dir: Option<PathBuf>,
    tables: HashMap<String, TableStore>,
}

struct TableStore {
    db: Database,
    path: Option<PathBuf>,
    /// The statement that created the table: a table dropped and created again starts over.
    sql: String,
    /// Next offset to read, per partition (as in the file).
    offsets: Vec<i64>,
    last_durable: Instant,
}

impl Materialized {
    /// Tables kept in files under `dir`.
    pub fn on_disk(dir: PathBuf) -> Materialized {
        Materialized { dir: Some(dir), tables: HashMap::new() }
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.as_ref().map(|d| d.join(format!("{hex}.redb")))
    }

    fn open(&self, src: &SourceDef) -> Result<TableStore> {
        let path = self.path(&src.name);
        let db = match &path {
            None => {
                let mut builder = Database::builder();
                builder.set_cache_size(SQL_TABLE_STORE_CACHE_BYTES);
                builder
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(storage("creating an in-memory store"))?
            }
            Some(path) => {
                let dir = path.parent().expect("a file in a directory");
                std::fs::create_dir_all(dir).map_err(storage("creating the table directory"))?;
                crate::state::open_rebuildable(path, SQL_TABLE_STORE_CACHE_BYTES, "table store", "the table's topic")?
            }
        };
        let mut store = TableStore { db, path, sql: String::new(), offsets: vec![], last_durable: Instant::now() };
        let txn = store.db.begin_read().map_err(storage("begin"))?;
        let stored_sql = match txn.open_table(META) {
            Ok(meta) => meta.get(META_SQL).map_err(storage("meta"))?.map(|v| v.value().to_string()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(storage("meta table")(e)),
        };
        if stored_sql.as_deref() == Some(src.sql.as_str()) {
            let offsets = txn.open_table(OFFSETS).map_err(storage("offsets table"))?;
            for entry in offsets.iter().map_err(storage("offsets"))? {
                let (p, next) = entry.map_err(storage("offsets"))?;
                let p = p.value() as usize;
                if store.offsets.len() <= p {
                    store.offsets.resize(p + 1, 0);
                }
                store.offsets[p] = next.value();
            }
            store.sql = src.sql.clone();
        } else {
            drop(txn);
            // New, or left by a table of the same name that was dropped: start over.
            store.reset(&src.sql)?;
        }
        Ok(store)
    }

    /// Reads what is new on a table's topic into its store; returns the store, to scan.
    pub(crate) fn refresh(&mut self, topics: &Arc<dyn Topics>, src: &SourceDef) -> Result<TableSnapshot> {
        if self.tables.get(&src.name).is_some_and(|t| t.sql != src.sql) {
            self.forget(&src.name);
        }
        if !self.tables.contains_key(&src.name) {
            let store = self.open(src)?;
            self.tables.insert(src.name.clone(), store);
        }
        let store = self.tables.get_mut(&src.name).expect("inserted above");
        store.catch_up(topics, &src.topic)?;
        Ok(TableSnapshot { txn: store.db.begin_read().map_err(storage("begin"))? })
    }

    /// Removes the files of tables not in `live` (dropped while their file could not be
    /// removed, or left by an older data directory).
    pub fn remove_orphans(&mut self, live: &[String]) {
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let live: Vec<PathBuf> = live.iter().filter_map(|name| self.path(name)).collect();
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|e| e == "redb") && !live.contains(&path) {
                tracing::info!(path = %path.display(), "removing the store of a table that no longer exists");
                self.tables.retain(|_, t| t.path.as_ref() != Some(&path));
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Forgets a dropped table and removes its file.
    pub fn forget(&mut self, name: &str) {
        let path = self.tables.remove(name).and_then(|t| t.path).or_else(|| self.path(name));
        if let Some(path) = path {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a dropped table's store");
                }
            }
        }
    }
}

impl TableStore {
    /// Empties the store and records `sql` as the table's statement.
    fn reset(&mut self, sql: &str) -> Result<()> {
        let txn = self.db.begin_write().map_err(storage("begin"))?;
        txn.delete_table(ROWS).map_err(storage("rows table"))?;
        txn.delete_table(OFFSETS).map_err(storage("offsets table"))?;
        txn.open_table(ROWS).map_err(storage("rows table"))?;
        txn.open_table(OFFSETS).map_err(storage("offsets table"))?;
        txn.open_table(META).map_err(storage("meta table"))?.insert(META_SQL, sql).map_err(storage("meta"))?;
        txn.commit().map_err(storage("commit"))?;
        self.sql = sql.to_string();
        self.offsets.clear();
        Ok(())
    }

    /// Applies the topic's new records, one redb transaction per bounded read.
    fn catch_up(&mut self, topics: &Arc<dyn Topics>, topic: &str) -> Result<()> {
        let partitions = topics.partitions(topic).unwrap_or(0).max(0) as usize;
        if self.offsets.len() < partitions {
            self.offsets.resize(partitions, 0);
        }
        for p in 0..partitions {
            let end = topics.end_offset(topic, p as i32)?;
            if end < self.offsets[p] {
                // The topic was recreated: start the whole table over.
                let sql = self.sql.clone();
                self.reset(&sql)?;
                return self.catch_up(topics, topic);
            }
            while self.offsets[p] < end {
                let batch = topics.read(topic, p as i32, self.offsets[p], SQL_POLL_BATCH)?;
                let Some(last) = batch.last() else { break };
                let next = last.offset + 1;
                self.apply(p as u32, &batch, next)?;
                self.offsets[p] = next;
            }
        }
        Ok(())
    }

    fn apply(&mut self, partition: u32, batch: &[Consumed], next: i64) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(storage("begin"))?;
        let durable = self.last_durable.elapsed() >= Duration::from_millis(SQL_STATE_DURABLE_INTERVAL_MS);
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
            .map_err(storage("durability"))?;
        {
            let mut rows = txn.open_table(ROWS).map_err(storage("rows table"))?;
            let mut encoded = vec![];
            for c in batch {
                let Some(key) = &c.record.key else { continue };
                let k = row_key(partition, key);
                match &c.record.value {
                    None => {
                        rows.remove(k.as_slice()).map_err(storage("remove"))?;
                    }
                    Some(value) => {
                        let row = RowRef {
                            offset: c.offset,
                            timestamp: c.record.timestamp,
                            value,
                            headers: &c.record.headers,
                        };
                        encoded.clear();
                        postcard::to_io(&row, &mut encoded).map_err(storage("encode"))?;
                        rows.insert(k.as_slice(), encoded.as_slice()).map_err(storage("insert"))?;
                    }
                }
            }
            let mut offsets = txn.open_table(OFFSETS).map_err(storage("offsets table"))?;
            offsets.insert(partition, next).map_err(storage("offsets"))?;
        }
        txn.commit().map_err(storage("commit"))?;
        if durable {
            self.last_durable = Instant::now();
        }
        Ok(())
    }
}

/// A stored row as the record it was.
fn consumed(partition: u32, key: &[u8], stored: &[u8]) -> Result<Consumed> {
    let row: StoredRow = postcard::from_bytes(stored).map_err(storage("decode"))?;
    Ok(Consumed {
        partition: partition as i32,
        offset: row.offset,
        record: Record {
            key: Some(Bytes::copy_from_slice(key)),
            value: Some(Bytes::from(row.value)),
            timestamp: row.timestamp,
            headers: row.headers,
        },
    })
}

/// A consistent view of a table's rows.
pub(crate) struct TableSnapshot {
    txn: redb::ReadTransaction,
}

impl TableSnapshot {
    /// Calls `f` with the row of each of `keys` (record key bytes, sorted) in each of the first
    /// `partitions` partitions that has one, in [`TableSnapshot::scan`]'s order, until it
    /// returns false: one B-tree lookup per key and partition instead of a scan.
    pub(crate) fn lookup(&self, partitions: i32, keys: &[Vec<u8>], mut f: impl FnMut(&Consumed) -> bool) -> Result<()> {
        let rows = match self.txn.open_table(ROWS) {
            Ok(rows) => rows,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage("rows table")(e)),
        };
        for p in 0..partitions.max(0) as u32 {
            for key in keys {
                let Some(v) = rows.get(row_key(p, key).as_slice()).map_err(storage("lookup"))? else { continue };
                if !f(&consumed(p, key, v.value())?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Calls `f` with each row, partition by partition in key byte order, until it returns false.
    pub(crate) fn scan(&self, mut f: impl FnMut(&Consumed) -> bool) -> Result<()> {
        let rows = match self.txn.open_table(ROWS) {
            Ok(rows) => rows,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage("rows table")(e)),
        };
        for entry in rows.iter().map_err(storage("scan"))? {
            let (k, v) = entry.map_err(storage("scan"))?;
            let (k, v) = (k.value(), v.value());
            let Some((p, key)) = k.split_first_chunk::<4>() else {
                return Err(SqlError::server("table store: a row key without its partition"));
            };
            if !f(&consumed(u32::from_be_bytes(*p), key, v)?) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::MemTopics;

    fn table(sql: &str) -> SourceDef {
        let mut engine = crate::engine::Engine::new(Arc::new(MemTopics::new()));
        engine.auto_create_topics = true;
        engine.execute(sql).expect("create table");
        engine.catalog.sources.get("T").expect("T").clone()
    }

    /// Table T over topic t with `partitions` partitions.
    fn setup(partitions: i32) -> (SourceDef, Arc<dyn Topics>) {
        let src = table(&format!(
            "CREATE TABLE T (K STRING PRIMARY KEY, V INT) WITH (kafka_topic='t', value_format='JSON', partitions={partitions});"
        ));
        let topics: Arc<dyn Topics> = Arc::new(MemTopics::new());
        topics.create_topic("t", partitions).unwrap();
        (src, topics)
    }

    fn rec(key: &str, value: Option<&str>) -> Record {
        Record {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            timestamp: 7,
            headers: vec![("h".into(), Some(b"x".to_vec()))],
        }
    }

    fn rows(m: &mut Materialized, topics: &Arc<dyn Topics>, src: &SourceDef) -> Vec<(i32, String, String, i64)> {
        let snap = m.refresh(topics, src).unwrap();
        assert!(m.tables.contains_key(&src.name));
        let mut out = vec![];
        snap.scan(|c| {
            let s = |b: &Option<Bytes>| String::from_utf8(b.as_ref().unwrap().to_vec()).unwrap();
            assert_eq!(c.record.headers, vec![("h".to_string(), Some(b"x".to_vec()))]);
            assert_eq!(c.record.timestamp, 7);
            out.push((c.partition, s(&c.record.key), s(&c.record.value), c.offset));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn key_lookups_find_the_rows_a_scan_finds_in_the_same_order() {
        let (src, topics) = setup(2);
        for i in 0..50 {
            let p = i % 2;
            topics.append("t", p, vec![rec(&format!("k{i:02}"), Some(&format!(r#"{{"V": {i}}}"#)))]).unwrap();
        }
        topics.append("t", 1, vec![rec("k01", Some(r#"{"V": 100}"#))]).unwrap();
        let mut m = Materialized::default();
        let all = rows(&mut m, &topics, &src);
        let snap = m.refresh(&topics, &src).unwrap();
        let mut keys: Vec<Vec<u8>> = ["k07", "k01", "k40", "nope"].iter().map(|k| k.as_bytes().to_vec()).collect();
        keys.sort();
        let mut found = vec![];
        snap.lookup(2, &keys, |c| {
            found.push((c.partition, String::from_utf8(c.record.key.as_ref().unwrap().to_vec()).unwrap(), c.offset));
            true
        })
        .unwrap();
        let expected: Vec<_> = all
            .iter()
            .filter(|(_, k, _, _)| ["k07", "k01", "k40"].contains(&k.as_str()))
            .map(|(p, k, _, o)| (*p, k.clone(), *o))
            .collect();
        assert_eq!(found, expected);
        assert_eq!(found.len(), 3, "the latest row of k01 only: {found:?}");
        let mut first = vec![];
        snap.lookup(2, &keys, |c| {
            first.push(c.offset);
            false
        })
        .unwrap();
        assert_eq!(first.len(), 1, "stops when told");
    }

    #[test]
    fn latest_row_per_key_survives_reopening_and_reads_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let (src, topics) = setup(2);
        topics.append("t", 0, vec![rec("a", Some("1")), rec("b", Some("2")), rec("a", Some("3"))]).unwrap();
        topics.append("t", 1, vec![rec("c", Some("4")), rec("d", Some("5")), rec("c", None)]).unwrap();
        let mut m = Materialized::on_disk(dir.path().to_path_buf());
        let expected =
            vec![(0, "a".into(), "3".into(), 2), (0, "b".into(), "2".into(), 1), (1, "d".into(), "5".into(), 1)];
        assert_eq!(rows(&mut m, &topics, &src), expected);
        drop(m);

        // Reopened over topics that lost their old records: the rows come from the file, and
        // only records past the stored offsets are read.
        let later: Arc<dyn Topics> = Arc::new(MemTopics::new());
        later.create_topic("t", 2).unwrap();
        later.append("t", 0, vec![rec("x", Some("0")), rec("y", Some("0")), rec("z", Some("0"))]).unwrap();
        later.append("t", 0, vec![rec("b", None)]).unwrap();
        later.append("t", 1, vec![rec("x", Some("0")), rec("y", Some("0")), rec("z", Some("0"))]).unwrap();
        let mut m = Materialized::on_disk(dir.path().to_path_buf());
        assert_eq!(rows(&mut m, &later, &src), vec![(0, "a".into(), "3".into(), 2), (1, "d".into(), "5".into(), 1)]);
    }

    #[test]
    fn a_table_created_again_or_a_recreated_topic_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let (src, topics) = setup(1);
        topics.append("t", 0, vec![rec("a", Some("1")), rec("b", Some("2"))]).unwrap();
        let mut m = Materialized::on_disk(dir.path().to_path_buf());
        assert_eq!(rows(&mut m, &topics, &src).len(), 2);

        // The topic deleted and created again, shorter: the old rows go.
        topics.delete_topic("t").unwrap();
        topics.create_topic("t", 1).unwrap();
        topics.append("t", 0, vec![rec("c", Some("3"))]).unwrap();
        assert_eq!(rows(&mut m, &topics, &src), vec![(0, "c".into(), "3".into(), 0)]);

        // Dropped (file removed) and created again with another statement: read from the start.
        m.forget("T");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the file is removed");
        let other = table("CREATE TABLE T (K STRING PRIMARY KEY, V BIGINT) WITH (kafka_topic='t', value_format='JSON', partitions=1);");
        topics.append("t", 0, vec![rec("d", Some("4"))]).unwrap();
        assert_eq!(rows(&mut m, &topics, &other).len(), 2);
        drop(m);
        // A file left by another statement of the same name is not trusted either.
        let mut m = Materialized::on_disk(dir.path().to_path_buf());
        assert_eq!(rows(&mut m, &topics, &src).len(), 2);
        // Files of tables that no longer exist go; the others stay.
        std::fs::write(dir.path().join("4f4c44.redb"), b"left over").unwrap();
        m.remove_orphans(&["T".to_string()]);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("54.redb")]);
    }

    #[test]
    fn in_memory_tables_work_without_a_directory() {
        let (src, topics) = setup(1);
        topics.append("t", 0, vec![rec("a", Some("1"))]).unwrap();
        let mut m = Materialized::default();
        assert_eq!(rows(&mut m, &topics, &src), vec![(0, "a".into(), "1".into(), 0)]);
        topics.append("t", 0, vec![rec("a", None), rec("b", Some("2"))]).unwrap();
        assert_eq!(rows(&mut m, &topics, &src), vec![(0, "b".into(), "2".into(), 2)]);
    }
}
