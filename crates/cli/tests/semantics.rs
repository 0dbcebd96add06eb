//! Consumer groups, idempotent and transactional producers, with real clients against a real
//! `freshet serve`: members join, leave and are killed; connections drop under an idempotent
//! producer; transactions commit and abort; consume-transform-produce survives SIGKILL.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fast_groups_config, missing, python, python_script, wait_until, Server};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(60);

fn base(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr).set("broker.address.family", "v4");
    c
}

fn create_topic(addr: &str, name: &str, partitions: i32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: AdminClient<DefaultClientContext> = base(addr).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(WAIT));
    let r = rt
        .block_on(admin.create_topics([&NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &opts))
        .unwrap();
    r.into_iter().for_each(|r| {
        r.unwrap();
    });
}

/// Produces `values` with acks=all, value i to partition i % partitions.
fn produce(addr: &str, topic: &str, partitions: i32, values: &[String], pace: Duration) {
    let p: ThreadedProducer<DefaultProducerContext> =
        base(addr).set("acks", "all").set("linger.ms", "1").create().unwrap();
    for (i, v) in values.iter().enumerate() {
        p.send(BaseRecord::<(), _>::to(topic).partition(i as i32 % partitions).payload(v)).map_err(|(e, _)| e).unwrap();
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    p.flush(WAIT).unwrap();
}

/// Reads every record of `topic` (all partitions) with the given isolation level.
fn read_all(addr: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = base(addr)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        let (_, high) = consumer.fetch_watermarks(topic, p, WAIT).unwrap();
        ends.insert(p, high);
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // read_committed cannot reach the high watermark past aborted data and markers; stop when
    // nothing more arrives for a while.
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(1500) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                out.push((
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                ));
            }
            _ => {
                if out.len() >= ends.values().sum::<i64>() as usize {
                    break;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Consumer groups with confluent-kafka processes.

struct Worker {
    child: Child,
}

fn start_worker(server: &Server, topic: &str, group: &str, protocol: &str, out: PathBuf) -> Worker {
    let child = python_script("group_worker.py")
        .args(["--bootstrap", &server.addr, "--topic", topic, "--group", group, "--protocol", protocol])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Worker { child }
}

fn signal(w: &mut Worker, sig: i32) {
    unsafe { libc::kill(w.child.id() as i32, sig) };
}

fn stop(mut w: Worker) {
    signal(&mut w, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "a group member did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(mut w: Worker) {
    signal(&mut w, libc::SIGKILL);
    let _ = w.child.wait();
}

/// Every "partition offset value" line the workers wrote.
fn processed(files: &[PathBuf]) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for line in text.lines() {
            let mut it = line.splitn(3, ' ');
            if let (Some(p), Some(o), Some(v)) = (it.next(), it.next(), it.next()) {
                if let (Ok(p), Ok(o)) = (p.parse(), o.parse()) {
                    out.push((p, o, v.to_string()));
                }
            }
        }
    }
    out
}

fn group_members_come_and_go(protocol: &str) {
    if python().is_none() {
        return missing("python with confluent-kafka (FRESHET_PYTHON)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = fast_groups_config(tmp.path());
    let server = Server::start_with(&tmp.path().join("data"), 0, &["--config", config.to_str().unwrap()]);
    create_topic(&server.addr, "work", 6);
    let out = |n: usize| tmp.path().join(format!("worker-{n}.txt"));
    let first: Vec<String> = (0..3000).map(|i| format!("r{i}")).collect();

    // Three members while a producer writes for ~6 s; one is killed, one joins, one leaves.
    let addr = server.addr.clone();
    let values = first.clone();
    let producer = std::thread::spawn(move || produce(&addr, "work", 6, &values, Duration::from_millis(2)));
    let mut workers: Vec<Option<Worker>> =
        (0..3).map(|n| Some(start_worker(&server, "work", "g", protocol, out(n)))).collect();
    std::thread::sleep(Duration::from_secs(2));
    kill(workers[0].take().unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    workers.push(Some(start_worker(&server, "work", "g", protocol, out(3))));
    std::thread::sleep(Duration::from_millis(1500));
    stop(workers[1].take().unwrap());
    producer.join().unwrap();
    let files: Vec<PathBuf> = (0..4).map(out).collect();
    let wanted: HashSet<&String> = first.iter().collect();
    wait_until(WAIT, "every record to be processed", || {
        let seen: HashSet<String> = processed(&files).into_iter().map(|(_, _, v)| v).collect();
        wanted.iter().all(|v| seen.contains(*v)).then_some(())
    });
    // Per partition, each member processed its records in offset order.
    for f in &files {
        let mut last: HashMap<i32, i64> = HashMap::new();
        for (p, o, _) in processed(std::slice::from_ref(f)) {
            if let Some(prev) = last.insert(p, o) {
                assert!(o > prev, "{}: partition {p} went back from {prev} to {o}", f.display());
            }
        }
    }
    let all = processed(&files);
    let duplicates = all.len() - all.iter().map(|(_, _, v)| v).collect::<HashSet<_>>().len();
    eprintln!("{protocol}: {} records processed, {duplicates} more than once (at least once)", first.len());

    // Everyone leaves; more records arrive; a new set of members resumes at the committed offsets.
    for w in workers.into_iter().flatten() {
        stop(w);
    }
    let second: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    produce(&server.addr, "work", 6, &second, Duration::ZERO);
    let later: Vec<PathBuf> = (4..7).map(out).collect();
    let resumed: Vec<Worker> = (4..7).map(|n| start_worker(&server, "work", "g", protocol, out(n))).collect();
    wait_until(WAIT, "the new records to be processed", || {
        let seen: HashSet<String> = processed(&later).into_iter().map(|(_, _, v)| v).collect();
        second.iter().all(|v| seen.contains(v)).then_some(())
    });
    let again = processed(&later);
    let old: Vec<&String> = again.iter().map(|(_, _, v)| v).filter(|v| v.starts_with('r')).collect();
    assert!(
        old.is_empty(),
        "{protocol}: members that resumed processed old records again: {:?}",
        &old[..old.len().min(5)]
    );
    for w in resumed {
        stop(w);
    }
}

#[test]
fn classic_group_members_join_leave_and_die_without_losing_records() {
    group_members_come_and_go("classic");
}

#[test]
fn consumer_protocol_group_members_join_leave_and_die_without_losing_records() {
    group_members_come_and_go("consumer");
}

// ---------------------------------------------------------------------------------------------
// librdkafka groups in-process (rdkafka crate).

fn rdkafka_group(protocol: &str, assignor: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let config = fast_groups_config(tmp.path());
    let mut server = Server::start_with(&tmp.path().join("data"), 0, &["--config", config.to_str().unwrap()]);
    create_topic(&server.addr, "events", 4);
    let values: Vec<String> = (0..1000).map(|i| format!("e{i}")).collect();
    produce(&server.addr, "events", 4, &values, Duration::ZERO);
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop_all = Arc::new(AtomicBool::new(false));
    let member = |seen: Arc<std::sync::Mutex<Vec<String>>>, stop: Arc<AtomicBool>, quit_after: Option<usize>| {
        let mut c = base(&server.addr);
        c.set("group.id", "rd")
            .set("group.protocol", protocol)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        if protocol == "classic" {
            c.set("session.timeout.ms", "6000").set("partition.assignment.strategy", assignor);
        }
        let consumer: BaseConsumer = c.create().unwrap();
        consumer.subscribe(&["events"]).unwrap();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && quit_after.is_none_or(|q| n < q) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    seen.lock().unwrap().push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
                    // A commit racing a rebalance is refused (the member's epoch or generation
                    // moved on): the partition's next owner consumes from the last commit and
                    // commits further, which the end-offset check below verifies.
                    if let Err(e) = consumer.commit_message(&m, CommitMode::Sync) {
                        use rdkafka::types::RDKafkaErrorCode as C;
                        let racing = matches!(
                            e.rdkafka_error_code(),
                            Some(
                                C::StaleMemberEpoch
                                    | C::RebalanceInProgress
                                    | C::IllegalGeneration
                                    | C::UnknownMemberId
                            )
                        );
                        assert!(racing, "commit failed: {e}");
                    }
                    n += 1;
                }
            }
            // Leaving the group (close) hands the partitions to the others.
            drop(consumer);
        })
    };
    let handles = vec![
        member(seen.clone(), stop_all.clone(), None),
        member(seen.clone(), stop_all.clone(), Some(150)),
        member(seen.clone(), stop_all.clone(), None),
    ];
    wait_until(WAIT, "all records consumed through the group", || {
        let got: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
        values.iter().all(|v| got.contains(v)).then_some(())
    });
    stop_all.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    // The committed offsets are at the end of every partition, and stay there across a
    // SIGKILL of the broker: they were acknowledged, so they are durable.
    let addr = server.addr.clone();
    let check_committed = |when: &str| {
        let consumer: BaseConsumer =
            base(&addr).set("group.id", "rd").set("group.protocol", "classic").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition("events", p);
        }
        let committed = consumer.committed_offsets(tpl, WAIT).unwrap();
        for p in 0..4 {
            assert_eq!(
                committed.find_partition("events", p).unwrap().offset(),
                Offset::Offset(250),
                "{protocol}/{assignor} partition {p} {when}"
            );
        }
    };
    check_committed("before the crash");
    server.kill();
    server.restart();
    check_committed("after the crash");
}

