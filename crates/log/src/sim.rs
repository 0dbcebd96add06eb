//! A simulated file system for crash tests.
//!
//! It keeps, for every file, the bytes that are durable (as of its last `sync_data`) and the
//! writes made since; for every directory, the entry changes made since its last `sync_dir`.
//! [`SimFs::crash`] returns the file system a machine would find after losing power now: each
//! unsynced write independently survives, vanishes, or survives torn (a prefix of it), and each
//! directory keeps a random prefix of its unsynced entry changes. Faults can also be injected:
//! failing the next fsyncs or writes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::{Rng, RngCore};

use crate::fs::{File, Fs};

#[derive(Debug, Clone)]
enum DataOp {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileState {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives a crash for certain.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, Arc<SimFile>),
    Unlink(PathBuf),
}

#[derive(Default)]
struct Faults {
    /// Fail the sync after this many more succeed.
    sync_failures_after: Option<u64>,
    /// Fail the write after this many more succeed.
    write_failures_after: Option<u64>,
}

#[derive(Default)]
struct State {
    /// The namespace a process sees now.
    files: BTreeMap<PathBuf, Arc<SimFile>>,
    dirs: BTreeMap<PathBuf, ()>,
    /// The namespace as of the last sync of each directory.
    durable_files: BTreeMap<PathBuf, Arc<SimFile>>,
    /// Entry changes since each directory's last sync.
    pending_dir_ops: HashMap<PathBuf, Vec<DirOp>>,
}

/// A simulated file.
#[derive(Debug)]
pub struct SimFile {
    state: Mutex<FileState>,
    fs: Arc<Shared>,
}

