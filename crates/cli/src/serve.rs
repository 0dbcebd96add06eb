//! `freshet serve`: the broker with its Kafka listener, and the SQL engine with its HTTP
//! (ksqlDB REST) listener. With `--external-kafka`, only the SQL engine and the HTTP listener,
//! against an existing Kafka-protocol cluster.

use std::sync::Arc;

use anyhow::{Context, Result};
use freshet_broker::{Broker, BrokerConfig};
use freshet_log::fs::StdFs;
use freshet_server::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;

/// Where, under the data directory, persistent queries keep their state store files (with
/// `--external-kafka` too: the data directory then holds only these).
pub const SQL_STATE_DIR: &str = "sql-state";

pub async fn run(config: ServeConfig) -> Result<()> {
    if let Some(bootstrap) = config.external_kafka.clone() {
        return run_external(config, bootstrap).await;
    }
    let listener = TcpListener::bind(config.kafka_listen)
        .await
        .with_context(|| format!("binding the Kafka listener to {}", config.kafka_listen))?;
    let bound = listener.local_addr()?;
    let (host, port) = match &config.advertised_kafka {
        Some((h, p)) => (h.clone(), *p),
        None if bound.ip().is_unspecified() => ("127.0.0.1".to_string(), bound.port()),
        None => (bound.ip().to_string(), bound.port()),
    };
    let broker_config = BrokerConfig {
        data_dir: config.data_dir.clone(),
        node_id: 0,
        advertised_host: host,
        advertised_port: port,
        auto_create_topics: config.auto_create_topics,
        default_partitions: config.default_partitions,
        topic_defaults: config.topic_defaults.clone(),
        groups: config.groups,
        consumer_groups: config.consumer_groups,
    };
    let started = std::time::Instant::now();
    let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config, Arc::new(StdFs)))
        .await?
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    tracing::info!(data_dir = %config.data_dir.display(), recovery_ms = started.elapsed().as_millis() as u64, "data directory open");
    let background = broker.spawn_background();
    // The SQL engine replays its persisted statements before either listener serves.
    let topics =
        Arc::new(crate::sql::broker_topics::BrokerTopics::new(broker.clone(), tokio::runtime::Handle::current()));
    let state_dir = config.data_dir.join(SQL_STATE_DIR);
    let engine =
        tokio::task::spawn_blocking(move || crate::sql::runner::EngineThread::start(topics, Some(state_dir))).await??;
    // Functions resume where their consumer groups stopped.
    let fn_topics =
        Arc::new(crate::sql::broker_topics::BrokerTopics::new(broker.clone(), tokio::runtime::Handle::current()));
    let functions = tokio::task::spawn_blocking(move || crate::functions::open_host(fn_topics)).await??;
    let http_listener = crate::sql::http::bind(config.http_listen).await?;
    let http_bound = http_listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests; finishing those in flight");
        let _ = on_signal.send(true);
    });
    let http = tokio::spawn(crate::sql::http::serve(
        http_listener,
        engine.tx.clone(),
        broker.cluster_id().to_string(),
        crate::functions::http::router(functions.clone()),
        stop_rx.clone(),
    ));
    // These lines are part of the interface: tests and scripts wait for them (the HTTP line
    // comes first, so whoever waits for the Kafka line has seen both).
    println!("freshet: http listener on {http_bound}");
    println!("freshet: kafka listener on {bound} (data in {})", config.data_dir.display());
    let server_config =
        ServerConfig { max_connections: config.max_connections, max_request_bytes: config.max_request_bytes };
    let served = freshet_server::serve(listener, broker.clone(), server_config, stop_rx).await;
    // Whatever ended the Kafka listener ends the HTTP one too.
    let _ = stop_tx.send(true);
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the HTTP listener failed"),
        Err(e) => tracing::error!(error = %e, "the HTTP listener panicked"),
    }
    // The engine and the functions write through the broker: stop them before the logs close.
    tokio::task::spawn_blocking(move || engine.stop()).await?;
    tokio::task::spawn_blocking(move || functions.shutdown()).await?;
    served?;
    for task in background {
        task.abort();
    }
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The SQL engine and the HTTP listener over an existing Kafka-protocol cluster: every topic,
/// the engine's command and progress topics included, lives there.
async fn run_external(config: ServeConfig, bootstrap: String) -> Result<()> {
    let runtime = tokio::runtime::Handle::current();
    let b = bootstrap.clone();
    let state_dir = config.data_dir.join(SQL_STATE_DIR);
    // The engine replays its persisted statements (from the cluster) before the listener serves.
    let (engine, functions, cluster_id) = tokio::task::spawn_blocking(move || -> Result<_> {
        let topics = Arc::new(crate::sql::kafka_topics::KafkaTopics::new(&b, runtime.clone()));
        let cluster_id = topics.cluster_id()?;
        let engine = crate::sql::runner::EngineThread::start(topics, Some(state_dir))?;
        let fn_topics = Arc::new(crate::sql::kafka_topics::KafkaTopics::new(&b, runtime));
        let functions = crate::functions::open_host(fn_topics)?;
        Ok((engine, functions, cluster_id))
    })
    .await??;
    tracing::info!(%bootstrap, %cluster_id, "the SQL engine runs against an external Kafka cluster");
    let http_listener = crate::sql::http::bind(config.http_listen).await?;
    let http_bound = http_listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = tokio::spawn(crate::sql::http::serve(
        http_listener,
        engine.tx.clone(),
        cluster_id,
        crate::functions::http::router(functions.clone()),
        stop_rx,
    ));
    // Part of the interface, as in `run`.
    println!("freshet: http listener on {http_bound}");
    println!("freshet: SQL engine on the Kafka cluster at {bootstrap}");
    let ended = tokio::select! {
        _ = wait_for_signal() => None,
        ended = &mut http => Some(ended),
    };
    tracing::info!("shutting down: no new requests; finishing those in flight");
    let _ = stop_tx.send(true);
    let ended = match ended {
        Some(ended) => ended,
        None => http.await,
    };
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the HTTP listener failed"),
        Err(e) => tracing::error!(error = %e, "the HTTP listener panicked"),
    }
    tokio::task::spawn_blocking(move || engine.stop()).await?;
    tokio::task::spawn_blocking(move || functions.shutdown()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