#[test]
fn rdkafka_classic_range_group_shares_partitions_and_commits() {
    rdkafka_group("classic", "range");
}

#[test]
fn rdkafka_classic_roundrobin_group_shares_partitions_and_commits() {
    rdkafka_group("classic", "roundrobin");
}

#[test]
fn rdkafka_classic_cooperative_sticky_group_shares_partitions_and_commits() {
    rdkafka_group("classic", "cooperative-sticky");
}

#[test]
fn rdkafka_consumer_protocol_group_shares_partitions_and_commits() {
    rdkafka_group("consumer", "");
}

// ---------------------------------------------------------------------------------------------
// Idempotent producer through a proxy that drops connections.

/// Runs a TCP proxy on `listener` to `target` that cuts connections after a few tens of
/// kilobytes (requests after `limit`, responses after half of it), so requests and responses
/// are lost mid-flight; it cuts at most `cuts` connections, and none once `calm` is set.
/// Returns the count of cuts.
fn flaky_proxy(
    listener: std::net::TcpListener,
    target: String,
    cuts: usize,
    calm: Arc<AtomicBool>,
) -> Arc<AtomicUsize> {
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
            let cut = counter.load(Ordering::Relaxed) < cuts && !calm.load(Ordering::Relaxed);
            let limit = if cut { 100_000 + (n * 7919) % 200_000 } else { usize::MAX };
            let pump = |mut from: std::net::TcpStream,
                        mut to: std::net::TcpStream,
                        limit: usize,
                        counter: Arc<AtomicUsize>| {
                use std::io::{Read, Write};
                let mut buf = [0u8; 8192];
                let mut moved = 0usize;
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - moved),
                    };
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    moved += n;
                    if moved >= limit {
                        counter.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                let _ = from.shutdown(std::net::Shutdown::Both);
                let _ = to.shutdown(std::net::Shutdown::Both);
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (k1, k2) = (counter.clone(), counter.clone());
            std::thread::spawn(move || pump(client, server, limit, k1));
            std::thread::spawn(move || pump(s2, c2, limit / 2, k2));
        }
    });
    done
}

