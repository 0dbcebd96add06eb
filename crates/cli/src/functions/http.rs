//! The functions' HTTP API on the server's HTTP listener:
//!
//! - `POST /functions` (body [`DeployRequest`]) deploys a function or a new version of it;
//! - `GET /functions`, `GET /functions/{name}`: status ([`FunctionStatus`]);
//! - `DELETE /functions/{name}`;
//! - `POST /functions/{name}/invoke`: the HTTP trigger; the body is the event's value, the
//!   `x-freshet-key` header its key; answered with the function's output (see [`invoke`]);
//! - `GET /functions/{name}/logs?tail=N`;
//! - `GET /metrics`: Prometheus text.
//!
//! The host's calls block (they reach topics), so handlers run them on the blocking pool.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use freshet_common::limits::{FN_MAX_CODE_BYTES, HTTP_MAX_BODY_BYTES};
use freshet_functions::host::{now_ms, FunctionStatus, Host, HostError, LogLine};
use freshet_functions::spec::Deployment;
use freshet_functions::{Event, FunctionSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The body of `POST /functions`.
#[derive(Serialize, Deserialize)]
pub struct DeployRequest {
    pub spec: FunctionSpec,
    /// A WASM module, base64.
    #[serde(default)]
    pub code_base64: Option<String>,
}

/// `GET /functions/{name}/logs`.
#[derive(Serialize, Deserialize)]
pub struct LogsResponse {
    pub lines: Vec<LogLine>,
}

/// The invoke response's header naming the output's key, when it has one.
pub const KEY_HEADER: &str = "x-freshet-key";

fn error(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({ "error": message }).to_string()).into_response()
}

fn host_error(e: HostError) -> Response {
    match e {
        HostError::NotFound(_) => error(StatusCode::NOT_FOUND, &e.to_string()),
        HostError::Invalid(_) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        HostError::Function(_) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
        HostError::Server(_) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn ok_json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Runs a blocking host call off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, HostError> + Send + 'static) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(host_error),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the call failed: {e}"))),
    }
}

async fn deploy(State(host): State<Arc<Host>>, body: Bytes) -> Response {
    let req: DeployRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the body must be a deploy request: {e}")),
    };
    let code = match req.code_base64.as_deref().map(|c| base64::engine::general_purpose::STANDARD.decode(c)) {
        None => vec![],
        Some(Ok(c)) => c,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("code_base64 is not base64: {e}")),
    };
    let d = Deployment { spec: req.spec, code };
    match blocking(move || host.deploy(d)).await {
        Ok(spec) => ok_json(&json!({ "spec": spec })),
        Err(r) => r,
    }
}

async fn list(State(host): State<Arc<Host>>) -> Response {
    match blocking(move || Ok(host.list())).await {
        Ok(l) => ok_json(&l),
        Err(r) => r,
    }
}

async fn status(State(host): State<Arc<Host>>, Path(name): Path<String>) -> Response {
    match blocking(move || host.status(&name)).await {
        Ok(s) => ok_json::<FunctionStatus>(&s),
        Err(r) => r,
    }
}

async fn delete(State(host): State<Arc<Host>>, Path(name): Path<String>) -> Response {
    match blocking(move || host.delete(&name)).await {
        Ok(()) => ok_json(&json!({ "deleted": true })),
        Err(r) => r,
    }
}

/// The HTTP trigger. One output: 200 with its value as the body (its key in `x-freshet-key`);
/// none: 204; several: 200 with a JSON array of `{"key", "value", "topic"}`. A failed
/// invocation: 502 with the error.
async fn invoke(State(host): State<Arc<Host>>, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers.get(KEY_HEADER).map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let mut event_headers = vec![];
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        event_headers.push(("content-type".to_string(), Some(ct.as_bytes().to_vec())));
    }
    let event = Event {
        topic: Default::default(),
        partition: -1,
        offset: -1,
        timestamp: now_ms(),
        key,
        value: Some(body.clone()),
        headers: event_headers,
    };
    let reply = match blocking(move || host.invoke(&name, event)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Some(f) = reply.failed.first() {
        return error(StatusCode::BAD_GATEWAY, &format!("the function failed the event: {}", f.error));
    }
    match reply.outputs.as_slice() {
        [] => StatusCode::NO_CONTENT.into_response(),
        [one] => {
            let value = one.value.clone().unwrap_or_default();
            let content_type = one
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .and_then(|(_, v)| v.as_ref())
                .and_then(|v| String::from_utf8(v.clone()).ok())
                .unwrap_or_else(|| {
                    if serde_json::from_slice::<serde_json::Value>(&value).is_ok() {
                        "application/json".into()
                    } else {
                        "application/octet-stream".into()
                    }
                });
            let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], value).into_response();
            if let Some(k) = one.key.as_ref().and_then(|k| axum::http::HeaderValue::from_bytes(k).ok()) {
                resp.headers_mut().insert(KEY_HEADER, k);
            }
            resp
        }
        many => {
            let text = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            let items: Vec<_> = many
                .iter()
                .map(|o| json!({ "topic": o.topic, "key": text(&o.key), "value": text(&o.value) }))
                .collect();
            ok_json(&items)
        }
    }
}

async fn logs(
    State(host): State<Arc<Host>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let tail = q.get("tail").and_then(|t| t.parse().ok()).unwrap_or(100usize).min(10_000);
    match blocking(move || host.logs(&name, tail)).await {
        Ok(lines) => ok_json(&LogsResponse { lines }),
        Err(r) => r,
    }
}

async fn metrics(State(host): State<Arc<Host>>) -> Response {
    let text = host.metrics();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The functions' routes.
pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/functions", post(deploy).get(list))
        .route("/functions/{name}", get(status).delete(delete))
        .route("/functions/{name}/invoke", post(invoke))
        .route("/functions/{name}/logs", get(logs))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(FN_MAX_CODE_BYTES / 3 * 4 + HTTP_MAX_BODY_BYTES))
        .with_state(host)
}
