//! A guest's stdout and stderr (WASI `fd_write` on fds 1 and 2), split in lines into the
//! [`LogSink`]. A line longer than `FN_LOG_LINE_MAX_BYTES` is cut in pieces; a partial last line
//! is written when the invocation ends ([`LogStream::flush_partial`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use freshet_common::limits::FN_LOG_LINE_MAX_BYTES;
use freshet_functions::LogSink;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// One of a guest's output streams. Clones share the pending partial line.
#[derive(Clone)]
pub struct LogStream {
    stream: &'static str,
    sink: LogSink,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    pub fn new(stream: &'static str, sink: LogSink) -> LogStream {
        LogStream { stream, sink, pending: Arc::default() }
    }

    fn write_bytes(&self, mut bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while !bytes.is_empty() {
            let room = FN_LOG_LINE_MAX_BYTES - pending.len();
            match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => {
                    pending.extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    self.emit(&mut pending);
                }
                None if bytes.len() >= room => {
                    pending.extend_from_slice(&bytes[..room]);
                    bytes = &bytes[room..];
                    self.emit(&mut pending);
                }
                None => {
                    pending.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
    }

    fn emit(&self, line: &mut Vec<u8>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (self.sink)(self.stream, &String::from_utf8_lossy(line));
        line.clear();
    }

    /// Writes the partial line written so far, if any (at the end of an invocation).
    pub fn flush_partial(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            self.emit(&mut pending);
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1024 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_cuts_long_ones() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let sink: LogSink = Arc::new(move |s: &str, line: &str| l.lock().unwrap().push(format!("{s}:{line}")));
        let out = LogStream::new("stdout", sink);
        out.write_bytes(b"a\r\nb");
        out.write_bytes(b"c\n\nd");
        out.flush_partial();
        out.flush_partial();
        out.write_bytes(&vec![b'x'; FN_LOG_LINE_MAX_BYTES + 1]);
        out.flush_partial();
        let got = lines.lock().unwrap().clone();
        assert_eq!(got[..4], ["stdout:a", "stdout:bc", "stdout:", "stdout:d"]);
        assert_eq!(got[4].len(), "stdout:".len() + FN_LOG_LINE_MAX_BYTES);
        assert_eq!(got[5], "stdout:x");
        assert_eq!(got.len(), 6);
    }
}
