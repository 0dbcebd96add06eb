//! The SQL engine inside `freshet serve`: [`broker_topics`] (the engine's `Topics` over the
//! embedded broker), [`ksql`] (statements, ksqlDB's JSON shapes, the command topic), [`runner`]
//! (the engine's thread) and [`http`] (the ksqlDB-compatible REST listener).

pub mod broker_topics;
pub mod http;
pub mod ksql;
pub mod runner;
