//! Compaction's storage half: rewriting sealed segments keeps offsets, keeps what the policy
//! keeps, and a crash at any point of the swap leaves the old segments or the new ones.

mod common;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::read_all;
use freshet_log::batch::{self, SimpleRecord};
use freshet_log::fs::Fs;
use freshet_log::sim::SimFs;
use freshet_log::{Log, LogConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: i64 = 1_700_000_000_000;

fn keyed(key: &str, value: &str) -> Vec<u8> {
    batch::encode_batch(&[SimpleRecord {
        timestamp: NOW,
        key: Some(key.as_bytes().to_vec().into()),
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![],
    }])
}

fn key_of(b: &[u8]) -> Vec<u8> {
    batch::records(b).unwrap()[0].key.unwrap().to_vec()
}

/// Writes 200 single-record batches over 10 keys; returns the log.
fn fill(fs: &SimFs, dir: &Path) -> Log {
    let config = LogConfig { segment_bytes: 1000, index_interval_bytes: 100, ..LogConfig::default() };
    let (mut log, _) = Log::open(Arc::new(fs.clone()), dir, config, NOW).unwrap();
    for i in 0..200 {
        let mut b = keyed(&format!("k{}", i % 10), &format!("v{i}"));
        let h = batch::validate(&b).unwrap();
        log.append(&mut b, &h, NOW).unwrap();
    }
    log.flush(NOW).unwrap();
    log
}

/// The policy: keep each key's last batch.
fn compact(log: &mut Log) -> bool {
    let up_to = log.next_offset();
    let plan = log.plan_clean(up_to).expect("sealed segments");
    let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
    plan.for_each_batch(|b| {
        latest.insert(key_of(b), batch::BatchHeader::parse(b).unwrap().base_offset);
    })
    .unwrap();
    let cleaned = plan
        .rewrite(|b| {
            let h = batch::BatchHeader::parse(b).unwrap();
            Ok::<_, String>((latest[&key_of(b)] == h.base_offset).then_some(Cow::Borrowed(b)))
        })
        .unwrap();
    assert!(cleaned.bytes_after < cleaned.bytes_before);
    log.swap_cleaned(cleaned, NOW).unwrap()
}

#[test]
fn compaction_keeps_the_latest_per_key_at_its_offset() {
    let fs = SimFs::new();
    let dir = Path::new("/p");
    let mut log = fill(&fs, dir);
    let before = read_all(&mut log, 0);
    let segments = log.segment_count();
    assert!(compact(&mut log));
    assert!(log.segment_count() < segments, "small cleaned segments are grouped");
    let after = read_all(&mut log, 0);
    // Sealed part: one batch per key, at its original offset; the active segment is untouched.
    assert!(after.len() < before.len());
    let active_base = before
        .iter()
        .map(|(o, _)| *o)
        .filter(|o| after.iter().filter(|(a, _)| a >= o).count() == before.iter().filter(|(b, _)| b >= o).count())
        .min()
        .unwrap();
    assert!(active_base > 0, "the tail (at least the active segment) is kept whole");
    let mut seen: HashMap<Vec<u8>, u64> = HashMap::new();
    for (offset, b) in &after {
        assert_eq!(before.iter().find(|(o, _)| o == offset).map(|(_, x)| x), Some(b), "offset {offset} kept its batch");
        seen.insert(key_of(b), *offset);
    }
    for k in 0..10 {
        let last = (0..200).rev().find(|i| i % 10 == k).unwrap();
        assert_eq!(seen[&format!("k{k}").into_bytes()], last as u64);
    }
    // The log goes on and survives a reopen.
    let mut b = keyed("k0", "new");
    let h = batch::validate(&b).unwrap();
    assert_eq!(log.append(&mut b, &h, NOW).unwrap().base_offset, 200);
    log.close(NOW).unwrap();
    let (mut log, _) = Log::open(Arc::new(fs), dir, LogConfig::default(), NOW).unwrap();
    let reopened = read_all(&mut log, 0);
    assert_eq!(&reopened[..after.len()], &after[..]);
    assert_eq!(reopened.last().unwrap().0, 200);
}

#[test]
fn a_crash_during_compaction_leaves_old_or_new_segments() {
    for seed in 0..60 {
        let mut rng = StdRng::seed_from_u64(seed);
        let fs = SimFs::new();
        let dir = Path::new("/p");
        let mut log = fill(&fs, dir);
        let before: HashMap<u64, Vec<u8>> = read_all(&mut log, 0).into_iter().collect();
        if rng.random_bool(0.5) {
            compact(&mut log);
        } else {
            // Crash before the swap is decided: only the .cleaned files exist.
            let plan = log.plan_clean(log.next_offset()).unwrap();
            plan.rewrite(|b| Ok::<_, String>(Some(Cow::Borrowed(b)))).unwrap();
        }
        drop(log);
        let crashed = fs.crash(&mut rng);
        let (mut log, _) = Log::open(Arc::new(crashed.clone()), dir, LogConfig::default(), NOW).unwrap();
        let after = read_all(&mut log, 0);
        // Every batch read back is the original one at its offset; every key's last value is there.
        for (offset, b) in &after {
            assert_eq!(before.get(offset), Some(b), "seed {seed}: offset {offset}");
        }
        for k in 0..10u64 {
            let last = (0..200u64).rev().find(|i| i % 10 == k).unwrap();
            assert!(after.iter().any(|(o, _)| *o == last), "seed {seed}: the last value of k{k} was lost");
        }
        assert!(!crashed.exists(&dir.join("clean.swap")), "seed {seed}: the swap was finished");
        assert_eq!(log.next_offset(), 200);
    }
}

/// When a pass keeps nothing of the segments it cleaned, the log starts at the first remaining
/// segment at once, not only after a restart.
#[test]
fn a_pass_that_keeps_nothing_moves_the_log_start_at_once() {
    let fs = SimFs::new();
    let dir = Path::new("/p");
    let mut log = fill(&fs, dir);
    assert_eq!(log.log_start_offset(), 0);
    let up_to = log.next_offset();
    let plan = log.plan_clean(up_to).expect("sealed segments");
    let cleaned = plan.rewrite(|_| Ok::<_, String>(None)).unwrap();
    assert_eq!(cleaned.bytes_after, 0);
    assert!(log.swap_cleaned(cleaned, NOW).unwrap());
    let first_remaining = log.segment_summaries()[0].0;
    assert!(first_remaining > 0);
    assert_eq!(log.log_start_offset(), first_remaining, "the log start follows the removed segments");
    // Reading from the old start is out of range; from the new one it works.
    assert!(log.read(0, 1 << 20, true).is_err());
    assert!(log.read(first_remaining, 1 << 20, true).is_ok());
    log.close(NOW).unwrap();
    let (log, _) = Log::open(Arc::new(fs.clone()), dir, LogConfig::default(), NOW).unwrap();
    assert_eq!(log.log_start_offset(), first_remaining, "the same after a restart");
}

/// A `keep` that fails abandons the rewrite: the files written so far are removed and the log
/// is untouched.
#[test]
fn a_failing_keep_abandons_the_rewrite() {
    let fs = SimFs::new();
    let dir = Path::new("/p");
    let mut log = fill(&fs, dir);
    let before = read_all(&mut log, 0);
    let plan = log.plan_clean(log.next_offset()).expect("sealed segments");
    let mut seen = 0;
    let err = plan
        .rewrite(|b| {
            seen += 1;
            if seen < 30 {
                Ok(Some(Cow::Borrowed(b)))
            } else {
                Err("cannot decode")
            }
        })
        .err()
        .expect("the rewrite fails");
    assert!(matches!(err, freshet_log::LogError::CleanAborted(ref why) if why == "cannot decode"), "{err}");
    let leftovers: Vec<_> =
        fs.read_dir(dir).unwrap().into_iter().filter(|p| p.extension().is_some_and(|e| e == "cleaned")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(read_all(&mut log, 0), before);
}
