//! The process runtime: any executable, started with `/bin/sh -c COMMAND` and kept alive across
//! invocations, speaking JSON lines on stdin/stdout (one request line per batch, one reply line).
//! The protocol is documented in `docs/functions-protocols.md`.
//!
//! Each instance owns one child process (in its own process group, so that a timeout kills what
//! it started too) and three threads: a writer (so that a child that stops reading cannot block
//! the worker past its time limit), a stdout reader feeding a channel the worker waits on with
//! `recv_timeout`, and a stderr reader sending the child's stderr to the [`LogSink`].

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use freshet_common::limits::{FN_LOG_LINE_MAX_BYTES, FN_MAX_REPLY_BYTES, FN_PROCESS_EXIT_WAIT_MS};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::event::{Event, Failure, Output, Reply};
use crate::runtime::{InvokeError, LogSink, Runtime, RuntimeFactory};

/// Lines of the child's stdout buffered before the reader thread waits (and the child with it).
const STDOUT_CHANNEL_LINES: usize = 64;

/// Makes [`ProcessRuntime`]s: one child process (`/bin/sh -c COMMAND`) each.
pub struct ProcessFactory {
    command: String,
    env: BTreeMap<String, String>,
    timeout_ms: u64,
    log: LogSink,
}

impl ProcessFactory {
    /// `command` runs with `sh -c`, with the server's environment plus `env`; `timeout_ms` bounds
    /// each invocation; the child's stderr and stray stdout lines go to `log`.
    pub fn new(command: &str, env: &BTreeMap<String, String>, timeout_ms: u64, log: LogSink) -> ProcessFactory {
        ProcessFactory { command: command.to_string(), env: env.clone(), timeout_ms, log }
    }

    /// Starts a child process. [`RuntimeFactory::instantiate`] is this, boxed.
    pub fn spawn(&self) -> Result<ProcessRuntime, InvokeError> {
        // /bin/sh, not a search of PATH: the function's env may set its own PATH.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| InvokeError::Start(format!("cannot run sh -c '{}': {e}", self.command)))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let (write_tx, write_rx) = mpsc::channel::<Vec<u8>>();
        spawn_thread("fn-process-stdin", move || write_lines(stdin, write_rx));

        let (line_tx, lines) = mpsc::sync_channel(STDOUT_CHANNEL_LINES);
        spawn_thread("fn-process-stdout", move || read_stdout(stdout, line_tx));

        let last_stderr = Arc::new(Mutex::new(String::new()));
        let (stderr_done_tx, stderr_done) = mpsc::channel::<()>();
        let (log, last) = (self.log.clone(), last_stderr.clone());
        spawn_thread("fn-process-stderr", move || {
            read_stderr(stderr, &log, &last);
            drop(stderr_done_tx);
        });

        Ok(ProcessRuntime {
            child,
            status: None,
            writer: Some(write_tx),
            lines,
            last_stderr,
            stderr_done,
            next_id: 0,
            healthy: true,
            timeout_ms: self.timeout_ms,
            log: self.log.clone(),
        })
    }
}

impl RuntimeFactory for ProcessFactory {
    fn instantiate(&self) -> Result<Box<dyn Runtime>, InvokeError> {
        Ok(Box::new(self.spawn()?))
    }
}

/// One child process. Dropping it kills the child's process group and reaps the child.
pub struct ProcessRuntime {
    child: Child,
    /// Set once the child is reaped.
    status: Option<ExitStatus>,
    /// To the writer thread; dropping it closes the child's stdin.
    writer: Option<mpsc::Sender<Vec<u8>>>,
    lines: Receiver<StdoutLine>,
    last_stderr: Arc<Mutex<String>>,
    /// Disconnected when the stderr reader has seen the end of the child's stderr.
    stderr_done: Receiver<()>,
    next_id: u64,
    healthy: bool,
    timeout_ms: u64,
    log: LogSink,
}

