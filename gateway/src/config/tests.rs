//! Tests of the configuration: defaults match the documentation, every key is read, typos and
//! bad values are refused naming the key.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("portcullis.toml"))
}

fn invalid_key(text: &str) -> &'static str {
    match parse(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn store_settings_reach_the_child_store_as_flags() {
    let config = parse(
        "[store]\ncommit_window_us = 250\nblock_cache_mib = 128\nhistory_retention_days = 7\nkey_file = \"/k\"\n[store.history_retention_by_template]\nT1 = 2\n",
    )
    .expect("valid");
    let args = config.store_child_args().join(" ");
    for flag in [
        "--sync-interval-ms 100",
        "--commit-window-us 250",
        "--block-cache-mib 128",
        "--history-retention-days 7",
        "--template-retention T1=2",
        "--key-file /k",
    ] {
        assert!(args.contains(flag), "{flag:?} missing from {args:?}");
    }
}

#[test]
fn defaults_are_valid_and_match_the_documentation() {
    let config = Config::load(None).expect("defaults validate");
    assert_eq!(config, parse("").expect("empty file is all defaults"));
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(
        config.server.bind_address,
        "::".parse::<IpAddr>().expect("ip")
    );
    assert_eq!(
        (
            config.server.tls_port,
            config.server.tls_fallback_port,
            config.server.plain_port
        ),
        (443, 9443, 80)
    );
    assert_eq!(
        (
            config.server.plain_fallback_port,
            config.server.listen_backlog
        ),
        (8080, 1024)
    );
    assert_eq!(config.server.node_name, DEFAULT_NODE_NAME);
    assert_eq!(config.limits.login_timeout_ms, 10_000);
    assert_eq!(
        (config.limits.max_body_before_login, config.limits.max_body),
        (1024, 4096)
    );
    assert_eq!(
        (
            config.limits.default_heartbeat_secs,
            config.limits.heartbeat_factor
        ),
        (10, 2.3)
    );
    assert_eq!(
        (
            config.limits.outbound_queue_bytes,
            config.limits.store_queue_max_writes
        ),
        (65_536, 100_000)
    );
    assert_eq!(config.limits.default_buff_in, 255);
    assert_eq!(
        (
            config.limits.max_heartbeat_secs,
            config.limits.device_messages_per_sec,
            config.limits.device_message_burst
        ),
        (3600, 100, 200)
    );
    assert_eq!(config.limits.preauth_buffer_bytes, 4116);
    assert_eq!(config.limits.socket_send_buffer_bytes, 32_768);
    let a = &config.admission;
    assert_eq!(
        (a.max_connections_per_ip, a.accept_rate, a.accept_burst),
        (1000, 5000, 10_000)
    );
    assert_eq!(
        (
            a.accept_rate_per_ip,
            a.accept_burst_per_ip,
            a.max_tracked_ips
        ),
        (100, 200, 100_000)
    );
    assert_eq!(
        (
            a.login_free_failures,
            a.login_backoff_initial_ms,
            a.login_backoff_max_ms
        ),
        (5, 1000, 60_000)
    );
    assert_eq!(
        (
            a.login_block_after_failures,
            a.login_block_secs,
            a.login_failure_forget_secs
        ),
        (20, 600, 600)
    );
    assert_eq!(config.store.sync_interval_ms, 100);
    assert_eq!(
        (config.log.level.as_str(), config.log.format),
        ("info", LogFormat::Text)
    );
    assert_eq!(config.log.security, "stderr");
    assert_eq!(config.tls.watch_interval_ms, 10_000);
    assert!(config.metrics.enabled);
    assert_eq!(
        (config.metrics.bind_address, config.metrics.port),
        ("127.0.0.1".parse::<IpAddr>().expect("ip"), 9464)
    );
    assert_eq!(config.metrics.bearer_token, None);
    assert_eq!(config.shutdown.drain_ms, 5_000);
    assert_eq!(
        config.store_socket_path(),
        PathBuf::from("./data/store.sock")
    );
    assert!(config.store_is_child());
    assert!(config.effective_shards() >= 1);
}

#[test]
fn the_documented_example_parses() {
    let doc = include_str!("../../../docs/configuration.md");
    let start = doc.find("```toml\n").expect("docs hold a toml block") + "```toml\n".len();
    let len = doc[start..].find("```").expect("toml block ends");
    let config = parse(&doc[start..start + len]).expect("documented example is valid");
    assert_eq!(
        config,
        Config::default(),
        "the documented values are the defaults"
    );
}

#[test]
fn keys_are_read_from_every_section() {
    let config = parse(
        r#"
        data_dir = "/var/lib/portcullis"
        [server]
        shards = 3
        bind_address = "0.0.0.0"
        tls_port = 8443
        [tls]
        cert = "/etc/portcullis/fullchain.pem"
        key = "/etc/portcullis/privkey.pem"
        names = ["gw.example.com", "10.0.0.5"]
        [limits]
        max_body = 65535
        outbound_queue_bytes = 131072
        heartbeat_factor = 1.5
        [store]
        socket = "/run/portcullis/store.sock"
        [log]
        level = "debug,portcullis_gateway=trace"
        format = "json"
        "#,
    )
    .expect("valid");
    assert_eq!(config.effective_shards(), 3);
    assert_eq!(config.server.tls_port, 8443);
    assert_eq!(config.tls.names.len(), 2);
    assert_eq!(config.limits.max_body, 65_535);
    assert_eq!(
        config.store_socket_path(),
        PathBuf::from("/run/portcullis/store.sock")
    );
    assert!(!config.store_is_child());
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(parse(&config.to_toml()).expect("round trip"), config);
}

#[test]
fn a_typo_is_rejected_with_its_name_and_line() {
    let err = parse("[limits]\nmax_body = 4096\nlogin_timout_ms = 5\n").expect_err("typo");
    let message = err.to_string();
    assert!(message.contains("login_timout_ms"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("portcullis.toml"), "{message}");

    let err = parse("[sever]\nshards = 1\n").expect_err("unknown section");
    assert!(err.to_string().contains("sever"), "{err}");
}

#[test]
fn wrong_types_are_rejected() {
    assert!(matches!(
        parse("[server]\ntls_port = 70000\n"),
        Err(ConfigError::Parse { .. })
    ));
    assert!(matches!(
        parse("[server]\nbind_address = \"localhost\"\n"),
        Err(ConfigError::Parse { .. })
    ));
    assert!(matches!(
        parse("[log]\nformat = \"xml\"\n"),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn invalid_values_are_rejected_naming_the_key() {
    for (text, key) in [
        (
            "[store]\ncommit_window_us = 10001\n",
            "store.commit_window_us",
        ),
        ("[store]\nblock_cache_mib = 0\n", "store.block_cache_mib"),
        (
            "[limits]\noutput_budget_mib = 0\n",
            "limits.output_budget_mib",
        ),
        (
            "[store]\nhistory_retention_days = 36501\n",
            "store.history_retention_days",
        ),
        (
            "[store.history_retention_by_template]\n\"A=B\" = 1\n",
            "store.history_retention_by_template",
        ),
    ] {
        assert_eq!(invalid_key(text), key, "{text}");
    }
    assert_eq!(invalid_key("[tls]\ncert = \"c.pem\"\n"), "tls.key");
    assert_eq!(invalid_key("[tls]\nkey = \"k.pem\"\n"), "tls.cert");
    assert_eq!(invalid_key("[tls]\nnames = [\"bad name!\"]\n"), "tls.names");
    assert_eq!(
        invalid_key("[limits]\nmax_body = 65536\n"),
        "limits.max_body"
    );
    assert_eq!(
        invalid_key("[limits]\nheartbeat_factor = 1.0\n"),
        "limits.heartbeat_factor"
    );
    assert_eq!(
        invalid_key("[limits]\nheartbeat_factor = 0.5\n"),
        "limits.heartbeat_factor"
    );
    assert_eq!(
        invalid_key("[limits]\nheartbeat_factor = nan\n"),
        "limits.heartbeat_factor"
    );
    assert_eq!(
        invalid_key("[limits]\nmax_body_before_login = 8192\n"),
        "limits.max_body_before_login"
    );
    assert_eq!(
        invalid_key("[limits]\nmax_heartbeat_secs = 0\n"),
        "limits.max_heartbeat_secs"
    );
    assert_eq!(
        invalid_key("[limits]\ndefault_heartbeat_secs = 60\nmax_heartbeat_secs = 45\n"),
        "limits.max_heartbeat_secs"
    );
    assert_eq!(
        invalid_key("[limits]\ndevice_message_burst = 0\n"),
        "limits.device_message_burst"
    );
    assert_eq!(
        invalid_key("[limits]\ndevice_messages_per_sec = 1000001\n"),
        "limits.device_messages_per_sec"
    );
    assert_eq!(
        invalid_key("[limits]\ndevice_message_burst = 1000001\n"),
        "limits.device_message_burst"
    );
    assert_eq!(
        invalid_key("[limits]\noutbound_queue_bytes = 100\n"),
        "limits.outbound_queue_bytes"
    );
    assert_eq!(
        invalid_key("[limits]\nsocket_send_buffer_bytes = 100\n"),
        "limits.socket_send_buffer_bytes"
    );
    assert_eq!(
        invalid_key("[limits]\npreauth_buffer_bytes = 100\n"),
        "limits.preauth_buffer_bytes"
    );
    assert_eq!(
        invalid_key("[admission]\nmax_connections_per_ip = 0\n"),
        "admission.max_connections_per_ip"
    );
    assert_eq!(
        invalid_key("[admission]\naccept_burst_per_ip = 0\n"),
        "admission.accept_burst_per_ip"
    );
    assert_eq!(
        invalid_key("[admission]\nlogin_backoff_initial_ms = 5000\nlogin_backoff_max_ms = 10\n"),
        "admission.login_backoff_max_ms"
    );
    assert_eq!(
        invalid_key("[admission]\nlogin_free_failures = 30\n"),
        "admission.login_block_after_failures"
    );
    assert_eq!(
        invalid_key("[admission]\nlogin_block_secs = 100000000\n"),
        "admission.login_block_secs"
    );
    assert_eq!(
        invalid_key("[limits]\ndefault_buff_in = 4\n"),
        "limits.default_buff_in"
    );
    assert_eq!(
        invalid_key("[server]\nplain_port = 443\n"),
        "server.tls_port"
    );
    assert_eq!(
        invalid_key("[server]\nlisten_backlog = 0\n"),
        "server.listen_backlog"
    );
    assert_eq!(
        invalid_key("[store]\nsync_interval_ms = 0\n"),
        "store.sync_interval_ms"
    );
    assert_eq!(
        invalid_key("[log]\nlevel = \"portcullis=loud\"\n"),
        "log.level"
    );
    assert_eq!(invalid_key("[log]\nlevel = \" \"\n"), "log.level");
    assert_eq!(invalid_key("[log]\nsecurity = \"\"\n"), "log.security");
    assert_eq!(
        invalid_key("[tls]\nwatch_interval_ms = 5\n"),
        "tls.watch_interval_ms"
    );
    assert_eq!(
        invalid_key("[metrics]\nbearer_token = \"short\"\n"),
        "metrics.bearer_token"
    );
    assert_eq!(invalid_key("[metrics]\nport = 8080\n"), "metrics.port");
    assert_eq!(
        invalid_key("[shutdown]\ndrain_ms = 600001\n"),
        "shutdown.drain_ms"
    );
    assert_eq!(
        invalid_key("[app]\npassword_workers = 0\n"),
        "app.password_workers"
    );
    assert_eq!(
        invalid_key("[app]\npassword_workers = 65\n"),
        "app.password_workers"
    );
    assert_eq!(
        invalid_key("[app]\nmax_subscriptions = 0\n"),
        "app.max_subscriptions"
    );
    assert_eq!(
        invalid_key("[app]\nidle_timeout_secs = 86401\n"),
        "app.idle_timeout_secs"
    );
    assert_eq!(
        invalid_key("[app]\nlogin_block_secs = 86401\n"),
        "app.login_block_secs"
    );
    assert_eq!(
        invalid_key("[app]\nlogin_block_after_failures = 0\n"),
        "app.login_block_after_failures"
    );
    let long = format!("data_dir = \"/{}\"\n", "d".repeat(120));
    assert_eq!(invalid_key(&long), "data_dir");

    let message = parse("[limits]\nmax_body = 70000\n")
        .expect_err("too big")
        .to_string();
    assert!(
        message.contains("limits.max_body") && message.contains("65535"),
        "{message}"
    );
    assert!(message.contains("portcullis.toml"), "{message}");
}

#[test]
fn a_missing_file_is_named() {
    let err = Config::load(Some(Path::new("/nonexistent/portcullis.toml"))).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/portcullis.toml"),
        "{err}"
    );
}

const REMOTE: &str = "[store]\nremote = \"store.lan:7701\"\nremote_ca_file = \"/c/ca.pem\"\nremote_cert_file = \"/c/gw.pem\"\nremote_key_file = \"/c/gw.key\"\n";

#[test]
fn a_remote_store_is_not_a_child_and_round_trips() {
    let config = parse(REMOTE).expect("valid");
    assert!(!config.store_is_child());
    assert_eq!(config.store.remote.as_deref(), Some("store.lan:7701"));
    assert_eq!(
        config.store.remote_key_file,
        Some(PathBuf::from("/c/gw.key"))
    );
    assert_eq!(parse(&config.to_toml()).expect("round trip"), config);
    let named = parse(&format!("{REMOTE}remote_server_name = \"10.0.0.7\"\n")).expect("valid");
    assert_eq!(named.store.remote_server_name.as_deref(), Some("10.0.0.7"));
}

#[test]
fn remote_store_keys_are_checked_naming_the_key() {
    // Each TLS file is required: there is no plaintext remote mode.
    for key in ["remote_ca_file", "remote_cert_file", "remote_key_file"] {
        let text: String = REMOTE
            .lines()
            .filter(|line| !line.starts_with(key))
            .map(|line| format!("{line}\n"))
            .collect();
        let full = format!("store.{key}");
        assert_eq!(invalid_key(&text), full.as_str(), "{text}");
    }
    for bad in ["store.lan", "store.lan:0", ":7701", "store.lan:x"] {
        let text = REMOTE.replace("store.lan:7701", bad);
        assert_eq!(invalid_key(&text), "store.remote", "{bad}");
    }
    assert_eq!(
        invalid_key(&format!("{REMOTE}socket = \"/run/s.sock\"\n")),
        "store.socket"
    );
    assert_eq!(
        invalid_key(&format!("{REMOTE}key_file = \"/k\"\n")),
        "store.key_file"
    );
    assert_eq!(
        invalid_key(&format!("{REMOTE}remote_server_name = \"bad name!\"\n")),
        "store.remote_server_name"
    );
    // The TLS keys without a remote store would be silently ignored: refused.
    assert_eq!(
        invalid_key("[store]\nremote_ca_file = \"/c/ca.pem\"\n"),
        "store.remote_ca_file"
    );
    assert_eq!(
        invalid_key("[store]\nremote_server_name = \"store.lan\"\n"),
        "store.remote_server_name"
    );
}

#[test]
fn the_device_message_quota_can_be_turned_off_and_the_heartbeat_maximum_set() {
    // With the quota off the burst is not used, so 0 is accepted there.
    let config = parse("[limits]\ndevice_messages_per_sec = 0\ndevice_message_burst = 0\n")
        .expect("quota off");
    assert_eq!(config.limits.device_messages_per_sec, 0);
    let config = parse(
        "[limits]\ndevice_messages_per_sec = 5\ndevice_message_burst = 1\nmax_heartbeat_secs = 65535\n",
    )
    .expect("valid");
    assert_eq!(
        (
            config.limits.device_messages_per_sec,
            config.limits.device_message_burst,
            config.limits.max_heartbeat_secs
        ),
        (5, 1, 65_535)
    );
    // 65536 does not fit the 16-bit heartbeat.
    assert!(matches!(
        parse("[limits]\nmax_heartbeat_secs = 65536\n"),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn the_node_name_is_short_and_plain() {
    let config = parse("[server]\nnode_name = \"edge-2.eu_west\"\n").expect("valid");
    assert_eq!(config.server.node_name.as_str(), "edge-2.eu_west");
    assert_eq!(parse(&config.to_toml()).expect("round trip"), config);
    for bad in ["", "gw 1", "gw/1", "gw\\u00e9", &"x".repeat(33)] {
        let text = format!("[server]\nnode_name = \"{bad}\"\n");
        assert_eq!(invalid_key(&text), "server.node_name", "{bad:?}");
    }
    let message = parse("[server]\nnode_name = \"gw 1\"\n")
        .expect_err("space")
        .to_string();
    assert!(message.contains("ASCII letters"), "{message}");
}
