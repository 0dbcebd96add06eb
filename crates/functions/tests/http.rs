//! The HTTP runtime against real HTTP: the example function `examples/functions/http/server.py`,
//! and a small server in the test that records the exact requests.

use bytes::Bytes;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use freshet_functions::http::HttpFactory;
use freshet_functions::spec::CloudEventsMode;
use freshet_functions::{Event, InvokeError, Output, RuntimeFactory};

// ---- A recording HTTP/1.1 server (keep-alive, Content-Length bodies) --------------------------

#[derive(Debug, Clone)]
struct Request {
    path: String,
    /// Lowercase names, in the order received.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

fn answer(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> Answer {
    let headers = headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
    Answer { status, headers, body: body.to_vec(), delay: Duration::ZERO }
}

type Handler = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

struct TestServer {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

impl TestServer {
    fn start(handler: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> TestServer {
        TestServer::start_with(None, handler)
    }

    /// With `tls`, an HTTPS server at `https://localhost:PORT/fn`.
    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/fn"),
            None => format!("http://127.0.0.1:{port}/fn"),
        };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let (r, c) = (requests.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, h, tls) = (r.clone(), handler.clone(), tls.clone());
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                thread::spawn(move || match tls {
                    Some(config) => {
                        let connection = rustls::ServerConnection::new(config).unwrap();
                        serve(rustls::StreamOwned::new(connection, stream), &r, &h)
                    }
                    None => serve(stream, &r, &h),
                });
            }
        });
        TestServer { url, requests, connections }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: impl Read + Write, requests: &Mutex<Vec<Request>>, handler: &Handler) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let length = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request { path, headers, body };
        requests.lock().unwrap().push(request.clone());
        let a = handler(&request);
        thread::sleep(a.delay);
        let mut out = format!("HTTP/1.1 {} X\r\n", a.status);
        for (n, v) in &a.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        if a.status != 204 {
            out.push_str(&format!("content-length: {}\r\n", a.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&a.body);
        if reader.get_mut().write_all(&bytes).and_then(|()| reader.get_mut().flush()).is_err() {
            return;
        }
    }
}

