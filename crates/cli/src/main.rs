//! `freshet`: an event-streaming platform in one binary.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// mimalloc instead of the system allocator: records, events and batches are many small
/// short-lived allocations (glibc's malloc and free were a third of the CPU of a function
/// pipeline in `freshet bench functions`). Built without transparent huge pages (`no_thp`: no
/// `MADV_HUGEPAGE` on its memory): with them, memory mimalloc purged and used again was faulted
/// back in 2 MiB at a time, each zeroed by the kernel (a quarter of that pipeline's CPU). On a
/// host whose THP setting is `always` rather than `madvise`, `MIMALLOC_ALLOW_THP=0` does the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_functions;
mod bench_nexmark;
mod config;
mod consume;
mod functions;
mod group;
mod produce;
mod serve;
mod sql;
mod sql_shell;
mod sqltest;
mod sqltest_rest;
mod topic;

#[derive(Parser)]
#[command(name = "freshet", version, about = "Freshet: a durable event log that speaks the Kafka protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Bootstrap {
    /// Broker to talk to (host:port).
    #[arg(long, env = "FRESHET_BOOTSTRAP", default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// List, describe, reset and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Produce records from standard input, one per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// Measure the broker and this machine's raw limits.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// An interactive SQL shell (or a script runner with -f) for the server's SQL engine.
    Sql(sql_shell::SqlArgs),
    /// Run SQL test cases in ksqlDB's test-case JSON format (files or directories).
    SqlTest(sqltest::SqlTestArgs),
    /// Deploy, list, inspect, invoke and delete event-triggered functions.
    Fn(functions::cli::FnArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Directory holding the data.
    #[arg(long, env = "FRESHET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the Kafka listener (IP:PORT; port 0 picks a free one).
    #[arg(long, env = "FRESHET_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Address clients are told to connect to (HOST:PORT), if not the listener's.
    #[arg(long, env = "FRESHET_ADVERTISED_KAFKA")]
    advertised_kafka: Option<String>,
    /// Address of the HTTP listener, ksqlDB's REST API (IP:PORT; port 0 picks a free one).
    #[arg(long, env = "FRESHET_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Run only the SQL engine and the HTTP listener against an existing Kafka-protocol cluster
    /// (HOST:PORT[,HOST:PORT...]): no embedded broker, no Kafka listener, all topics there.
    #[arg(long, env = "FRESHET_EXTERNAL_KAFKA")]
    external_kafka: Option<String>,
    /// Create topics when clients ask for unknown ones (true/false).
    #[arg(long, env = "FRESHET_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Partitions of automatically created topics.
    #[arg(long, env = "FRESHET_DEFAULT_PARTITIONS")]
    default_partitions: Option<i32>,
    /// Most client connections served at once.
    #[arg(long, env = "FRESHET_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// TOML config file (flags and FRESHET_* variables override it).
    #[arg(long, env = "FRESHET_CONFIG")]
    config: Option<PathBuf>,
}

fn init_logging(default: &str) {
    let filter = std::env::var("FRESHET_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => {
            init_logging("info");
            let file = match &args.config {
                Some(path) => config::FileConfig::load(path)?,
                None => config::FileConfig::default(),
            };
            let overrides = config::Overrides {
                data_dir: args.data_dir,
                kafka_listen: args.kafka_listen,
                advertised_kafka: args.advertised_kafka,
                http_listen: args.http_listen,
                external_kafka: args.external_kafka,
                auto_create_topics: args.auto_create_topics,
                default_partitions: args.default_partitions,
                max_connections: args.max_connections,
            };
            let config = config::ServeConfig::resolve(overrides, file)?;
            runtime.block_on(serve::run(config))
        }
        Command::Topic { command, bootstrap } => {
            init_logging("warn");
            runtime.block_on(topic::run(command, &bootstrap.bootstrap))
        }
        Command::Group { command, bootstrap } => {
            init_logging("warn");
            runtime.block_on(group::run(command, &bootstrap.bootstrap))
        }
        Command::Produce(args) => {
            init_logging("warn");
            runtime.block_on(produce::run(args))
        }
        Command::Consume(args) => {
            init_logging("warn");
            runtime.block_on(consume::run(args))
        }
        Command::Bench { command } => {
            init_logging("warn");
            runtime.block_on(bench::run(command))
        }
        Command::Sql(args) => {
            init_logging("warn");
            drop(runtime);
            sql_shell::run(args)
        }
        Command::Fn(args) => {
            init_logging("warn");
            drop(runtime);
            functions::cli::run(args)
        }
        Command::SqlTest(args) => {
            init_logging("error");
            sqltest::run(args)
        }
    }
}
