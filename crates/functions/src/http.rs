//! The HTTP runtime: a user's endpoint that receives each event as a CloudEvent 1.0 (one POST
//! per event, Knative-style), in binary or structured mode, and may answer with a CloudEvent
//! (the event's output). The mapping is documented in `docs/functions-protocols.md`.
//!
//! The instances of one factory share one `ureq::Agent`, so its connections are kept alive and
//! reused across events, invocations and workers. `https://` endpoints are verified against
//! Mozilla's roots, the system's trust store and the function's own CA certificates (rustls).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat};
use freshet_common::limits::{FN_HTTP_ERROR_SNIPPET_BYTES, FN_HTTP_IDLE_CONNECTIONS_PER_HOST, FN_MAX_REPLY_BYTES};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};

use crate::event::{Event, Failure, Output, Reply};
use crate::runtime::{InvokeError, Runtime, RuntimeFactory};
use crate::spec::CloudEventsMode;

/// The CloudEvents `type` of every event sent.
pub const EVENT_TYPE: &str = "dev.freshet.record";

const STRUCTURED: &str = "application/cloudevents+json";
const STRUCTURED_BATCH: &str = "application/cloudevents-batch+json";

/// Adds the certificates of a PEM text (a function's `tls_ca`) to `roots`: at least one, each a
/// well-formed X.509 certificate a root store accepts. [`FunctionSpec::validate`] checks a
/// spec's CA by adding it to an empty store.
///
/// [`FunctionSpec::validate`]: crate::spec::FunctionSpec::validate
pub fn add_ca_pem(roots: &mut rustls::RootCertStore, pem: &str) -> Result<(), String> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("invalid TLS CA certificate (PEM): {e}"))?;
        roots.add(cert).map_err(|e| format!("invalid TLS CA certificate: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("the TLS CA has no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

/// The roots every HTTPS function trusts: Mozilla's (webpki-roots) and the system's trust
/// store, read once per process. System certificates that do not parse are skipped.
fn default_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!("system trust store: {e}");
        }
        roots.add_parsable_certificates(native.certs);
        roots
    })
}

/// The client TLS settings of one function: the default roots plus its own CA certificates.
/// The crypto provider is named (ring) rather than the process default, so no other crate's
/// choice of provider can make this fail. rustls 0.23.48 deprecates ring's provider for its lack
/// of post-quantum key exchange; aws-lc-rs has it but is a large C build this project does not
/// otherwise need, and ring is what ureq's TLS already links.
#[allow(deprecated)]
fn tls_config(tls_ca: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = default_roots().clone();
    if let Some(pem) = tls_ca {
        add_ca_pem(&mut roots, pem)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Makes [`HttpRuntime`]s, which share one HTTP agent (and its pool of connections).
pub struct HttpFactory {
    inner: Arc<Inner>,
}

struct Inner {
    agent: ureq::Agent,
    url: String,
    mode: CloudEventsMode,
    timeout_ms: u64,
    function_name: String,
    /// For the ids of events without a topic position: this factory's start (ns since the
    /// epoch, so ids differ across restarts) and a counter.
    id_epoch: u128,
    id_counter: AtomicU64,
}

impl HttpFactory {
    /// `timeout_ms` bounds each invocation (the POSTs of its batch, one after the other);
    /// `function_name` is the `source` of events that have no topic (HTTP and timer triggers);
    /// `tls_ca` is PEM certificates trusted besides the default roots (see [`add_ca_pem`]).
    pub fn new(
        url: &str,
        mode: CloudEventsMode,
        timeout_ms: u64,
        function_name: &str,
        tls_ca: Option<&str>,
    ) -> Result<HttpFactory, String> {
        let mut agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(timeout_ms))
            .max_idle_connections_per_host(FN_HTTP_IDLE_CONNECTIONS_PER_HOST)
            .redirects(0);
        if url.starts_with("https://") {
            agent = agent.tls_config(tls_config(tls_ca)?);
        }
        let agent = agent.build();
        let id_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(HttpFactory {
            inner: Arc::new(Inner {
                agent,
                url: url.to_string(),
                mode,
                timeout_ms,
                function_name: function_name.to_string(),
                id_epoch,
                id_counter: AtomicU64::new(0),
            }),
        })
    }

    /// A new instance. [`RuntimeFactory::instantiate`] is this, boxed.
    pub fn runtime(&self) -> HttpRuntime {
        HttpRuntime { inner: self.inner.clone() }
    }
}

impl RuntimeFactory for HttpFactory {
    fn instantiate(&self) -> Result<Box<dyn Runtime>, InvokeError> {
        Ok(Box::new(self.runtime()))
    }
}

/// One worker's client of the endpoint. It is always healthy: connections that break are
/// replaced by the agent.
pub struct HttpRuntime {
    inner: Arc<Inner>,
}

/// Why one event failed.
struct EventError {
    message: String,
    /// No HTTP answer: the connection failed, or the time limit ran out.
    transport: bool,
    timed_out: bool,
}

impl EventError {
    fn http(message: String) -> EventError {
        EventError { message, transport: false, timed_out: false }
    }
}

impl Runtime for HttpRuntime {
    /// Posts the events one after the other. An event fails alone (in [`Reply::failed`]) on a
    /// non-2xx answer, a broken connection or the time limit; when no event of the batch got an
    /// HTTP answer at all (the endpoint is down or hangs), the whole batch fails instead:
    /// `Timeout` when the time limit ran out, else `Failed` with the first connection error.
    fn invoke(&mut self, batch: &[Event]) -> Result<Reply, InvokeError> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.timeout_ms);
        let mut reply = Reply::default();
        let mut errors = Vec::new();
        for (index, event) in batch.iter().enumerate() {
            match self.post(event, deadline) {
                Ok(outputs) => reply.outputs.extend(outputs),
                Err(e) => errors.push((index, e)),
            }
        }
        if !batch.is_empty() && errors.len() == batch.len() && errors.iter().all(|(_, e)| e.transport) {
            if errors.iter().any(|(_, e)| e.timed_out) {
                return Err(InvokeError::Timeout(self.inner.timeout_ms));
            }
            return Err(InvokeError::Failed(errors.swap_remove(0).1.message));
        }
        reply.failed = errors.into_iter().map(|(index, e)| Failure { index, error: e.message }).collect();
        Ok(reply)
    }
}