fn record(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Event {
    Event {
        topic: "orders".into(),
        partition: 3,
        offset,
        timestamp: 1_700_000_000_123,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: vec![],
    }
}

fn echo_binary(r: &Request) -> Answer {
    let key = r.header("ce-partitionkey").unwrap_or("none").to_string();
    let mut a = answer(200, &[("ce-specversion", "1.0"), ("ce-id", "out-1"), ("content-type", "text/plain")], &r.body);
    a.headers.push(("ce-partitionkey", format!("out-{key}")));
    a
}

// ---- Binary mode -------------------------------------------------------------------------------

#[test]
fn binary_mode_sends_attributes_as_headers_and_data_as_the_body() {
    let server = TestServer::start(echo_binary);
    let factory = HttpFactory::new(&server.url, CloudEventsMode::Binary, 5_000, "enrich", None).unwrap();
    let mut f = factory.instantiate().unwrap();
    let mut with_type = record(44, None, Some(b"plain words"));
    with_type.headers = vec![("Content-Type".into(), Some(b"text/plain; charset=utf-8".to_vec()))];
    let batch = vec![
        record(42, Some(b"k1"), Some(br#"{"a": 1}"#)),
        record(43, Some(&[0xff]), Some(&[0, 1, 0xff])),
        with_type,
        Event { partition: -1, offset: -1, timestamp: -1, ..Event::default() },
    ];
    let reply = f.invoke(&batch).unwrap();
    assert!(reply.failed.is_empty(), "{reply:?}");

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let r = &requests[0];
    assert_eq!(r.path, "/fn");
    let ce: Vec<(String, String)> = r.headers.iter().filter(|(n, _)| n.starts_with("ce-")).cloned().collect();
    let expected = [
        ("ce-specversion", "1.0"),
        ("ce-id", "orders-3-42"),
        ("ce-source", "/freshet/topics/orders"),
        ("ce-type", "dev.freshet.record"),
        ("ce-time", "2023-11-14T22:13:20.123Z"),
        ("ce-subject", "k1"),
        ("ce-partitionkey", "k1"),
        ("ce-freshettopic", "orders"),
        ("ce-freshetpartition", "3"),
        ("ce-freshetoffset", "42"),
    ];
    assert_eq!(ce, expected.map(|(n, v)| (n.to_string(), v.to_string())).to_vec());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, br#"{"a": 1}"#);

    let r = &requests[1];
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("ce-subject"), None, "a key that is not UTF-8 is no subject");
    assert_eq!(r.header("ce-partitionkey"), None);
    assert_eq!(r.body, [0, 1, 0xff]);

    assert_eq!(requests[2].header("content-type"), Some("text/plain; charset=utf-8"), "the record's content type");

    let r = &requests[3];
    assert_eq!(r.header("ce-source"), Some("/freshet/functions/enrich"));
    assert!(r.header("ce-id").unwrap().starts_with("enrich-"));
    assert_eq!(r.header("ce-time"), None);
    assert_eq!(r.header("ce-freshettopic"), None);
    assert_eq!(r.header("content-type"), None);
    assert!(r.body.is_empty());

    // Each response is a binary CloudEvent: one output per event, keyed by its partitionkey.
    let keys: Vec<_> =
        reply.outputs.iter().map(|o| String::from_utf8(o.key.clone().unwrap().to_vec()).unwrap()).collect();
    assert_eq!(keys, ["out-k1", "out-none", "out-none", "out-none"]);
    assert_eq!(
        reply.outputs[0],
        Output {
            key: Some(b"out-k1".to_vec().into()),
            value: Some(br#"{"a": 1}"#.to_vec().into()),
            ..Output::default()
        }
    );
    assert_eq!(reply.outputs[1].value.as_deref(), Some(&[0, 1, 0xff][..]));
}

#[test]
fn structured_mode_sends_one_cloudevents_json_document() {
    let server = TestServer::start(|r| {
        let event: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let out = serde_json::json!({
            "specversion": "1.0", "id": "o", "source": "/t", "type": "t",
            "subject": event.get("subject").cloned().unwrap_or_default(), "data": event.get("data"),
        });
        answer(200, &[("content-type", "application/cloudevents+json; charset=utf-8")], out.to_string().as_bytes())
    });
    let mut f = HttpFactory::new(&server.url, CloudEventsMode::Structured, 5_000, "enrich", None)
        .unwrap()
        .instantiate()
        .unwrap();
    let reply = f.invoke(&[record(42, Some(b"k1"), Some(br#"{"a": [1]}"#)), record(43, None, Some(&[0xff]))]).unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].header("content-type"), Some("application/cloudevents+json"));
    assert_eq!(requests[0].header("ce-specversion"), None);
    let doc: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "specversion": "1.0", "id": "orders-3-42", "source": "/freshet/topics/orders",
            "type": "dev.freshet.record", "time": "2023-11-14T22:13:20.123Z", "subject": "k1",
            "partitionkey": "k1", "freshettopic": "orders", "freshetpartition": "3",
            "freshetoffset": "42", "datacontenttype": "application/json", "data": {"a": [1]},
        })
    );
    let doc: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(doc["data_base64"], "/w==");
    assert_eq!(doc["datacontenttype"], "application/octet-stream");
    assert_eq!(doc.get("data"), None);

    assert_eq!(reply.outputs[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(reply.outputs[0].value.as_deref(), Some(&br#"{"a":[1]}"#[..]));
    assert_eq!(reply.outputs[1].value, None, "data null: no value");
}

#[test]
fn connections_are_reused_across_events_invocations_and_instances() {
    let server = TestServer::start(echo_binary);
    let factory = HttpFactory::new(&server.url, CloudEventsMode::Binary, 5_000, "enrich", None).unwrap();
    let batch: Vec<Event> = (0..5).map(|i| record(i, None, Some(b"x"))).collect();
    let mut a = factory.instantiate().unwrap();
    assert_eq!(a.invoke(&batch).unwrap().outputs.len(), 5);
    assert_eq!(a.invoke(&batch).unwrap().outputs.len(), 5);
    let mut b = factory.instantiate().unwrap();
    assert_eq!(b.invoke(&batch).unwrap().outputs.len(), 5);
    assert_eq!(server.requests().len(), 15);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "one TCP connection for every event");
}

#[test]
fn no_content_is_no_output_and_errors_fail_their_event() {
    let server = TestServer::start(|r| match &r.body[..] {
        b"skip" => answer(204, &[], b""),
        b"plain" => answer(200, &[("content-type", "text/plain")], b"not an event"),
        b"fail" => answer(500, &[], b"  boom: something broke\n"),
        b"redirect" => answer(302, &[("location", "/elsewhere")], b""),
        _ => echo_binary(r),
    });
    let mut f =
        HttpFactory::new(&server.url, CloudEventsMode::Binary, 5_000, "enrich", None).unwrap().instantiate().unwrap();
    let batch: Vec<Event> = ["skip", "fail", "ok", "plain", "redirect"]
        .iter()
        .enumerate()
        .map(|(i, v)| record(i as i64, None, Some(v.as_bytes())))
        .collect();
    let reply = f.invoke(&batch).unwrap();
    assert_eq!(reply.outputs.len(), 1);
    assert_eq!(reply.outputs[0].value.as_deref(), Some(&b"ok"[..]));
    let failed: Vec<(usize, &str)> = reply.failed.iter().map(|f| (f.index, f.error.as_str())).collect();
    assert_eq!(failed, vec![(1, "HTTP 500: boom: something broke"), (4, "HTTP 302")]);
    assert!(f.healthy());
}

#[test]
fn timeouts_fail_the_slow_event_or_the_whole_batch() {
    let server = TestServer::start(|r| {
        let mut a = echo_binary(r);
        if r.body == b"slow" {
            a.delay = Duration::from_secs(3);
        }
        a
    });
    let factory = HttpFactory::new(&server.url, CloudEventsMode::Binary, 500, "enrich", None).unwrap();
    let mut f = factory.instantiate().unwrap();

    let started = Instant::now();
    let reply = f.invoke(&[record(0, None, Some(b"fast")), record(1, None, Some(b"slow"))]).unwrap();
    assert!(started.elapsed() < Duration::from_millis(2_000), "{:?}", started.elapsed());
    assert_eq!(reply.outputs.len(), 1);
    assert_eq!(reply.failed.len(), 1);
    assert_eq!(reply.failed[0].index, 1);
    assert!(reply.failed[0].error.contains("timed out"), "{reply:?}");

    // When no event got an answer, the whole batch fails.
    let started = Instant::now();
    let err = f.invoke(&[record(2, None, Some(b"slow")), record(3, None, Some(b"fast"))]).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(2_000), "{:?}", started.elapsed());
    assert_eq!(err, InvokeError::Timeout(500));

    // And the runtime still works afterwards.
    assert_eq!(f.invoke(&[record(4, None, Some(b"fast"))]).unwrap().outputs.len(), 1);
}

#[test]
fn an_endpoint_that_is_down_fails_the_batch() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut f = HttpFactory::new(&url, CloudEventsMode::Binary, 2_000, "enrich", None).unwrap().instantiate().unwrap();
    let started = Instant::now();
    let err = f.invoke(&[record(0, None, Some(b"x")), record(1, None, Some(b"y"))]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(&err, InvokeError::Failed(m) if m.contains(&url)), "{err:?}");
}

// ---- HTTPS -------------------------------------------------------------------------------------

/// A private CA (its PEM) and a server config whose certificate for `localhost` it signed.
#[allow(deprecated)] // ring's provider, as the runtime's client uses (see `tls_config`)
fn private_ca() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
    (ca.pem(), Arc::new(config))
}

#[test]
fn https_endpoints_are_verified_against_the_roots_and_the_functions_ca() {
    let (ca_pem, config) = private_ca();
    let server = TestServer::start_with(Some(config), echo_binary);
    assert!(server.url.starts_with("https://localhost:"), "{}", server.url);

    // Trusting the private CA: events and answers go through TLS, on one kept-alive connection.
    let factory = HttpFactory::new(&server.url, CloudEventsMode::Binary, 5_000, "enrich", Some(&ca_pem)).unwrap();
    let mut f = factory.instantiate().unwrap();
    let reply = f.invoke(&[record(0, Some(b"k1"), Some(b"one")), record(1, Some(b"k2"), Some(b"two"))]).unwrap();
    assert!(reply.failed.is_empty(), "{reply:?}");
    let values: Vec<_> = reply.outputs.iter().map(|o| o.value.as_deref().unwrap().to_vec()).collect();
    assert_eq!(values, [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(reply.outputs[0].key.as_deref(), Some(&b"out-k1"[..]));
    assert_eq!(f.invoke(&[record(2, None, Some(b"three"))]).unwrap().outputs.len(), 1);
    assert_eq!(server.requests().len(), 3);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "the TLS connection is reused");

    // Without it the certificate is unknown: no event is sent, the batch fails and says why.
    let mut f =
        HttpFactory::new(&server.url, CloudEventsMode::Binary, 5_000, "enrich", None).unwrap().instantiate().unwrap();
    let err = f.invoke(&[record(3, None, Some(b"four"))]).unwrap_err();
    assert!(matches!(&err, InvokeError::Failed(m) if m.contains("certificate")), "{err:?}");
    assert_eq!(server.requests().len(), 3, "nothing reached the handler");

    // A CA that is not PEM is refused when the factory is made.
    let bad = HttpFactory::new(&server.url, CloudEventsMode::Binary, 5_000, "enrich", Some("garbage"));
    assert!(bad.is_err_and(|e| e.contains("no PEM certificate")));
}

// ---- The example function ----------------------------------------------------------------------

/// `python3 examples/functions/http/server.py 0`, killed on drop.
struct Example {
    child: Child,
    url: String,
}

impl Example {
    fn start() -> Example {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions/http/server.py");
        let mut child =
            Command::new("python3").arg(script).arg("0").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut example = Example { child, url: String::new() };
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("server.py did not start within 10 s");
        example.url = line.trim().strip_prefix("listening on ").expect("the listening line").to_string();
        example
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example_round_trip(mode: CloudEventsMode) {
    let server = Example::start();
    let mut f = HttpFactory::new(&server.url, mode, 10_000, "enrich", None).unwrap().instantiate().unwrap();
    let batch = vec![
        record(0, Some(b"k1"), Some(br#"{"a": 1}"#)),
        record(1, Some(b"k2"), Some(b"hello")),
        record(2, Some(b"k3"), Some(b"skip")),
        record(3, Some(b"k4"), Some(b"please fail")),
    ];
    let reply = f.invoke(&batch).unwrap();
    assert_eq!(reply.outputs.len(), 2, "{reply:?}");
    let o = &reply.outputs[0];
    assert_eq!(o.key.as_deref(), Some(&b"k1"[..]));
    let value: serde_json::Value = serde_json::from_slice(o.value.as_deref().unwrap()).unwrap();
    assert_eq!(value, serde_json::json!({"a": 1, "processed_by": "http"}));
    assert_eq!(
        reply.outputs[1],
        Output { key: Some(b"k2".to_vec().into()), value: Some(b"HELLO".to_vec().into()), ..Output::default() }
    );
    assert_eq!(reply.failed.len(), 1);
    assert_eq!(reply.failed[0].index, 3);
    assert_eq!(reply.failed[0].error, "HTTP 500: failing on purpose");
}

#[test]
fn the_example_server_in_binary_mode() {
    example_round_trip(CloudEventsMode::Binary);
}

#[test]
fn the_example_server_in_structured_mode() {
    example_round_trip(CloudEventsMode::Structured);
}
