//! librdkafka (through the `rdkafka` crate) against a real `freshet serve` over TCP.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{wait_until, Server};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);

fn base(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr).set("broker.address.family", "v4");
    c
}

/// A consumer that reads assigned partitions (librdkafka wants a group id even for assign()).
fn consumer_config(addr: &str) -> ClientConfig {
    let mut c = base(addr);
    c.set("group.id", "freshet-tests").set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    c
}

fn admin(addr: &str) -> AdminClient<DefaultClientContext> {
    base(addr).create().expect("admin client")
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(WAIT)).request_timeout(Some(WAIT))
}

fn create_topic(addr: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = rt.block_on(admin(addr).create_topics([&topic], &opts())).expect("create_topics");
    for r in results {
        r.expect("topic created");
    }
}

/// A record as produced: partition, key, value, headers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    partition: i32,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

/// Produces `records` with acks=all and returns (partition, offset) -> record, in delivery order.
fn produce_all(addr: &str, topic: &str, records: &[Rec], extra: &[(&str, &str)]) -> BTreeMap<(i32, i64), Rec> {
    let mut config = base(addr);
    config.set("acks", "all").set("linger.ms", "5").set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    // Delivery reports carry each record's index, so every record's offset is checked.
    let (tx, rx) = std::sync::mpsc::channel();
    type Report = (usize, Result<(i32, i64), String>);
    struct Ctx(std::sync::Mutex<std::sync::mpsc::Sender<Report>>);
    impl rdkafka::ClientContext for Ctx {}
    impl rdkafka::producer::ProducerContext for Ctx {
        type DeliveryOpaque = Box<usize>;
        fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, index: Box<usize>) {
            let r = match result {
                Ok(m) => Ok((m.partition(), m.offset())),
                Err((e, _)) => Err(e.to_string()),
            };
            let _ = self.0.lock().unwrap().send((*index, r));
        }
    }
    let producer: ThreadedProducer<Ctx> = config.create_with_context(Ctx(std::sync::Mutex::new(tx))).expect("producer");
    for (i, r) in records.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        let record = BaseRecord::with_opaque_to(topic, Box::new(i))
            .partition(r.partition)
            .key(&r.key)
            .payload(&r.value)
            .headers(headers);
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
    }
    producer.flush(WAIT).expect("flush");
    let mut out = BTreeMap::new();
    for _ in 0..records.len() {
        let (i, result) = rx.recv_timeout(WAIT).expect("delivery report");
        let (p, o) = result.unwrap_or_else(|e| panic!("record {i} not delivered: {e}"));
        assert_eq!(p, records[i].partition);
        assert!(out.insert((p, o), records[i].clone()).is_none(), "offset {o} of partition {p} reported twice");
    }
    out
}

/// Reads `count` records from the start of every partition of `topic`.
fn consume_all(addr: &str, topic: &str, partitions: i32, count: usize) -> BTreeMap<(i32, i64), Rec> {
    let consumer: BaseConsumer = consumer_config(addr)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = BTreeMap::new();
    let deadline = std::time::Instant::now() + WAIT;
    while out.len() < count {
        assert!(std::time::Instant::now() < deadline, "consumed {} of {count} records before the timeout", out.len());
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.expect("consume");
        let headers = msg
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        let rec = Rec {
            partition: msg.partition(),
            key: msg.key().unwrap_or_default().to_vec(),
            value: msg.payload().unwrap_or_default().to_vec(),
            headers,
        };
        assert!(out.insert((msg.partition(), msg.offset()), rec).is_none(), "offset consumed twice");
    }
    // Nothing more than what was produced.
    if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(300)) {
        panic!("unexpected extra record at {}-{}", extra.partition(), extra.offset());
    }
    out
}

fn records(n: usize, partitions: i32, tag: &str) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            partition: (i % partitions as usize) as i32,
            key: format!("key-{i}").into_bytes(),
            value: format!("{tag}-value-{i}-{}", "x".repeat(i % 50)).into_bytes(),
            headers: vec![("seq".into(), i.to_string().into_bytes()), ("tag".into(), tag.as_bytes().to_vec())],
        })
        .collect()
}

fn check_order(produced: &BTreeMap<(i32, i64), Rec>, all: &[Rec]) {
    // Per partition, offsets follow the order the records were sent in.
    let mut by_partition: HashMap<i32, Vec<&Rec>> = HashMap::new();
    for ((p, _), r) in produced {
        by_partition.entry(*p).or_default().push(r);
    }
    for (p, got) in by_partition {
        let sent: Vec<&Rec> = all.iter().filter(|r| r.partition == p).collect();
        assert_eq!(got, sent, "order of partition {p}");
    }
}

