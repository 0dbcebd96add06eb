//! Crash consistency: random workloads on the simulated file system, cut by power losses in
//! which every write after the last successful fsync may vanish or be torn. After each recovery,
//! every acknowledged batch must be there, byte for byte, at its offset.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{make_batch, read_all};
use freshet_log::batch;
use freshet_log::sim::SimFs;
use freshet_log::{Log, LogConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: i64 = 1_700_000_000_000;

fn config(rng: &mut StdRng) -> LogConfig {
    LogConfig {
        segment_bytes: rng.random_range(600..6000),
        index_interval_bytes: rng.random_range(0..1000),
        retention_bytes: if rng.random_bool(0.2) { rng.random_range(3000..20000) } else { -1 },
        ..LogConfig::default()
    }
}

/// One seed: several rounds of random appends and syncs, each ended by a power loss.
fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = Path::new("/data/topic/0");
    let mut fs = SimFs::new();
    let config = config(&mut rng);
    // Acknowledged batches: base offset -> stored bytes.
    let mut acked: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut tag = 0u64;
    for round in 0..6 {
        let (mut log, report) = Log::open(Arc::new(fs.clone()), dir, config.clone(), NOW)
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: recovery failed: {e}"));
        let start = log.log_start_offset();
        // Everything acknowledged and not deleted by retention is there, unchanged.
        let all: BTreeMap<u64, Vec<u8>> = read_all(&mut log, start).into_iter().collect();
        for (base, bytes) in acked.range(start..) {
            assert_eq!(
                all.get(base),
                Some(bytes),
                "seed {seed} round {round}: acked batch at {base} lost ({report:?})"
            );
        }
        // Offsets are contiguous and end at the log end.
        let mut expect = None;
        for (base, bytes) in &all {
            let h = batch::validate_stored(bytes).unwrap();
            if let Some(e) = expect {
                assert_eq!(*base, e, "seed {seed}: gap in offsets");
            }
            expect = Some(h.next_offset() as u64);
        }
        assert_eq!(expect.unwrap_or(start), log.next_offset(), "seed {seed}: log end");
        acked.retain(|b, _| *b >= start);
        // Whatever recovery kept is durable now, so it counts as acknowledged from here on.
        acked.extend(all);

        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        for _ in 0..rng.random_range(1..60) {
            if rng.random_bool(0.7) {
                tag += 1;
                let mut bytes = make_batch(tag, rng.random_range(1..5), rng.random_range(0..300), NOW + tag as i64);
                let h = batch::validate(&bytes).unwrap();
                let info = log.append(&mut bytes, &h, NOW).unwrap();
                pending.push((info.base_offset, bytes));
            } else if let Some(ticket) = log.begin_sync() {
                let result = ticket.sync();
                let durable = log.finish_sync(ticket, result, NOW).unwrap();
                for (base, bytes) in pending.drain(..) {
                    assert!(base < durable);
                    acked.insert(base, bytes);
                }
            }
            if rng.random_bool(0.05) {
                log.apply_retention(NOW).unwrap();
            }
        }
        // Power loss: the log is gone with the process, the disk keeps what it keeps.
        drop(log);
        fs = fs.crash(&mut rng);
    }
}

#[test]
fn acknowledged_batches_survive_power_loss() {
    let seeds: u64 = std::env::var("FRESHET_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    for seed in 0..seeds {
        run(seed);
    }
}

#[test]
fn a_crash_during_recovery_loses_nothing_acknowledged() {
    for seed in 0..100 {
        let mut rng = StdRng::seed_from_u64(10_000 + seed);
        let dir = Path::new("/p");
        let fs = SimFs::new();
        let (mut log, _) = Log::open(Arc::new(fs.clone()), dir, config(&mut rng), NOW).unwrap();
        let mut acked = Vec::new();
        for i in 0..rng.random_range(1..40) {
            let mut bytes = make_batch(i, 2, rng.random_range(0..200), NOW);
            let h = batch::validate(&bytes).unwrap();
            let info = log.append(&mut bytes, &h, NOW).unwrap();
            if rng.random_bool(0.5) {
                log.flush(NOW).unwrap();
                acked.push((info.base_offset, bytes));
            }
        }
        let config = log.config().clone();
        drop(log);
        // Crash, start recovering, crash again before anything new is written.
        let fs = fs.crash(&mut rng);
        let (log, _) = Log::open(Arc::new(fs.clone()), dir, config.clone(), NOW).unwrap();
        drop(log);
        let fs = fs.crash(&mut rng);
        let (mut log, _) = Log::open(Arc::new(fs), dir, config, NOW).unwrap();
        let start = log.log_start_offset();
        let all: BTreeMap<u64, Vec<u8>> = read_all(&mut log, start).into_iter().collect();
        for (base, bytes) in acked.iter().filter(|(b, _)| *b >= start) {
            assert_eq!(all.get(base), Some(bytes), "seed {seed}: acked batch at {base} lost");
        }
    }
}
