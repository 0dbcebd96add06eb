//! The WASM runtime against the example guests of `examples/functions/` and small WAT guests that
//! break the ABI or the limits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet_common::limits::FN_WASM_RECYCLE_INVOCATIONS;
use freshet_fn_wasm::{null_log, WasmFactory};
use freshet_functions::{Event, Failure, InvokeError, LogSink, Output, Reply, Runtime, RuntimeFactory};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions")
}

fn wat_example(name: &str) -> Vec<u8> {
    wat::parse_file(examples().join("wat").join(name)).unwrap()
}

fn factory(wasm: &[u8]) -> WasmFactory {
    WasmFactory::new(wasm, 1_000, 16, null_log()).unwrap()
}

fn event(i: i64, key: Option<&str>, value: Option<&str>, headers: &[(&str, Option<&str>)]) -> Event {
    Event {
        topic: "orders".into(),
        partition: 2,
        offset: 100 + i,
        timestamp: 1_700_000_000_000 + i,
        key: key.map(|k| k.as_bytes().to_vec().into()),
        value: value.map(|v| v.as_bytes().to_vec().into()),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.map(|v| v.as_bytes().to_vec()))).collect(),
    }
}

fn sample() -> Vec<Event> {
    vec![
        event(0, Some("k0"), Some("hello"), &[("h1", Some("v1")), ("h2", None)]),
        event(1, None, Some(""), &[]),
        event(2, Some(""), None, &[("", Some(""))]),
        event(3, None, None, &[]),
        event(4, Some("k\0\u{ff}"), Some("mIxEd ÄÖ case"), &[("é", Some("x"))]),
    ]
}

fn as_output(e: &Event, topic: Option<&str>) -> Output {
    Output { topic: topic.map(str::to_owned), key: e.key.clone(), value: e.value.clone(), headers: e.headers.clone() }
}

type Lines = Arc<Mutex<Vec<(String, String)>>>;

/// A sink that keeps the lines.
fn capture() -> (LogSink, Lines) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (Arc::new(move |s: &str, line: &str| l.lock().unwrap().push((s.to_owned(), line.to_owned()))), lines)
}

/// A guest whose `freshet_handle` returns `reply` (written at 4096) as (4096 + `ptr_delta`,
/// `reply.len() + len_delta`), after running `body`.
fn fixed_reply(reply: &[u8], ptr_delta: i64, len_delta: i64, imports: &str, body: &str) -> Vec<u8> {
    let data: String = reply.iter().map(|b| format!("\\{b:02x}")).collect();
    let ptr = 4096 + ptr_delta;
    let len = reply.len() as i64 + len_delta;
    wat::parse_str(format!(
        r#"(module
            {imports}
            (memory (export "memory") 1)
            (data (i32.const 4096) "{data}")
            (func (export "freshet_alloc") (param i32) (result i32)
              (if (i32.lt_u (i32.shl (memory.size) (i32.const 16)) (i32.add (i32.const 65536) (local.get 0)))
                (then (drop (memory.grow (i32.add (i32.shr_u (local.get 0) (i32.const 16)) (i32.const 1))))))
              (i32.const 65536))
            (func (export "freshet_handle") (param i32 i32) (result i64)
              {body}
              (i64.or (i64.shl (i64.const {ptr}) (i64.const 32)) (i64.const {len}))))"#
    ))
    .unwrap()
}

