//! The WASM runtime of Freshet functions: a module compiled once per deployed version
//! ([`WasmFactory`]), instantiated per worker ([`WasmRuntime`]), called with a batch of events in
//! the binary ABI of `docs/functions-wasm-abi.md` (see [`abi`]).
//!
//! - One [`wasmtime::Engine`] per process ([`engine`]), with epoch interruption: a background
//!   thread ticks every `FN_WASM_EPOCH_TICK_MS`, and an invocation past its time limit traps
//!   ([`InvokeError::Timeout`]).
//! - Linear memory is limited to the spec's `memory_mb`; growing past it traps.
//! - Guests get WASI preview1 (wasmtime-wasi) with no files, network, arguments or environment:
//!   their stdout and stderr go line by line to the [`LogSink`]; `poll_oneoff` (sleeping) is not
//!   supported, so that no host call blocks past the time limit. AssemblyScript's `env.abort`
//!   traps with its message.
//! - [`Runtime::invoke`] blocks: call it from a plain thread (or `spawn_blocking`), never from
//!   an async task (WASI's host calls run on a Tokio runtime of their own).
//! - A trap, a bad reply or a limit hit fails the invocation ([`InvokeError::Failed`]) and
//!   makes the instance unhealthy; so do `FN_WASM_RECYCLE_*` (the instance is recycled).

pub mod abi;
mod logs;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use freshet_common::limits::{
    FN_MAX_REPLY_BYTES, FN_WASM_EPOCH_TICK_MS, FN_WASM_RECYCLE_INVOCATIONS, FN_WASM_RECYCLE_MEMORY_PERCENT,
};
use freshet_functions::{Event, InvokeError, LogSink, Reply, Runtime, RuntimeFactory};
use wasmtime::{
    Caller, Config, Engine, ExternType, FuncType, InstancePre, Linker, Memory, Module, ResourceLimiter, Store,
    StoreLimits, StoreLimitsBuilder, Trap, TypedFunc, ValType, WasmBacktrace,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::abi::Decoded;
use crate::logs::LogStream;

/// WASI preview1's errno for "not supported".
const WASI_ENOTSUP: i32 = 58;

/// The process's engine: compiled modules are only usable with the engine that compiled them,
/// and one engine shares one epoch ticker thread.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the WASM engine's configuration is valid");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(FN_WASM_EPOCH_TICK_MS));
                ticker.increment_epoch();
            })
            .expect("cannot start the WASM epoch thread");
        engine
    })
}

/// What a store holds: the guest's WASI context and its memory limiter.
struct State {
    wasi: WasiP1Ctx,
    limits: Limits,
}

/// `StoreLimits`, remembering that the memory limit was hit so that the trap can say so.
struct Limits {
    inner: StoreLimits,
    memory_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if desired > self.memory_bytes {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "the function's memory limit of {} MiB was hit (growing to {desired} bytes)",
                self.memory_bytes >> 20
            )));
        }
        allowed
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// One deployed version of a WASM function: its module compiled and linked once, instantiated
/// per worker.
#[derive(Clone)]
pub struct WasmFactory {
    pre: InstancePre<State>,
    timeout_ms: u64,
    memory_mb: u32,
    log: LogSink,
}