#[test]
fn produce_and_consume_exactly_with_acks_all_and_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    create_topic(&server.addr, "orders", 4, &[]);
    let sent = records(2000, 4, "rd");
    let produced = produce_all(&server.addr, "orders", &sent, &[]);
    assert_eq!(produced.len(), sent.len());
    check_order(&produced, &sent);
    let consumed = consume_all(&server.addr, "orders", 4, sent.len());
    assert_eq!(consumed, produced);

    // SIGKILL: no flush, no clean shutdown. Everything acknowledged must come back.
    server.kill();
    server.restart();
    let again = consume_all(&server.addr, "orders", 4, sent.len());
    assert_eq!(again, produced);
    // And the log goes on at the right offsets.
    let more = records(100, 4, "after");
    let produced_more = produce_all(&server.addr, "orders", &more, &[]);
    let first_new = produced_more.keys().filter(|(p, _)| *p == 0).map(|(_, o)| *o).min().unwrap();
    assert_eq!(first_new, 500, "partition 0 continues after its 500 records");
}

#[test]
fn compressed_batches_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compressed-{codec}");
        create_topic(&server.addr, &topic, 2, &[]);
        let sent = records(500, 2, codec);
        let produced = produce_all(&server.addr, &topic, &sent, &[("compression.type", codec), ("linger.ms", "20")]);
        check_order(&produced, &sent);
        assert_eq!(consume_all(&server.addr, &topic, 2, sent.len()), produced, "{codec}");
    }
}

#[test]
fn fetch_from_the_middle_of_a_batch_and_by_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    create_topic(&server.addr, "mid", 1, &[]);
    // One big batch: linger long enough to collect all 100 records.
    let sent = records(100, 1, "mid");
    produce_all(&server.addr, "mid", &sent, &[("linger.ms", "200"), ("batch.num.messages", "1000")]);
    let consumer: BaseConsumer = consumer_config(&server.addr).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("mid", 0, Offset::Offset(57)).unwrap();
    consumer.assign(&tpl).unwrap();
    let msg = wait_until(WAIT, "a record", || consumer.poll(Duration::from_millis(200)).map(|m| m.unwrap().detach()));
    assert_eq!(msg.offset(), 57);
    assert_eq!(msg.payload().unwrap(), &sent[57].value[..]);

    // offsets_for_times: every record carries its CreateTime; ask for one in the future too.
    let mut query = TopicPartitionList::new();
    query.add_partition_offset("mid", 0, Offset::Offset(0)).unwrap();
    let found = consumer.offsets_for_times(query, WAIT).unwrap();
    assert_eq!(found.find_partition("mid", 0).unwrap().offset(), Offset::Offset(0));
    let mut future = TopicPartitionList::new();
    let tomorrow = freshet_broker_now() + 86_400_000;
    future.add_partition_offset("mid", 0, Offset::Offset(tomorrow)).unwrap();
    let found = consumer.offsets_for_times(future, WAIT).unwrap();
    assert_eq!(found.find_partition("mid", 0).unwrap().offset(), Offset::End);
    let (low, high) = consumer.fetch_watermarks("mid", 0, WAIT).unwrap();
    assert_eq!((low, high), (0, 100));
}

fn freshet_broker_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn producing_to_an_unknown_topic_creates_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let sent = records(10, 1, "auto");
    let produced = produce_all(&server.addr, "created-on-first-use", &sent, &[]);
    assert_eq!(produced.len(), 10);
}

