//! Event-triggered functions: a user's function (WASM, a process, an HTTP endpoint) bound to a
//! trigger (a topic, HTTP, a timer), run by a pool of workers that scales with the trigger's
//! backlog, in order per partition, at least once, with retries and a dead-letter topic.
//!
//! Layers, each one job:
//! - [`event`]: what a function receives and returns ([`Event`], [`Output`], [`Reply`]).
//! - [`runtime`]: the [`Runtime`] trait every kind of function implements, and its factory.
//! - [`spec`]: a function's definition as deployed ([`FunctionSpec`]), validated.
//! - [`process`] and [`http`]: the process (JSON lines) and HTTP (CloudEvents) runtimes. The
//!   WASM runtime lives in its own crate (`freshet-fn-wasm`) so that wasmtime builds once, apart.
//!
//! Topics are reached only through `freshet_common::topics::{Topics, GroupOffsets}`.

pub mod cron;
pub mod event;
pub mod filter;
pub mod host;
pub mod http;
pub mod metrics;
pub mod process;
pub mod runtime;
pub mod spec;

pub use event::{Event, Failure, Output, Reply};
pub use runtime::{InvokeError, LogSink, Runtime, RuntimeFactory};
pub use spec::{FunctionSpec, RuntimeSpec, Start, Trigger};
