//! The shell's HTTP client for ksqlDB's REST API: `/info` and `/ksql` with ureq, and `/query`,
//! whose answer is a JSON array streamed one element per line, over a plain socket that Ctrl-C
//! can shut down while a push query waits for rows.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};

/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a `/ksql` answer: the server's own limit for the engine
/// (`HTTP_ENGINE_TIMEOUT_MS`) and some.
const KSQL_TIMEOUT: Duration = Duration::from_millis(freshet_common::limits::HTTP_ENGINE_TIMEOUT_MS + 15_000);
/// Longest wait for the head of a `/query` answer (rows may take as long as they take).
const QUERY_HEAD_TIMEOUT: Duration = Duration::from_secs(75);
/// Longest `/query` error body read.
const MAX_ERROR_BODY: u64 = 1 << 20;

/// A `/ksql` answer.
#[derive(Debug)]
pub enum KsqlReply {
    /// The entities, one per statement that has one.
    Entities(Vec<Json>),
    /// The server refused the statement: its message.
    Error(String),
}

pub struct Client {
    /// host:port
    addr: String,
    agent: ureq::Agent,
}

/// The server's message in an error body (`statement_error`, `generic_error`), else the body.
fn error_message(status: u16, body: &str) -> String {
    match serde_json::from_str::<Json>(body) {
        Ok(j) if j["message"].is_string() => j["message"].as_str().unwrap_or_default().to_string(),
        Ok(j) if j["errorMessage"]["message"].is_string() => {
            j["errorMessage"]["message"].as_str().unwrap_or_default().into()
        }
        _ if body.trim().is_empty() => format!("HTTP {status}"),
        _ => format!("HTTP {status}: {}", body.trim()),
    }
}

/// `ADDR:PORT` from what the user gave (`http://` and a trailing `/` allowed).
pub fn normalize_addr(addr: &str) -> Result<String> {
    let a = addr.trim().trim_end_matches('/');
    if a.starts_with("https://") {
        bail!("{a}: HTTPS is not supported; give the server's plain HTTP address (ADDR:PORT)");
    }
    let a = a.strip_prefix("http://").unwrap_or(a);
    if a.is_empty() || a.contains('/') || !a.contains(':') {
        bail!("{addr}: expected the server's HTTP address as ADDR:PORT (e.g. 127.0.0.1:8088)");
    }
    Ok(a.to_string())
}