#[test]
fn admin_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = admin(&server.addr);
    create_topic(&server.addr, "adm", 2, &[("retention.ms", "3600000")]);
    // Creating it again fails with TOPIC_ALREADY_EXISTS.
    let again =
        rt.block_on(admin.create_topics([&NewTopic::new("adm", 2, TopicReplication::Fixed(1))], &opts())).unwrap();
    assert!(matches!(&again[0], Err((_, RDKafkaErrorCode::TopicAlreadyExists))), "{again:?}");
    // A replication factor a single node cannot give.
    let rf3 =
        rt.block_on(admin.create_topics([&NewTopic::new("rf3", 1, TopicReplication::Fixed(3))], &opts())).unwrap();
    assert!(matches!(&rf3[0], Err((_, RDKafkaErrorCode::InvalidReplicationFactor))), "{rf3:?}");
    // An illegal name.
    let bad =
        rt.block_on(admin.create_topics([&NewTopic::new("bad/name", 1, TopicReplication::Fixed(1))], &opts())).unwrap();
    assert!(matches!(&bad[0], Err((_, RDKafkaErrorCode::InvalidTopic))), "{bad:?}");
    // An unknown config.
    let cfg = rt
        .block_on(
            admin.create_topics(
                [&NewTopic::new("cfg", 1, TopicReplication::Fixed(1)).set("retention.mss", "1")],
                &opts(),
            ),
        )
        .unwrap();
    assert!(matches!(&cfg[0], Err((_, RDKafkaErrorCode::InvalidConfig))), "{cfg:?}");

    // Describe and alter configs.
    let described = rt.block_on(admin.describe_configs([&ResourceSpecifier::Topic("adm")], &opts())).unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(resource.get("retention.ms").unwrap().value.as_deref(), Some("3600000"));
    assert!(!resource.get("retention.ms").unwrap().is_default);
    assert_eq!(resource.get("segment.bytes").unwrap().value.as_deref(), Some("1073741824"));
    let alter = AlterConfig::new(ResourceSpecifier::Topic("adm"))
        .set("retention.ms", "7200000")
        .set("segment.bytes", "1048576");
    let altered = rt.block_on(admin.alter_configs([&alter], &opts())).unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    let described = rt.block_on(admin.describe_configs([&ResourceSpecifier::Topic("adm")], &opts())).unwrap();
    let resource = described[0].as_ref().unwrap();
    assert_eq!(resource.get("retention.ms").unwrap().value.as_deref(), Some("7200000"));
    assert_eq!(resource.get("segment.bytes").unwrap().value.as_deref(), Some("1048576"));
    let broker = rt.block_on(admin.describe_configs([&ResourceSpecifier::Broker(0)], &opts())).unwrap();
    assert!(broker[0].as_ref().unwrap().get("log.retention.ms").is_some());

    // Grow partitions; shrinking is refused.
    let grown = rt.block_on(admin.create_partitions([&NewPartitions::new("adm", 5)], &opts())).unwrap();
    assert!(grown[0].is_ok(), "{grown:?}");
    let shrunk = rt.block_on(admin.create_partitions([&NewPartitions::new("adm", 3)], &opts())).unwrap();
    assert!(matches!(&shrunk[0], Err((_, RDKafkaErrorCode::InvalidPartitions))), "{shrunk:?}");
    let md = admin.inner().fetch_metadata(Some("adm"), WAIT).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);

    // Delete records below an offset.
    let sent = records(50, 1, "del");
    produce_all(&server.addr, "adm", &sent, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("adm", 0, Offset::Offset(20)).unwrap();
    let deleted = rt.block_on(admin.delete_records(&tpl, &opts())).unwrap();
    assert_eq!(deleted.find_partition("adm", 0).unwrap().offset(), Offset::Offset(20));
    let consumer: BaseConsumer = base(&server.addr).create().unwrap();
    assert_eq!(consumer.fetch_watermarks("adm", 0, WAIT).unwrap(), (20, 50));

    // Delete the topic.
    let gone = rt.block_on(admin.delete_topics(&["adm"], &opts())).unwrap();
    assert!(gone[0].is_ok(), "{gone:?}");
    let missing = rt.block_on(admin.delete_topics(&["adm"], &opts())).unwrap();
    assert!(matches!(&missing[0], Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))), "{missing:?}");
}

/// Sends one record without retries and returns its delivery result.
fn deliver_one(addr: &str, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<(), KafkaError> {
    let (tx, rx) = std::sync::mpsc::channel();
    struct Ctx(std::sync::Mutex<std::sync::mpsc::Sender<Result<(), KafkaError>>>);
    impl rdkafka::ClientContext for Ctx {}
    impl rdkafka::producer::ProducerContext for Ctx {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
            let _ = self.0.lock().unwrap().send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
        }
    }
    let producer: ThreadedProducer<Ctx> = base(addr)
        .set("message.timeout.ms", "10000")
        .set("retries", "0")
        .create_with_context(Ctx(std::sync::Mutex::new(tx)))
        .unwrap();
    let mut record = BaseRecord::to(topic).partition(0).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer.send(record).map_err(|(e, _)| e).unwrap();
    producer.flush(WAIT).unwrap();
    rx.recv_timeout(WAIT).unwrap()
}

#[test]
fn oversized_messages_are_refused_with_message_too_large() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    create_topic(&server.addr, "small", 1, &[("max.message.bytes", "1000")]);
    let result = deliver_one(&server.addr, "small", Some(b"k"), &[b'x'; 5000]);
    assert!(matches!(result, Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge))), "{result:?}");
}

