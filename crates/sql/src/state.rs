//! State stores of persistent queries: a query's state (aggregation groups, join buffers, a
//! table's rows) lives in an embedded key-value store with a bounded in-memory cache in front,
//! and every change is also a record of the query's changelog topic.
//!
//! The changelog is the durable truth: its records are written in the same atomic commit as the
//! step's outputs and input progress, and only after that commit succeeded are the changes
//! applied to the local store ([`StateStore::apply`]), together with the changelog offset they
//! reach. So the store never runs ahead of the changelog, and a restart applies only the
//! changelog's tail ([`StateStore::restore`]) instead of re-reading the query's inputs; a lost or
//! foreign store file is rebuilt from the whole (compacted) changelog.
//!
//! The store is [redb](https://docs.rs/redb) (see ARCHITECTURE.md for why): one file per query,
//! one table of state entries keyed by map namespace + key, one table of metadata. Commits are
//! not fsynced (`Durability::None`) except every `SQL_STATE_DURABLE_INTERVAL_MS` and at close:
//! after a crash redb returns to its last durable commit, which records the changelog offset it
//! reflects, and the changelog supplies the rest.
//!
//! A [`StateMap`] is one typed map of a store. Reads go through its cache; a miss loads the entry
//! from the store; writes stay in the cache, marked dirty, until [`StateMap::drain_changes`]
//! collects them for the changelog. Clean entries are evicted when the cache grows past its
//! capacity, so state is bounded by the disk, not by RAM. Without a file (`freshet sql-test`,
//! in-memory topics) the cache is the whole map and nothing is evicted.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, SqlError};
use crate::topics::{Record, Topics};
use freshet_common::limits::{SQL_POLL_BATCH, SQL_STATE_CACHE_BYTES, SQL_STATE_DURABLE_INTERVAL_MS};

/// State entries: namespace byte + key → encoded value.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// Metadata: [`META_CHANGELOG_NEXT`] → the changelog offset the entries reflect.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const META_CHANGELOG_NEXT: &str = "changelog_next";

/// One change of a map: the full key (namespace byte first) and the encoded value, `None` for a
/// deletion. The same pair is the changelog record's key and value.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

fn storage<E: Display>(what: &'static str) -> impl Fn(E) -> SqlError {
    move |e| SqlError::server(format!("state store: {what}: {e}"))
}

/// Opens (or creates) a redb file that is only a cache of a topic (`source`): a file that cannot
/// be opened (torn, foreign, of another version) is removed and created anew, for the caller to
/// rebuild from the topic; a file another process holds open is an error (never touched).
pub(crate) fn open_rebuildable(path: &Path, cache_bytes: usize, what: &str, source: &str) -> Result<Database> {
    let create = || Database::builder().set_cache_size(cache_bytes).create(path);
    match create() {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(SqlError::server(format!(
            "{what} {} is in use by another process (each server needs a data directory of its own)",
            path.display()
        ))),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "{what} unusable; rebuilding it from {source}");
            let failed = |e: &dyn Display| SqlError::server(format!("{what} {}: {e}", path.display()));
            std::fs::remove_file(path).map_err(|e| failed(&e))?;
            create().map_err(|e| failed(&e))
        }
    }
}

/// A query's state store: the local file (if any) and the changelog offset it reflects.
pub struct StateStore {
    db: Option<Arc<Database>>,
    path: Option<PathBuf>,
    /// The changelog offset up to which (exclusive) the entries reflect the changelog.
    applied: i64,
    last_durable: Instant,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Changelog records applied.
    pub records: usize,
    /// Whether the store was rebuilt from the start of the changelog (no usable file).
    pub rebuilt: bool,
}

impl StateStore {
    /// A store without a file: every map keeps all its entries in memory.
    pub fn in_memory() -> StateStore {
        StateStore { db: None, path: None, applied: 0, last_durable: Instant::now() }
    }

    /// Opens (or creates) the store file `dir/NAME.redb`. A file that cannot be opened (torn,
    /// foreign, of another version) is set aside and a new one created: the changelog rebuilds
    /// it. A file another store holds open is an error (never touched).
    pub fn open(dir: &Path, name: &str) -> Result<StateStore> {
        std::fs::create_dir_all(dir).map_err(storage("creating the state directory"))?;
        let path = dir.join(format!("{name}.redb"));
        let db = open_rebuildable(&path, SQL_STATE_CACHE_BYTES, "state store", "the changelog")?;
        let txn = db.begin_write().map_err(storage("begin"))?;
        let applied = {
            txn.open_table(ENTRIES).map_err(storage("entries table"))?;
            let meta = txn.open_table(META).map_err(storage("meta table"))?;
            let applied = meta.get(META_CHANGELOG_NEXT).map_err(storage("reading metadata"))?.map(|v| v.value());
            applied.unwrap_or(0)
        };
        txn.commit().map_err(storage("commit"))?;
        Ok(StateStore { db: Some(Arc::new(db)), path: Some(path), applied, last_durable: Instant::now() })
    }