impl Client {
    pub fn new(addr: &str) -> Result<Client> {
        let addr = normalize_addr(addr)?;
        let agent = ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).timeout(KSQL_TIMEOUT).build();
        Ok(Client { addr, agent })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "could not reach the Freshet SQL server at http://{}: {e} (is `freshet serve` running there? \
             --http ADDR:PORT or FRESHET_HTTP names another)",
            self.addr
        )
    }

    /// `GET /info`: the server's `KsqlServerInfo`.
    pub fn info(&self) -> Result<Json> {
        let r = match self.agent.get(&format!("http://{}/info", self.addr)).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                bail!("http://{}/info answered {}", self.addr, error_message(code, &body))
            }
            Err(e) => return Err(self.unreachable(e)),
        };
        let body = r.into_string().map_err(|e| self.unreachable(e))?;
        let info: Json = serde_json::from_str(&body)
            .with_context(|| format!("http://{}/info did not answer JSON; is this a Freshet SQL server?", self.addr))?;
        Ok(info["KsqlServerInfo"].clone())
    }

    /// `POST /ksql` with one statement. Err: the server could not be reached or answered nonsense.
    pub fn ksql(
        &self,
        statement: &str,
        props: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
    ) -> Result<KsqlReply> {
        let body = json!({ "ksql": statement, "streamsProperties": props, "sessionVariables": vars }).to_string();
        let response = self
            .agent
            .post(&format!("http://{}/ksql", self.addr))
            .set("Content-Type", "application/vnd.ksql.v1+json; charset=utf-8")
            .set("Accept", "application/vnd.ksql.v1+json")
            .send_string(&body);
        match response {
            Ok(r) => {
                let text = r.into_string().map_err(|e| self.unreachable(e))?;
                match serde_json::from_str::<Json>(&text) {
                    Ok(Json::Array(entities)) => Ok(KsqlReply::Entities(entities)),
                    Ok(other) => Ok(KsqlReply::Entities(vec![other])),
                    Err(e) => bail!("the server's answer is not JSON ({e}): {text}"),
                }
            }
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                Ok(KsqlReply::Error(error_message(code, &text)))
            }
            Err(e) => Err(self.unreachable(e)),
        }
    }

    /// `POST /query`: the head of the answer is read; the rows are read from the stream. Err(Ok)
    /// for a refused statement (the server's message), Err(Err) when the server cannot be used.
    pub fn query(
        &self,
        statement: &str,
        props: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
    ) -> std::result::Result<QueryStream, Result<String>> {
        let body = json!({ "ksql": statement, "streamsProperties": props, "sessionVariables": vars }).to_string();
        let addrs: Vec<_> = self.addr.to_socket_addrs().map_err(|e| Err(self.unreachable(e)))?.collect();
        let mut last = None;
        let mut socket = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(mut socket) = socket else {
            return Err(Err(self.unreachable(last.map_or("no address".to_string(), |e| e.to_string()))));
        };
        let io = |e: std::io::Error| Err(self.unreachable(e));
        socket.set_read_timeout(Some(QUERY_HEAD_TIMEOUT)).map_err(io)?;
        let head = format!(
            "POST /query HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.ksql.v1+json; charset=utf-8\r\n\
             Accept: application/vnd.ksql.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        socket.write_all(head.as_bytes()).and_then(|_| socket.write_all(body.as_bytes())).map_err(io)?;
        let control = socket.try_clone().map_err(io)?;
        let mut reader = BufReader::new(socket);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).map_err(io)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Err(anyhow!("http://{}/query answered something that is not HTTP", self.addr)))?;
        let (mut chunked, mut length) = (false, None);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                } else if name == "content-length" {
                    length = value.parse::<u64>().ok();
                }
            }
        }
        // Rows of a push query come when they come: no read timeout from here on.
        let _ = control.set_read_timeout(None);
        let body: Box<dyn Read + Send> = if chunked {
            Box::new(Chunked { inner: reader, left: 0, done: false })
        } else if let Some(n) = length {
            Box::new(reader.take(n))
        } else {
            Box::new(reader)
        };
        if status == 404 {
            return Err(Ok(format!(
                "the server at http://{} has no /query endpoint, so it cannot run SELECT or PRINT yet",
                self.addr
            )));
        }
        if !(200..300).contains(&status) {
            let mut text = String::new();
            let _ = body.take(MAX_ERROR_BODY).read_to_string(&mut text);
            return Err(Ok(error_message(status, &text)));
        }
        Ok(QueryStream { lines: BufReader::new(body), control, parser: StreamParser::default() })
    }
}

/// A chunked HTTP body.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "the answer ended inside a chunk header"));
            }
            let size = line.trim().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| Error::new(ErrorKind::InvalidData, format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    if self.inner.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "the answer ended inside a chunk"));
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(n)
    }
}

/// One element of a `/query` answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Header {
        query_id: String,
        columns: Vec<String>,
    },
    Row(Vec<Json>),
    Final(String),
    Error(String),
    /// Anything else: a JSON element the shell does not know, or a line that is not JSON (PRINT).
    Other(String),
}

fn event(element: Json) -> Event {
    if let Some(h) = element.get("header") {
        let schema = h["schema"].as_str().unwrap_or("");
        return Event::Header {
            query_id: h["queryId"].as_str().unwrap_or("").to_string(),
            columns: super::render::schema_columns(schema),
        };
    }
    if let Some(r) = element.get("row") {
        return Event::Row(r["columns"].as_array().cloned().unwrap_or_default());
    }
    if let Some(m) = element.get("finalMessage") {
        return Event::Final(m.as_str().map_or_else(|| m.to_string(), str::to_string));
    }
    if let Some(e) = element.get("errorMessage") {
        let m = e["message"].as_str().map_or_else(|| e.to_string(), str::to_string);
        return Event::Error(m);
    }
    if element["@type"].as_str().is_some_and(|t| t.ends_with("error")) {
        return Event::Error(element["message"].as_str().unwrap_or_default().to_string());
    }
    Event::Other(element.to_string())
}

/// Turns the lines of a streamed JSON array (`[` + one element per line, each but the last
/// followed by `,`, then `]`) into events, line by line.
#[derive(Debug, Default)]
pub struct StreamParser {
    /// An element whose text has not ended yet (one spread over several lines).
    pending: String,
}