#[test]
fn retention_deletes_old_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    create_topic(&server.addr, "short", 1, &[("segment.bytes", "2000"), ("retention.bytes", "4000")]);
    // Ten rounds, so there are many batches and so many small segments.
    for round in 0..10 {
        let sent = records(30, 1, &format!("ret{round}"));
        produce_all(&server.addr, "short", &sent, &[("linger.ms", "0")]);
    }
    let consumer: BaseConsumer = base(&server.addr).create().unwrap();
    let segments = || -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = std::fs::read_dir(tmp.path().join("topics/short/0"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| (e.path().file_stem().unwrap().to_str().unwrap().parse().unwrap(), e.metadata().unwrap().len()))
            .collect();
        v.sort();
        v
    };
    // The broker applies retention once a second; let it settle.
    wait_until(WAIT, "retention to delete old segments", || {
        let (low, high) = consumer.fetch_watermarks("short", 0, WAIT).unwrap();
        assert_eq!(high, 300);
        (low > 0).then_some(low)
    });
    std::thread::sleep(Duration::from_millis(2500));
    let (low, _) = consumer.fetch_watermarks("short", 0, WAIT).unwrap();
    let segs = segments();
    let total: u64 = segs.iter().map(|s| s.1).sum();
    // Kafka's rule: delete the oldest segment while the rest still hold retention.bytes.
    assert!(total >= 4000 && total - segs[0].1 < 4000, "segments left: {segs:?}");
    assert_eq!(low as u64, segs[0].0, "the log starts at the oldest segment");
    assert_eq!(consume_all(&server.addr, "short", 1, (300 - low) as usize).len() as i64, 300 - low);
}

#[test]
fn compaction_keeps_the_latest_value_per_key_and_drops_tombstones() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    create_topic(
        &server.addr,
        "state",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "2000"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "2000"),
        ],
    );
    // 40 keys, 10 versions each; then tombstones for keys 0..5.
    let mut sent: Vec<Rec> = Vec::new();
    for version in 0..10 {
        for k in 0..40 {
            sent.push(Rec {
                partition: 0,
                key: format!("key-{k}").into_bytes(),
                value: format!("v{version}").into_bytes(),
                headers: vec![],
            });
        }
    }
    let produced = produce_all(&server.addr, "state", &sent, &[("linger.ms", "0"), ("batch.num.messages", "20")]);
    // Tombstones (null values) through a plain producer.
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        base(&server.addr).set("acks", "all").create().unwrap();
    for k in 0..5 {
        let key = format!("key-{k}");
        producer.send(BaseRecord::<_, ()>::to("state").partition(0).key(&key)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(WAIT).unwrap();
    // Filler with its own keys, so the data above ends up in sealed segments.
    let filler: Vec<Rec> = (0..60)
        .map(|i| Rec { partition: 0, key: format!("filler-{i}").into_bytes(), value: b"f".to_vec(), headers: vec![] })
        .collect();
    produce_all(&server.addr, "state", &filler, &[("linger.ms", "0")]);
    // A record without a key is refused by a compacted topic.
    let keyless = deliver_one(&server.addr, "state", None, b"no key");
    assert!(matches!(keyless, Err(KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord))), "{keyless:?}");

    let read = || -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
        let consumer: BaseConsumer = consumer_config(&server.addr).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("state", 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let (_, high) = consumer.fetch_watermarks("state", 0, WAIT).unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push((m.offset(), m.key().unwrap_or_default().to_vec(), m.payload().map(|p| p.to_vec())));
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                _ => {
                    if out.last().is_some_and(|l| l.0 + 1 >= high) {
                        break;
                    }
                }
            }
        }
        out
    };
    // The cleaner runs once a second; wait until the first versions are gone and the tombstones
    // (older than delete.retention.ms by then) too.
    let compacted = wait_until(WAIT, "compaction", || {
        let got = read();
        let gone = !got.iter().any(|(_, k, v)| k == b"key-7" && v.as_deref() == Some(&b"v0"[..]))
            && !got.iter().any(|(_, k, _)| k == b"key-0");
        gone.then_some(got)
    });
    // Each surviving key appears once, with its latest value, at the offset it was written at.
    let mut seen = std::collections::HashSet::new();
    for (offset, key, value) in &compacted {
        assert!(seen.insert(key.clone()), "key {} appears twice", String::from_utf8_lossy(key));
        if key.starts_with(b"key-") {
            assert_eq!(value.as_deref(), Some(&b"v9"[..]));
            let (&(_, original), _) = produced.iter().find(|(_, r)| &r.key == key && r.value == b"v9").unwrap();
            assert_eq!(*offset, original, "offsets do not change");
        }
    }
    for k in 5..40 {
        assert!(seen.contains(format!("key-{k}").as_bytes()), "key-{k} was lost");
    }
    for k in 0..5 {
        assert!(!seen.contains(format!("key-{k}").as_bytes()), "the tombstoned key-{k} is still there");
    }
}
