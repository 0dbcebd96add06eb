//! The Nexmark queries over generated events: each output checked against what the generator
//! produced, not against recorded numbers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use freshet_sql::engine::Engine;
use freshet_sql::nexmark::{self, Auction, Bid, Config, Event, Person};
use freshet_sql::topics::{MemTopics, Topics};
use serde_json::Value as Json;

const EVENTS: u64 = 20_000;
const PARTITIONS: i32 = 2;

/// One event a second from 18:45 to 00:18, so the run crosses midnight (q17's day windows) and
/// every bucket of q14 (18:00 day, 19:00 other, 20:00 on night).
fn config() -> Config {
    Config { events_per_second: 1, base_time_ms: Config::default().base_time_ms - 315 * 60_000, seed: 7 }
}

struct Run {
    persons: Vec<Person>,
    auctions: Vec<Auction>,
    bids: Vec<Bid>,
    topics: Arc<MemTopics>,
}

fn generate() -> Run {
    let topics = Arc::new(MemTopics::new());
    let counts = nexmark::write(&*topics, config(), EVENTS, PARTITIONS, 100, |_| {}).unwrap();
    let (mut persons, mut auctions, mut bids) = (vec![], vec![], vec![]);
    for e in nexmark::Generator::new(config()).take(EVENTS as usize) {
        match e {
            Event::Person(p) => persons.push(p),
            Event::Auction(a) => auctions.push(a),
            Event::Bid(b) => bids.push(b),
        }
    }
    assert_eq!(
        (counts.persons, counts.auctions, counts.bids),
        (persons.len() as u64, auctions.len() as u64, bids.len() as u64)
    );
    assert_eq!(counts.total(), EVENTS);
    Run { persons, auctions, bids, topics }
}

/// Output record: key bytes, value (None for a tombstone), timestamp.
type Out = (Option<Vec<u8>>, Option<Json>, i64);

/// Runs one query to the end of its input and returns its sink's records, partition by partition.
fn run(run: &Run, name: &str) -> Vec<Out> {
    let q = nexmark::query(name).unwrap();
    let mut e = Engine::new(run.topics.clone());
    e.execute(nexmark::SOURCES).unwrap();
    e.execute(q.sql).unwrap();
    let processed = e.run_until_idle().unwrap();
    let inputs: usize = q
        .inputs
        .iter()
        .map(|t| (0..PARTITIONS).map(|p| run.topics.end_offset(t, p).unwrap() as usize).sum::<usize>())
        .sum();
    assert_eq!(processed, inputs, "{name} reads all its input");
    assert!(e.processing_log.is_empty(), "{name}: {:?}", e.processing_log.first());
    let sink = name.to_uppercase();
    let mut out = vec![];
    for p in 0..run.topics.partitions(&sink).unwrap() {
        for c in run.topics.read(&sink, p, 0, usize::MAX).unwrap() {
            let value = c.record.value.map(|v| serde_json::from_slice(&v).unwrap());
            out.push((c.record.key.map(|k| k.to_vec()), value, c.record.timestamp));
        }
    }
    assert!(!out.is_empty(), "{name} has output");
    out
}

fn int(v: &Json, field: &str) -> i64 {
    v[field].as_i64().unwrap_or_else(|| panic!("{field} in {v}"))
}

fn be(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().unwrap())
}