impl ProcessRuntime {
    /// The child's process id (`sh`, or the command when `sh` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child's process group (once, while the child is not reaped) and reaps the child.
    fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        // SAFETY: kill(2) has no memory effects; the group is the child's own (process_group(0)),
        // and the child is not reaped yet, so its id still names it.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let status = self.child.wait().unwrap_or_else(|_| ExitStatus::from_raw(-1));
        self.status = Some(status);
        self.writer = None;
        status
    }

    /// The instance is done for: its stdout ended or the process is gone. Waits a little for it
    /// to exit on its own (to report its status) and for the stderr reader to catch up (to
    /// report the last stderr line), then kills and reaps it.
    fn exited(&mut self) -> InvokeError {
        self.healthy = false;
        let deadline = Instant::now() + Duration::from_millis(FN_PROCESS_EXIT_WAIT_MS);
        while self.status.is_none() && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        let exited_alone = self.status.is_some();
        let status = self.kill();
        let stderr_wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let _ = self.stderr_done.recv_timeout(stderr_wait);
        let last = self.last_stderr.lock().unwrap().clone();
        let what = match (status.code(), status.signal()) {
            _ if !exited_alone => "process closed its stdout (killed)".to_string(),
            (Some(code), _) => format!("process exited with status {code}"),
            (None, Some(signal)) => format!("process exited with signal {signal}"),
            (None, None) => format!("process exited with {status}"),
        };
        InvokeError::Failed(format!("{what}; last stderr line: {last}"))
    }

    /// Fails the invocation and the instance: the process no longer speaks the protocol.
    fn broken(&mut self, message: String) -> InvokeError {
        self.healthy = false;
        self.kill();
        InvokeError::Failed(message)
    }

    fn log_stdout(&self, line: &str) {
        (self.log)("stdout", truncate(line, FN_LOG_LINE_MAX_BYTES));
    }
}

impl Runtime for ProcessRuntime {
    fn invoke(&mut self, batch: &[Event]) -> Result<Reply, InvokeError> {
        if !self.healthy {
            return Err(InvokeError::Failed("the process is not running".into()));
        }
        // Lines printed since the last reply are the function's own output: log them.
        loop {
            match self.lines.try_recv() {
                Ok(StdoutLine::Line(line)) => self.log_stdout(&line),
                Ok(StdoutLine::TooLong) => {
                    return Err(self.broken(format!("a stdout line is longer than {FN_MAX_REPLY_BYTES} bytes")))
                }
                Err(TryRecvError::Empty) => break,
                Ok(StdoutLine::End) | Err(TryRecvError::Disconnected) => return Err(self.exited()),
            }
        }

        self.next_id += 1;
        let id = self.next_id;
        let mut request = serde_json::to_vec(&WireBatch { id, events: batch.iter().map(WireEvent).collect() })
            .map_err(|e| InvokeError::Failed(format!("cannot encode the batch: {e}")))?;
        request.push(b'\n');
        let sent = self.writer.as_ref().is_some_and(|w| w.send(request).is_ok());
        if !sent {
            return Err(self.exited());
        }

        let deadline = Instant::now() + Duration::from_millis(self.timeout_ms);
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(wait) {
                Ok(StdoutLine::Line(line)) => {
                    let Some(reply) = parse_reply_line(&line, id) else {
                        self.log_stdout(&line);
                        continue;
                    };
                    return match reply.and_then(|r| r.into_reply(batch.len())) {
                        Ok(reply) => reply,
                        Err(problem) => Err(self.broken(format!("invalid reply: {problem}"))),
                    };
                }
                Ok(StdoutLine::TooLong) => {
                    return Err(self.broken(format!("the reply is longer than {FN_MAX_REPLY_BYTES} bytes")))
                }
                Ok(StdoutLine::End) | Err(RecvTimeoutError::Disconnected) => return Err(self.exited()),
                Err(RecvTimeoutError::Timeout) => {
                    self.healthy = false;
                    self.kill();
                    return Err(InvokeError::Timeout(self.timeout_ms));
                }
            }
        }
    }

    fn healthy(&self) -> bool {
        self.healthy
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    // A thread that cannot start leaves its pipe unread or unwritten: the invocation then times
    // out or sees the end of stdout, which fails it and replaces the instance.
    let _ = thread::Builder::new().name(name.to_string()).spawn(f);
}

fn write_lines(mut stdin: ChildStdin, requests: Receiver<Vec<u8>>) {
    for request in requests {
        if stdin.write_all(&request).and_then(|()| stdin.flush()).is_err() {
            // The child closed its stdin or exited: the stdout reader reports it.
            return;
        }
    }
}

