//! Test-only faults that break a promise on purpose, so that the chaos
//! suite can show its checkers catch them. Compiled in only with the
//! `failpoints` feature (test builds of the workspace); named, comma-separated,
//! in `FLOE_FAILPOINTS`:
//! - `quota-off`: the leader grants past region quotas;
//! - `ack-event-before-commit`: an event is answered 202 and never committed;
//! - `forwarded-invocations-arrive-late`: a node handles each forwarded
//!   invocation 6 s after it arrived, as if a cut link had held it back;
//! - `dispatcher-stalls`: a new leader dispatches no event for 30 s.

#[cfg(feature = "failpoints")]
pub fn active(name: &str) -> bool {
    static ACTIVE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ACTIVE
        .get_or_init(|| {
            let names: Vec<String> = std::env::var("FLOE_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect();
            if !names.is_empty() {
                tracing::warn!(
                    ?names,
                    "FAILPOINTS ACTIVE: this node breaks promises on purpose (tests only)"
                );
            }
            names
        })
        .iter()
        .any(|n| n == name)
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn active(_name: &str) -> bool {
    false
}
