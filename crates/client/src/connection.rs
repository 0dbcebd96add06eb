//! One connection to one broker: requests are pipelined, responses matched in order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::{ClientError, Result};

type Waiter = oneshot::Sender<Result<Bytes>>;

struct Outgoing {
    frame: Bytes,
    correlation_id: i32,
    reply: Option<Waiter>,
}

/// A connection to one broker.
pub struct Connection {
    addr: String,
    client_id: String,
    tx: mpsc::Sender<Outgoing>,
    next_correlation: Mutex<i32>,
    /// Set (under the pending lock) when the read side ends: no response will come any more.
    closed: Arc<AtomicBool>,
    /// The broker's (min, max) version per API key.
    versions: HashMap<i16, (i16, i16)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.addr)
    }
}

impl Connection {
    /// Connects and negotiates API versions.
    pub async fn connect(addr: &str, client_id: &str) -> Result<Connection> {
        let stream =
            TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr: addr.into(), source })?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Outgoing>(256);
        let pending: Arc<Mutex<VecDeque<(i32, Waiter)>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_loop(
            BufWriter::with_capacity(256 * 1024, wr),
            rx,
            pending.clone(),
            closed.clone(),
            addr.to_string(),
        ));
        tokio::spawn(read_loop(BufReader::with_capacity(256 * 1024, rd), pending, closed.clone(), addr.to_string()));
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            tx,
            next_correlation: Mutex::new(1),
            closed,
            versions: HashMap::new(),
        };
        conn.versions = conn.negotiate().await?;
        Ok(conn)
    }

    async fn negotiate(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("freshet"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp: ApiVersionsResponse = self.send_versioned(&req, 3).await?;
        if resp.error_code == kafka_protocol::ResponseError::UnsupportedVersion.code() {
            // KIP-511: the broker answered in v0 with its ranges; retry with what it supports.
            let max = resp.api_keys.iter().find(|k| k.api_key == ApiKey::ApiVersions as i16).map(|k| k.max_version);
            resp = self.send_versioned(&req, max.unwrap_or(0).min(3)).await?;
        }
        if resp.error_code != 0 {
            return Err(ClientError::kafka(resp.error_code, Some("ApiVersions failed")));
        }
        Ok(resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect())
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection is known to be broken (the broker closed it, or a read or write
    /// failed): every request on it fails, so it is time to connect again.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// The version to use for `R`: the highest both sides speak, at most `ours`.
    pub fn version<R: Request>(&self, ours: i16) -> Result<i16> {
        let (min, max) =
            self.versions.get(&R::KEY).copied().ok_or(ClientError::Unsupported { api: api_name::<R>() })?;
        let v = ours.min(max).min(R::VERSIONS.max);
        if v < min || v < R::VERSIONS.min {
            return Err(ClientError::Unsupported { api: api_name::<R>() });
        }
        Ok(v)
    }

    /// Sends a request at the negotiated version (at most `max_version`) and awaits its response.
    pub async fn send<R: Request>(&self, req: &R, max_version: i16) -> Result<R::Response> {
        let version = self.version::<R>(max_version)?;
        self.send_versioned(req, version).await
    }

    /// Sends a request at exactly `version`.
    pub async fn send_versioned<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        let frame = self.encode(req, version)?;
        let correlation_id = frame.1;
        let mut body = self.round_trip(frame.0, correlation_id).await?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Protocol(format!(
                "response correlation id {} for request {correlation_id}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version).map_err(|e| ClientError::Protocol(format!("{}: {e}", api_name::<R>())))
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_without_response<R: Request>(&self, req: &R, max_version: i16) -> Result<()> {
        let version = self.version::<R>(max_version)?;
        let (frame, correlation_id) = self.encode(req, version)?;
        self.tx
            .send(Outgoing { frame, correlation_id, reply: None })
            .await
            .map_err(|_| ClientError::Closed(self.addr.clone()))
    }

    /// Sends a hand-made frame (length prefix included) and returns the raw response body, or
    /// an error if the broker closed the connection instead. For protocol tests.
    pub async fn send_raw(&self, frame: Bytes, correlation_id: i32) -> Result<Bytes> {
        self.round_trip(frame, correlation_id).await
    }

    fn encode<R: Request>(&self, req: &R, version: i16) -> Result<(Bytes, i32)> {
        let correlation_id = {
            let mut c = self.next_correlation.lock().expect("correlation lock");
            *c = c.wrapping_add(1);
            *c
        };
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let header_version = R::header_version(version);
        let size = header.compute_size(header_version).map_err(|e| ClientError::Protocol(e.to_string()))?
            + req.compute_size(version).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(4 + size);
        buf.put_i32(size as i32);
        header.encode(&mut buf, header_version).map_err(|e| ClientError::Protocol(e.to_string()))?;
        req.encode(&mut buf, version).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((buf.freeze(), correlation_id))
    }

    async fn round_trip(&self, frame: Bytes, correlation_id: i32) -> Result<Bytes> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Outgoing { frame, correlation_id, reply: Some(reply) })
            .await
            .map_err(|_| ClientError::Closed(self.addr.clone()))?;
        rx.await.map_err(|_| ClientError::Closed(self.addr.clone()))?
    }
}

fn api_name<R>() -> &'static str {
    let full = std::any::type_name::<R>();
    full.rsplit("::").next().unwrap_or(full)
}

async fn write_loop(
    mut wr: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    mut rx: mpsc::Receiver<Outgoing>,
    pending: Arc<Mutex<VecDeque<(i32, Waiter)>>>,
    closed: Arc<AtomicBool>,
    addr: String,
) {
    while let Some(out) = rx.recv().await {
        if let Some(reply) = out.reply {
            let mut pending = pending.lock().expect("pending lock");
            // The read side is gone: this response would never come.
            if closed.load(Ordering::Acquire) {
                let _ = reply.send(Err(ClientError::Closed(addr.clone())));
                break;
            }
            pending.push_back((out.correlation_id, reply));
        }
        if let Err(e) = wr.write_all(&out.frame).await {
            tracing::debug!(%addr, error = %e, "write failed");
            break;
        }
        if rx.is_empty() && wr.flush().await.is_err() {
            break;
        }
    }
}

async fn read_loop(
    mut rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pending: Arc<Mutex<VecDeque<(i32, Waiter)>>>,
    closed: Arc<AtomicBool>,
    addr: String,
) {
    loop {
        let frame = async {
            let size = rd.read_i32().await?;
            if size < 4 {
                return Err(std::io::Error::other(format!("bad response size {size}")));
            }
            let mut buf = BytesMut::with_capacity(size as usize);
            while buf.len() < size as usize {
                let want = (size as usize - buf.len()) as u64;
                if (&mut rd).take(want).read_buf(&mut buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Ok(buf.freeze())
        }
        .await;
        match frame {
            Ok(frame) => {
                let correlation = (&frame[..4]).get_i32();
                let waiter = pending.lock().expect("pending lock").pop_front();
                match waiter {
                    Some((expected, tx)) if expected == correlation => {
                        let _ = tx.send(Ok(frame));
                    }
                    Some((expected, tx)) => {
                        let _ = tx.send(Err(ClientError::Protocol(format!(
                            "response for correlation id {correlation}, expected {expected}"
                        ))));
                        break;
                    }
                    None => {
                        tracing::warn!(%addr, correlation, "unexpected response");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "connection closed");
                break;
            }
        }
    }
    // Fail everyone still waiting, and whoever comes later (see `write_loop`).
    let mut pending = pending.lock().expect("pending lock");
    closed.store(true, Ordering::Release);
    for (_, tx) in pending.drain(..) {
        let _ = tx.send(Err(ClientError::Closed(addr.clone())));
    }
}
