//! Every limit of the system, named in one place (TigerBeetle style).
//!
//! A limit protects the broker from a client (request sizes, connection counts), or keeps an
//! on-disk structure inside what its encoding can address (segment sizes).

/// Largest request frame the Kafka listener accepts (Kafka's `socket.request.max.bytes`).
pub const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// Default number of client connections served at once; more are accepted and closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Requests a single connection may have in flight (read but not yet answered). The reader stops
/// reading the socket while this many are pending, which is the backpressure on a fast producer.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// Longest topic name Kafka allows (a partition directory name must stay under 255 bytes).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Smallest `segment.bytes` (Kafka's minimum: one legacy record header).
pub const MIN_SEGMENT_BYTES: u64 = 14;

/// Largest `segment.bytes`: positions in the offset index are 32-bit.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// Size of a RecordBatch header, v2 (magic 2).
pub const RECORD_BATCH_HEADER_BYTES: usize = 61;

/// Bytes before a batch's length field ends: base offset (8) + batch length (4).
pub const LOG_OVERHEAD: usize = 12;

/// Longest a Fetch may wait for `min_bytes` (the client's `max_wait_ms` is capped at this).
pub const MAX_FETCH_WAIT_MS: i32 = 60_000;

/// Largest response a single Fetch may return, whatever the client asks for.
pub const MAX_FETCH_RESPONSE_BYTES: i32 = 64 * 1024 * 1024;

/// How often the background maintenance loop applies retention and deferred flushes.
pub const MAINTENANCE_INTERVAL_MS: u64 = 1_000;

/// How long shutdown waits for in-flight requests before closing connections anyway.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;

/// Most bytes of idle read buffers kept for reuse (see `freshet-log`'s buffer pool).
pub const READ_BUFFER_POOL_BYTES: usize = 128 * 1024 * 1024;

/// Largest read buffer that is pooled; larger ones are freed.
pub const READ_BUFFER_POOL_MAX_BUFFER: usize = 16 * 1024 * 1024;

/// Most items COLLECT_LIST and COLLECT_SET keep per group (ksqlDB's default limit).
pub const SQL_MAX_COLLECT_ITEMS: usize = 1000;

/// Most distinct strings HISTOGRAM counts per group (ksqlDB's default limit).
pub const SQL_MAX_HISTOGRAM_BUCKETS: usize = 1000;

/// Most JOIN clauses in one query. Each join stage's state takes namespace bytes of the query's
/// store (`NS_JOIN + 3 * stage` for table rows, `NS_JOIN_BUFFERS + 2 * stage` for stream-stream
/// buffers, in `freshet-sql`'s query.rs): with at most 32 stages they stay below 128 and 256,
/// apart and inside one byte.
pub const SQL_MAX_JOINS: usize = 32;

/// Records a persistent query reads from one input partition per processing step.
pub const SQL_POLL_BATCH: usize = 1024;

/// The buffers the SQL engine's output values are cut from (`Serde::serialize_shared`): one
/// allocation for many records; a buffer lives until the last record cut from it is dropped.
pub const SQL_OUTPUT_BUFFER_BYTES: usize = 64 * 1024;

/// Longest a task of a join waits, without processing, for an input whose repartition
/// tasks (running on this server) have not sent it all they read yet (Kafka Streams'
/// `max.task.idle.ms`): past it, the task processes what it has.
pub const SQL_MAX_TASK_IDLE_MS: u64 = 10_000;

/// Inside `freshet serve` one transaction (outputs, changelog, progress) covers several
/// processing steps of a query: until it has read this many records, or
/// [`SQL_COMMIT_INTERVAL_MS`] has passed, or its input runs dry. Each transaction costs a few
/// fsyncs and thread hand-offs whatever its size.
pub const SQL_COMMIT_MAX_RECORDS: usize = 16 * 1024;

/// Longest one transaction of a persistent query keeps collecting steps (ksqlDB's
/// `commit.interval.ms` under exactly-once is 100 ms); also how long statements and pull
/// queries may wait behind one query.
pub const SQL_COMMIT_INTERVAL_MS: u64 = 50;

/// How long the SQL engine's thread sleeps when no query had new input and no statement is
/// waiting (a statement sent meanwhile wakes it at once).
pub const SQL_ENGINE_IDLE_MS: u64 = 10;

/// SQL servers sharing a cluster split the persistent queries over a consumer group: a query
/// runs on the member assigned the partition (slot) its id hashes to, of a placement topic with
/// this many partitions. More slots spread few queries more evenly; each is a partition.
pub const SQL_PLACEMENT_SLOTS: i32 = 16;

