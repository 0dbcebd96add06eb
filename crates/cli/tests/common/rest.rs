//! The REST API from tests: `/ksql`, `/query` and GETs over HTTP with ureq (bounded waits).

use std::time::Duration;

use serde_json::{json, Value as Json};

const WAIT: Duration = Duration::from_secs(30);

/// POSTs to /ksql; returns the status and the JSON body.
pub fn ksql(http: &str, statements: &str, props: Json) -> (u16, Json) {
    let body = json!({ "ksql": statements, "streamsProperties": props }).to_string();
    let response = ureq::post(&format!("http://{http}/ksql"))
        .set("Content-Type", "application/vnd.ksql.v1+json; charset=utf-8")
        .timeout(WAIT)
        .send_string(&body);
    let (status, response) = match response {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("POST /ksql: {e}"),
    };
    let text = response.into_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

pub fn get(http: &str, path: &str) -> (u16, Json) {
    let r = ureq::get(&format!("http://{http}{path}")).timeout(WAIT).call().expect("GET");
    (r.status(), serde_json::from_str(&r.into_string().unwrap()).unwrap())
}

pub fn names(listing: &Json, field: &str) -> Vec<String> {
    listing[field].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

/// POSTs a SELECT to /query and reads the whole answer (a JSON array); (status, elements).
pub fn query(http: &str, sql: &str, props: Json) -> (u16, Vec<Json>) {
    let body = json!({ "ksql": sql, "streamsProperties": props }).to_string();
    let (status, text) = match ureq::post(&format!("http://{http}/query")).timeout(WAIT).send_string(&body) {
        Ok(r) => (r.status(), r.into_string().expect("body")),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST /query: {e}"),
    };
    match serde_json::from_str::<Json>(&text) {
        Ok(Json::Array(a)) => (status, a),
        Ok(other) => (status, vec![other]),
        Err(e) => panic!("not JSON ({e}): {text}"),
    }
}

/// The rows of a /query answer, sorted (their order is the storage's).
pub fn rows(elements: &[Json]) -> Vec<Json> {
    let mut r: Vec<Json> = elements.iter().filter_map(|e| e.get("row").map(|r| r["columns"].clone())).collect();
    r.sort_by_key(|a| a.to_string());
    r
}