struct Shared {
    faults: Mutex<Faults>,
    syncs: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

/// The simulated file system. Cloning shares the same state.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    shared: Arc<Shared>,
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl SimFile {
    fn new(fs: Arc<Shared>, contents: Vec<u8>) -> Arc<SimFile> {
        Arc::new(SimFile {
            state: Mutex::new(FileState { current: contents.clone(), durable: contents, pending: vec![] }),
            fs,
        })
    }
}

impl File for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let st = self.state.lock().unwrap();
        let pos = pos as usize;
        if pos >= st.current.len() {
            return Ok(0);
        }
        let n = buf.len().min(st.current.len() - pos);
        buf[..n].copy_from_slice(&st.current[pos..pos + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        {
            let mut faults = self.fs.faults.lock().unwrap();
            if let Some(n) = faults.write_failures_after.as_mut() {
                if *n == 0 {
                    return Err(injected("write"));
                }
                *n -= 1;
            }
        }
        let mut st = self.state.lock().unwrap();
        let end = pos as usize + buf.len();
        if st.current.len() < end {
            st.current.resize(end, 0);
        }
        st.current[pos as usize..end].copy_from_slice(buf);
        st.pending.push(DataOp::Write { pos, bytes: buf.to_vec() });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut faults = self.fs.faults.lock().unwrap();
            if let Some(n) = faults.sync_failures_after.as_mut() {
                if *n == 0 {
                    return Err(injected("fsync"));
                }
                *n -= 1;
            }
        }
        self.fs.syncs.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock().unwrap();
        st.durable = st.current.clone();
        st.pending.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        st.current.resize(len as usize, 0);
        st.pending.push(DataOp::SetLen(len));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().unwrap().current.len() as u64)
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        let mut state = State::default();
        state.dirs.insert(PathBuf::from("/"), ());
        SimFs {
            state: Arc::new(Mutex::new(state)),
            shared: Arc::new(Shared { faults: Mutex::default(), syncs: AtomicU64::new(0) }),
        }
    }

    /// Makes the sync after `n` more successful ones fail (0: the next one).
    pub fn fail_sync_after(&self, n: u64) {
        self.shared.faults.lock().unwrap().sync_failures_after = Some(n);
    }

    /// Makes the write after `n` more successful ones fail (0: the next one).
    pub fn fail_write_after(&self, n: u64) {
        self.shared.faults.lock().unwrap().write_failures_after = Some(n);
    }

    /// Removes injected faults.
    pub fn heal(&self) {
        *self.shared.faults.lock().unwrap() = Faults::default();
    }

    /// How many file syncs have succeeded.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// The file system as found after a power loss now (this one is left as it is).
    pub fn crash(&self, rng: &mut impl RngCore) -> SimFs {
        let st = self.state.lock().unwrap();
        let shared = Arc::new(Shared { faults: Mutex::default(), syncs: AtomicU64::new(0) });
        // Namespace: durable entries plus a random prefix of each directory's pending changes.
        let mut names: BTreeMap<PathBuf, Arc<SimFile>> = st.durable_files.clone();
        let mut dirs: Vec<&PathBuf> = st.pending_dir_ops.keys().collect();
        dirs.sort();
        for dir in dirs {
            let ops = &st.pending_dir_ops[dir];
            let keep = rng.random_range(0..=ops.len());
            for op in &ops[..keep] {
                match op {
                    DirOp::Link(path, file) => {
                        names.insert(path.clone(), file.clone());
                    }
                    DirOp::Unlink(path) => {
                        names.remove(path);
                    }
                }
            }
        }
        // Contents: durable bytes plus each pending change surviving, vanishing or torn.
        let mut survivors: HashMap<*const SimFile, Vec<u8>> = HashMap::new();
        let mut files = BTreeMap::new();
        for (path, file) in names {
            let key = Arc::as_ptr(&file);
            let contents = survivors
                .entry(key)
                .or_insert_with(|| {
                    let fst = file.state.lock().unwrap();
                    let mut data = fst.durable.clone();
                    for op in &fst.pending {
                        match op {
                            DataOp::Write { pos, bytes } => {
                                let n = match rng.random_range(0..10) {
                                    0..=3 => bytes.len(),
                                    4..=6 => 0,
                                    _ => rng.random_range(0..=bytes.len()),
                                };
                                if n > 0 {
                                    let end = *pos as usize + n;
                                    if data.len() < end {
                                        data.resize(end, 0);
                                    }
                                    data[*pos as usize..end].copy_from_slice(&bytes[..n]);
                                }
                            }
                            DataOp::SetLen(len) => {
                                if rng.random_bool(0.5) {
                                    data.resize(*len as usize, 0);
                                }
                            }
                        }
                    }
                    data
                })
                .clone();
            files.insert(path, SimFile::new(shared.clone(), contents));
        }
        let mut dirs = st.dirs.clone();
        for path in files.keys() {
            let mut p = path.parent();
            while let Some(d) = p {
                dirs.insert(d.to_path_buf(), ());
                p = d.parent();
            }
        }
        let state = State { durable_files: files.clone(), files, dirs, pending_dir_ops: HashMap::new() };
        SimFs { state: Arc::new(Mutex::new(state)), shared }
    }

    /// The file system as found after the process (not the machine) died: every completed write
    /// is there.
    pub fn process_crash(&self) -> SimFs {
        let st = self.state.lock().unwrap();
        let shared = Arc::new(Shared { faults: Mutex::default(), syncs: AtomicU64::new(0) });
        let files: BTreeMap<PathBuf, Arc<SimFile>> = st
            .files
            .iter()
            .map(|(p, f)| (p.clone(), SimFile::new(shared.clone(), f.state.lock().unwrap().current.clone())))
            .collect();
        let state =
            State { durable_files: files.clone(), files, dirs: st.dirs.clone(), pending_dir_ops: HashMap::new() };
        SimFs { state: Arc::new(Mutex::new(state)), shared }
    }

    fn parent_of(path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn File>> {
        let mut st = self.state.lock().unwrap();
        if let Some(f) = st.files.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(not_found(path));
        }
        let parent = Self::parent_of(path);
        if !st.dirs.contains_key(&parent) {
            return Err(not_found(&parent));
        }
        let file = SimFile::new(self.shared.clone(), Vec::new());
        st.files.insert(path.to_path_buf(), file.clone());
        st.pending_dir_ops.entry(parent).or_default().push(DirOp::Link(path.to_path_buf(), file.clone()));
        Ok(file)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Directories are durable at once: the crash tests are about file data and entries.
        let mut st = self.state.lock().unwrap();
        let mut p = Some(path);
        while let Some(d) = p {
            st.dirs.insert(d.to_path_buf(), ());
            p = d.parent();
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        st.files.remove(path).ok_or_else(|| not_found(path))?;
        st.pending_dir_ops.entry(Self::parent_of(path)).or_default().push(DirOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let doomed: Vec<PathBuf> = st.files.keys().filter(|p| p.starts_with(path)).cloned().collect();
        for p in doomed {
            st.files.remove(&p);
            st.durable_files.remove(&p);
        }
        st.dirs.retain(|d, _| !d.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if st.dirs.contains_key(from) {
            // Directory renames (topic deletion) move every file below; durable at once.
            let moved: Vec<PathBuf> = st.files.keys().filter(|p| p.starts_with(from)).cloned().collect();
            for p in moved {
                let new = to.join(p.strip_prefix(from).expect("prefix"));
                let f = st.files.remove(&p).expect("listed");
                st.files.insert(new.clone(), f.clone());
                if st.durable_files.remove(&p).is_some() {
                    st.durable_files.insert(new, f);
                }
            }
            let dirs: Vec<PathBuf> = st.dirs.keys().filter(|d| d.starts_with(from)).cloned().collect();
            for d in dirs {
                st.dirs.remove(&d);
                st.dirs.insert(to.join(d.strip_prefix(from).expect("prefix")), ());
            }
            return Ok(());
        }
        let file = st.files.remove(from).ok_or_else(|| not_found(from))?;
        st.files.insert(to.to_path_buf(), file.clone());
        let ops = st.pending_dir_ops.entry(Self::parent_of(to)).or_default();
        ops.push(DirOp::Unlink(from.to_path_buf()));
        ops.push(DirOp::Link(to.to_path_buf(), file));
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let st = self.state.lock().unwrap();
        if !st.dirs.contains_key(path) {
            return Err(not_found(path));
        }
        let mut out: Vec<PathBuf> = st.files.keys().filter(|p| p.parent() == Some(path)).cloned().collect();
        out.extend(st.dirs.keys().filter(|d| d.parent() == Some(path)).cloned());
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock().unwrap();
        st.files.contains_key(path) || st.dirs.contains_key(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.state.lock().unwrap().dirs.contains_key(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if let Some(ops) = st.pending_dir_ops.remove(path) {
            for op in ops {
                match op {
                    DirOp::Link(p, f) => {
                        st.durable_files.insert(p, f);
                    }
                    DirOp::Unlink(p) => {
                        st.durable_files.remove(&p);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn synced_data_and_entries_survive_a_crash() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let f = fs.open(&dir.join("a"), true).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_all_at(b" world", 5).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let after = fs.crash(&mut rng);
            let data = crate::fs::read_all(&after, &dir.join("a")).unwrap();
            assert!(data.starts_with(b"hello"), "{data:?}");
            assert!(data.len() <= 11);
        }
    }

    #[test]
    fn unsynced_entries_may_vanish() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let f = fs.open(&dir.join("a"), true).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let outcomes: Vec<bool> = (0..50).map(|_| fs.crash(&mut rng).exists(&dir.join("a"))).collect();
        assert!(outcomes.contains(&true) && outcomes.contains(&false));
    }

    #[test]
    fn injected_faults() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let f = fs.open(Path::new("/d/a"), true).unwrap();
        fs.fail_sync_after(1);
        f.sync_data().unwrap();
        assert!(f.sync_data().is_err());
        fs.fail_write_after(0);
        assert!(f.write_all_at(b"x", 0).is_err());
        fs.heal();
        f.write_all_at(b"x", 0).unwrap();
    }
}