/// How often a SQL server heartbeats in the placement group (well under the group's session
/// timeout; at once while it takes or gives up queries).
pub const SQL_GROUP_HEARTBEAT_MS: u64 = 1_000;

/// How often a SQL server reads what other servers appended to the command topic (and before
/// every statement it runs).
pub const SQL_COMMAND_POLL_MS: u64 = 250;

/// A persistent query whose step failed (a write the cluster refused, a broken connection) is
/// started again from its changelog and progress after this long, doubling at each failure in
/// a row up to `SQL_QUERY_RETRY_MAX_MS`.
pub const SQL_QUERY_RETRY_MS: u64 = 1_000;
pub const SQL_QUERY_RETRY_MAX_MS: u64 = 60_000;

/// How often the aggregation tasks of a split query delete, from its repartition topic, the
/// records they have committed past (Kafka Streams' `repartition.purge.interval.ms` is 30 s):
/// the topic holds about one interval of records, whatever its retention.
pub const SQL_REPARTITION_PURGE_MS: u64 = 5_000;

/// Most bytes the SQL engine reads from one partition per read (of the embedded broker, or per
/// Fetch from an external cluster).
pub const SQL_READ_MAX_BYTES: usize = 1024 * 1024;

/// Longest the SQL engine waits for one of its writes to the embedded broker to become durable.
pub const SQL_APPEND_TIMEOUT_MS: u64 = 30_000;

/// Longest one call of the SQL engine to an external Kafka cluster may take (`serve
/// --external-kafka`), connecting included; the engine's thread waits at most this long.
pub const SQL_KAFKA_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Times the SQL engine tries a call to an external Kafka cluster that failed on a broken
/// connection or a stale leader (reconnecting in between). A write is tried again only when
/// it cannot have reached the cluster.
pub const SQL_KAFKA_ATTEMPTS: usize = 3;

/// Pause between two attempts of a call to an external Kafka cluster.
pub const SQL_KAFKA_RETRY_BACKOFF_MS: u64 = 200;

/// How long the SQL engine trusts a partition count it read from an external cluster's
/// metadata (the engine asks for it on every step; topics it creates or deletes are refreshed
/// at once).
pub const SQL_KAFKA_METADATA_MAX_AGE_MS: u64 = 1_000;

/// Largest record batch (estimated, before framing) the SQL engine and the function host
/// write, to the embedded broker or an external cluster; larger appends are split (Kafka's
/// default `max.message.bytes` is about 1 MiB).
pub const SQL_KAFKA_BATCH_BYTES: usize = 512 * 1024;

/// The per-thread buffer the embedded broker's in-process writers (SQL engine, function host)
/// encode record batches into is kept for the next write only up to this size.
pub const ENCODE_BUFFER_KEEP_BYTES: usize = 4 * 1024 * 1024;

/// Most records an in-process read of the embedded broker makes room for before it sees them.
pub const READ_RESERVE_RECORDS: usize = 64 * 1024;

/// Rows a push query may have in flight to its HTTP client; when they are not taken, the query
/// is not stepped (its input waits in the log).
pub const SQL_PUSH_CHANNEL_ROWS: usize = 1024;

/// Most push queries (`EMIT CHANGES` over `/query`) running at once.
pub const SQL_MAX_PUSH_QUERIES: usize = 100;

/// Transaction timeout of a persistent query's step (its outputs and progress, committed
/// together): a transaction open longer is aborted by the coordinator.
pub const SQL_TXN_TIMEOUT_MS: i32 = 60_000;

