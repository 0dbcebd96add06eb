//! Property test: a log driven by random operations (appends, syncs, rolls, deletions, clean
//! and unclean reopens) always reads back exactly what a simple model says it holds.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{make_batch, read_all};
use freshet_log::batch;
use freshet_log::sim::SimFs;
use freshet_log::{Log, LogConfig, LogError};
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    Sync,
    Roll,
    DeleteRecords { permille: u64 },
    Reopen { clean: bool },
    ReadFrom { permille: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..400).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        3 => Just(Op::Sync),
        1 => Just(Op::Roll),
        1 => (0u64..1000).prop_map(|permille| Op::DeleteRecords { permille }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        2 => (0u64..1000).prop_map(|permille| Op::ReadFrom { permille }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..80), segment_bytes in 500u64..5000, interval in 0u64..2000) {
        let dir = Path::new("/p");
        let mut fs = SimFs::new();
        let config = LogConfig { segment_bytes, index_interval_bytes: interval, ..LogConfig::default() };
        let (mut log, _) = Log::open(Arc::new(fs.clone()), dir, config.clone(), NOW).unwrap();
        // The model: every batch appended (base, bytes), how many are durable, the log start.
        let mut batches: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut durable = 0usize;
        let mut start = 0u64;
        for (tag, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { records, value_len } => {
                    let mut bytes = make_batch(tag as u64, records, value_len, NOW);
                    let h = batch::validate(&bytes).unwrap();
                    let info = log.append(&mut bytes, &h, NOW).unwrap();
                    let expected_base = batches.last().map(|(b, x)| b + batch::BatchHeader::parse(x).unwrap().records_count as u64).unwrap_or(start);
                    prop_assert_eq!(info.base_offset, expected_base);
                    batches.push((info.base_offset, bytes));
                    // A roll seals (and fsyncs) the segment before the new batch.
                    let d = log.durable_offset();
                    if d == info.base_offset {
                        durable = batches.len() - 1;
                    } else {
                        prop_assert!(durable == 0 || d == batches[durable - 1].0 + batch::BatchHeader::parse(&batches[durable - 1].1).unwrap().records_count as u64);
                    }
                }
                Op::Sync => {
                    log.flush(NOW).unwrap();
                    durable = batches.len();
                }
                Op::Roll => {
                    log.roll(NOW).unwrap();
                    durable = batches.len();
                }
                Op::DeleteRecords { permille } => {
                    let hw = log.high_watermark();
                    let target = start + (hw - start) * permille / 1000;
                    log.delete_records_before(target, NOW).unwrap();
                    start = start.max(target);
                    prop_assert_eq!(log.log_start_offset(), start);
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close(NOW).unwrap();
                    } else {
                        drop(log);
                        fs = fs.process_crash();
                    }
                    log = Log::open(Arc::new(fs.clone()), dir, config.clone(), NOW).unwrap().0;
                    // Recovery makes everything that reached the file durable.
                    durable = batches.len();
                    prop_assert_eq!(log.log_start_offset(), start);
                }
                Op::ReadFrom { permille } => {
                    let end = log.next_offset();
                    let from = start + (end - start) * permille / 1000;
                    let got = read_all(&mut log, from);
                    let want: Vec<_> = batches[..durable]
                        .iter()
                        .filter(|(b, x)| b + batch::BatchHeader::parse(x).unwrap().records_count as u64 > from)
                        .cloned()
                        .collect();
                    prop_assert_eq!(got, want);
                }
            }
            let visible: Vec<_> = batches[..durable]
                .iter()
                .filter(|(b, x)| b + batch::BatchHeader::parse(x).unwrap().records_count as u64 > start)
                .cloned()
                .collect();
            prop_assert_eq!(read_all(&mut log, start), visible);
            if start > 0 {
                let below = log.read(start - 1, 100, true);
                prop_assert!(matches!(below, Err(LogError::OffsetOutOfRange { .. })), "read below start must fail");
            }
        }
    }
}