fn empty_reply() -> Vec<u8> {
    [0u32, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn identity_round_trips_keys_values_headers_and_nulls() {
    let f = factory(&wat_example("identity.wat"));
    let mut rt = f.instantiate().unwrap();
    let batch = sample();
    let reply = rt.invoke(&batch).unwrap();
    let want: Vec<Output> = batch.iter().map(|e| as_output(e, None)).collect();
    assert_eq!(reply, Reply { outputs: want, failed: vec![] });
    // The instance is reused: a second, different batch.
    let reply = rt.invoke(&batch[1..2]).unwrap();
    assert_eq!(reply.outputs, vec![as_output(&batch[1], None)]);
    assert!(rt.healthy());
}

#[test]
fn a_map_to_an_explicit_topic() {
    let f = factory(&wat_example("uppercase.wat"));
    let mut rt = f.instantiate().unwrap();
    let batch = sample();
    let reply = rt.invoke(&batch).unwrap();
    let upper = |e: &Event| {
        let mut o = as_output(e, Some("uppercased"));
        o.value = e.value.as_ref().map(|v| v.to_ascii_uppercase().into());
        o
    };
    assert_eq!(reply.outputs, batch.iter().map(upper).collect::<Vec<_>>());
    assert_eq!(reply.outputs[4].value.as_deref(), Some("MIXED ÄÖ CASE".as_bytes()));
    assert!(reply.failed.is_empty());
}

#[test]
fn a_partial_failure_list() {
    let f = factory(&wat_example("fail_some.wat"));
    let mut rt = f.instantiate().unwrap();
    let batch = vec![
        event(0, None, Some("ok"), &[]),
        event(1, None, Some("fail me"), &[]),
        event(2, None, Some("fai"), &[]),
        event(3, None, Some("fail"), &[("h", None)]),
    ];
    let reply = rt.invoke(&batch).unwrap();
    assert_eq!(reply.outputs, vec![as_output(&batch[0], None), as_output(&batch[2], None)]);
    assert_eq!(
        reply.failed,
        vec![Failure { index: 1, error: "rejected".into() }, Failure { index: 3, error: "rejected".into() }]
    );
    assert!(rt.healthy());
}

#[test]
fn a_whole_batch_failure_keeps_the_instance() {
    let mut reply = 1u32.to_le_bytes().to_vec();
    reply.extend_from_slice(&9u32.to_le_bytes());
    reply.extend_from_slice(b"bad batch");
    let mut rt = factory(&fixed_reply(&reply, 0, 0, "", "")).instantiate().unwrap();
    assert_eq!(rt.invoke(&sample()), Err(InvokeError::Failed("bad batch".into())));
    assert!(rt.healthy());
}

#[test]
fn a_trap_fails_the_batch_and_the_instance() {
    let f = factory(&wat_example("boom.wat"));
    let mut rt = f.instantiate().unwrap();
    assert_eq!(rt.invoke(&sample()).unwrap().outputs.len(), 5);
    let err = rt.invoke(&[event(0, None, Some("it goes boom!"), &[])]).unwrap_err();
    match &err {
        InvokeError::Failed(msg) => {
            eprintln!("{msg}");
            assert!(msg.contains("unreachable"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!rt.healthy());
    assert!(rt.invoke(&sample()).is_err());
    // A new instance works.
    assert!(f.instantiate().unwrap().invoke(&sample()).is_ok());
}

#[test]
fn an_endless_loop_times_out() {
    let wasm = fixed_reply(&empty_reply(), 0, 0, "", "(loop $l (br $l))");
    let f = WasmFactory::new(&wasm, 100, 16, null_log()).unwrap();
    let mut rt = f.instantiate().unwrap();
    let start = Instant::now();
    assert_eq!(rt.invoke(&sample()), Err(InvokeError::Timeout(100)));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(600), "{took:?}");
    assert!(!rt.healthy());
}

#[test]
fn growing_past_the_memory_limit_fails() {
    // 2 MiB limit; the guest grows by 4 MiB.
    let wasm = fixed_reply(&empty_reply(), 0, 0, "", "(drop (memory.grow (i32.const 64)))");
    let f = WasmFactory::new(&wasm, 1_000, 2, null_log()).unwrap();
    let mut rt = f.instantiate().unwrap();
    match rt.invoke(&sample()) {
        Err(InvokeError::Failed(msg)) => assert!(msg.contains("memory limit of 2 MiB"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(!rt.healthy());
    // A module whose initial memory is over the limit does not start.
    let big = wat::parse_str(
        r#"(module (memory (export "memory") 100)
            (func (export "freshet_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "freshet_handle") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let f = WasmFactory::new(&big, 1_000, 2, null_log()).unwrap();
    assert!(matches!(f.instantiate().err(), Some(InvokeError::Start(_))));
}

#[test]
fn an_instance_that_grew_past_the_threshold_is_recycled() {
    // 4 MiB limit; the guest grows to over half of it once, then stays.
    let body = "(if (i32.lt_u (memory.size) (i32.const 40)) (then (drop (memory.grow (i32.const 40)))))";
    let wasm = fixed_reply(&empty_reply(), 0, 0, "", body);
    let f = WasmFactory::new(&wasm, 1_000, 4, null_log()).unwrap();
    let mut rt = f.instantiate_wasm().unwrap();
    assert_eq!(rt.invoke(&sample()), Ok(Reply::default()));
    assert!(rt.memory_bytes() > 2 << 20);
    assert!(!rt.healthy());
    // A module that starts above the threshold (40 pages) is kept until it grows.
    let reply: String = empty_reply().iter().map(|b| format!("\\{b:02x}")).collect();
    let wasm = wat::parse_str(format!(
        r#"(module (memory (export "memory") 40)
            (data (i32.const 0) "{reply}")
            (func (export "freshet_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "freshet_handle") (param i32 i32) (result i64) (i64.const 12)))"#
    ))
    .unwrap();
    let f = WasmFactory::new(&wasm, 1_000, 4, null_log()).unwrap();
    let mut rt = f.instantiate_wasm().unwrap();
    for _ in 0..3 {
        assert_eq!(rt.invoke(&sample()), Ok(Reply::default()));
        assert!(rt.healthy());
    }
}

#[test]
fn malformed_replies_fail() {
    let ok = empty_reply();
    let cases = [
        ("pointer past the memory", fixed_reply(&ok, 1 << 30, 0, "", "")),
        ("length past the memory", fixed_reply(&ok, 0, 1 << 20, "", "")),
        ("truncated", fixed_reply(&ok, 0, -1, "", "")),
        ("trailing bytes", fixed_reply(&ok, 0, 1, "", "")),
        ("pointer near 4 GiB", fixed_reply(&ok, 0xffff_fff0 - 4096, 0, "", "")),
        ("huge output count", fixed_reply(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], 0, 0, "", "")),
        ("unknown status", fixed_reply(&[7, 0, 0, 0], 0, 0, "", "")),
    ];
    for (what, wasm) in cases {
        let mut rt = factory(&wasm).instantiate().unwrap();
        match rt.invoke(&sample()) {
            Err(InvokeError::Failed(msg)) => eprintln!("{what}: {msg}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(!rt.healthy(), "{what}");
    }
    // freshet_alloc returning a pointer outside the memory.
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "freshet_alloc") (param i32) (result i32) (i32.const -8))
            (func (export "freshet_handle") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let mut rt = factory(&wasm).instantiate().unwrap();
    assert!(matches!(rt.invoke(&sample()), Err(InvokeError::Failed(_))));
    assert!(!rt.healthy());
}

#[test]
fn modules_without_the_abi_do_not_start() {
    let cases = [
        r#"(module)"#,
        r#"(module (memory (export "memory") 1) (func (export "freshet_alloc") (param i32) (result i32) (i32.const 0)))"#,
        r#"(module (memory (export "memory") 1)
            (func (export "freshet_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "freshet_handle") (param i32 i32) (result i32) (i32.const 0)))"#,
        r#"(module (import "env" "nope" (func)) (memory (export "memory") 1)
            (func (export "freshet_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "freshet_handle") (param i32 i32) (result i64) (i64.const 0)))"#,
    ];
    for wat in cases {
        let err = WasmFactory::new(&wat::parse_str(wat).unwrap(), 1_000, 16, null_log()).err();
        assert!(matches!(err, Some(InvokeError::Start(_))), "{wat}: {err:?}");
    }
    assert!(matches!(WasmFactory::new(b"not wasm", 1_000, 16, null_log()).err(), Some(InvokeError::Start(_))));
}

#[test]
fn wasi_stdout_and_stderr_reach_the_log_sink() {
    let imports = r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (data (i32.const 200) "hello\nworld\npartial")
        (data (i32.const 300) "oops\n")"#;
    // iovecs at 100 (stdout) and 120 (stderr); bytes written at 140.
    let body = r#"
        (i32.store (i32.const 100) (i32.const 200)) (i32.store (i32.const 104) (i32.const 19))
        (drop (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 140)))
        (i32.store (i32.const 120) (i32.const 300)) (i32.store (i32.const 124) (i32.const 5))
        (drop (call $fd_write (i32.const 2) (i32.const 120) (i32.const 1) (i32.const 140)))"#;
    let (sink, lines) = capture();
    let f = WasmFactory::new(&fixed_reply(&empty_reply(), 0, 0, imports, body), 1_000, 16, sink).unwrap();
    let mut rt = f.instantiate().unwrap();
    assert_eq!(rt.invoke(&sample()), Ok(Reply::default()));
    let got = lines.lock().unwrap().clone();
    let want = [("stdout", "hello"), ("stdout", "world"), ("stderr", "oops"), ("stdout", "partial")];
    assert_eq!(got, want.map(|(s, l)| (s.to_owned(), l.to_owned())));
}

#[test]
fn sleeping_is_not_supported() {
    // poll_oneoff with one clock subscription of an hour: ENOTSUP (58) at once.
    let imports =
        r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))"#;
    let body = r#"
        (i32.store8 (i32.const 108) (i32.const 0))
        (i64.store (i32.const 120) (i64.const 3600000000000))
        (if (i32.ne (call $poll (i32.const 100) (i32.const 200) (i32.const 1) (i32.const 300)) (i32.const 58))
          (then unreachable))"#;
    let mut rt = factory(&fixed_reply(&empty_reply(), 0, 0, imports, body)).instantiate().unwrap();
    let start = Instant::now();
    assert_eq!(rt.invoke(&sample()), Ok(Reply::default()));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn assemblyscript_abort_and_proc_exit_fail_with_their_message() {
    // An AssemblyScript string: its byte length at ptr - 4, then UTF-16LE.
    let imports = r#"(import "env" "abort" (func $abort (param i32 i32 i32 i32)))
        (data (i32.const 196) "\04\00\00\00h\00i\00")
        (data (i32.const 296) "\08\00\00\00a\00.\00t\00s\00")"#;
    let wasm = fixed_reply(
        &empty_reply(),
        0,
        0,
        imports,
        "(call $abort (i32.const 200) (i32.const 300) (i32.const 7) (i32.const 3))",
    );
    let mut rt = factory(&wasm).instantiate().unwrap();
    match rt.invoke(&sample()) {
        Err(InvokeError::Failed(msg)) => {
            eprintln!("{msg}");
            assert!(msg.contains("abort: hi at a.ts:7:3"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!rt.healthy());
    let imports = r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#;
    let wasm = fixed_reply(&empty_reply(), 0, 0, imports, "(call $exit (i32.const 3))");
    let mut rt = factory(&wasm).instantiate().unwrap();
    match rt.invoke(&sample()) {
        Err(InvokeError::Failed(msg)) => assert!(msg.contains("code 3"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(!rt.healthy());
}

#[test]
fn freshet_init_runs_once_per_instance() {
    // freshet_init sets the status word of the reply to 0; without it the reply is a failure.
    let mut reply = 1u32.to_le_bytes().to_vec();
    reply.extend_from_slice(&0u32.to_le_bytes());
    reply.extend_from_slice(&0u32.to_le_bytes());
    let wasm = wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
            (global $inits (mut i32) (i32.const 0))
            (func (export "freshet_init")
              (global.set $inits (i32.add (global.get $inits) (i32.const 1)))
              (i32.store (i32.const 4096) (i32.const 0)))
            (data (i32.const 4096) "{}")
            (func (export "freshet_alloc") (param i32) (result i32) (i32.const 8192))
            (func (export "freshet_handle") (param i32 i32) (result i64)
              (if (i32.ne (global.get $inits) (i32.const 1)) (then unreachable))
              (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const 12))))"#,
        reply.iter().map(|b| format!("\\{b:02x}")).collect::<String>()
    ))
    .unwrap();
    let mut rt = factory(&wasm).instantiate().unwrap();
    for _ in 0..3 {
        assert_eq!(rt.invoke(&sample()[..1]), Ok(Reply::default()));
    }
}

/// A built example, or `None` (with a note) when it has not been built, unless
/// FRESHET_REQUIRE_WASM_EXAMPLES=1.
fn built_example(path: &str) -> Option<Vec<u8>> {
    let path = examples().join(path);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) if std::env::var("FRESHET_REQUIRE_WASM_EXAMPLES").as_deref() == Ok("1") => {
            panic!("{} is missing: build the examples (see examples/functions/*/build.sh)", path.display())
        }
        Err(_) => {
            println!("skipped: {} is not built (see its build.sh)", path.display());
            None
        }
    }
}

#[test]
fn the_c_example_wraps_values_in_json_and_logs_to_stderr() {
    let Some(wasm) = built_example("c/wrap_json.wasm") else { return };
    let (sink, lines) = capture();
    let f = WasmFactory::new(&wasm, 1_000, 16, sink).unwrap();
    let mut rt = f.instantiate().unwrap();
    let batch = vec![event(0, Some("k"), Some("say \"hi\"\n"), &[("h", Some("v"))]), event(1, None, None, &[])];
    let reply = rt.invoke(&batch).unwrap();
    let mut want0 = as_output(&batch[0], None);
    want0.value = Some(br#"{"offset":100,"value":"say \"hi\"\n"}"#.to_vec().into());
    let mut want1 = as_output(&batch[1], None);
    want1.value = Some(br#"{"offset":101,"value":null}"#.to_vec().into());
    assert_eq!(reply, Reply { outputs: vec![want0, want1], failed: vec![] });
    let got = lines.lock().unwrap().clone();
    assert_eq!(got, vec![("stderr".to_owned(), "wrap_json: 2 events from orders".to_owned())]);
    assert!(rt.invoke(&batch).is_ok());
}

#[test]
fn the_assemblyscript_example_maps_values() {
    let Some(wasm) = built_example("assemblyscript/build/reverse.wasm") else { return };
    // 1 MiB of memory: the instance is recycled after about a thousand of these invocations.
    let f = WasmFactory::new(&wasm, 1_000, 1, null_log()).unwrap();
    let mut rt = f.instantiate().unwrap();
    let batch = sample();
    // Many invocations: the stub runtime never frees, the instance is recycled in time.
    let mut instances = 1;
    for _ in 0..3000 {
        let reply = rt.invoke(&batch).unwrap();
        let want: Vec<Output> = batch
            .iter()
            .map(|e| {
                let mut o = as_output(e, None);
                o.value = e.value.as_ref().map(|v| v.iter().rev().copied().collect());
                o
            })
            .collect();
        assert_eq!(reply.outputs, want);
        if !rt.healthy() {
            rt = f.instantiate().unwrap();
            instances += 1;
        }
    }
    assert!(instances > 1, "{instances} instances");
}

#[test]
fn an_instance_is_recycled_after_many_invocations() {
    let f = factory(&wat_example("identity.wat"));
    let mut rt = f.instantiate_wasm().unwrap();
    let batch = &sample()[..1];
    for _ in 1..FN_WASM_RECYCLE_INVOCATIONS {
        rt.invoke(batch).unwrap();
        assert!(rt.healthy());
    }
    rt.invoke(batch).unwrap();
    assert_eq!(rt.invocations(), FN_WASM_RECYCLE_INVOCATIONS);
    assert!(!rt.healthy());
}
