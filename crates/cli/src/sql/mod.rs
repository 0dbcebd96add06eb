//! The SQL engine inside `freshet serve`: [`broker_topics`] (the engine's `Topics` over the
//! embedded broker), [`kafka_topics`] (the same over an external Kafka-protocol cluster), [`ksql`]
//! (statements, ksqlDB's JSON shapes, the command topic), [`placement`] (which queries this
//! server runs), [`query`] (pull and push queries),
//! [`print`] (PRINT over `/query`),
//! [`runner`] (the engine's thread) and [`http`] (the ksqlDB-compatible REST listener).

pub mod broker_topics;
pub mod http;
pub mod kafka_topics;
pub mod ksql;
pub mod placement;
pub mod print;
pub mod query;
pub mod runner;

use freshet_common::config::TopicConfig;
use freshet_common::topics::GroupOffsets;
use freshet_sql::topics::Topics;

/// What the SQL server needs of its topics beyond the engine's [`Topics`]. Implemented by
/// [`broker_topics::BrokerTopics`] (embedded broker) and [`kafka_topics::KafkaTopics`] (external
/// cluster); the server reaches topics through nothing else. Its consumer groups
/// ([`GroupOffsets`]) split the persistent queries over the SQL servers of a cluster
/// ([`placement`]).
pub trait SqlTopics: Topics + GroupOffsets {
    /// Creates a topic with config overrides (the command and progress topics use this). A
    /// topic that exists already is not an error.
    fn create_topic_with(&self, name: &str, partitions: i32, config: TopicConfig)
        -> freshet_common::topics::Result<()>;

    /// The cluster's topics for SHOW TOPICS, (name, partitions), without the cluster's own
    /// internal ones (`__consumer_offsets`, ...).
    fn visible_topics(&self) -> Vec<(String, i32)>;

    /// Settles what a crash left of `owner`'s last atomic write
    /// ([`Topics::append_atomic`]): a write already decided is completed, an undecided one
    /// aborted, so that what is read next is final. Nothing to do where writes are not atomic.
    fn settle_atomic(&self, _owner: &str) -> freshet_common::topics::Result<()> {
        Ok(())
    }
}