enum StdoutLine {
    Line(String),
    /// A line longer than FN_MAX_REPLY_BYTES (the rest of it was skipped).
    TooLong,
    /// The end of stdout, or an error reading it.
    End,
}

fn read_stdout(stdout: impl Read, lines: SyncSender<StdoutLine>) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        let line = match read_line_capped(&mut reader, FN_MAX_REPLY_BYTES, &mut buf) {
            Ok(Some(false)) => StdoutLine::Line(String::from_utf8_lossy(&buf).into_owned()),
            Ok(Some(true)) => {
                // The instance is done for: stop reading (the worker kills the child).
                let _ = lines.send(StdoutLine::TooLong);
                return;
            }
            Ok(None) | Err(_) => {
                let _ = lines.send(StdoutLine::End);
                return;
            }
        };
        if lines.send(line).is_err() {
            return;
        }
    }
}

fn read_stderr(stderr: impl Read, log: &LogSink, last: &Mutex<String>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(Some(cut)) = read_line_capped(&mut reader, FN_LOG_LINE_MAX_BYTES, &mut buf) {
        if cut && skip_line(&mut reader).is_err() {
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        log("stderr", &line);
        *last.lock().unwrap() = line.into_owned();
    }
}

/// Reads one line into `buf` without its "\n" (or "\r\n"). `None` at the end of input;
/// `Some(true)` as soon as the line is longer than `cap` bytes, its first `cap` bytes in `buf`
/// and the rest unread (see [`skip_line`]); else `Some(false)`.
fn read_line_capped(reader: &mut impl BufRead, cap: usize, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    let mut any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any.then_some(false));
        }
        any = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        let room = cap.saturating_sub(buf.len());
        if part.len() > room {
            buf.extend_from_slice(&part[..room]);
            reader.consume(room);
            return Ok(Some(true));
        }
        buf.extend_from_slice(part);
        let used = newline.map_or(chunk.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(false));
        }
    }
}

/// Skips input up to and with the next "\n".
fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    reader.skip_until(b'\n').map(|_| ())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---- The wire format ------------------------------------------------------------------------

#[derive(Serialize)]
struct WireBatch<'a> {
    id: u64,
    events: Vec<WireEvent<'a>>,
}

struct WireEvent<'a>(&'a Event);

impl Serialize for WireEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = s.serialize_map(Some(7))?;
        map.serialize_entry("topic", &*e.topic)?;
        map.serialize_entry("partition", &e.partition)?;
        map.serialize_entry("offset", &e.offset)?;
        map.serialize_entry("timestamp", &e.timestamp)?;
        map.serialize_entry("key", &WireBytes(e.key.as_deref()))?;
        map.serialize_entry("value", &WireBytes(e.value.as_deref()))?;
        let headers: Vec<_> =
            e.headers.iter().map(|(k, v)| WireHeader { key: k, value: WireBytes(v.as_deref()) }).collect();
        map.serialize_entry("headers", &headers)?;
        map.end()
    }
}

#[derive(Serialize)]
struct WireHeader<'a> {
    key: &'a str,
    value: WireBytes<'a>,
}

/// Bytes on the wire: a JSON string when they are UTF-8, `{"base64": "..."}` when not, `null`
/// when absent.
struct WireBytes<'a>(Option<&'a [u8]>);

impl Serialize for WireBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => s.serialize_str(text),
                Err(_) => {
                    let mut map = s.serialize_map(Some(1))?;
                    map.serialize_entry("base64", &BASE64.encode(bytes))?;
                    map.end()
                }
            },
        }
    }
}

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    outputs: Vec<WireOutput>,
    #[serde(default)]
    failed: Vec<WireFailure>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireOutput {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    headers: Vec<WireOutputHeader>,
}

#[derive(Deserialize)]
struct WireOutputHeader {
    key: String,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Deserialize)]
struct WireFailure {
    index: usize,
    #[serde(default)]
    error: Option<Value>,
}

/// `None` when the line is not a JSON object with this `id` (a stray print); else the reply, or
/// what is wrong with it.
fn parse_reply_line(line: &str, id: u64) -> Option<Result<WireReply, String>> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let value: Value = serde_json::from_str(trimmed).ok()?;
    if value.get("id").and_then(Value::as_u64) != Some(id) {
        return None;
    }
    Some(serde_json::from_value(value).map_err(|e| e.to_string()))
}