    /// Removes a dropped query's store file.
    pub fn destroy(dir: &Path, name: &str) -> Result<()> {
        let path = dir.join(format!("{name}.redb"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(storage("removing")(e)),
            _ => Ok(()),
        }
    }

    /// Whether entries live in a file (and maps evict from their caches).
    pub fn is_persistent(&self) -> bool {
        self.db.is_some()
    }

    /// The changelog offset (exclusive) the store reflects.
    pub fn applied(&self) -> i64 {
        self.applied
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A typed map in namespace `ns` (one byte; each map of a query has its own), caching at
    /// most `capacity` entries when the store has a file.
    pub fn map<V: Serialize + DeserializeOwned>(&self, ns: u8, capacity: usize) -> StateMap<V> {
        StateMap { ns, db: self.db.clone(), cache: HashMap::default(), dirty: 0, capacity: capacity.max(1) }
    }

    /// The changelog records of `changes`, in order.
    pub fn changelog_records(changes: &[Change], timestamp: i64) -> Vec<Record> {
        changes
            .iter()
            .map(|(k, v)| Record {
                key: Some(k.clone().into()),
                value: v.clone().map(Into::into),
                timestamp,
                headers: vec![],
            })
            .collect()
    }

    /// Applies changes already committed to the changelog, up to changelog offset `next`
    /// (exclusive). Only after the changelog commit: the store must never be ahead of it.
    pub fn apply(&mut self, changes: &[Change], next: i64) -> Result<()> {
        let Some(db) = &self.db else {
            self.applied = next;
            return Ok(());
        };
        let mut txn = db.begin_write().map_err(storage("begin"))?;
        let durable = self.last_durable.elapsed() >= Duration::from_millis(SQL_STATE_DURABLE_INTERVAL_MS);
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
            .map_err(storage("durability"))?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(storage("entries table"))?;
            for (k, v) in changes {
                match v {
                    Some(v) => entries.insert(k.as_slice(), v.as_slice()).map(|_| ()),
                    None => entries.remove(k.as_slice()).map(|_| ()),
                }
                .map_err(storage("writing"))?;
            }
            let mut meta = txn.open_table(META).map_err(storage("meta table"))?;
            meta.insert(META_CHANGELOG_NEXT, next).map_err(storage("writing metadata"))?;
        }
        txn.commit().map_err(storage("commit"))?;
        if durable {
            self.last_durable = Instant::now();
        }
        self.applied = next;
        Ok(())
    }

    /// Brings the store up to the end of `changelog`'s partition `partition`: from the offset it reflects,
    /// or from the start when it is ahead of the changelog (the topic was recreated, or the file
    /// belongs to an earlier query of the same name), in which case its entries are cleared.
    /// Maps must be created after the restore (their caches would be stale).
    pub fn restore(&mut self, topics: &dyn Topics, changelog: &str, partition: i32) -> Result<Restored> {
        let end = topics.end_offset(changelog, partition)?;
        let mut rebuilt = false;
        if self.applied > end {
            tracing::warn!(changelog, applied = self.applied, end, "state store ahead of its changelog; rebuilding it");
            self.clear()?;
            rebuilt = true;
        }
        if self.applied == 0 {
            rebuilt = true;
        }
        let mut records = 0;
        let mut at = self.applied;
        while at < end {
            let batch = topics.read(changelog, partition, at, SQL_POLL_BATCH)?;
            let Some(last) = batch.last() else { break };
            let next = last.offset + 1;
            let changes: Vec<Change> = batch
                .into_iter()
                .filter_map(|c| c.record.key.map(|k| (k.to_vec(), c.record.value.map(|v| v.to_vec()))))
                .collect();
            records += changes.len();
            self.apply(&changes, next)?;
            at = next;
        }
        // What may remain is a transaction still open (it is aborted when the query writes
        // again): not skipped, so a restore never passes over changes that may yet commit.
        Ok(Restored { records, rebuilt })
    }

    /// Deletes every entry (and the recorded offset).
    fn clear(&mut self) -> Result<()> {
        if let Some(db) = &self.db {
            let txn = db.begin_write().map_err(storage("begin"))?;
            txn.delete_table(ENTRIES).map_err(storage("clearing"))?;
            txn.open_table(ENTRIES).map_err(storage("entries table"))?;
            txn.open_table(META)
                .map_err(storage("meta table"))?
                .insert(META_CHANGELOG_NEXT, 0)
                .map_err(storage("meta"))?;
            txn.commit().map_err(storage("commit"))?;
        }
        self.applied = 0;
        Ok(())
    }

    /// Makes every applied change durable (at a clean stop, so the next start has nothing to
    /// apply).
    pub fn sync(&mut self) -> Result<()> {
        if let Some(db) = &self.db {
            let txn = db.begin_write().map_err(storage("begin"))?;
            txn.commit().map_err(storage("commit"))?;
            self.last_durable = Instant::now();
        }
        Ok(())
    }
}

struct Slot<V> {
    /// `None`: known to be absent (deleted, or missing in the store).
    value: Option<V>,
    dirty: bool,
    /// Used since the last eviction pass (second chance).
    touched: bool,
}

/// One typed map of a [`StateStore`]; see the module documentation.
pub struct StateMap<V> {
    ns: u8,
    db: Option<Arc<Database>>,
    /// foldhash, not SipHash: a lookup or two per record and map (seeded per process).
    cache: HashMap<Vec<u8>, Slot<V>, RandomState>,
    dirty: usize,
    capacity: usize,
}

/// The key of an entry in the store and the changelog: the map's namespace byte, then its key.
fn full_key(ns: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(ns);
    k.extend_from_slice(key);
    k
}

/// The change setting `key` of namespace `ns` to `value` (`None`: a deletion), as the changelog
/// and the store hold it.
fn encode_change<V: Serialize>(ns: u8, key: &[u8], value: Option<&V>) -> Result<Change> {
    let value = match value {
        Some(v) => Some(
            postcard::to_allocvec(v)
                .map_err(|e| SqlError::server(format!("state store: cannot encode an entry: {e}")))?,
        ),
        None => None,
    };
    Ok((full_key(ns, key), value))
}

impl<V: Serialize + DeserializeOwned> StateMap<V> {
    /// Whether changes are tracked for the changelog (only maps of a store with a file: an
    /// in-memory map is the whole state of a query that is never restored).
    pub(crate) fn tracked(&self) -> bool {
        self.db.is_some()
    }