impl StreamParser {
    pub fn line(&mut self, line: &str) -> Vec<Event> {
        let mut s = line.trim();
        if self.pending.is_empty() {
            // A whole array on one line (a short answer sent at once).
            if s.starts_with('[') && s.ends_with(']') {
                if let Ok(Json::Array(items)) = serde_json::from_str::<Json>(s) {
                    return items.into_iter().map(event).collect();
                }
            }
            s = s.strip_prefix('[').unwrap_or(s).trim_start();
        }
        let mut text = std::mem::take(&mut self.pending);
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(s);
        let mut candidate = text.trim_end();
        for _ in 0..3 {
            if candidate.is_empty() {
                return vec![];
            }
            match serde_json::from_str::<Json>(candidate) {
                Ok(v) => return vec![event(v)],
                Err(e) if e.is_eof() => {
                    self.pending = text;
                    return vec![];
                }
                Err(_) => match candidate.strip_suffix(',').or_else(|| candidate.strip_suffix(']')) {
                    Some(shorter) => candidate = shorter.trim_end(),
                    None => break,
                },
            }
        }
        vec![Event::Other(line.trim_end_matches(['\r', '\n']).to_string())]
    }

    /// At the end of the stream: what was left unfinished.
    pub fn finish(&mut self) -> Option<Event> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.trim().is_empty()).then_some(Event::Other(rest))
    }
}

/// An open `/query` answer.
pub struct QueryStream {
    lines: BufReader<Box<dyn Read + Send>>,
    control: TcpStream,
    parser: StreamParser,
}

impl QueryStream {
    /// A handle that stops the stream from another thread: [`Stopper::stop`].
    pub fn stopper(&self) -> Result<Stopper> {
        Ok(Stopper(self.control.try_clone()?))
    }

    /// Reads events until the answer ends, handing each to `f`; Err when the connection fails.
    pub fn for_each(mut self, mut f: impl FnMut(Event) -> bool) -> Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = self.lines.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            for e in self.parser.line(&String::from_utf8_lossy(&line)) {
                if !f(e) {
                    return Ok(());
                }
            }
        }
        if let Some(e) = self.parser.finish() {
            f(e);
        }
        Ok(())
    }
}

/// Closes a `/query` connection, which ends the server's push query.
pub struct Stopper(TcpStream);

impl Stopper {
    pub fn stop(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(text: &str) -> Vec<Event> {
        let mut p = StreamParser::default();
        let mut out: Vec<Event> = text.lines().flat_map(|l| p.line(l)).collect();
        out.extend(p.finish());
        out
    }

    #[test]
    fn a_streamed_array_parses_line_by_line() {
        let stream = "[{\"header\":{\"queryId\":\"q1\",\"schema\":\"`ID` STRING KEY, `COUNT` BIGINT\"}},\n\
                      {\"row\":{\"columns\":[\"a\",1]}},\n\
                      {\"row\":{\"columns\":[\"b]\",2]}},\n\
                      \n\
                      {\"finalMessage\":\"Limit Reached\"}]\n";
        assert_eq!(
            parse(stream),
            [
                Event::Header { query_id: "q1".into(), columns: vec!["ID".into(), "COUNT".into()] },
                Event::Row(vec![json!("a"), json!(1)]),
                Event::Row(vec![json!("b]"), json!(2)]),
                Event::Final("Limit Reached".into()),
            ]
        );
    }

    #[test]
    fn errors_whole_arrays_split_elements_and_other_lines() {
        assert_eq!(
            parse("[{\"header\":{\"queryId\":\"q\",\"schema\":\"`X` INTEGER\"}},\n{\"errorMessage\":{\"message\":\"boom\"}}\n]"),
            [Event::Header { query_id: "q".into(), columns: vec!["X".into()] }, Event::Error("boom".into())]
        );
        assert_eq!(
            parse("[{\"row\":{\"columns\":[1]}},{\"finalMessage\":\"Query Completed\"}]"),
            [Event::Row(vec![json!(1)]), Event::Final("Query Completed".into())]
        );
        assert_eq!(parse("[{\"row\":\n{\"columns\":[1]}},\n]"), [Event::Row(vec![json!(1)])]);
        assert_eq!(parse("rowtime: 1, key: k, value: v\n"), [Event::Other("rowtime: 1, key: k, value: v".into())]);
    }

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut out = String::new();
        Chunked { inner: &raw[..], left: 0, done: false }.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello, world");
        let mut out = String::new();
        assert!(Chunked { inner: &b"5\r\nhel"[..], left: 0, done: false }.read_to_string(&mut out).is_err());
    }

    #[test]
    fn addresses_and_error_messages() {
        assert_eq!(normalize_addr("http://127.0.0.1:8088/").unwrap(), "127.0.0.1:8088");
        assert_eq!(normalize_addr("localhost:1").unwrap(), "localhost:1");
        assert!(normalize_addr("https://x:1").is_err());
        assert!(normalize_addr("nohost").is_err());
        assert_eq!(error_message(400, r#"{"@type":"statement_error","message":"bad"}"#), "bad");
        assert_eq!(error_message(502, ""), "HTTP 502");
        assert_eq!(error_message(500, "oops"), "HTTP 500: oops");
    }
}