impl WasmFactory {
    /// Compiles and links `module` (WASM binary). `Err(Start)` for a module that does not
    /// compile, does not export the ABI (`memory`, `freshet_alloc`, `freshet_handle`) or imports
    /// what the runtime does not provide.
    pub fn new(module: &[u8], timeout_ms: u64, memory_mb: u32, log: LogSink) -> Result<WasmFactory, InvokeError> {
        let engine = engine();
        let module = Module::new(engine, module).map_err(|e| InvokeError::Start(format!("invalid module: {e:#}")))?;
        check_exports(&module).map_err(InvokeError::Start)?;
        let mut linker: Linker<State> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
            .and_then(|()| linker.func_wrap("env", "abort", abort).map(|_| ()))
            // A guest's sleep would block its worker past the time limit (epochs only interrupt
            // WASM code): `poll_oneoff` answers ENOTSUP instead.
            .and_then(|()| {
                linker.allow_shadowing(true);
                let poll_oneoff = |_: i32, _: i32, _: i32, _: i32| WASI_ENOTSUP;
                linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff).map(|_| ())
            })
            .map_err(|e| InvokeError::Start(format!("cannot link the WASM runtime: {e:#}")))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| InvokeError::Start(format!("{e:#}")))?;
        Ok(WasmFactory { pre, timeout_ms, memory_mb, log })
    }

    /// A new instance (what [`RuntimeFactory::instantiate`] returns, typed).
    pub fn instantiate_wasm(&self) -> Result<WasmRuntime, InvokeError> {
        let stdout = LogStream::new("stdout", self.log.clone());
        let stderr = LogStream::new("stderr", self.log.clone());
        let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).build_p1();
        let memory_bytes = (self.memory_mb as usize) << 20;
        let limits = Limits {
            inner: StoreLimitsBuilder::new().memory_size(memory_bytes).instances(1).build(),
            memory_bytes,
            hit: false,
        };
        let mut store = Store::new(self.pre.module().engine(), State { wasi, limits });
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(self.timeout_ms));
        let start = |e: wasmtime::Error| InvokeError::Start(format!("{e:#}"));
        let instance = self.pre.instantiate(&mut store).map_err(start)?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| start(missing("memory")))?;
        let alloc = instance.get_typed_func(&mut store, "freshet_alloc").map_err(start)?;
        let handle = instance.get_typed_func(&mut store, "freshet_handle").map_err(start)?;
        for init in ["_initialize", "freshet_init"] {
            if let Some(f) = instance.get_func(&mut store, init) {
                let f = f.typed::<(), ()>(&store).map_err(start)?;
                f.call(&mut store, ())
                    .map_err(|e| InvokeError::Start(format!("{init}: {}", describe(&e, &store, self.timeout_ms))))?;
            }
        }
        // A module that starts above the threshold is recycled only once it grows.
        let recycle_bytes =
            (memory_bytes / 100 * FN_WASM_RECYCLE_MEMORY_PERCENT as usize).max(memory.data_size(&store));
        Ok(WasmRuntime {
            store,
            memory,
            alloc,
            handle,
            timeout_ms: self.timeout_ms,
            recycle_bytes,
            invocations: 0,
            healthy: true,
            input: Vec::new(),
            logs: [stdout, stderr],
        })
    }
}

impl RuntimeFactory for WasmFactory {
    fn instantiate(&self) -> Result<Box<dyn Runtime>, InvokeError> {
        Ok(Box::new(self.instantiate_wasm()?))
    }
}

fn missing(export: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!("the module does not export `{export}`"))
}

/// Epoch ticks from now to a deadline at least `timeout_ms` away.
fn deadline_ticks(timeout_ms: u64) -> u64 {
    timeout_ms.div_ceil(FN_WASM_EPOCH_TICK_MS) + 1
}

/// The exports of the ABI, with their types.
fn check_exports(module: &Module) -> Result<(), String> {
    let func = |params: &[ValType], results: &[ValType]| {
        FuncType::new(module.engine(), params.iter().cloned(), results.iter().cloned())
    };
    let want = [
        ("freshet_alloc", func(&[ValType::I32], &[ValType::I32])),
        ("freshet_handle", func(&[ValType::I32, ValType::I32], &[ValType::I64])),
    ];
    for (name, ty) in &want {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if FuncType::eq(&f, ty) => {}
            Some(ExternType::Func(f)) => return Err(format!("`{name}` has the type {f}, not {ty}")),
            _ => return Err(format!("the module does not export the function `{name}`")),
        }
    }
    for name in ["_initialize", "freshet_init"] {
        match module.get_export(name) {
            None => {}
            Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
            Some(_) => return Err(format!("`{name}` must be a function without parameters or results")),
        }
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => Ok(()),
        Some(ExternType::Memory(_)) => Err("`memory` must be a 32-bit, unshared memory".into()),
        _ => Err("the module does not export its `memory`".into()),
    }
}

/// AssemblyScript's `abort(message, fileName, line, column)`: traps with the message.
fn abort(mut caller: Caller<'_, State>, msg: i32, file: i32, line: i32, col: i32) -> wasmtime::Result<()> {
    let memory = caller.get_export("memory").and_then(|e| e.into_memory());
    let text = |ptr: i32| memory.map(|m| as_string(m.data(&caller), ptr as u32)).unwrap_or_default();
    Err(wasmtime::Error::msg(format!("abort: {} at {}:{line}:{col}", text(msg), text(file))))
}

