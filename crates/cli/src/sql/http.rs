//! The HTTP listener with ksqlDB's REST endpoints: `POST /ksql`, `GET /info`, `GET /healthcheck`.
//! Handlers only move requests to the engine thread and answers back (bounded waits).

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use freshet_common::limits::{HTTP_ENGINE_TIMEOUT_MS, HTTP_MAX_BODY_BYTES};
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::ksql::{bad_request, KsqlRequest, KSQL_COMPAT_VERSION, SERVICE_ID};
use super::runner::Request;

#[derive(Clone)]
struct AppState {
    engine: mpsc::Sender<Request>,
    cluster_id: String,
}

fn respond(status: u16, body: &Json) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn unavailable(message: &str) -> Response {
    respond(503, &json!({ "@type": "generic_error", "error_code": 50300, "message": message }))
}

async fn ksql(State(state): State<AppState>, body: Bytes) -> Response {
    let req: KsqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let r = bad_request(&format!("the body must be JSON with a \"ksql\" string: {e}"));
            return respond(r.status, &r.body);
        }
    };
    let (tx, rx) = oneshot::channel();
    if state.engine.send(Request::Ksql(req, tx)).is_err() {
        return unavailable("the SQL engine is not running");
    }
    match tokio::time::timeout(Duration::from_millis(HTTP_ENGINE_TIMEOUT_MS), rx).await {
        Ok(Ok(reply)) => respond(reply.status, &reply.body),
        Ok(Err(_)) => unavailable("the SQL engine stopped before answering"),
        Err(_) => unavailable("the SQL engine did not answer in time"),
    }
}

async fn info(State(state): State<AppState>) -> Response {
    respond(
        200,
        &json!({
            "KsqlServerInfo": {
                "version": KSQL_COMPAT_VERSION,
                "kafkaClusterId": state.cluster_id,
                "ksqlServiceId": SERVICE_ID,
                "serverStatus": "RUNNING",
            }
        }),
    )
}

async fn healthcheck(State(state): State<AppState>) -> Response {
    let (tx, rx) = oneshot::channel();
    let engine_ok = state.engine.send(Request::Ping(tx)).is_ok()
        && matches!(tokio::time::timeout(Duration::from_secs(5), rx).await, Ok(Ok(())));
    let body = json!({
        "isHealthy": engine_ok,
        "details": {
            "metastore": { "isHealthy": engine_ok },
            "kafka": { "isHealthy": true },
            "commandRunner": { "isHealthy": engine_ok },
        },
        "ksqlServiceId": SERVICE_ID,
    });
    respond(if engine_ok { 200 } else { 503 }, &body)
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr).await.with_context(|| format!("binding the HTTP listener to {addr}"))
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: mpsc::Sender<Request>,
    cluster_id: String,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/ksql", post(ksql))
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .layer(DefaultBodyLimit::max(HTTP_MAX_BODY_BYTES))
        .with_state(AppState { engine, cluster_id });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
