//! Any bytes, as a request frame, into the broker's request decoder and handlers: never a
//! panic, never a hang. The broker runs on the simulated file system, with tokio's clock paused
//! so long-poll fetches finish at once.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use freshet_broker::{Broker, BrokerConfig};
use freshet_log::sim::SimFs;
use libfuzzer_sys::fuzz_target;

struct State {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker>,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let config = BrokerConfig { data_dir: "/fuzz".into(), ..BrokerConfig::default() };
        let broker = rt.block_on(async { Broker::open(config, Arc::new(SimFs::new())).unwrap() });
        broker.create_topic("t", 2, Default::default(), false).unwrap();
        State { rt, broker }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = state();
    let _guard = s.rt.enter();
    if let Ok(responder) = s.broker.handle(Bytes::copy_from_slice(data)) {
        s.rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(120), responder).await;
        });
    }
});
