//! Append, read, roll, retention, recovery and failure handling of one partition log.

mod common;

use std::sync::Arc;

use common::{append, make_batch, read_all, sync};
use freshet_log::fs::{Fs, StdFs};
use freshet_log::sim::SimFs;
use freshet_log::{batch, Log, LogConfig, LogError, ReadChunk, ReadStart};

const NOW: i64 = 1_700_000_000_000;

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 256, ..LogConfig::default() }
}

fn open_std(dir: &std::path::Path, config: LogConfig) -> Log {
    Log::open(Arc::new(StdFs), dir, config, NOW).expect("open").0
}

#[test]
fn append_assigns_offsets_and_reads_back_from_any_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), small_config());
    let mut written = Vec::new();
    for i in 0..50u64 {
        let (base, bytes) = append(&mut log, make_batch(i, 1 + (i as usize % 4), 40, NOW), NOW);
        written.push((base, bytes));
    }
    sync(&mut log, NOW);
    assert!(log.segment_count() > 1, "small segments should have rolled");
    let count: u64 = written.iter().map(|(_, b)| batch::BatchHeader::parse(b).unwrap().records_count as u64).sum();
    assert_eq!(log.next_offset(), count);
    assert_eq!(read_all(&mut log, 0), written);
    // Reading from the middle of a batch returns that whole batch first.
    for (base, bytes) in &written {
        let n = batch::BatchHeader::parse(bytes).unwrap().records_count as u64;
        for offset in *base..*base + n {
            match log.read(offset, 1, true).unwrap() {
                ReadChunk::Data { bytes: got, next_offset } => {
                    assert_eq!(&got[..], &bytes[..], "offset {offset}");
                    assert_eq!(next_offset, base + n);
                }
                other => panic!("offset {offset}: {other:?}"),
            }
        }
    }
}

#[test]
fn reads_respect_max_bytes_and_whole_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), LogConfig::default());
    let sizes: Vec<usize> = (0..10).map(|i| append(&mut log, make_batch(i, 2, 100, NOW), NOW).1.len()).collect();
    sync(&mut log, NOW);
    // Room for exactly three batches and a bit: three come back.
    let limit = sizes[0] + sizes[1] + sizes[2] + 10;
    match log.read(0, limit, false).unwrap() {
        ReadChunk::Data { bytes, next_offset } => {
            assert_eq!(bytes.len(), sizes[0] + sizes[1] + sizes[2]);
            assert_eq!(next_offset, 6);
        }
        other => panic!("{other:?}"),
    }
    // Too small for one batch: nothing without min_one_batch, one whole batch with it.
    assert!(matches!(log.read(0, 10, false).unwrap(), ReadChunk::Data { ref bytes, .. } if bytes.is_empty()));
    assert!(matches!(log.read(0, 10, true).unwrap(), ReadChunk::Data { ref bytes, .. } if bytes.len() == sizes[0]));
}

#[test]
fn unsynced_writes_are_invisible_with_flush_messages_1() {
    let fs = SimFs::new();
    let (mut log, _) = Log::open(Arc::new(fs), "/p".as_ref(), LogConfig::default(), NOW).unwrap();
    append(&mut log, make_batch(0, 3, 10, NOW), NOW);
    assert_eq!((log.next_offset(), log.high_watermark()), (3, 0));
    assert!(matches!(log.read(0, 1 << 20, true).unwrap(), ReadChunk::AtEnd));
    let ticket = log.begin_sync().expect("something to sync");
    assert_eq!(ticket.end_offset(), 3);
    // Appends may continue while the fsync runs; they stay invisible until the next one.
    append(&mut log, make_batch(1, 2, 10, NOW), NOW);
    let result = ticket.sync();
    assert_eq!(log.finish_sync(ticket, result, NOW).unwrap(), 3);
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(read_all(&mut log, 0).len(), 1);
    sync(&mut log, NOW);
    assert_eq!(read_all(&mut log, 0).len(), 2);
}

#[test]
fn relaxed_flush_exposes_writes_at_once_and_flushes_when_due() {
    let fs = SimFs::new();
    let config = LogConfig { flush_messages: 5, flush_ms: 1000, ..LogConfig::default() };
    let (mut log, _) = Log::open(Arc::new(fs.clone()), "/p".as_ref(), config, NOW).unwrap();
    append(&mut log, make_batch(0, 2, 10, NOW), NOW);
    assert_eq!(log.high_watermark(), 2);
    assert!(!log.flush_due(NOW));
    assert!(log.flush_due(NOW + 1000), "flush.ms elapsed");
    append(&mut log, make_batch(1, 3, 10, NOW), NOW);
    assert!(log.flush_due(NOW), "flush.messages reached");
    let before = fs.sync_count();
    sync(&mut log, NOW);
    assert_eq!(fs.sync_count(), before + 1);
    assert!(!log.flush_due(NOW + 5000));
}

