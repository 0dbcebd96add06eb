//! The SQL engine inside `freshet serve`: [`broker_topics`] (the engine's `Topics` over the
//! embedded broker), [`ksql`] (statements, ksqlDB's JSON shapes, the command topic), [`query`] (pull and push queries), [`runner`]
//! (the engine's thread) and [`http`] (the ksqlDB-compatible REST listener).

pub mod broker_topics;
pub mod http;
pub mod ksql;
pub mod query;
pub mod runner;