impl HttpRuntime {
    fn post(&self, event: &Event, deadline: Instant) -> Result<Vec<Output>, EventError> {
        let inner = &self.inner;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let message = format!("not sent: the invocation's time limit of {} ms ran out", inner.timeout_ms);
            return Err(EventError { message, transport: true, timed_out: true });
        }
        let attributes = inner.attributes(event);
        let request = inner.agent.post(&inner.url).timeout(remaining);
        let (request, body) = match inner.mode {
            CloudEventsMode::Binary => {
                let mut request = request;
                for (name, value) in &attributes {
                    if header_safe(value) {
                        request = request.set(&format!("ce-{name}"), value);
                    }
                }
                let body = event.value.as_deref().unwrap_or_default().to_vec();
                if let Some(content_type) = binary_content_type(event) {
                    request = request.set("content-type", &content_type);
                }
                (request, body)
            }
            CloudEventsMode::Structured => {
                let body = structured_event(event, &attributes).to_string().into_bytes();
                (request.set("content-type", STRUCTURED), body)
            }
        };
        let response = match request.send_bytes(&body) {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let body = read_body(response).unwrap_or_else(|e| e.message.into_bytes());
                return Err(EventError::http(status_error(status, &body)));
            }
            Err(ureq::Error::Transport(t)) => {
                let timed_out = is_timeout(&t) || Instant::now() >= deadline;
                let message = if timed_out {
                    format!("POST {}: timed out ({t})", inner.url)
                } else {
                    format!("POST {}: {t}", inner.url)
                };
                return Err(EventError { message, transport: true, timed_out });
            }
        };
        let status = response.status();
        if !(200..300).contains(&status) {
            let body = read_body(response)?;
            return Err(EventError::http(status_error(status, &body)));
        }
        let binary = response.header("ce-specversion").is_some();
        let key = response.header("ce-partitionkey").or_else(|| response.header("ce-subject")).map(str::to_string);
        let content_type = response.header("content-type").map(media_type);
        let body = read_body(response)?;
        if binary {
            let value = (!body.is_empty() || content_type.is_some()).then_some(body);
            return Ok(vec![Output { key: key.map(Bytes::from), value: value.map(Bytes::from), ..Output::default() }]);
        }
        match content_type.as_deref() {
            Some(STRUCTURED) => {
                let event: Value = serde_json::from_slice(&body)
                    .map_err(|e| EventError::http(format!("invalid CloudEvent in the response: {e}")))?;
                Ok(vec![structured_output(event).map_err(EventError::http)?])
            }
            Some(STRUCTURED_BATCH) => {
                let events: Vec<Value> = serde_json::from_slice(&body)
                    .map_err(|e| EventError::http(format!("invalid CloudEvents batch in the response: {e}")))?;
                events.into_iter().map(structured_output).collect::<Result<_, _>>().map_err(EventError::http)
            }
            _ => Ok(vec![]),
        }
    }
}