#[test]
fn reopen_after_clean_close_and_after_process_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), small_config());
    let written: Vec<_> = (0..40).map(|i| append(&mut log, make_batch(i, 3, 30, NOW), NOW)).collect();
    sync(&mut log, NOW);
    log.close(NOW).unwrap();
    let (mut log, report) = Log::open(Arc::new(StdFs), tmp.path(), small_config(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert!(report.scanned_bytes <= 4096, "a clean log scans little: {report:?}");
    assert_eq!(read_all(&mut log, 0), written);
    // Append more and drop the log without closing it (the process dies).
    let more: Vec<_> = (40..45).map(|i| append(&mut log, make_batch(i, 1, 30, NOW), NOW)).collect();
    drop(log);
    let (mut log, report) = Log::open(Arc::new(StdFs), tmp.path(), small_config(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    let all: Vec<_> = written.into_iter().chain(more).collect();
    assert_eq!(read_all(&mut log, 0), all);
    assert_eq!(log.next_offset(), 40 * 3 + 5);
}

#[test]
fn torn_tail_is_cut_at_the_last_good_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), LogConfig::default());
    let written: Vec<_> = (0..5).map(|i| append(&mut log, make_batch(i, 2, 50, NOW), NOW)).collect();
    sync(&mut log, NOW);
    drop(log);
    let seg = tmp.path().join("00000000000000000000.log");
    let len = std::fs::metadata(&seg).unwrap().len();
    // Half a batch of a sixth write, as a crash mid-write leaves it.
    let extra = make_batch(99, 2, 50, NOW);
    let f = StdFs.open(&seg, false).unwrap();
    f.write_all_at(&extra[..extra.len() / 2], len).unwrap();
    let (mut log, report) = Log::open(Arc::new(StdFs), tmp.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, extra.len() as u64 / 2);
    assert_eq!(read_all(&mut log, 0), written);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    // A whole batch with a bad CRC is cut as well.
    drop(log);
    let mut bad = make_batch(7, 1, 10, NOW);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    StdFs.open(&seg, false).unwrap().write_all_at(&bad, len).unwrap();
    let (mut log, report) = Log::open(Arc::new(StdFs), tmp.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, bad.len() as u64);
    assert!(report.truncation_reason.unwrap().contains("CRC"));
    assert_eq!(read_all(&mut log, 0), written);
    // And the log goes on from where the good data ends.
    let (base, _) = append(&mut log, make_batch(8, 1, 10, NOW), NOW);
    assert_eq!(base, 10);
}

#[test]
fn damaged_index_of_a_sealed_segment_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), small_config());
    let written: Vec<_> = (0..30).map(|i| append(&mut log, make_batch(i, 2, 60, NOW), NOW)).collect();
    log.close(NOW).unwrap();
    std::fs::remove_file(tmp.path().join("00000000000000000000.index")).unwrap();
    std::fs::write(tmp.path().join("00000000000000000000.timeindex"), b"garbage").unwrap();
    let (mut log, report) = Log::open(Arc::new(StdFs), tmp.path(), small_config(), NOW).unwrap();
    assert_eq!(report.rebuilt_indexes, vec![0]);
    assert_eq!(read_all(&mut log, 0), written);
    assert!(tmp.path().join("00000000000000000000.index").exists());
}

