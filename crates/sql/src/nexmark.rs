//! The Nexmark benchmark: an event generator and the benchmark's queries in the ksqlDB dialect.
//!
//! The generator follows the standard model (Apache Beam's `NexmarkUtils`/`GeneratorConfig`,
//! which Flink's nexmark reuses): event `n` is a person, an auction or a bid by its place in a
//! cycle of 50 (1 person, 3 auctions, 46 bids: 2% / 6% / 92%); ids are dense and derived from the
//! event number (persons and auctions from 1000); an auction's seller and a bid's bidder are
//! recent persons (within the last 1000, up to 10 ahead), a bid's auction a recent one (within the
//! last 100, up to 10 ahead); half the bids go to a "hot" auction, three quarters come from a "hot"
//! bidder and three quarters of auctions from a "hot" seller; prices are `100 * 10^(6u)` cents
//! rounded; event time advances by `1 / rate` per event from a fixed base time. Each event draws
//! from its own RNG seeded by (seed, event number), as Beam does, so event `n` is the same however
//! the stream is split.
//!
//! Values are JSON with Flink nexmark's field names; `dateTime` (and `expires`) are epoch
//! milliseconds, the record timestamp is `dateTime`. Keys are the 8-byte big-endian id (KAFKA
//! format BIGINT): a person's and an auction's id, a bid's auction.

use serde::Serialize;

use crate::topics::{Record, Topics};
use crate::Result;

/// Events per cycle of each kind (Beam's `PERSON_PROPORTION`, `AUCTION_PROPORTION`,
/// `BID_PROPORTION`).
pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
pub const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
const HOT_SELLER_RATIO: u64 = 100;
/// One in `n` (minus one) picks the hot one (Beam's `hotAuctionRatio` 2, `hotBiddersRatio` 4,
/// `hotSellersRatio` 4, Flink's `hotChannelsRatio` 2).
const HOT_AUCTIONS: u64 = 2;
const HOT_BIDDERS: u64 = 4;
const HOT_SELLERS: u64 = 4;
const HOT_CHANNELS: u64 = 2;
const CHANNELS: u64 = 10_000;
/// Average value sizes the `extra` field pads to (Beam's `avg*ByteSize`).
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;

const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: &[&str] =
    &["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const FIRST_NAMES: &[&str] =
    &["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: &[&str] = &["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const HOT_CHANNEL_NAMES: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];

/// Generator settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Event time advances by `1 / events_per_second` seconds per event (Beam's
    /// `firstEventRate`, 10 000 by default).
    pub events_per_second: u64,
    /// Event time of event 0, epoch milliseconds.
    pub base_time_ms: i64,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        // 2026-01-01T00:00:00Z.
        Config { events_per_second: 10_000, base_time_ms: 1_767_225_600_000, seed: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
    pub date_time: i64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    pub id: u64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: u64,
    pub reserve: u64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: u64,
    pub category: u64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub channel: String,
    pub url: String,
    pub date_time: i64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// The topic the event goes to: `person`, `auction` or `bid`.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::Person(_) => "person",
            Event::Auction(_) => "auction",
            Event::Bid(_) => "bid",
        }
    }

    pub fn timestamp(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// The record key's id: the person's, the auction's, the bid's auction.
    pub fn key(&self) -> u64 {
        match self {
            Event::Person(p) => p.id,
            Event::Auction(a) => a.id,
            Event::Bid(b) => b.auction,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Event::Person(p) => serde_json::to_vec(p),
            Event::Auction(a) => serde_json::to_vec(a),
            Event::Bid(b) => serde_json::to_vec(b),
        }
        .expect("plain structs serialize")
    }

    pub fn to_record(&self) -> Record {
        Record {
            key: Some((self.key() as i64).to_be_bytes().to_vec().into()),
            value: Some(self.to_json().into()),
            timestamp: self.timestamp(),
            headers: vec![],
        }
    }
}