impl Inner {
    /// The event's CloudEvents attributes but its data and content type, in the order sent.
    fn attributes(&self, event: &Event) -> Vec<(&'static str, String)> {
        let positioned = !event.topic.is_empty();
        let id = if positioned {
            format!("{}-{}-{}", event.topic, event.partition, event.offset)
        } else {
            let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
            format!("{}-{:x}-{n}", self.function_name, self.id_epoch)
        };
        let source = if positioned {
            format!("/freshet/topics/{}", event.topic)
        } else {
            format!("/freshet/functions/{}", self.function_name)
        };
        let mut attributes = vec![("specversion", "1.0".to_string()), ("id", id), ("source", source)];
        attributes.push(("type", EVENT_TYPE.to_string()));
        if let Some(time) = DateTime::from_timestamp_millis(event.timestamp).filter(|_| event.timestamp >= 0) {
            attributes.push(("time", time.to_rfc3339_opts(SecondsFormat::Millis, true)));
        }
        if let Some(key) = event.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
            attributes.push(("subject", key.to_string()));
            attributes.push(("partitionkey", key.to_string()));
        }
        if positioned {
            attributes.push(("freshettopic", event.topic.to_string()));
            attributes.push(("freshetpartition", event.partition.to_string()));
            attributes.push(("freshetoffset", event.offset.to_string()));
        }
        attributes
    }
}

/// The record's `content-type` header when it has one; else `application/json` when the value
/// is JSON, else `application/octet-stream`; none without a value.
fn binary_content_type(event: &Event) -> Option<String> {
    if let Some(ct) = record_content_type(event) {
        return Some(ct.to_string());
    }
    let value = event.value.as_deref()?;
    Some(if is_json(value) { "application/json" } else { "application/octet-stream" }.to_string())
}