#[test]
fn corruption_inside_a_sealed_segment_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), small_config());
    for i in 0..30 {
        append(&mut log, make_batch(i, 2, 60, NOW), NOW);
    }
    log.close(NOW).unwrap();
    let seg = tmp.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::remove_file(tmp.path().join("00000000000000000000.index")).unwrap();
    let err = Log::open(Arc::new(StdFs), tmp.path(), small_config(), NOW).unwrap_err();
    match err {
        LogError::Corrupt { path, pos, .. } => {
            assert_eq!(path, seg);
            assert!(pos <= mid as u64);
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn retention_by_time_and_size_advances_the_log_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1024, ..LogConfig::default() };
    let mut log = open_std(tmp.path(), config.clone());
    // Old records, then new ones.
    for i in 0..20 {
        append(&mut log, make_batch(i, 2, 80, NOW - 10 * 3_600_000), NOW);
    }
    let old_end = log.next_offset();
    for i in 20..40 {
        append(&mut log, make_batch(i, 2, 80, NOW), NOW);
    }
    sync(&mut log, NOW);
    let segments = log.segment_count();
    log.set_config(LogConfig { retention_ms: 3_600_000, ..config.clone() });
    let report = log.apply_retention(NOW).unwrap();
    assert!(report.deleted_segments > 0);
    assert_eq!(log.segment_count(), segments - report.deleted_segments);
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= old_end);
    assert!(matches!(log.read(0, 100, true), Err(LogError::OffsetOutOfRange { offset: 0, .. })));
    let start = log.log_start_offset();
    let first = read_all(&mut log, start);
    assert_eq!(first.last().unwrap().0 + 2, log.next_offset());
    // Size: keep about 2 KiB.
    log.set_config(LogConfig { retention_bytes: 2048, ..config.clone() });
    log.apply_retention(NOW).unwrap();
    assert!(log.size_bytes() <= 2048 + 1024, "size {}", log.size_bytes());
    // Everything expired, including the active segment: it is rolled and removed.
    log.set_config(LogConfig { retention_ms: 0, ..config });
    log.apply_retention(NOW + 10).unwrap();
    assert_eq!(log.log_start_offset(), log.next_offset());
    assert_eq!(log.size_bytes(), 0);
    let start = log.log_start_offset();
    drop(log);
    let (log, _) = Log::open(Arc::new(StdFs), tmp.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!((log.log_start_offset(), log.next_offset()), (start, start));
}

#[test]
fn delete_records_moves_the_start_and_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), small_config());
    for i in 0..30 {
        append(&mut log, make_batch(i, 2, 60, NOW), NOW);
    }
    sync(&mut log, NOW);
    assert!(matches!(log.delete_records_before(1000, NOW), Err(LogError::OffsetOutOfRange { .. })));
    let segments = log.segment_count();
    assert_eq!(log.delete_records_before(41, NOW).unwrap(), 41);
    assert!(log.segment_count() < segments);
    assert!(matches!(log.read(40, 100, true), Err(LogError::OffsetOutOfRange { .. })));
    drop(log);
    let mut log = open_std(tmp.path(), small_config());
    assert_eq!(log.log_start_offset(), 41);
    // Reading at the start returns the batch holding it (40..41).
    assert_eq!(read_all(&mut log, 41).first().unwrap().0, 40);
}

#[test]
fn segment_ms_rolls_by_record_time() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_ms: 1000, ..LogConfig::default() };
    let mut log = open_std(tmp.path(), config);
    append(&mut log, make_batch(0, 1, 10, NOW), NOW);
    append(&mut log, make_batch(1, 1, 10, NOW + 500), NOW);
    assert_eq!(log.segment_count(), 1);
    append(&mut log, make_batch(2, 1, 10, NOW + 1500), NOW);
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn timestamp_lookups() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), small_config());
    for i in 0..40 {
        append(&mut log, make_batch(i, 2, 60, NOW + i as i64 * 100), NOW);
    }
    sync(&mut log, NOW);
    for (ts, expect_base) in [(NOW, 0u64), (NOW + 1, 0), (NOW + 2, 2), (NOW + 1_050, 22), (NOW + 3_900, 78)] {
        let b = log.find_batch_by_timestamp(ts).unwrap().expect("a batch");
        let h = batch::BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset as u64, expect_base, "ts {ts}");
    }
    assert!(log.find_batch_by_timestamp(NOW + 10_000).unwrap().is_none());
    let b = log.find_batch_with_max_timestamp().unwrap().unwrap();
    assert_eq!(batch::BatchHeader::parse(&b).unwrap().base_offset, 78);
    // Still true after a restart, when sealed segments load their indexes lazily.
    log.close(NOW).unwrap();
    let mut log = open_std(tmp.path(), small_config());
    let b = log.find_batch_by_timestamp(NOW + 1_050).unwrap().unwrap();
    assert_eq!(batch::BatchHeader::parse(&b).unwrap().base_offset, 22);
    let b = log.find_batch_with_max_timestamp().unwrap().unwrap();
    assert_eq!(batch::BatchHeader::parse(&b).unwrap().base_offset, 78);
}

