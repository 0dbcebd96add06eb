//! The process runtime against real processes: the Python and Node examples of
//! `examples/functions/`, and small `sh` commands for crashes and timeouts.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet_functions::process::ProcessFactory;
use freshet_functions::{Event, Failure, InvokeError, LogSink, Output, Runtime, RuntimeFactory};

type Lines = Arc<Mutex<Vec<(String, String)>>>;

fn sink() -> (LogSink, Lines) {
    let lines: Lines = Arc::default();
    let l = lines.clone();
    (Arc::new(move |stream: &str, line: &str| l.lock().unwrap().push((stream.into(), line.into()))), lines)
}

/// Waits (at most 5 s) until the log has a line of `stream` containing `text`.
fn wait_for_log(lines: &Lines, stream: &str, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if lines.lock().unwrap().iter().any(|(s, l)| s == stream && l.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn example(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions").join(path);
    p.canonicalize().unwrap().display().to_string()
}

fn has(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn event(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Event {
    Event {
        topic: "orders".into(),
        partition: 2,
        offset,
        timestamp: 1_700_000_000_000,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: vec![],
    }
}

fn json(bytes: &Option<bytes::Bytes>) -> serde_json::Value {
    serde_json::from_slice(bytes.as_deref().unwrap()).unwrap()
}

/// The round trip, partial failures, a whole-batch error, a stray print and stderr, for one of
/// the enrich examples.
fn enrich_round_trip(command: &str, who: &str) {
    let (log, lines) = sink();
    let factory = ProcessFactory::new(command, &BTreeMap::new(), 10_000, log);
    let mut f = factory.instantiate().unwrap();

    let mut first = event(10, Some(b"k1"), Some(br#"{"n": 1}"#));
    first.headers =
        vec![("trace".into(), Some(b"abc".to_vec())), ("none".into(), None), ("bin".into(), Some(vec![0xff, 0xfe, 0]))];
    let batch = vec![
        first,
        event(11, Some(&[0x80, 0x00, 0xc3]), Some(b"[1, 2]")),
        event(12, None, Some(b"not json")),
        event(13, Some(b"k4"), None),
        event(14, Some(b"k5"), Some(&[0xff, 0xfe])),
        event(15, None, Some(br#""caf\u00e9 \u2603""#)),
    ];
    let reply = f.invoke(&batch).unwrap();
    assert_eq!(reply.outputs.len(), 3, "{reply:?}");
    let o = &reply.outputs[0];
    assert_eq!(o.topic, None);
    assert_eq!(o.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(json(&o.value), serde_json::json!({"n": 1, "processed_by": who}));
    assert_eq!(o.headers, batch[0].headers, "headers, null and non-UTF-8 ones included, round-trip");
    let o = &reply.outputs[1];
    assert_eq!(o.key.as_deref(), Some(&[0x80, 0x00, 0xc3][..]), "a non-UTF-8 key round-trips");
    assert_eq!(json(&o.value), serde_json::json!({"value": [1, 2], "processed_by": who}));
    let o = &reply.outputs[2];
    assert_eq!(o.key, None, "a null key round-trips");
    assert_eq!(json(&o.value), serde_json::json!({"value": "café ☃", "processed_by": who}));
    let failed: Vec<usize> = reply.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![2, 3, 4], "{reply:?}");
    assert!(reply.failed[0].error.contains("not JSON"), "{reply:?}");
    assert!(f.healthy());

    // A whole-batch error fails the invocation but not the instance.
    let err = f.invoke(&[event(20, None, Some(b"{}")), event(21, None, Some(br#"{"fail_batch": true}"#))]);
    assert_eq!(err, Err(InvokeError::Failed("event 1 asked to fail the batch".into())));
    assert!(f.healthy());

    // A print to stdout is logged, and the reply still arrives.
    let reply = f.invoke(&[event(30, None, Some(br#"{"print": "hello from the function"}"#))]).unwrap();
    assert_eq!(reply.outputs.len(), 1);
    assert!(wait_for_log(&lines, "stdout", "hello from the function"), "{:?}", lines.lock().unwrap());
    assert!(wait_for_log(&lines, "stderr", &format!("enrich.{} started", if who == "python" { "py" } else { "js" })));
    assert!(!lines.lock().unwrap().iter().any(|(_, l)| l.contains("\"id\"")), "replies are not logged");

    // Many invocations on the same process.
    for i in 0..50 {
        let reply = f.invoke(&[event(100 + i, None, Some(format!("{i}").as_bytes()))]).unwrap();
        assert_eq!(json(&reply.outputs[0].value)["value"], i);
    }
}

#[test]
fn python_enrich_round_trip() {
    enrich_round_trip(&format!("exec python3 '{}'", example("python/enrich.py")), "python");
}

#[test]
fn node_enrich_round_trip() {
    if !has("node") {
        eprintln!("skipped: node is not installed");
        return;
    }
    enrich_round_trip(&format!("exec node '{}'", example("node/enrich.js")), "node");
}

#[test]
fn replies_may_carry_any_json_value_base64_topics_and_env() {
    // A shell function: it reads one batch and answers with a fixed reply.
    let reply = r#"{"id": 1, "outputs": [{"topic": "other", "key": {"base64": "AAE="}, "value": {"a": [1]}},
        {"value": 42}, {"value": null, "headers": [{"key": "h", "value": "$GREETING"}]}],
        "failed": [{"index": 0, "error": "half"}]}"#
        .replace('\n', " ");
    let (before, after) = reply.split_once("$GREETING").unwrap();
    let command = format!("read line; echo '{before}'\"$GREETING\"'{after}'; sleep 5");
    let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
    let (log, _) = sink();
    let mut f = ProcessFactory::new(&command, &env, 5_000, log).instantiate().unwrap();
    let reply = f.invoke(&[event(0, None, None)]).unwrap();
    assert_eq!(
        reply.outputs,
        vec![
            Output {
                topic: Some("other".into()),
                key: Some(vec![0, 1].into()),
                value: Some(br#"{"a":[1]}"#.to_vec().into()),
                headers: vec![]
            },
            Output { value: Some(b"42".to_vec().into()), ..Output::default() },
            Output { headers: vec![("h".into(), Some(b"hi".to_vec()))], ..Output::default() },
        ]
    );
    assert_eq!(reply.failed, vec![Failure { index: 0, error: "half".into() }]);
}

#[test]
fn a_process_that_exits_mid_batch_fails_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed-once");
    // The first instance reads the batch and exits 3; later ones run the Python example.
    let command = format!(
        "if [ -e '{m}' ]; then exec python3 '{py}'; else touch '{m}'; read line; echo 'giving up' >&2; exit 3; fi",
        m = marker.display(),
        py = example("python/enrich.py")
    );
    let (log, _) = sink();
    let factory = ProcessFactory::new(&command, &BTreeMap::new(), 10_000, log);
    let mut f = factory.instantiate().unwrap();
    let started = Instant::now();
    let err = f.invoke(&[event(0, None, Some(b"{}"))]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err, InvokeError::Failed("process exited with status 3; last stderr line: giving up".into()));
    assert!(!f.healthy());
    assert!(f.invoke(&[event(0, None, Some(b"{}"))]).is_err(), "an unhealthy instance is not invoked");
    drop(f);

    let mut f = factory.instantiate().unwrap();
    let reply = f.invoke(&[event(0, None, Some(b"{}"))]).unwrap();
    assert_eq!(json(&reply.outputs[0].value), serde_json::json!({"processed_by": "python"}));
}

#[test]
fn a_process_that_exits_between_invocations_fails_the_next_one() {
    let (log, _) = sink();
    let mut f = ProcessFactory::new("exit 0", &BTreeMap::new(), 10_000, log).instantiate().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let err = f.invoke(&[event(0, None, None)]).unwrap_err();
    assert!(matches!(&err, InvokeError::Failed(m) if m.starts_with("process exited with status 0")), "{err:?}");
    assert!(!f.healthy());
}

fn alive(pid: u32) -> bool {
    // A zombie (not reaped by a container's init) counts as dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[test]
fn a_process_that_hangs_times_out_and_is_killed_with_its_children() {
    let (log, lines) = sink();
    // A background sleep (a grandchild) and a foreground one; the grandchild's pid goes to stderr.
    let factory = ProcessFactory::new("sleep 60 & echo \"child $!\" >&2; sleep 60", &BTreeMap::new(), 500, log);
    let mut f = factory.spawn().unwrap();
    let pid = f.pid();
    assert!(wait_for_log(&lines, "stderr", "child "));
    let grandchild: u32 =
        lines.lock().unwrap().iter().find_map(|(_, l)| l.strip_prefix("child ")?.parse().ok()).unwrap();
    assert!(alive(pid) && alive(grandchild));

    let started = Instant::now();
    let err = f.invoke(&[event(0, None, Some(b"{}"))]).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, InvokeError::Timeout(500));
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(2_500), "{took:?}");
    assert!(!f.healthy());
    assert!(!alive(pid), "the child is killed and reaped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(grandchild) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(grandchild), "the child's children are killed too");
}

#[test]
fn drop_kills_and_reaps_the_child() {
    let (log, _) = sink();
    let f = ProcessFactory::new("sleep 60", &BTreeMap::new(), 500, log).spawn().unwrap();
    let pid = f.pid();
    assert!(alive(pid));
    drop(f);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "no zombie is left");
}

#[test]
fn an_overlong_reply_fails_the_instance() {
    let (log, _) = sink();
    // 70 MB without a newline: more than FN_MAX_REPLY_BYTES (64 MiB).
    let command = "read line; head -c 70000000 /dev/zero | tr '\\0' 'x'; sleep 60";
    let mut f = ProcessFactory::new(command, &BTreeMap::new(), 20_000, log).instantiate().unwrap();
    let err = f.invoke(&[event(0, None, None)]).unwrap_err();
    assert!(matches!(&err, InvokeError::Failed(m) if m.contains("longer than")), "{err:?}");
    assert!(!f.healthy());
}

#[test]
fn an_invalid_reply_with_the_current_id_fails_the_instance() {
    let (log, lines) = sink();
    let command =
        r#"read line; echo 'not json'; echo '{"id": 7}'; echo '{"id": 1, "failed": [{"index": 5}]}'; sleep 60"#;
    let mut f = ProcessFactory::new(command, &BTreeMap::new(), 5_000, log).instantiate().unwrap();
    let err = f.invoke(&[event(0, None, None)]).unwrap_err();
    assert!(matches!(&err, InvokeError::Failed(m) if m.starts_with("invalid reply: failed index 5")), "{err:?}");
    assert!(!f.healthy());
    let logged: Vec<String> = lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect();
    assert_eq!(logged, vec!["not json".to_string(), r#"{"id": 7}"#.to_string()]);
}

#[test]
fn a_missing_shell_command_fails_at_the_first_invocation() {
    let (log, _) = sink();
    let mut f = ProcessFactory::new("no-such-command-xyz", &BTreeMap::new(), 5_000, log).instantiate().unwrap();
    let err = f.invoke(&[event(0, None, None)]).unwrap_err();
    assert!(matches!(&err, InvokeError::Failed(m) if m.contains("status 127") && m.contains("not found")), "{err:?}");
}

#[test]
fn a_command_that_cannot_be_spawned_fails_to_start() {
    let (log, _) = sink();
    // One argument longer than Linux's MAX_ARG_STRLEN (128 KiB): execve fails with E2BIG.
    let command = format!("echo {}", "x".repeat(200_000));
    let err = ProcessFactory::new(&command, &BTreeMap::new(), 5_000, log).instantiate().err().unwrap();
    assert!(matches!(&err, InvokeError::Start(m) if m.contains("cannot run")), "{err:?}");
}

#[test]
fn the_function_env_may_set_its_own_path() {
    let (log, _) = sink();
    let env = BTreeMap::from([("PATH".to_string(), "/nonexistent".to_string())]);
    let reply = r#"{"id": 1, "outputs": [{"value": "ok"}]}"#;
    let command = format!("read line; echo '{reply}'; read line");
    let mut f = ProcessFactory::new(&command, &env, 5_000, log).instantiate().unwrap();
    assert_eq!(f.invoke(&[event(0, None, None)]).unwrap().outputs[0].value.as_deref(), Some(&b"ok"[..]));
}

#[test]
fn a_process_that_closes_its_stdout_is_killed() {
    let (log, _) = sink();
    let mut f = ProcessFactory::new("exec >&-; echo closing >&2; sleep 60", &BTreeMap::new(), 10_000, log)
        .instantiate()
        .unwrap();
    let started = Instant::now();
    let err = f.invoke(&[event(0, None, None)]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err, InvokeError::Failed("process closed its stdout (killed); last stderr line: closing".into()));
}