/// SplitMix64: small, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    /// Independent streams per (seed, event): the state starts at a hash of both.
    fn new(seed: u64, event: u64) -> Rng {
        Rng(Rng(seed).next_u64() ^ Rng(event ^ 0x6a09_e667_f3bc_c908).next_u64())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }

    /// Beam's `nextString`: 3 to `max - 1` lowercase letters, about one in 13 a space.
    fn string(&mut self, max: u64) -> String {
        let len = 3 + self.below(max - 3);
        (0..len).map(|_| if self.below(13) == 0 { ' ' } else { (b'a' + self.below(26) as u8) as char }).collect()
    }

    fn exact_string(&mut self, len: usize) -> String {
        (0..len).map(|_| (b'a' + self.below(26) as u8) as char).collect()
    }

    /// Beam's `nextExtra`: pads an event of `current` bytes to about `average` (±20%).
    fn extra(&mut self, current: usize, average: usize) -> String {
        if current > average {
            return String::new();
        }
        let desired = average - current;
        let delta = (desired as f64 * 0.2).round() as u64;
        let min = desired as u64 - delta;
        let size = min + if delta == 0 { 0 } else { self.below(2 * delta) };
        self.exact_string(size as usize)
    }

    /// Beam's `nextPrice`: cents, log-uniform from 1 to 1 000 000 dollars.
    fn price(&mut self) -> u64 {
        (10f64.powf(self.unit() * 6.0) * 100.0).round() as u64
    }
}