#[test]
fn log_append_time_stamps_batches() {
    let fs = SimFs::new();
    let config = LogConfig { log_append_time: true, ..LogConfig::default() };
    let (mut log, _) = Log::open(Arc::new(fs), "/p".as_ref(), config, NOW).unwrap();
    let mut bytes = make_batch(0, 2, 10, 5);
    let header = batch::validate(&bytes).unwrap();
    let info = log.append(&mut bytes, &header, NOW + 7).unwrap();
    assert_eq!(info.log_append_time, Some(NOW + 7));
    sync(&mut log, NOW);
    let stored = &read_all(&mut log, 0)[0].1;
    let h = batch::validate(stored).unwrap();
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, NOW + 7);
}

#[test]
fn oversized_batches_are_refused() {
    let fs = SimFs::new();
    let config = LogConfig { max_message_bytes: 200, ..LogConfig::default() };
    let (mut log, _) = Log::open(Arc::new(fs), "/p".as_ref(), config, NOW).unwrap();
    let mut bytes = make_batch(0, 1, 300, NOW);
    let header = batch::validate(&bytes).unwrap();
    assert!(matches!(log.append(&mut bytes, &header, NOW), Err(LogError::TooLarge { max: 200, .. })));
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn a_failed_fsync_makes_the_log_refuse_writes_until_reopened() {
    let fs = SimFs::new();
    let (mut log, _) = Log::open(Arc::new(fs.clone()), "/p".as_ref(), LogConfig::default(), NOW).unwrap();
    append(&mut log, make_batch(0, 1, 10, NOW), NOW);
    sync(&mut log, NOW);
    append(&mut log, make_batch(1, 1, 10, NOW), NOW);
    fs.fail_sync_after(0);
    let ticket = log.begin_sync().unwrap();
    let result = ticket.sync();
    assert!(result.is_err());
    assert!(matches!(log.finish_sync(ticket, result, NOW), Err(LogError::Io { .. })));
    assert!(log.failure().is_some());
    assert_eq!(log.high_watermark(), 1, "the unsynced batch never becomes visible");
    let mut bytes = make_batch(2, 1, 10, NOW);
    let header = batch::validate(&bytes).unwrap();
    assert!(matches!(log.append(&mut bytes, &header, NOW), Err(LogError::Failed { .. })));
    assert!(log.begin_sync().is_none());
    // Durable data stays readable.
    assert_eq!(read_all(&mut log, 0).len(), 1);
    fs.heal();
    drop(log);
    let (mut log, _) = Log::open(Arc::new(fs), "/p".as_ref(), LogConfig::default(), NOW).unwrap();
    assert!(log.failure().is_none());
    append(&mut log, make_batch(3, 1, 10, NOW), NOW);
}

#[test]
fn a_failed_write_makes_the_log_refuse_writes() {
    let fs = SimFs::new();
    let (mut log, _) = Log::open(Arc::new(fs.clone()), "/p".as_ref(), LogConfig::default(), NOW).unwrap();
    fs.fail_write_after(0);
    let mut bytes = make_batch(0, 1, 10, NOW);
    let header = batch::validate(&bytes).unwrap();
    assert!(matches!(log.append(&mut bytes, &header, NOW), Err(LogError::Io { .. })));
    fs.heal();
    let mut bytes = make_batch(1, 1, 10, NOW);
    assert!(matches!(log.append(&mut bytes, &header, NOW), Err(LogError::Failed { .. })));
}

#[test]
fn plan_then_execute_outside_the_lock_sees_a_consistent_view() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open_std(tmp.path(), small_config());
    let written: Vec<_> = (0..10).map(|i| append(&mut log, make_batch(i, 1, 30, NOW), NOW)).collect();
    sync(&mut log, NOW);
    let hw = log.high_watermark();
    let ReadStart::Plan(plan) = log.plan_read(0, hw).unwrap() else { panic!("expected a plan") };
    // More appends after planning do not leak into the planned read.
    for i in 10..20 {
        append(&mut log, make_batch(i, 1, 30, NOW), NOW);
    }
    sync(&mut log, NOW);
    match plan.execute(1 << 20, true).unwrap() {
        ReadChunk::Data { bytes, next_offset } => {
            assert_eq!(next_offset, 10);
            let expected: Vec<u8> = written.iter().flat_map(|(_, b)| b.clone()).collect();
            assert_eq!(&bytes[..], &expected[..]);
        }
        other => panic!("{other:?}"),
    }
}