#[test]
fn an_idempotent_producer_writes_exactly_once_through_dropped_connections() {
    let tmp = tempfile::tempdir().unwrap();
    // The broker advertises the proxy, so every connection of the client goes through it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let server = Server::start_with(tmp.path(), 0, &["--advertised-kafka", &proxy]);
    let calm = Arc::new(AtomicBool::new(false));
    let cuts = flaky_proxy(listener, server.addr.clone(), 15, calm.clone());
    create_topic(&server.addr, "exact", 3);
    let n = 6000;
    struct Reports(std::sync::Mutex<Vec<String>>);
    impl rdkafka::ClientContext for Reports {}
    impl rdkafka::producer::ProducerContext for Reports {
        type DeliveryOpaque = ();
        fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
            if let Err((e, _)) = r {
                self.0.lock().unwrap().push(e.to_string());
            }
        }
    }
    let producer: ThreadedProducer<Reports> = base(&proxy)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "100")
        .set("message.timeout.ms", "60000")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "100")
        .create_with_context(Reports(std::sync::Mutex::new(Vec::new())))
        .unwrap();
    let t0 = Instant::now();
    for i in 0..n {
        let v = format!("{:06}-{}", i, "x".repeat(200));
        producer.send(BaseRecord::<(), _>::to("exact").partition(i % 3).payload(&v)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(WAIT).unwrap();
    let failures = producer.context().0.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} records not delivered, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    drop(producer);
    assert!(cuts.load(Ordering::Relaxed) > 0, "the proxy never cut a connection");
    // Reading goes through the proxy too (the broker advertises it); it no longer cuts.
    calm.store(true, Ordering::Relaxed);
    // Read from the broker directly: each partition holds exactly its records, once, in order.
    let got = read_all(&server.addr, "exact", 3, "read_uncommitted");
    let mut by_partition: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (p, _, v) in &got {
        by_partition.entry(*p).or_default().push(v[..6].parse().unwrap());
    }
    for p in 0..3 {
        let expected: Vec<u32> = (0..n as u32).filter(|i| i % 3 == p as u32).collect();
        let got = by_partition.get(&p).cloned().unwrap_or_default();
        let first_wrong = got.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            got == expected,
            "partition {p}: {} records for {} expected; first difference at index {first_wrong:?}",
            got.len(),
            expected.len()
        );
    }
    eprintln!(
        "{} connections cut; {} records exactly once in {:?}",
        cuts.load(Ordering::Relaxed),
        got.len(),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Transactions.

#[test]
fn read_committed_sees_exactly_the_committed_transactions() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    create_topic(&server.addr, "ledger", 2);
    let tx = |id: &str| -> ThreadedProducer<DefaultProducerContext> {
        let p: ThreadedProducer<DefaultProducerContext> =
            base(&server.addr).set("transactional.id", id).create().unwrap();
        p.init_transactions(WAIT).unwrap();
        p
    };
    let (a, b) = (tx("tx-a"), tx("tx-b"));
    let mut committed = HashSet::new();
    let mut all = HashSet::new();
    // Two producers interleave transactions; every third one aborts.
    for round in 0..12 {
        let (p, name) = if round % 2 == 0 { (&a, "a") } else { (&b, "b") };
        p.begin_transaction().unwrap();
        for i in 0..10 {
            let v = format!("{name}{round}-{i}");
            p.send(BaseRecord::<(), _>::to("ledger").partition(i % 2).payload(&v)).map_err(|(e, _)| e).unwrap();
            all.insert(v.clone());
            if round % 3 != 2 {
                committed.insert(v);
            }
        }
        p.flush(WAIT).unwrap();
        if round % 3 == 2 {
            p.abort_transaction(WAIT).unwrap();
        } else {
            p.commit_transaction(WAIT).unwrap();
        }
    }
    let rc: HashSet<String> =
        read_all(&server.addr, "ledger", 2, "read_committed").into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(rc, committed, "read_committed");
    let ru: HashSet<String> =
        read_all(&server.addr, "ledger", 2, "read_uncommitted").into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(ru, all, "read_uncommitted");
    // An open transaction holds read_committed readers at its first offset.
    a.begin_transaction().unwrap();
    a.send(BaseRecord::<(), _>::to("ledger").partition(0).payload("pending")).map_err(|(e, _)| e).unwrap();
    a.flush(WAIT).unwrap();
    let rc: HashSet<String> =
        read_all(&server.addr, "ledger", 2, "read_committed").into_iter().map(|(_, _, v)| v).collect();
    assert!(!rc.contains("pending"));
    a.commit_transaction(WAIT).unwrap();
    let rc: HashSet<String> =
        read_all(&server.addr, "ledger", 2, "read_committed").into_iter().map(|(_, _, v)| v).collect();
    assert!(rc.contains("pending"));
}

