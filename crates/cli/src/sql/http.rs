//! The HTTP listener with ksqlDB's REST endpoints: `POST /ksql`, `POST /query`,
//! `POST /query-stream`, `GET /info`, `GET /healthcheck`; and Freshet's `GET /sql/placement`
//! (the queries this server runs). Handlers only move requests to the
//! engine thread and answers back (bounded waits); push query rows stream from the engine
//! through a bounded channel, and a client that goes away ends its query.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use freshet_common::limits::{HTTP_ENGINE_TIMEOUT_MS, HTTP_MAX_BODY_BYTES};
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::ksql::{bad_request, bad_statement, KsqlRequest, KSQL_COMPAT_VERSION, SERVICE_ID};
use super::query::{header_json, metadata_json, Answer, Item};
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

/// Sends a SELECT to the engine and waits (bounded) for its start.
async fn ask_query(state: &AppState, req: KsqlRequest) -> Result<Answer, Response> {
    let (tx, rx) = oneshot::channel();
    if state.engine.send(Request::Query(req, tx)).is_err() {
        return Err(unavailable("the SQL engine is not running"));
    }
    match tokio::time::timeout(Duration::from_millis(HTTP_ENGINE_TIMEOUT_MS), rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(unavailable("the SQL engine stopped before answering")),
        Err(_) => Err(unavailable("the SQL engine did not answer in time")),
    }
}

/// How an answer's elements are written: `/query`'s JSON array of `header`/`row` objects, or
/// `/query-stream`'s metadata then bare row arrays (a JSON array, or one per line).
#[derive(Clone, Copy)]
enum Shape {
    Query,
    Stream { delimited: bool },
}

impl Shape {
    fn open(self, query_id: &str, columns: &[freshet_sql::transient::Column]) -> String {
        match self {
            Shape::Query => format!("[{}", header_json(query_id, columns)),
            Shape::Stream { delimited: false } => format!("[{}", metadata_json(query_id, columns)),
            Shape::Stream { delimited: true } => format!("{}\n", metadata_json(query_id, columns)),
        }
    }

    fn row(self, columns: Vec<Json>, tombstone: bool) -> String {
        match self {
            Shape::Query if tombstone => format!(",\n{}", json!({ "row": { "columns": columns, "tombstone": true } })),
            Shape::Query => format!(",\n{}", json!({ "row": { "columns": columns } })),
            Shape::Stream { delimited: false } => format!(",\n{}", Json::Array(columns)),
            Shape::Stream { delimited: true } => format!("{}\n", Json::Array(columns)),
        }
    }

    /// The end of the answer: `finalMessage` (LIMIT reached), an error, or just the close.
    fn close(self, end: Option<(String, bool)>) -> String {
        let element = match (self, end) {
            (_, Some((message, true))) => {
                Some(json!({ "@type": "generic_error", "error_code": 50000, "message": message }))
            }
            (Shape::Query, Some((message, false))) => Some(json!({ "finalMessage": message })),
            _ => None,
        };
        let element = match (self, element) {
            (Shape::Query, Some(e)) if e.get("@type").is_some() => Some(json!({ "errorMessage": e })),
            (_, e) => e,
        };
        match (self, element) {
            (Shape::Stream { delimited: true }, Some(e)) => format!("{e}\n"),
            (Shape::Stream { delimited: true }, None) => String::new(),
            (_, Some(e)) => format!(",\n{e}]\n"),
            (_, None) => "]\n".into(),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Shape::Stream { delimited: true } => "application/vnd.ksqlapi.delimited.v1",
            _ => "application/json",
        }
    }
}