#[test]
fn nexmark_queries_compute_what_the_generated_events_imply() {
    let r = generate();
    // The mix: 2% persons, 6% auctions, 92% bids.
    assert_eq!((r.persons.len(), r.auctions.len(), r.bids.len()), (400, 1200, 18400));

    // q0: every bid, unchanged.
    let q0 = run(&r, "q0");
    let mut got: Vec<(i64, i64, i64, i64, String)> = q0
        .iter()
        .map(|(_, v, ts)| {
            let v = v.as_ref().unwrap();
            assert_eq!(int(v, "DATETIME"), *ts);
            (int(v, "AUCTION"), int(v, "BIDDER"), int(v, "PRICE"), *ts, v["URL"].as_str().unwrap().to_string())
        })
        .collect();
    let mut want: Vec<(i64, i64, i64, i64, String)> = r
        .bids
        .iter()
        .map(|b| (b.auction as i64, b.bidder as i64, b.price as i64, b.date_time, b.url.clone()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // q1: every bid, price in euros.
    let q1 = run(&r, "q1");
    assert_eq!(q1.len(), r.bids.len());
    let mut prices: HashMap<(i64, i64, i64, String), Vec<i64>> = HashMap::new();
    for b in &r.bids {
        prices
            .entry((b.auction as i64, b.bidder as i64, b.date_time, b.extra.clone()))
            .or_default()
            .push(b.price as i64);
    }
    for (_, v, _) in &q1 {
        let v = v.as_ref().unwrap();
        let key = (int(v, "AUCTION"), int(v, "BIDDER"), int(v, "DATETIME"), v["EXTRA"].as_str().unwrap().to_string());
        let euro = v["PRICE"].as_f64().unwrap();
        assert!(prices[&key].iter().any(|p| (*p as f64 * 0.908 - euro).abs() < 1e-6), "{v}");
    }

    // q2: exactly the bids on auctions divisible by 123.
    let q2 = run(&r, "q2");
    let mut got: Vec<(i64, i64)> =
        q2.iter().map(|(_, v, _)| (int(v.as_ref().unwrap(), "AUCTION"), int(v.as_ref().unwrap(), "PRICE"))).collect();
    let mut want: Vec<(i64, i64)> =
        r.bids.iter().filter(|b| b.auction % 123 == 0).map(|b| (b.auction as i64, b.price as i64)).collect();
    got.sort();
    want.sort();
    assert!(got.iter().all(|(a, _)| a % 123 == 0));
    assert_eq!(got, want);

    // q3: auctions of category 10 whose seller lives in OR, ID or CA, with the seller's details.
    let q3 = run(&r, "q3");
    let people: HashMap<u64, &Person> = r.persons.iter().map(|p| (p.id, p)).collect();
    let want: HashSet<(i64, i64, String, String, String)> = r
        .auctions
        .iter()
        .filter(|a| a.category == 10)
        .filter_map(|a| people.get(&a.seller).map(|p| (a, p)))
        .filter(|(_, p)| ["OR", "ID", "CA"].contains(&p.state.as_str()))
        .map(|(a, p)| (a.id as i64, a.seller as i64, p.name.clone(), p.city.clone(), p.state.clone()))
        .collect();
    let got: Vec<(i64, i64, String, String, String)> = q3
        .iter()
        .map(|(k, v, _)| {
            let v = v.as_ref().unwrap();
            let s = |f: &str| v[f].as_str().unwrap().to_string();
            (int(v, "ID"), be(k.as_ref().unwrap()), s("NAME"), s("CITY"), s("STATE"))
        })
        .collect();
    assert_eq!(got.len(), want.len(), "each matching auction once");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);

    // q11: the sessions left at the end (tombstones remove merged ones) count every bid of their
    // bidder, and a bidder's sessions are more than the 10 s gap apart.
    let q11 = run(&r, "q11");
    let mut sessions: BTreeMap<(i64, i64, i64), Option<i64>> = BTreeMap::new();
    for (k, v, _) in &q11 {
        let k = k.as_ref().unwrap();
        // Kafka Streams' session key: the key, the window's end, its start.
        let key = (be(&k[0..8]), be(&k[16..24]), be(&k[8..16]));
        if let Some(v) = v {
            assert_eq!((int(v, "STARTTIME"), int(v, "ENDTIME")), (key.1, key.2));
        }
        sessions.insert(key, v.as_ref().map(|v| int(v, "BID_COUNT")));
    }
    let mut per_bidder: BTreeMap<i64, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for ((bidder, start, end), count) in sessions {
        if let Some(count) = count {
            per_bidder.entry(bidder).or_default().push((start, end, count));
        }
    }
    let mut bids_of: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for b in &r.bids {
        bids_of.entry(b.bidder as i64).or_default().push(b.date_time);
    }
    assert_eq!(per_bidder.keys().collect::<Vec<_>>(), bids_of.keys().collect::<Vec<_>>());
    for (bidder, list) in &per_bidder {
        let times = &bids_of[bidder];
        for w in list.windows(2) {
            assert!(w[1].0 - w[0].1 > 10_000, "bidder {bidder}: sessions {w:?} within the gap");
        }
        for (start, end, count) in list {
            let inside = times.iter().filter(|t| (*start..=*end).contains(*t)).count() as i64;
            assert_eq!(*count, inside, "bidder {bidder} session {start}..{end}");
        }
        assert_eq!(list.iter().map(|s| s.2).sum::<i64>(), times.len() as i64);
    }

    // q14: the bids whose euro price is in (1M, 50M), bucketed by the hour of day.
    let q14 = run(&r, "q14");
    let want = r.bids.iter().filter(|b| (1e6..5e7).contains(&(b.price as f64 * 0.908))).count();
    assert_eq!(q14.len(), want);
    let mut buckets = HashSet::new();
    for (_, v, _) in &q14 {
        let v = v.as_ref().unwrap();
        let hour = int(v, "DATETIME") / 3_600_000 % 24;
        let bucket = match hour {
            8..=18 => "dayTime",
            0..=6 | 20..=23 => "nightTime",
            _ => "otherTime",
        };
        assert_eq!(v["BIDTIMETYPE"].as_str().unwrap(), bucket, "{v}");
        buckets.insert(bucket);
        let extra = v["EXTRA"].as_str().unwrap();
        assert_eq!(int(v, "C_COUNTS"), extra.matches('c').count() as i64);
        let euro = v["PRICE"].as_f64().unwrap();
        assert!(euro > 1e6 && euro < 5e7);
    }
    assert_eq!(buckets.len(), 3);

    // q17: the last update of each (auction, day) matches the bids of that auction that day.
    let q17 = run(&r, "q17");
    let mut last: HashMap<(i64, i64), Json> = HashMap::new();
    for (k, v, _) in &q17 {
        let k = k.as_ref().unwrap();
        last.insert((be(&k[0..8]), be(&k[8..16])), v.clone().unwrap());
    }
    let mut want: HashMap<(i64, i64), Vec<i64>> = HashMap::new();
    for b in &r.bids {
        let day = b.date_time - b.date_time.rem_euclid(86_400_000);
        want.entry((b.auction as i64, day)).or_default().push(b.price as i64);
    }
    assert_eq!(last.len(), want.len());
    assert!(want.keys().map(|k| k.1).collect::<HashSet<_>>().len() == 2, "two days");
    for (k, prices) in &want {
        let v = &last[k];
        let total = prices.len() as i64;
        assert_eq!(int(v, "TOTAL_BIDS"), total);
        assert_eq!(int(v, "RANK1_BIDS") + int(v, "RANK2_BIDS") + int(v, "RANK3_BIDS"), total);
        assert_eq!(int(v, "RANK1_BIDS"), prices.iter().filter(|p| **p < 10_000).count() as i64);
        assert_eq!(int(v, "RANK3_BIDS"), prices.iter().filter(|p| **p >= 1_000_000).count() as i64);
        assert_eq!(int(v, "MIN_PRICE"), *prices.iter().min().unwrap());
        assert_eq!(int(v, "MAX_PRICE"), *prices.iter().max().unwrap());
        assert_eq!(int(v, "SUM_PRICE"), prices.iter().sum::<i64>());
        let avg = prices.iter().sum::<i64>() as f64 / total as f64;
        assert!((v["AVG_PRICE"].as_f64().unwrap() - avg).abs() < 1e-6 * avg.max(1.0), "{v}");
    }
}