#[test]
fn consume_transform_produce_is_exactly_once_across_sigkill() {
    if python().is_none() {
        return missing("python with confluent-kafka (FRESHET_PYTHON)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = fast_groups_config(tmp.path());
    let server = Server::start_with(&tmp.path().join("data"), 0, &["--config", config.to_str().unwrap()]);
    create_topic(&server.addr, "in", 3);
    create_topic(&server.addr, "out", 3);
    let n = 2000;
    let inputs: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let addr = server.addr.clone();
    let values = inputs.clone();
    let feeder = std::thread::spawn(move || produce(&addr, "in", 3, &values, Duration::from_micros(1500)));
    let start = || -> Child {
        python_script("eos_worker.py")
            .args([
                "--bootstrap",
                &server.addr,
                "--input",
                "in",
                "--output",
                "out",
                "--group",
                "eos",
                "--transactional-id",
                "eos-1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Kill the worker twice while it works; each time a new one takes over.
    let mut worker = start();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        unsafe { libc::kill(worker.id() as i32, libc::SIGKILL) };
        let _ = worker.wait();
        worker = start();
    }
    feeder.join().unwrap();
    let expected: HashSet<String> = inputs.iter().map(|v| format!("out-{v}")).collect();
    let out = wait_until(WAIT, "every input transformed", || {
        let got = read_all(&server.addr, "out", 3, "read_committed");
        let set: HashSet<&String> = got.iter().map(|(_, _, v)| v).collect();
        expected.iter().all(|v| set.contains(v)).then_some(got)
    });
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let _ = worker.wait();
    // Exactly once: no output twice in what read_committed consumers see.
    let mut count: HashMap<&String, usize> = HashMap::new();
    for (_, _, v) in &out {
        *count.entry(v).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, c)| **c > 1).map(|(v, _)| *v).collect();
    assert!(twice.is_empty(), "outputs committed more than once: {:?}", &twice[..twice.len().min(5)]);
    assert_eq!(out.len(), n);
}

#[test]
fn an_open_transaction_left_by_a_crashed_broker_is_aborted_after_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    create_topic(&server.addr, "pending", 1);
    let p: ThreadedProducer<DefaultProducerContext> =
        base(&server.addr).set("transactional.id", "crash-tx").set("transaction.timeout.ms", "3000").create().unwrap();
    p.init_transactions(WAIT).unwrap();
    p.begin_transaction().unwrap();
    p.send(BaseRecord::<(), _>::to("pending").partition(0).payload("committed-first")).map_err(|(e, _)| e).unwrap();
    p.commit_transaction(WAIT).unwrap();
    p.begin_transaction().unwrap();
    p.send(BaseRecord::<(), _>::to("pending").partition(0).payload("never-committed")).map_err(|(e, _)| e).unwrap();
    p.flush(WAIT).unwrap();
    // The broker dies with the transaction open; the producer is gone too.
    server.kill();
    drop(p);
    server.restart();
    // Plain data written after the open transaction is invisible to read_committed until the
    // transaction ends; the coordinator aborts it once its timeout passes.
    produce(&server.addr, "pending", 1, &["after".to_string()], Duration::ZERO);
    let values = wait_until(WAIT, "the open transaction to be aborted", || {
        let got: Vec<String> =
            read_all(&server.addr, "pending", 1, "read_committed").into_iter().map(|(_, _, v)| v).collect();
        got.contains(&"after".to_string()).then_some(got)
    });
    assert_eq!(values, vec!["committed-first".to_string(), "after".to_string()]);
}
