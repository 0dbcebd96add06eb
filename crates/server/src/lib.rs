//! Freshet's network layer: accepts Kafka clients, frames requests, hands them to the broker,
//! and writes responses back in request order.
//!
//! Each connection has a reader task and a writer task. The reader decodes frames and calls
//! [`Broker::handle`] (which does the request's synchronous work, so requests of a connection
//! are applied in order); the writer polls the responses concurrently and writes them in order.
//! At most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests per connection are pending: past that the
//! reader stops reading the socket, which is the backpressure on a client.
//!
//! Malformed frames (bad length, unknown API, undecodable request) close the connection; they
//! never reach the log.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use freshet_broker::{Broker, Reply, Responder};
use freshet_common::limits::{MAX_IN_FLIGHT_PER_CONNECTION, SHUTDOWN_GRACE_MS};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_connections: usize,
    pub max_request_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: freshet_common::limits::DEFAULT_MAX_CONNECTIONS,
            max_request_bytes: freshet_common::limits::MAX_REQUEST_BYTES,
        }
    }
}

/// Serves Kafka clients on `listener` until `shutdown` turns true; then stops accepting, lets
/// every connection finish the requests it has read (up to a grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let mut connections = JoinSet::new();
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = config.max_connections, "connection limit reached; closing the new connection");
                    drop(stream);
                    continue;
                };
                let broker = broker.clone();
                let shutdown = for_connections.clone();
                let max = config.max_request_bytes;
                connections.spawn(async move {
                    connection(stream, peer, broker, max, shutdown).await;
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = connections.len(), "connections did not finish within the grace period; closing them");
        connections.shutdown().await;
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    max_request: usize,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Responder>(1);
    let writer = tokio::spawn(write_loop(wr, rx, peer));
    read_loop(rd, peer, &broker, max_request, tx, shutdown).await;
    let _ = writer.await;
    tracing::trace!(%peer, "connection closed");
}

/// Why the reader stopped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("request frame size {0} is not in 1..={1}")]
    BadSize(i32, usize),
}

async fn read_frame(rd: &mut BufReader<OwnedReadHalf>, max: usize) -> Result<Bytes, ReadError> {
    let size = match rd.read_i32().await {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Eof),
        Err(e) => return Err(e.into()),
    };
    if size <= 0 || size as usize > max {
        return Err(ReadError::BadSize(size, max));
    }
    let mut buf = BytesMut::with_capacity(size as usize);
    while buf.len() < size as usize {
        let want = size as usize - buf.len();
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(ReadError::Eof);
        }
    }
    Ok(buf.freeze())
}

async fn read_loop(
    rd: OwnedReadHalf,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    max_request: usize,
    tx: mpsc::Sender<Responder>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let client_host = format!("/{}", peer.ip());
    loop {
        let frame = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            frame = read_frame(&mut rd, max_request) => frame,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(ReadError::Eof) => return,
            // A client that goes away mid-connection (killed, reset) is routine.
            Err(ReadError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection lost");
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                return;
            }
        };
        match broker.handle_from(frame, &client_host) {
            Ok(responder) => {
                if tx.send(responder).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection after a request it cannot answer");
                // Tell the writer to finish what it has and close.
                let _ = tx.send(Box::pin(std::future::ready(Reply::Close))).await;
                return;
            }
        }
    }
}

async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Responder>, peer: SocketAddr) {
    let mut wr = BufWriter::with_capacity(64 * 1024, wr);
    let mut in_flight: FuturesOrdered<Responder> = FuturesOrdered::new();
    let mut reading = true;
    loop {
        let reply = tokio::select! {
            biased;
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => reply,
            next = rx.recv(), if reading && in_flight.len() < MAX_IN_FLIGHT_PER_CONNECTION => {
                match next {
                    Some(r) => in_flight.push_back(r),
                    None => reading = false,
                }
                continue;
            }
            else => break,
        };
        // Write this reply and any others already complete, then flush once.
        let mut next = Some(reply);
        while let Some(reply) = next.take() {
            match reply {
                Reply::Frame(frame) => {
                    if let Err(e) = wr.write_all(&frame).await {
                        tracing::debug!(%peer, error = %e, "write failed");
                        return;
                    }
                }
                Reply::Chunks(chunks) => {
                    // Large chunks bypass the buffer: record batches go from the read buffer
                    // to the socket without another copy.
                    for chunk in chunks {
                        if let Err(e) = wr.write_all(&chunk).await {
                            tracing::debug!(%peer, error = %e, "write failed");
                            return;
                        }
                    }
                }
                Reply::Nothing => {}
                Reply::Close => {
                    let _ = wr.flush().await;
                    return;
                }
            }
            if !in_flight.is_empty() {
                next = in_flight.next().now_or_never().flatten();
            }
        }
        if let Err(e) = wr.flush().await {
            tracing::debug!(%peer, error = %e, "flush failed");
            return;
        }
    }
    let _ = wr.flush().await;
}

/// Encodes a frame's length prefix (for tests and tools that speak the protocol by hand).
pub fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + payload.len());
    b.put_i32(payload.len() as i32);
    b.put_slice(payload);
    b.freeze()
}
