//! `freshet serve`: the broker with its Kafka listener.

use std::sync::Arc;

use anyhow::{Context, Result};
use freshet_broker::{Broker, BrokerConfig};
use freshet_log::fs::StdFs;
use freshet_server::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;

pub async fn run(config: ServeConfig) -> Result<()> {
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
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests; finishing those in flight");
        let _ = stop_tx.send(true);
    });
    // This line is part of the interface: tests and scripts wait for it.
    println!("freshet: kafka listener on {bound} (data in {})", config.data_dir.display());
    let server_config =
        ServerConfig { max_connections: config.max_connections, max_request_bytes: config.max_request_bytes };
    freshet_server::serve(listener, broker.clone(), server_config, stop_rx).await?;
    for task in background {
        task.abort();
    }
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close()).await?;
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