fn record_content_type(event: &Event) -> Option<&str> {
    event
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
        .filter(|v| !v.is_empty() && header_safe(v))
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// The structured-mode document: the attributes, then `data` when the value is JSON, else
/// `data_base64`.
fn structured_event(event: &Event, attributes: &[(&'static str, String)]) -> Value {
    let mut doc: Map<String, Value> =
        attributes.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect();
    if let Some(value) = event.value.as_deref() {
        // A value whose record says it is not JSON goes as bytes, even when it would parse.
        let may_be_json = record_content_type(event).is_none_or(|ct| is_json_media_type(&media_type(ct)));
        match serde_json::from_slice::<Value>(value).ok().filter(|_| may_be_json).ok_or(()) {
            Ok(data) => {
                let ct = record_content_type(event).unwrap_or("application/json");
                doc.insert("datacontenttype".into(), ct.into());
                doc.insert("data".into(), data);
            }
            Err(_) => {
                let ct = record_content_type(event).unwrap_or("application/octet-stream");
                doc.insert("datacontenttype".into(), ct.into());
                doc.insert("data_base64".into(), BASE64.encode(value).into());
            }
        }
    }
    Value::Object(doc)
}

/// The output of a structured CloudEvent: its data (a JSON string as its text, any other JSON
/// value as its JSON text, `data_base64` decoded) keyed by its `partitionkey`, else `subject`.
fn structured_output(event: Value) -> Result<Output, String> {
    let Value::Object(mut event) = event else {
        return Err("the CloudEvent in the response is not a JSON object".into());
    };
    let key = ["partitionkey", "subject"].iter().find_map(|a| match event.get(*a) {
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        _ => None,
    });
    let value = match (event.remove("data_base64"), event.remove("data")) {
        (Some(Value::String(b64)), _) => {
            Some(BASE64.decode(b64).map_err(|e| format!("invalid data_base64 in the response: {e}"))?)
        }
        (Some(_), _) => return Err("data_base64 in the response is not a string".into()),
        (None, None | Some(Value::Null)) => None,
        (None, Some(Value::String(s))) => Some(s.into_bytes()),
        (None, Some(data)) => Some(data.to_string().into_bytes()),
    };
    Ok(Output { key: key.map(Bytes::from), value: value.map(Bytes::from), ..Output::default() })
}

/// The body, at most FN_MAX_REPLY_BYTES of it.
fn read_body(response: ureq::Response) -> Result<Vec<u8>, EventError> {
    let mut body = Vec::new();
    let read = response.into_reader().take(FN_MAX_REPLY_BYTES as u64 + 1).read_to_end(&mut body);
    if let Err(e) = read {
        let timed_out = matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
        return Err(EventError { message: format!("reading the response: {e}"), transport: true, timed_out });
    }
    if body.len() > FN_MAX_REPLY_BYTES {
        return Err(EventError::http(format!("the response is larger than {FN_MAX_REPLY_BYTES} bytes")));
    }
    Ok(body)
}

/// "HTTP 500: the start of the body".
fn status_error(status: u16, body: &[u8]) -> String {
    match snippet(body) {
        s if s.is_empty() => format!("HTTP {status}"),
        s => format!("HTTP {status}: {s}"),
    }
}

fn snippet(body: &[u8]) -> String {
    let cut = &body[..body.len().min(FN_HTTP_ERROR_SNIPPET_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let text = text.trim();
    if body.len() > cut.len() {
        format!("{text}...")
    } else {
        text.to_string()
    }
}

fn is_json_media_type(media_type: &str) -> bool {
    media_type == "application/json" || media_type == "text/json" || media_type.ends_with("+json")
}

/// `type/subtype` of a content type, lowercase, without parameters.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether a string may be an HTTP header value as is (visible ASCII, spaces and tabs).
fn header_safe(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn is_timeout(t: &ureq::Transport) -> bool {
    let mut source = std::error::Error::source(t);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) {
                return true;
            }
        }
        source = e.source();
    }
    t.to_string().contains("timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_of_records_and_of_events_without_a_topic() {
        let factory = HttpFactory::new("http://127.0.0.1:1/", CloudEventsMode::Binary, 1000, "fx", None).unwrap();
        let event = Event {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            timestamp: 1_700_000_000_123,
            key: Some(b"k".to_vec().into()),
            ..Event::default()
        };
        let attributes = factory.inner.attributes(&event);
        let get = |a: &[(&str, String)], n: &str| a.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get(&attributes, "id").as_deref(), Some("orders-3-42"));
        assert_eq!(get(&attributes, "source").as_deref(), Some("/freshet/topics/orders"));
        assert_eq!(get(&attributes, "time").as_deref(), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(get(&attributes, "partitionkey").as_deref(), Some("k"));
        assert_eq!(get(&attributes, "freshetoffset").as_deref(), Some("42"));

        let timer = Event { partition: -1, offset: -1, ..Event::default() };
        let (a, b) = (factory.inner.attributes(&timer), factory.inner.attributes(&timer));
        assert_ne!(get(&a, "id"), get(&b, "id"));
        assert!(get(&a, "id").unwrap().starts_with("fx-"));
        assert_eq!(get(&a, "source").as_deref(), Some("/freshet/functions/fx"));
        assert_eq!(get(&a, "freshettopic"), None);
        assert_eq!(get(&a, "subject"), None);
    }

    #[test]
    fn structured_outputs() {
        let o = structured_output(serde_json::json!({"data": {"a": 1}, "subject": "s"})).unwrap();
        assert_eq!((o.key.as_deref(), o.value.as_deref()), (Some(&b"s"[..]), Some(&br#"{"a":1}"#[..])));
        let o = structured_output(serde_json::json!({"data": "text", "partitionkey": "p", "subject": "s"})).unwrap();
        assert_eq!((o.key.as_deref(), o.value.as_deref()), (Some(&b"p"[..]), Some(&b"text"[..])));
        let o = structured_output(serde_json::json!({"data_base64": "/wA="})).unwrap();
        assert_eq!((o.key.as_deref(), o.value.as_deref()), (None, Some(&[0xff, 0][..])));
        assert!(structured_output(serde_json::json!([1])).is_err());
    }

    #[test]
    fn structured_data_is_json_unless_the_record_says_otherwise() {
        let mut event = Event { value: Some(b"123".to_vec().into()), ..Event::default() };
        let doc = structured_event(&event, &[]);
        assert_eq!(
            (&doc["data"], &doc["datacontenttype"]),
            (&serde_json::json!(123), &serde_json::json!("application/json"))
        );
        event.headers = vec![("content-type".into(), Some(b"text/plain".to_vec()))];
        let doc = structured_event(&event, &[]);
        assert_eq!(
            (&doc["data_base64"], &doc["datacontenttype"]),
            (&serde_json::json!("MTIz"), &serde_json::json!("text/plain"))
        );
        event.headers = vec![("content-type".into(), Some(b"application/vnd.x+json; v=1".to_vec()))];
        assert_eq!(structured_event(&event, &[])["data"], 123);
    }
}