    fn decode(bytes: &[u8]) -> Result<V> {
        postcard::from_bytes(bytes).map_err(|e| SqlError::server(format!("state store: undecodable entry: {e}")))
    }

    /// Loads `key` into the cache from the store on a miss (a map without a file caches
    /// nothing it does not hold).
    fn load(&mut self, key: &[u8]) -> Result<()> {
        if self.cache.contains_key(key) || self.db.is_none() {
            return Ok(());
        }
        let value = self.read_stored(key)?;
        self.cache.insert(key.to_vec(), Slot { value, dirty: false, touched: true });
        Ok(())
    }

    /// The stored value of `key` in the file (none without one).
    fn read_stored(&self, key: &[u8]) -> Result<Option<V>> {
        let Some(db) = &self.db else { return Ok(None) };
        let full = full_key(self.ns, key);
        let txn = db.begin_read().map_err(storage("begin read"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("entries table"))?;
        match entries.get(full.as_slice()).map_err(storage("reading"))? {
            Some(bytes) => Ok(Some(Self::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Loads `key` and returns its slot, created (absent) if needed.
    fn slot(&mut self, key: &[u8]) -> Result<&mut Slot<V>> {
        if !self.cache.contains_key(key) {
            let value = self.read_stored(key)?;
            self.cache.insert(key.to_vec(), Slot { value, dirty: false, touched: true });
        }
        let slot = self.cache.get_mut(key).expect("just cached");
        slot.touched = true;
        Ok(slot)
    }

    fn mark(slot: &mut Slot<V>, dirty: &mut usize, tracked: bool) {
        if tracked && !slot.dirty {
            slot.dirty = true;
            *dirty += 1;
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<&V>> {
        self.load(key)?;
        Ok(self.cache.get_mut(key).and_then(|s| {
            s.touched = true;
            s.value.as_ref()
        }))
    }

    pub fn contains_key(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// The value of `key` for changing in place (the entry is marked changed if present).
    pub fn get_mut(&mut self, key: &[u8]) -> Result<Option<&mut V>> {
        self.load(key)?;
        let tracked = self.tracked();
        let mut dirty = self.dirty;
        let found = match self.cache.get_mut(key) {
            Some(slot) if slot.value.is_some() => {
                slot.touched = true;
                Self::mark(slot, &mut dirty, tracked);
                slot.value.as_mut()
            }
            _ => None,
        };
        self.dirty = dirty;
        Ok(found)
    }

    /// The value of `key`, inserting `make()` if there is none; marked changed.
    pub fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> V) -> Result<&mut V> {
        let tracked = self.tracked();
        let mut dirty = self.dirty;
        let slot = self.slot(key)?;
        if slot.value.is_none() {
            slot.value = Some(make());
        }
        Self::mark(slot, &mut dirty, tracked);
        self.dirty = dirty;
        Ok(self.cache.get_mut(key).and_then(|s| s.value.as_mut()).expect("just inserted"))
    }

    pub fn insert(&mut self, key: Vec<u8>, value: V) -> Result<Option<V>> {
        let tracked = self.tracked();
        let mut dirty = self.dirty;
        let slot = self.slot(&key)?;
        let old = slot.value.replace(value);
        Self::mark(slot, &mut dirty, tracked);
        self.dirty = dirty;
        Ok(old)
    }

    pub fn remove(&mut self, key: &[u8]) -> Result<Option<V>> {
        if !self.tracked() {
            return Ok(self.cache.remove(key).and_then(|s| s.value));
        }
        let mut dirty = self.dirty;
        let slot = self.slot(key)?;
        let old = slot.value.take();
        Self::mark(slot, &mut dirty, true);
        self.dirty = dirty;
        Ok(old)
    }

    /// The cached entries with a value. For a resident map ([`StateMap::load_all`]) or one
    /// without a file, that is every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.cache.iter().filter_map(|(k, s)| s.value.as_ref().map(|v| (k.as_slice(), v)))
    }

    /// Calls `f` with every entry in the store (not the cache: for rebuilding indexes right
    /// after a restore, when the cache is empty).
    pub fn for_each_stored(&self, mut f: impl FnMut(&[u8], V)) -> Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let txn = db.begin_read().map_err(storage("begin read"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("entries table"))?;
        let from = [self.ns];
        let range = match self.ns.checked_add(1) {
            Some(next) => entries.range::<&[u8]>(&from[..]..&[next][..]),
            None => entries.range::<&[u8]>(&from[..]..),
        }
        .map_err(storage("scanning"))?;
        for item in range {
            let (k, v) = item.map_err(storage("scanning"))?;
            f(&k.value()[1..], Self::decode(v.value())?);
        }
        Ok(())
    }

    /// Makes the map resident: every stored entry is loaded and none is ever evicted (for maps
    /// that are scanned, such as stream-stream join buffers). Call right after the restore.
    pub fn load_all(&mut self) -> Result<()> {
        self.capacity = usize::MAX;
        let mut loaded = vec![];
        self.for_each_stored(|k, v| loaded.push((k.to_vec(), v)))?;
        for (k, v) in loaded {
            self.cache.insert(k, Slot { value: Some(v), dirty: false, touched: false });
        }
        Ok(())
    }

    /// The change that sets `key` of this map to `value` (`None`: deletes it), encoded for the
    /// changelog and the store, for a caller that keeps the entries itself (resident
    /// structures with their own in-memory shape); the cache is not involved.
    pub(crate) fn encode_change(&self, key: &[u8], value: Option<&V>) -> Result<Change> {
        encode_change(self.ns, key, value)
    }

    /// Entries changed since the last call, encoded for the changelog and the store (in no
    /// particular order: each key appears once). They stay cached, now clean.
    pub fn drain_changes(&mut self, out: &mut Vec<Change>) -> Result<()> {
        if self.dirty == 0 {
            return Ok(());
        }
        let ns = self.ns;
        for (key, slot) in self.cache.iter_mut().filter(|(_, s)| s.dirty) {
            out.push(encode_change(ns, key, slot.value.as_ref())?);
            slot.dirty = false;
        }
        self.dirty = 0;
        Ok(())
    }

    /// Drops clean entries from the cache while it holds more than its capacity: first those
    /// not used since the last pass. Call after the changes were applied to the store.
    pub fn evict(&mut self) {
        if self.db.is_none() || self.cache.len() <= self.capacity {
            return;
        }
        let target = self.capacity - self.capacity / 8;
        let mut over = self.cache.len().saturating_sub(target);
        self.cache.retain(|_, s| {
            if over > 0 && !s.dirty && !s.touched {
                over -= 1;
                return false;
            }
            s.touched = false;
            true
        });
        if over > 0 {
            self.cache.retain(|_, s| {
                if over > 0 && !s.dirty {
                    over -= 1;
                    return false;
                }
                true
            });
        }
    }

    /// Entries in the cache (all of them without a file).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::MemTopics;

    type Entry = (i64, String);

    /// One step as the engine runs it: drain the maps, write the changelog, apply.
    fn commit(store: &mut StateStore, topics: &MemTopics, maps: &mut [&mut StateMap<Entry>]) -> usize {
        let mut changes = vec![];
        for m in maps.iter_mut() {
            m.drain_changes(&mut changes).unwrap();
        }
        if !changes.is_empty() {
            topics.append("changelog", 0, StateStore::changelog_records(&changes, 0)).unwrap();
        }
        store.apply(&changes, topics.end_offset("changelog", 0).unwrap()).unwrap();
        for m in maps.iter_mut() {
            m.evict();
        }
        changes.len()
    }

    #[test]
    fn changes_reach_the_changelog_and_the_store_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let topics = MemTopics::new();
        topics.create_topic("changelog", 1).unwrap();
        let mut store = StateStore::open(dir.path(), "q1").unwrap();
        let mut counts: StateMap<Entry> = store.map(0, 1000);
        let mut other: StateMap<Entry> = store.map(1, 1000);
        counts.get_or_insert_with(b"a", || (0, "a".into())).unwrap().0 += 1;
        counts.get_or_insert_with(b"a", || (0, "a".into())).unwrap().0 += 1;
        counts.insert(b"b".to_vec(), (5, "b".into())).unwrap();
        other.insert(b"a".to_vec(), (9, "same key, other map".into())).unwrap();
        assert_eq!(commit(&mut store, &topics, &mut [&mut counts, &mut other]), 3, "one change per key");
        counts.remove(b"b").unwrap();
        assert_eq!(commit(&mut store, &topics, &mut [&mut counts, &mut other]), 1);
        assert_eq!(commit(&mut store, &topics, &mut [&mut counts, &mut other]), 0, "nothing changed");
        let changelog = topics.read("changelog", 0, 0, 100).unwrap();
        assert_eq!(changelog.len(), 4);
        assert_eq!(changelog[3].record.key.as_deref(), Some(&[0, b'b'][..]));
        assert_eq!(changelog[3].record.value, None, "a deletion is a tombstone");
        store.sync().unwrap();
        drop((counts, other, store));

        let mut store = StateStore::open(dir.path(), "q1").unwrap();
        assert_eq!(store.applied(), 4);
        assert_eq!(store.restore(&topics, "changelog", 0).unwrap(), Restored { records: 0, rebuilt: false });
        let mut counts: StateMap<Entry> = store.map(0, 1000);
        let mut other: StateMap<Entry> = store.map(1, 1000);
        assert_eq!(counts.get(b"a").unwrap(), Some(&(2, "a".to_string())));
        assert_eq!(counts.get(b"b").unwrap(), None);
        assert_eq!(other.get(b"a").unwrap().unwrap().0, 9);
    }

    #[test]
    fn a_store_behind_its_changelog_applies_the_tail_and_a_lost_one_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let topics = MemTopics::new();
        topics.create_topic("changelog", 1).unwrap();
        let mut store = StateStore::open(dir.path(), "q").unwrap();
        let mut m: StateMap<Entry> = store.map(0, 1000);
        for i in 0..10i64 {
            m.insert(i.to_be_bytes().to_vec(), (i, format!("v{i}"))).unwrap();
            commit(&mut store, &topics, &mut [&mut m]);
        }
        store.sync().unwrap();
        // Changes committed to the changelog by a run that died before applying them.
        for i in 10..15i64 {
            m.insert(i.to_be_bytes().to_vec(), (i, format!("v{i}"))).unwrap();
            let mut changes = vec![];
            m.drain_changes(&mut changes).unwrap();
            topics.append("changelog", 0, StateStore::changelog_records(&changes, 0)).unwrap();
        }
        drop((m, store));
        let mut store = StateStore::open(dir.path(), "q").unwrap();
        assert_eq!(store.restore(&topics, "changelog", 0).unwrap(), Restored { records: 5, rebuilt: false });
        let mut m: StateMap<Entry> = store.map(0, 1000);
        for i in 0..15i64 {
            assert_eq!(m.get(&i.to_be_bytes()).unwrap().map(|e| e.0), Some(i));
        }
        drop((m, store));

        // The file is gone: everything comes back from the changelog.
        StateStore::destroy(dir.path(), "q").unwrap();
        let mut store = StateStore::open(dir.path(), "q").unwrap();
        assert_eq!(store.restore(&topics, "changelog", 0).unwrap(), Restored { records: 15, rebuilt: true });
        let mut m: StateMap<Entry> = store.map(0, 1000);
        assert_eq!(m.get(&14i64.to_be_bytes()).unwrap().map(|e| e.1.clone()), Some("v14".into()));
    }

    #[test]
    fn a_store_ahead_of_its_changelog_is_cleared_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let old = MemTopics::new();
        old.create_topic("changelog", 1).unwrap();
        let mut store = StateStore::open(dir.path(), "q").unwrap();
        let mut m: StateMap<Entry> = store.map(0, 1000);
        for i in 0..5i64 {
            m.insert(vec![i as u8], (i, "old".into())).unwrap();
            commit(&mut store, &old, &mut [&mut m]);
        }
        store.sync().unwrap();
        drop((m, store));
        // A new changelog (the topic was recreated) with one entry.
        let new = MemTopics::new();
        new.create_topic("changelog", 1).unwrap();
        new.append(
            "changelog",
            0,
            StateStore::changelog_records(&[(vec![0, 7], Some(postcard::to_allocvec(&(7i64, "new")).unwrap()))], 0),
        )
        .unwrap();
        let mut store = StateStore::open(dir.path(), "q").unwrap();
        assert_eq!(store.restore(&new, "changelog", 0).unwrap(), Restored { records: 1, rebuilt: true });
        let mut m: StateMap<Entry> = store.map(0, 1000);
        assert_eq!(m.get(&[0]).unwrap(), None, "the old entries are gone");
        assert_eq!(m.get(&[7]).unwrap(), Some(&(7, "new".to_string())));
    }

    #[test]
    fn the_cache_stays_bounded_and_evicted_entries_come_back_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let topics = MemTopics::new();
        topics.create_topic("changelog", 1).unwrap();
        let mut store = StateStore::open(dir.path(), "q").unwrap();
        let mut m: StateMap<Entry> = store.map(0, 100);
        for round in 0..3i64 {
            for i in 0..1000u32 {
                m.get_or_insert_with(&i.to_be_bytes(), || (0, String::new())).unwrap().0 += round + 1;
                if i % 50 == 49 {
                    commit(&mut store, &topics, &mut [&mut m]);
                    assert!(m.cached() <= 150, "cache bounded: {}", m.cached());
                }
            }
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(&i.to_be_bytes()).unwrap().map(|e| e.0), Some(6), "key {i}");
        }
    }

    #[test]
    fn without_a_file_the_map_keeps_everything_in_memory() {
        let store = StateStore::in_memory();
        let mut m: StateMap<Entry> = store.map(0, 10);
        for i in 0..100u8 {
            m.insert(vec![i], (i as i64, String::new())).unwrap();
        }
        assert_eq!(m.get(&[200]).unwrap(), None);
        assert_eq!(m.remove(&[99]).unwrap().map(|e| e.0), Some(99));
        let mut changes = vec![];
        m.drain_changes(&mut changes).unwrap();
        assert!(changes.is_empty(), "no changelog without a file");
        m.evict();
        assert_eq!(m.cached(), 99, "a miss or a removal leaves nothing behind");
        assert_eq!(m.get(&[42]).unwrap().map(|e| e.0), Some(42));
    }

    #[test]
    fn a_store_open_elsewhere_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let topics = MemTopics::new();
        topics.create_topic("changelog", 1).unwrap();
        let mut first = StateStore::open(dir.path(), "q").unwrap();
        let mut m: StateMap<Entry> = first.map(0, 10);
        m.insert(b"k".to_vec(), (1, "kept".into())).unwrap();
        commit(&mut first, &topics, &mut [&mut m]);
        let err = StateStore::open(dir.path(), "q").err().expect("refused");
        assert!(err.to_string().contains("in use"), "{err}");
        assert_eq!(m.get(b"k").unwrap().map(|e| e.0), Some(1));
        assert_eq!(first.applied(), 1);
    }

    #[test]
    fn an_unusable_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("q.redb"), b"not a database at all").unwrap();
        let store = StateStore::open(dir.path(), "q").unwrap();
        assert_eq!(store.applied(), 0);
    }
}
