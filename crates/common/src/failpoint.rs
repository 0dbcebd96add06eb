//! Failpoints for crash tests: named places where a process ends abruptly when the test asks,
//! to crash at a moment a SIGKILL from outside could only hit by luck (e.g. with a Kafka
//! transaction open). Armed by the `FRESHET_FAILPOINTS` environment variable (names separated
//! by commas), read once; unarmed, a failpoint costs one load of a `OnceLock`.

use std::sync::OnceLock;

/// Whether the failpoint `name` is armed in this process.
pub fn failpoint(name: &str) -> bool {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var("FRESHET_FAILPOINTS")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default()
        })
        .iter()
        .any(|armed| armed == name)
}