/// The last person id (base 0) created up to and including event `n`. Written for any proportions,
/// as Beam's is (with one person per cycle the `min` is a constant).
#[allow(clippy::unnecessary_min_or_max)]
fn last_base0_person_id(n: u64) -> u64 {
    let epoch = n / TOTAL_PROPORTION;
    let offset = (n % TOTAL_PROPORTION).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

/// The last auction id (base 0) created up to and including event `n`.
fn last_base0_auction_id(n: u64) -> u64 {
    let mut epoch = n / TOTAL_PROPORTION;
    let mut offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // Before the first auction of this epoch: the last of the previous one.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// A recent person (one of the last 1000, or up to 10 not yet created).
fn next_base0_person_id(n: u64, rng: &mut Rng) -> u64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

/// A recent auction (one of the last 100 in flight, or up to 10 not yet created).
fn next_base0_auction_id(n: u64, rng: &mut Rng) -> u64 {
    let max = last_base0_auction_id(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// The Nexmark event stream, from event 0.
pub struct Generator {
    config: Config,
    next: u64,
}

impl Generator {
    pub fn new(config: Config) -> Generator {
        Generator { config, next: 0 }
    }

    /// Event time of event `n`.
    pub fn timestamp(&self, n: u64) -> i64 {
        self.config.base_time_ms + (n as u128 * 1000 / self.config.events_per_second.max(1) as u128) as i64
    }

    /// Event `n`.
    pub fn event(&self, n: u64) -> Event {
        let mut rng = Rng::new(self.config.seed, n);
        let ts = self.timestamp(n);
        let offset = n % TOTAL_PROPORTION;
        if offset < PERSON_PROPORTION {
            Event::Person(self.person(n, ts, &mut rng))
        } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
            Event::Auction(self.auction(n, ts, &mut rng))
        } else {
            Event::Bid(self.bid(n, ts, &mut rng))
        }
    }

    fn person(&self, n: u64, ts: i64, rng: &mut Rng) -> Person {
        let id = last_base0_person_id(n) + FIRST_PERSON_ID;
        let name = format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
        let email_address = format!("{}@{}.com", rng.string(7), rng.string(5));
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        let city = rng.pick(US_CITIES).to_string();
        let state = rng.pick(US_STATES).to_string();
        let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len() + 8;
        let extra = rng.extra(size, AVG_PERSON_BYTES);
        Person { id, name, email_address, credit_card, city, state, date_time: ts, extra }
    }

    fn auction(&self, n: u64, ts: i64, rng: &mut Rng) -> Auction {
        let id = last_base0_auction_id(n) + FIRST_AUCTION_ID;
        let seller = if rng.below(HOT_SELLERS) > 0 {
            (last_base0_person_id(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_base0_person_id(n, rng)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let initial_bid = rng.price();
        let item_name = rng.string(20);
        let description = rng.string(100);
        let reserve = initial_bid + rng.price();
        // Beam's nextAuctionLengthMs: up to twice the time until 100 more auctions exist.
        let events_until = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = (self.timestamp(n + events_until) - ts) as u64;
        let expires = ts + 1 + rng.below((horizon * 2).max(1)) as i64;
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = rng.extra(size, AVG_AUCTION_BYTES);
        Auction { id, item_name, description, initial_bid, reserve, date_time: ts, expires, seller, category, extra }
    }

    fn bid(&self, n: u64, ts: i64, rng: &mut Rng) -> Bid {
        let auction = if rng.below(HOT_AUCTIONS) > 0 {
            (last_base0_auction_id(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            next_base0_auction_id(n, rng)
        } + FIRST_AUCTION_ID;
        let bidder = if rng.below(HOT_BIDDERS) > 0 {
            (last_base0_person_id(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            next_base0_person_id(n, rng)
        } + FIRST_PERSON_ID;
        let price = rng.price();
        let (channel, url) = if rng.below(HOT_CHANNELS) > 0 {
            let i = rng.below(HOT_CHANNEL_NAMES.len() as u64) as usize;
            let name = HOT_CHANNEL_NAMES[i];
            (name.to_string(), format!("https://www.nexmark.com/{}/item.htm?query=1", name.to_lowercase()))
        } else {
            let c = rng.below(CHANNELS);
            let url = format!(
                "https://www.nexmark.com/{}/{}/{}/item.htm?query=1&channel_id={c}",
                rng.string(5),
                rng.string(5),
                rng.string(5)
            );
            (format!("channel-{c}"), url)
        };
        let size = 8 + 8 + 8 + channel.len() + url.len() + 8;
        let extra = rng.extra(size, AVG_BID_BYTES);
        Bid { auction, bidder, price, channel, url, date_time: ts, extra }
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let e = self.event(self.next);
        self.next += 1;
        Some(e)
    }
}

/// Events written per topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub persons: u64,
    pub auctions: u64,
    pub bids: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.persons + self.auctions + self.bids
    }
}

/// Creates `person`, `auction` and `bid` with `partitions` partitions each and appends `events`
/// events to them (partition by Kafka's default partitioner on the key), in appends of up to
/// `batch` records per partition. `progress` is told how many events were written so far.
pub fn write(
    topics: &dyn Topics,
    config: Config,
    events: u64,
    partitions: i32,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<Counts> {
    const NAMES: [&str; 3] = ["person", "auction", "bid"];
    for t in NAMES {
        topics.create_topic(t, partitions)?;
    }
    let mut pending: Vec<Vec<Vec<Record>>> = vec![vec![Vec::new(); partitions as usize]; 3];
    let mut counts = Counts::default();
    let flush = |topic: usize, partition: usize, pending: &mut Vec<Vec<Vec<Record>>>| -> Result<()> {
        let records = std::mem::take(&mut pending[topic][partition]);
        if !records.is_empty() {
            topics.append(NAMES[topic], partition as i32, records)?;
        }
        Ok(())
    };
    let generator = Generator::new(config);
    for n in 0..events {
        let event = generator.event(n);
        let topic = match &event {
            Event::Person(_) => {
                counts.persons += 1;
                0
            }
            Event::Auction(_) => {
                counts.auctions += 1;
                1
            }
            Event::Bid(_) => {
                counts.bids += 1;
                2
            }
        };
        let record = event.to_record();
        let partition = match &record.key {
            Some(k) if partitions > 1 => freshet_common::partitioner::partition_for_key(k, partitions) as usize,
            _ => 0,
        };
        pending[topic][partition].push(record);
        if pending[topic][partition].len() >= batch {
            flush(topic, partition, &mut pending)?;
        }
        if (n + 1) % 10_000 == 0 {
            progress(n + 1);
        }
    }
    for topic in 0..3 {
        for partition in 0..partitions as usize {
            flush(topic, partition, &mut pending)?;
        }
    }
    progress(events);
    Ok(counts)
}

/// The sources over the generator's topics.
pub const SOURCES: &str = "
CREATE STREAM person (id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR,
    state VARCHAR, dateTime BIGINT, extra VARCHAR) WITH (kafka_topic='person', value_format='JSON');
CREATE STREAM auction (id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
    dateTime BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra VARCHAR)
    WITH (kafka_topic='auction', value_format='JSON');
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime BIGINT,
    extra VARCHAR) WITH (kafka_topic='bid', value_format='JSON');
";

/// A Nexmark query: its name (also its sink, upper case), the input topics it reads, its text.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    pub inputs: &'static [&'static str],
    pub sql: &'static str,
}

/// The queries, as close to Flink nexmark's as the dialect allows (see BENCHMARKS.md).
pub const QUERIES: &[Query] = &[
    // Pass-through.
    Query { name: "q0", inputs: &["bid"], sql: "CREATE STREAM q0 AS SELECT * FROM bid;" },
    // Currency conversion.
    Query {
        name: "q1",
        inputs: &["bid"],
        sql: "CREATE STREAM q1 AS SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid;",
    },
    // Selection.
    Query {
        name: "q2",
        inputs: &["bid"],
        sql: "CREATE STREAM q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0;",
    },
    // Local item suggestion: auctions of category 10 by sellers in OR, ID or CA. Flink's is a
    // regular (unbounded) join; the dialect's stream-stream join needs a window, and a day holds
    // every person an auction can name. The join key must be in the projection, hence `seller`.
    Query {
        name: "q3",
        inputs: &["auction", "person"],
        sql:
            "CREATE STREAM q3 AS SELECT a.seller AS seller, p.name AS name, p.city AS city, p.state AS state, a.id AS id
              FROM auction a JOIN person p WITHIN 1 DAY ON a.seller = p.id
              WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA');",
    },
    // User sessions: bids per bidder per session (10 s gap).
    Query {
        name: "q11",
        inputs: &["bid"],
        sql: "CREATE TABLE q11 AS SELECT bidder, COUNT(*) AS bid_count, WINDOWSTART AS starttime, WINDOWEND AS endtime
              FROM bid WINDOW SESSION (10 SECONDS) GROUP BY bidder;",
    },
    // Calculation: a filter, a CASE on the hour of day and a scalar function (Flink's count_char
    // UDF as LEN/REPLACE).
    Query {
        name: "q14",
        inputs: &["bid"],
        sql: "CREATE STREAM q14 AS SELECT auction, bidder, 0.908 * price AS price,
                CASE WHEN (dateTime / 3600000) % 24 >= 8 AND (dateTime / 3600000) % 24 <= 18 THEN 'dayTime'
                     WHEN (dateTime / 3600000) % 24 <= 6 OR (dateTime / 3600000) % 24 >= 20 THEN 'nightTime'
                     ELSE 'otherTime' END AS bidTimeType,
                dateTime, extra, LEN(extra) - LEN(REPLACE(extra, 'c', '')) AS c_counts
              FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;",
    },
    // Auction statistics per auction per day.
    Query {
        name: "q17",
        inputs: &["bid"],
        sql: "CREATE TABLE q17 AS SELECT auction, COUNT(*) AS total_bids,
                SUM(CASE WHEN price < 10000 THEN 1 ELSE 0 END) AS rank1_bids,
                SUM(CASE WHEN price >= 10000 AND price < 1000000 THEN 1 ELSE 0 END) AS rank2_bids,
                SUM(CASE WHEN price >= 1000000 THEN 1 ELSE 0 END) AS rank3_bids,
                MIN(price) AS min_price, MAX(price) AS max_price, AVG(price) AS avg_price, SUM(price) AS sum_price
              FROM bid WINDOW TUMBLING (SIZE 1 DAY) GROUP BY auction;",
    },
];

pub fn query(name: &str) -> Option<&'static Query> {
    QUERIES.iter().find(|q| q.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_1_3_46_per_50_events_and_ids_are_dense() {
        let g = Generator::new(Config::default());
        let events: Vec<Event> = (0..5000).map(|n| g.event(n)).collect();
        let persons: Vec<u64> =
            events.iter().filter_map(|e| if let Event::Person(p) = e { Some(p.id) } else { None }).collect();
        let auctions: Vec<u64> =
            events.iter().filter_map(|e| if let Event::Auction(a) = e { Some(a.id) } else { None }).collect();
        assert_eq!(persons.len(), 100);
        assert_eq!(auctions.len(), 300);
        assert_eq!(persons, (FIRST_PERSON_ID..FIRST_PERSON_ID + 100).collect::<Vec<_>>());
        assert_eq!(auctions, (FIRST_AUCTION_ID..FIRST_AUCTION_ID + 300).collect::<Vec<_>>());
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e.timestamp(), Config::default().base_time_ms + n as i64 / 10);
            if let Event::Bid(b) = e {
                // Bids go to auctions created so far or at most 10 ahead.
                let last = last_base0_auction_id(n as u64) + FIRST_AUCTION_ID;
                assert!(b.auction <= last + AUCTION_ID_LEAD, "{b:?}");
                assert!((1..=100_000_000).contains(&b.price));
            }
        }
        // Deterministic.
        assert_eq!(g.event(4321), Generator::new(Config::default()).event(4321));
    }

    #[test]
    fn values_are_padded_to_about_the_average_size() {
        let g = Generator::new(Config::default());
        let size = |kind: &str| {
            let sizes: Vec<usize> =
                (0..5000).map(|n| g.event(n)).filter(|e| e.topic() == kind).map(|e| e.to_json().len()).collect();
            sizes.iter().sum::<usize>() / sizes.len()
        };
        // JSON adds field names to Beam's byte counts.
        assert!((200..400).contains(&size("person")), "{}", size("person"));
        assert!((500..800).contains(&size("auction")), "{}", size("auction"));
        assert!((150..350).contains(&size("bid")), "{}", size("bid"));
    }
}