/// An AssemblyScript string: UTF-16LE, its byte length in the u32 before it (0 = null).
fn as_string(mem: &[u8], ptr: u32) -> String {
    let ptr = ptr as usize;
    if ptr < 4 || ptr > mem.len() {
        return String::new();
    }
    let len = u32::from_le_bytes([mem[ptr - 4], mem[ptr - 3], mem[ptr - 2], mem[ptr - 1]]) as usize;
    let bytes = &mem[ptr..ptr.saturating_add(len.min(4096)).min(mem.len())];
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// A failed call, in words (the caller maps an interrupt to a timeout first).
fn describe(e: &wasmtime::Error, store: &Store<State>, timeout_ms: u64) -> String {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return format!("the function exited (proc_exit) with code {}", exit.0);
    }
    if store.data().limits.hit {
        return format!("the function's memory limit of {} MiB was hit", store.data().limits.memory_bytes >> 20);
    }
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        return format!("timed out after {timeout_ms} ms");
    }
    // One line: the cause, and where in the guest.
    let mut msg = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    if let Some(frame) = e.downcast_ref::<WasmBacktrace>().and_then(|bt| bt.frames().first()) {
        match frame.func_name() {
            Some(name) => msg.push_str(&format!(" (in {name}")),
            None => msg.push_str(&format!(" (in wasm function {}", frame.func_index())),
        }
        if let Some(offset) = frame.module_offset() {
            msg.push_str(&format!(" at 0x{offset:x}"));
        }
        msg.push(')');
    }
    msg
}

/// One instance of a WASM function, owned by one worker.
pub struct WasmRuntime {
    store: Store<State>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i64>,
    timeout_ms: u64,
    /// Past this memory size the instance is recycled.
    recycle_bytes: usize,
    invocations: u64,
    healthy: bool,
    /// The encoded batch, kept to reuse its allocation.
    input: Vec<u8>,
    logs: [LogStream; 2],
}

impl WasmRuntime {
    /// Invocations made so far.
    pub fn invocations(&self) -> u64 {
        self.invocations
    }

    /// The guest's linear memory, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    fn call(&mut self, batch: &[Event]) -> Result<Reply, InvokeError> {
        abi::encode_batch(batch, &mut self.input).map_err(InvokeError::Failed)?;
        let len = i32::try_from(self.input.len())
            .map_err(|_| InvokeError::Failed(format!("a batch of {} bytes is too large", self.input.len())))?;
        self.store.set_epoch_deadline(deadline_ticks(self.timeout_ms));
        let ptr = self.alloc.call(&mut self.store, len).map_err(|e| self.trapped("freshet_alloc", &e))?;
        self.memory.write(&mut self.store, ptr as u32 as usize, &self.input).map_err(|_| {
            self.bad(format!(
                "freshet_alloc({len}) returned {ptr}, outside the memory of {} bytes",
                self.memory_bytes()
            ))
        })?;
        let packed = self.handle.call(&mut self.store, (ptr, len)).map_err(|e| self.trapped("freshet_handle", &e))?;
        let (reply_ptr, reply_len) = ((packed as u64 >> 32) as usize, packed as u32 as usize);
        if reply_len > FN_MAX_REPLY_BYTES {
            return Err(self.bad(format!("a reply of {reply_len} bytes is over the limit of {FN_MAX_REPLY_BYTES}")));
        }
        let data = self.memory.data(&self.store);
        let Some(reply) = data.get(reply_ptr..reply_ptr + reply_len) else {
            let size = data.len();
            return Err(
                self.bad(format!("the reply ({reply_len} bytes at {reply_ptr}) is outside the memory of {size} bytes"))
            );
        };
        match abi::decode_reply(reply, batch.len()) {
            Ok(Decoded::Ok(reply)) => Ok(reply),
            Ok(Decoded::BatchFailed(msg)) => Err(InvokeError::Failed(msg)),
            Err(e) => Err(self.bad(format!("malformed reply: {e}"))),
        }
    }

    /// A call that trapped: the instance is done.
    fn trapped(&mut self, export: &str, e: &wasmtime::Error) -> InvokeError {
        self.healthy = false;
        if !self.store.data().limits.hit && matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return InvokeError::Timeout(self.timeout_ms);
        }
        InvokeError::Failed(format!("{export}: {}", describe(e, &self.store, self.timeout_ms)))
    }

    /// A guest that broke the ABI: the instance is done.
    fn bad(&mut self, msg: String) -> InvokeError {
        self.healthy = false;
        InvokeError::Failed(msg)
    }
}

impl Runtime for WasmRuntime {
    fn invoke(&mut self, batch: &[Event]) -> Result<Reply, InvokeError> {
        if !self.healthy {
            return Err(InvokeError::Failed("the WASM instance is no longer usable".into()));
        }
        let result = self.call(batch);
        for log in &self.logs {
            log.flush_partial();
        }
        self.invocations += 1;
        if self.invocations >= FN_WASM_RECYCLE_INVOCATIONS || self.memory_bytes() > self.recycle_bytes {
            self.healthy = false;
        }
        result
    }

    fn healthy(&self) -> bool {
        self.healthy
    }
}

/// For tests and benches: a sink that drops every line.
pub fn null_log() -> LogSink {
    Arc::new(|_: &str, _: &str| {})
}