async fn run_query(state: AppState, req: KsqlRequest, shape: Shape) -> Response {
    let answer = match ask_query(&state, req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match answer {
        Answer::Error(reply) => respond(reply.status, &reply.body),
        Answer::Pull { query_id, columns, rows, final_message } => {
            let mut out = shape.open(&query_id, &columns);
            for r in rows {
                out.push_str(&shape.row(r, false));
            }
            out.push_str(&shape.close(final_message.map(|m| (m, false))));
            (StatusCode::OK, [(header::CONTENT_TYPE, shape.content_type())], out).into_response()
        }
        Answer::Push { query_id, columns, rows } => {
            let first = shape.open(&query_id, &columns);
            let stream =
                futures::stream::unfold((Some(first), rows, false), move |(first, mut rows, done)| async move {
                    if let Some(f) = first {
                        return Some((Ok::<_, std::convert::Infallible>(Bytes::from(f)), (None, rows, false)));
                    }
                    if done {
                        return None;
                    }
                    let (chunk, done) = match rows.recv().await {
                        Some(Item::Row(r, tombstone)) => (shape.row(r, tombstone), false),
                        Some(Item::Line(_)) => (String::new(), false),
                        Some(Item::End { message, error }) => (shape.close(Some((message, error))), true),
                        None => (shape.close(None), true),
                    };
                    Some((Ok(Bytes::from(chunk)), (None, rows, done)))
                });
            (StatusCode::OK, [(header::CONTENT_TYPE, shape.content_type())], Body::from_stream(stream)).into_response()
        }
        Answer::Print { lines } => {
            if !matches!(shape, Shape::Query) {
                // Dropping `lines` ends the print on the engine's side.
                let r = bad_statement("PRINT is served by the /query endpoint only.", "PRINT");
                return respond(r.status, &r.body);
            }
            // Plain text, a line per record, as ksqlDB's /query answers PRINT; ends at LIMIT or
            // when the client goes away (the engine drops the print at its next step).
            let stream = futures::stream::unfold((lines, false), |(mut lines, done)| async move {
                if done {
                    return None;
                }
                let (chunk, done) = match lines.recv().await {
                    Some(Item::Line(l)) => (format!("{l}\n"), false),
                    Some(Item::Row(..)) => (String::new(), false),
                    Some(Item::End { message, error: true }) => (format!("{message}\n"), true),
                    Some(Item::End { .. }) | None => (String::new(), true),
                };
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), (lines, done)))
            });
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream))
                .into_response()
        }
    }
}

async fn query(State(state): State<AppState>, body: Bytes) -> Response {
    match serde_json::from_slice::<KsqlRequest>(&body) {
        Ok(req) => run_query(state, req, Shape::Query).await,
        Err(e) => {
            let r = bad_request(&format!("the body must be JSON with a \"ksql\" string: {e}"));
            respond(r.status, &r.body)
        }
    }
}

/// `/query-stream`'s request body.
#[derive(serde::Deserialize)]
struct StreamRequest {
    sql: String,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, Json>,
    #[serde(default, rename = "sessionVariables")]
    session_variables: std::collections::BTreeMap<String, Json>,
}

async fn query_stream(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let delimited = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/vnd.ksqlapi.delimited"));
    match serde_json::from_slice::<StreamRequest>(&body) {
        Ok(r) => {
            let req =
                KsqlRequest { ksql: r.sql, streams_properties: r.properties, session_variables: r.session_variables };
            run_query(state, req, Shape::Stream { delimited }).await
        }
        Err(e) => {
            let r = bad_request(&format!("the body must be JSON with a \"sql\" string: {e}"));
            respond(r.status, &r.body)
        }
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

/// Freshet's own: the persistent queries this server runs, its member id and slots in the
/// group that splits queries over the SQL servers of a cluster (see `placement.rs`).
async fn placement(State(state): State<AppState>) -> Response {
    let (tx, rx) = oneshot::channel();
    let inspect = Request::Inspect(Box::new(move |server| {
        let _ = tx.send(server.placement_json());
    }));
    if state.engine.send(inspect).is_err() {
        return unavailable("the SQL engine is not running");
    }
    match tokio::time::timeout(Duration::from_millis(HTTP_ENGINE_TIMEOUT_MS), rx).await {
        Ok(Ok(body)) => respond(200, &body),
        Ok(Err(_)) => unavailable("the SQL engine stopped before answering"),
        Err(_) => unavailable("the SQL engine did not answer in time"),
    }
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr).await.with_context(|| format!("binding the HTTP listener to {addr}"))
}

/// Serves ksqlDB's endpoints and the `functions` routes until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: mpsc::Sender<Request>,
    cluster_id: String,
    functions: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/ksql", post(ksql))
        .route("/query", post(query))
        .route("/query-stream", post(query_stream))
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .route("/sql/placement", get(placement))
        .layer(DefaultBodyLimit::max(HTTP_MAX_BODY_BYTES))
        .with_state(AppState { engine, cluster_id })
        .merge(functions);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
