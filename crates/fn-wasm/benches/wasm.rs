//! `cargo bench -p freshet-fn-wasm`: the WASM runtime's throughput (the WAT identity function,
//! batches of 1000 events with 100-byte values: encode + invoke + decode), its cold start
//! (instantiate), and what the time limit costs (no interruption vs epochs vs fuel, raw wasmtime).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use freshet_fn_wasm::{abi, null_log, WasmFactory};
use freshet_functions::{Event, Runtime};

const BATCH: usize = 1000;
const RUN: Duration = Duration::from_secs(2);

fn batch() -> Vec<Event> {
    (0..BATCH)
        .map(|i| Event {
            topic: "bench".into(),
            partition: 0,
            offset: i as i64,
            timestamp: 1_700_000_000_000,
            key: Some(format!("key-{i:04}").into_bytes().into()),
            value: Some(vec![b'x'; 100].into()),
            headers: vec![],
        })
        .collect()
}

/// Runs `f` (which handles `per_call` events) repeatedly for `RUN`; events per second.
fn rate(per_call: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..10 {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < RUN {
        f();
        calls += 1;
    }
    (calls as f64 * per_call as f64) / start.elapsed().as_secs_f64()
}

fn main() {
    let wat = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions/wat/identity.wat");
    let wasm = wat::parse_file(wat).unwrap();
    let events = batch();

    // Throughput, end to end.
    let f = WasmFactory::new(&wasm, 10_000, 64, null_log()).unwrap();
    let mut rt = f.instantiate_wasm().unwrap();
    let eps = rate(BATCH, || {
        let reply = rt.invoke(&events).unwrap();
        assert_eq!(reply.outputs.len(), BATCH);
        if !rt.healthy() {
            rt = f.instantiate_wasm().unwrap();
        }
    });
    println!("identity, batches of {BATCH} x 100 B, encode + invoke + decode: {:.2} M events/s", eps / 1e6);

    // Its parts.
    let mut buf = Vec::new();
    let eps = rate(BATCH, || abi::encode_batch(&events, &mut buf).unwrap());
    println!("  encode alone: {:.2} M events/s", eps / 1e6);
    let reply = identity_reply(&events);
    let eps = rate(BATCH, || {
        abi::decode_reply(&reply, BATCH).unwrap();
    });
    println!("  decode alone: {:.2} M events/s", eps / 1e6);

    // Cold start: WasmFactory::instantiate (store, WASI context, instance, exports).
    let mut times: Vec<Duration> = (0..2000)
        .map(|_| {
            let start = Instant::now();
            let rt = f.instantiate_wasm().unwrap();
            let t = start.elapsed();
            drop(rt);
            t
        })
        .collect();
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "cold start (instantiate), identity.wat: mean {:.1} us, p50 {:.1} us, p99 {:.1} us",
        mean.as_secs_f64() * 1e6,
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 99 / 100].as_secs_f64() * 1e6
    );
    let c = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions/c/wrap_json.wasm");
    if let Ok(c) = std::fs::read(&c) {
        let f = WasmFactory::new(&c, 10_000, 64, null_log()).unwrap();
        let start = Instant::now();
        for _ in 0..1000 {
            f.instantiate_wasm().unwrap();
        }
        println!(
            "cold start, the C example (wasi-libc, _initialize): mean {:.1} us",
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    interruption_cost(&wasm, &events);
}

fn identity_reply(events: &[Event]) -> Vec<u8> {
    let mut input = Vec::new();
    abi::encode_batch(events, &mut input).unwrap();
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    let mut p = 4 + u32::from_le_bytes(input[..4].try_into().unwrap()) as usize + 4;
    for e in events {
        let start = p + 20;
        let size = 4 + e.key.as_ref().map_or(0, |b| b.len()) + 4 + e.value.as_ref().map_or(0, |b| b.len()) + 4;
        assert!(e.headers.is_empty());
        out.extend_from_slice(&(-1i32).to_le_bytes());
        out.extend_from_slice(&input[start..start + size]);
        p = start + size;
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// The guest's `freshet_handle` alone (the batch written once), under three engines: no time
/// limit, epoch interruption (what the runtime uses), fuel.
fn interruption_cost(wasm: &[u8], events: &[Event]) {
    use wasmtime::{Config, Engine, Instance, Module, Store};
    let mut input = Vec::new();
    abi::encode_batch(events, &mut input).unwrap();
    for mode in ["none", "epoch", "fuel"] {
        let mut config = Config::new();
        config.epoch_interruption(mode == "epoch");
        config.consume_fuel(mode == "fuel");
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        if mode == "fuel" {
            store.set_fuel(u64::MAX).unwrap();
        }
        if mode == "epoch" {
            store.set_epoch_deadline(u64::MAX / 2);
        }
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "freshet_alloc").unwrap();
        let handle = instance.get_typed_func::<(i32, i32), i64>(&mut store, "freshet_handle").unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let ptr = alloc.call(&mut store, input.len() as i32).unwrap();
        memory.write(&mut store, ptr as usize, &input).unwrap();
        let eps = rate(events.len(), || {
            handle.call(&mut store, (ptr, input.len() as i32)).unwrap();
        });
        println!("  guest freshet_handle alone, time limit by {mode}: {:.2} M events/s", eps / 1e6);
    }
}