impl WireReply {
    fn into_reply(self, batch_len: usize) -> Result<Result<Reply, InvokeError>, String> {
        if let Some(error) = self.error {
            return Ok(Err(InvokeError::Failed(message(error))));
        }
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (i, o) in self.outputs.into_iter().enumerate() {
            let headers = o
                .headers
                .into_iter()
                .map(|h| Ok((h.key, value_bytes(h.value)?)))
                .collect::<Result<_, String>>()
                .map_err(|e| format!("output {i}: header: {e}"))?;
            outputs.push(Output {
                topic: o.topic,
                key: value_bytes(o.key).map_err(|e| format!("output {i}: key: {e}"))?.map(Bytes::from),
                value: value_bytes(o.value).map_err(|e| format!("output {i}: value: {e}"))?.map(Bytes::from),
                headers,
            });
        }
        let mut failed = Vec::with_capacity(self.failed.len());
        for f in self.failed {
            if f.index >= batch_len {
                return Err(format!("failed index {} is out of the batch of {batch_len} events", f.index));
            }
            let error = f.error.map(message).unwrap_or_else(|| "failed".to_string());
            failed.push(Failure { index: f.index, error });
        }
        Ok(Ok(Reply { outputs, failed }))
    }
}

/// An error message: a JSON string as is, anything else as JSON text.
fn message(error: Value) -> String {
    match error {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The bytes of an output's key, value or header value: a string is its UTF-8 bytes, `null` is
/// none, `{"base64": "..."}` is the decoded bytes, any other JSON value is its JSON text.
fn value_bytes(value: Option<Value>) -> Result<Option<Vec<u8>>, String> {
    Ok(match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.into_bytes()),
        Some(Value::Object(map)) if map.len() == 1 && map.get("base64").is_some_and(Value::is_string) => {
            let encoded = map["base64"].as_str().unwrap_or_default();
            Some(BASE64.decode(encoded).map_err(|e| format!("invalid base64: {e}"))?)
        }
        Some(other) => Some(other.to_string().into_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_capped_and_split() {
        let mut r = BufReader::with_capacity(4, &b"abcdefgh\nxy\r\n\nlast"[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut r, 5, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"abcde");
        skip_line(&mut r).unwrap();
        assert_eq!(read_line_capped(&mut r, 5, &mut buf).unwrap(), Some(false));
        assert_eq!(buf, b"xy");
        assert_eq!(read_line_capped(&mut r, 5, &mut buf).unwrap(), Some(false));
        assert_eq!(buf, b"");
        assert_eq!(read_line_capped(&mut r, 5, &mut buf).unwrap(), Some(false));
        assert_eq!(buf, b"last");
        assert_eq!(read_line_capped(&mut r, 5, &mut buf).unwrap(), None);
    }

    #[test]
    fn bytes_encode_as_text_base64_or_null() {
        let event = Event {
            topic: "t".into(),
            key: Some(vec![0xff, 0x00].into()),
            value: Some(b"v\n".to_vec().into()),
            headers: vec![("h".into(), None)],
            ..Event::default()
        };
        let json = serde_json::to_string(&WireEvent(&event)).unwrap();
        assert_eq!(
            json,
            r#"{"topic":"t","partition":0,"offset":0,"timestamp":0,"key":{"base64":"/wA="},"value":"v\n","headers":[{"key":"h","value":null}]}"#
        );
        assert_eq!(value_bytes(Some(serde_json::json!({"base64": "/wA="}))).unwrap(), Some(vec![0xff, 0]));
        assert_eq!(value_bytes(Some(serde_json::json!({"a": 1}))).unwrap(), Some(br#"{"a":1}"#.to_vec()));
        assert_eq!(value_bytes(Some(serde_json::json!(7))).unwrap(), Some(b"7".to_vec()));
        assert_eq!(value_bytes(Some(Value::Null)).unwrap(), None);
    }

    #[test]
    fn only_objects_with_the_current_id_are_replies() {
        assert!(parse_reply_line("hello", 1).is_none());
        assert!(parse_reply_line(r#"{"id": 2, "outputs": []}"#, 1).is_none());
        assert!(parse_reply_line(r#"{"id": 1, "outputs": []}"#, 1).unwrap().is_ok());
        assert!(parse_reply_line(r#"{"id": 1, "outputs": 3}"#, 1).unwrap().is_err());
    }
}