/// Page cache of one query's state store file (redb), in bytes.
pub const SQL_STATE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Page cache of one table's pull-query store file (redb), in bytes.
pub const SQL_TABLE_STORE_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Most entries one state map of a query keeps decoded in memory (clean ones beyond it are
/// evicted after each step; they stay in the store file).
pub const SQL_STATE_CACHE_ENTRIES: usize = 100_000;

/// Longest a query's state store (or a table's pull-query store) goes without an fsync'd commit. Commits in between are not
/// fsynced: after a crash the store returns to its last durable commit and the changelog
/// supplies the rest.
pub const SQL_STATE_DURABLE_INTERVAL_MS: u64 = 5_000;

/// Largest request body the HTTP (ksqlDB REST) listener accepts.
pub const HTTP_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest an HTTP request waits for the SQL engine to answer.
pub const HTTP_ENGINE_TIMEOUT_MS: u64 = 60_000;

// ---- Functions ---------------------------------------------------------------------------------

/// Largest function code (a WASM module) accepted by a deploy.
pub const FN_MAX_CODE_BYTES: usize = 32 * 1024 * 1024;

/// Most events in one invocation.
pub const FN_MAX_BATCH_SIZE: usize = 10_000;

/// Default events per invocation.
pub const FN_DEFAULT_BATCH_SIZE: usize = 100;

/// Default and largest time limit of one invocation.
pub const FN_DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const FN_MAX_TIMEOUT_MS: u64 = 900_000;

/// Default memory limit of a WASM instance (linear memory).
pub const FN_DEFAULT_MEMORY_MB: u32 = 64;
pub const FN_MAX_MEMORY_MB: u32 = 4096;

/// Default and largest number of workers of one function.
pub const FN_DEFAULT_MAX_CONCURRENCY: u32 = 8;
pub const FN_MAX_CONCURRENCY: u32 = 256;

/// Default attempts per event before it goes to the dead-letter topic.
pub const FN_DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Retry backoff: first delay, doubled per attempt up to the maximum.
pub const FN_RETRY_BACKOFF_INITIAL_MS: u64 = 100;
pub const FN_RETRY_BACKOFF_MAX_MS: u64 = 10_000;

/// How often the autoscaler looks at each function's lag.
pub const FN_SCALE_TICK_MS: u64 = 100;

/// The autoscaler sizes a pool to work off its backlog within this time: workers = lag ×
/// measured processing time per event / this (at most one per partition with a backlog when
/// ordered, at most `max_concurrency`).
pub const FN_SCALE_DRAIN_TARGET_MS: u64 = 1_000;

/// How often a function host heartbeats in its functions' consumer groups (well under the
/// groups' session timeout; more often while it releases partitions).
pub const FN_GROUP_HEARTBEAT_MS: u64 = 1_000;

/// A worker with nothing to do for this long stops (the pool shrinks, down to zero).
pub const FN_DEFAULT_IDLE_MS: u64 = 5_000;

/// Most events a worker reads from a partition at once (then invoked `batch_size` at a time).
pub const FN_READ_CHUNK_EVENTS: usize = 10_000;

/// A worker writes the outputs of the batches it ran in this long together, then commits their
/// offsets once: the most output latency it adds, for far fewer fsyncs with fast functions.
pub const FN_FLUSH_INTERVAL_MS: u64 = 50;

/// ... or sooner, once its pending outputs' keys and values reach this many bytes: outputs are
/// then encoded while still in the CPU's caches, into a buffer small enough to be kept
/// (`ENCODE_BUFFER_KEEP_BYTES`).
pub const FN_FLUSH_BYTES: usize = 2 * 1024 * 1024;

/// Most batches a worker processes from one partition before it lets another partition in.
pub const FN_PARTITION_QUANTUM_BATCHES: usize = 64;

/// Most bytes of a process function's reply line, and of an HTTP function's response body.
pub const FN_MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Lines of a function's log kept for `freshet fn logs` without reading the logs topic.
pub const FN_LOG_LINE_MAX_BYTES: usize = 16 * 1024;

/// How long a process function whose stdout ended is given to exit on its own (so that its exit
/// status and last stderr line can be reported) before it is killed.
pub const FN_PROCESS_EXIT_WAIT_MS: u64 = 1_000;

/// Idle HTTP connections kept per host for the HTTP functions of one deployed version (shared
/// by its workers, so as many as it may have workers).
pub const FN_HTTP_IDLE_CONNECTIONS_PER_HOST: usize = FN_MAX_CONCURRENCY as usize;

/// Most bytes of an HTTP function's error response quoted in the event's failure.
pub const FN_HTTP_ERROR_SNIPPET_BYTES: usize = 512;

/// How often the WASM runtime's clock ticks (the epoch of wasmtime's epoch interruption): a
/// WASM invocation's time limit is enforced to within this precision.
pub const FN_WASM_EPOCH_TICK_MS: u64 = 2;

/// A WASM instance is replaced by a fresh one after this many invocations (guests whose
/// allocator never frees, like AssemblyScript's stub runtime, would otherwise run out of memory).
pub const FN_WASM_RECYCLE_INVOCATIONS: u64 = 10_000;

/// A WASM instance whose linear memory has grown past this percentage of its memory limit (and
/// past its initial size) is replaced by a fresh one after the invocation that grew it.
pub const FN_WASM_RECYCLE_MEMORY_PERCENT: u64 = 50;
