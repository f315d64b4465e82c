//! Configuration reload on SIGHUP: which keys of a new, validated configuration can be applied to
//! the running gateway and which need a restart. The comparison walks the serialized form of both
//! configurations, so a key added to `Config` is covered without touching this file (it needs a
//! restart until it is listed in [`LIVE_KEYS`]).

use crate::config::Config;
use std::collections::BTreeMap;

/// Keys (or `section.` prefixes) that the running gateway applies without a restart.
pub const LIVE_KEYS: &[&str] = &[
    "log.level",
    "limits.",
    "tls.cert",
    "tls.key",
    "metrics.bearer_token",
    "shutdown.drain_ms",
    "app.max_subscriptions",
    "app.idle_timeout_secs",
    "app.outbound_queue_bytes",
];

/// The changed keys of a reload, split by whether they apply live.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub live: Vec<String>,
    pub need_restart: Vec<String>,
}

fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|live| {
        if live.ends_with('.') {
            key.starts_with(live)
        } else {
            key == *live
        }
    })
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

fn keys(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match toml::Value::try_from(config) {
        Ok(value) => flatten("", &value, &mut out),
        Err(e) => tracing::error!(error = %e, "cannot compare configurations"),
    }
    out
}

/// Every key whose value differs (or that is present in only one of the two).
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let (old, new) = (keys(old), keys(new));
    let mut changed: Vec<&String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(new.keys().filter(|k| !old.contains_key(*k)))
        .collect();
    changed.sort();
    changed.dedup();
    let mut result = ConfigDiff::default();
    for key in changed {
        if is_live(key) {
            result.live.push(key.clone());
        } else {
            result.need_restart.push(key.clone());
        }
    }
    result
}

/// `running` with the live parts of `new` applied: what the gateway now actually runs with.
pub fn apply_live(running: &Config, new: &Config) -> Config {
    let mut next = running.clone();
    next.log.level = new.log.level.clone();
    next.limits = new.limits.clone();
    next.tls.cert = new.tls.cert.clone();
    next.tls.key = new.tls.key.clone();
    next.metrics.bearer_token = new.metrics.bearer_token.clone();
    next.shutdown = new.shutdown.clone();
    next.app.max_subscriptions = new.app.max_subscriptions;
    next.app.idle_timeout_secs = new.app.idle_timeout_secs;
    next.app.outbound_queue_bytes = new.app.outbound_queue_bytes;
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_split_into_live_and_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.log.level = "debug".into();
        new.limits.max_body = 8192;
        new.server.tls_port = 8443;
        new.metrics.bearer_token = Some("0123456789abcdef".into());
        new.log.format = crate::config::LogFormat::Json;
        let d = diff(&old, &new);
        assert_eq!(
            d.live,
            vec!["limits.max_body", "log.level", "metrics.bearer_token"]
        );
        assert_eq!(d.need_restart, vec!["log.format", "server.tls_port"]);
        assert_eq!(diff(&old, &old), ConfigDiff::default());

        let applied = apply_live(&old, &new);
        assert_eq!(applied.limits.max_body, 8192);
        assert_eq!(applied.server.tls_port, 443, "restart-only keys stay");
        assert_eq!(
            diff(&applied, &new).need_restart,
            vec!["log.format", "server.tls_port"],
            "a later reload still names what waits for a restart"
        );
        assert!(diff(&applied, &new).live.is_empty());
    }
}
