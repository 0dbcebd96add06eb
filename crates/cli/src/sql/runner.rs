//! The SQL engine's thread. The engine is synchronous: it runs on a thread of its own, applies
//! the statements the HTTP handlers send it (answering through a oneshot) and otherwise runs the
//! persistent queries, sleeping `SQL_ENGINE_IDLE_MS` when none had new input.
//!
//! Architecture invariant: the engine thread cannot take the broker down. Statement execution
//! and query steps run under `catch_unwind` (a panic answers 500, or terminates the query that
//! panicked); if the thread dies anyway, the HTTP handlers answer 503 and the broker serves on.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use freshet_common::limits::SQL_ENGINE_IDLE_MS;
use tokio::sync::oneshot;

use super::ksql::{KsqlRequest, Reply, SqlServer};
use super::query::Answer;
use super::SqlTopics;

/// What the HTTP handlers ask of the engine thread.
pub enum Request {
    Ksql(KsqlRequest, oneshot::Sender<Reply>),
    /// A SELECT from `/query` or `/query-stream`.
    Query(KsqlRequest, oneshot::Sender<Answer>),
    /// Runs a function on the engine's thread (the `sql-test` REST runner uses it to write
    /// inputs with the sources' formats and to check outputs).
    Inspect(Box<dyn FnOnce(&mut SqlServer) + Send>),
    /// Health check: answered when the thread is alive and not stuck.
    Ping(oneshot::Sender<()>),
    Stop,
}

/// The running engine thread.
pub struct EngineThread {
    pub tx: mpsc::Sender<Request>,
    join: std::thread::JoinHandle<()>,
}

impl EngineThread {
    /// Starts the thread: opens the engine and replays the command topic, then returns (so the
    /// caller serves only once every persisted statement is back). Blocking.
    /// `state_dir`: where persistent queries keep their state files (`None`: in memory).
    pub fn start(topics: Arc<dyn SqlTopics>, state_dir: Option<std::path::PathBuf>) -> anyhow::Result<EngineThread> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let join = std::thread::Builder::new().name("freshet-sql".into()).spawn(move || {
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SqlServer::open(topics, state_dir)));
            let mut server = match opened {
                Ok(Ok(s)) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Ok(Err(e)) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
                Err(_) => {
                    let _ = ready_tx.send(Err("the SQL engine panicked while replaying its commands".into()));
                    return;
                }
            };
            run(&mut server, rx);
        })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(EngineThread { tx, join }),
            Ok(Err(e)) => anyhow::bail!("starting the SQL engine: {e}"),
            Err(_) => anyhow::bail!("starting the SQL engine: its thread stopped"),
        }
    }

    /// Stops the thread and waits for it. Blocking.
    pub fn stop(self) {
        let _ = self.tx.send(Request::Stop);
        if self.join.join().is_err() {
            tracing::error!("the SQL engine thread panicked");
        }
    }
}

fn run(server: &mut SqlServer, rx: mpsc::Receiver<Request>) {
    let idle = Duration::from_millis(SQL_ENGINE_IDLE_MS);
    loop {
        // Statements first: a request never waits behind more than one round of queries.
        let request = match rx.try_recv() {
            Ok(r) => Some(r),
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {
                if server.step() + server.step_push() > 0 {
                    continue;
                }
                match rx.recv_timeout(idle) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        match request {
            None => {}
            Some(Request::Stop) => {
                server.close();
                return;
            }
            Some(Request::Inspect(f)) => {
                let inspected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(server)));
                if inspected.is_err() {
                    tracing::error!("an inspection of the SQL engine panicked");
                }
            }
            Some(Request::Ping(reply)) => {
                let _ = reply.send(());
            }
            Some(Request::Ksql(req, reply)) => {
                let answer = server.handle(req);
                let _ = reply.send(answer);
            }
            Some(Request::Query(req, reply)) => {
                // Catch up first, so a pull query sees what the persistent queries have read.
                server.step();
                let answer = server.query(req);
                let _ = reply.send(answer);
            }
        }
    }
}
