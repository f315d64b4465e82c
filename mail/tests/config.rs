//! The `[mail]` section as an operator writes it: defaults, unknown keys, plain-text SMTP to
//! another machine, the password and CA files, bounds; and the checks on a composed mail.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use portcullis_mail::config::{
    DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_CAP_MS, DEFAULT_FROM, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_SMTP_PORT, DEFAULT_TIMEOUT_SECS,
};
use portcullis_mail::{
    Address, ConfigError, InvalidMail, Mail, MailConfig, MailError, Mailer, Security, TransportKind,
};

fn parse(text: &str) -> Result<MailConfig, toml::de::Error> {
    toml::from_str(text)
}

fn parsed(text: &str) -> MailConfig {
    parse(text).unwrap_or_else(|e| panic!("{text} parses: {e}"))
}

fn smtp_section(extra: &str) -> String {
    format!("transport = \"smtp\"\n[smtp]\nhost = \"relay.example.org\"\n{extra}\n")
}

fn password_file(dir: &Path, content: &str) -> String {
    let path = dir.join("smtp-password");
    fs::write(&path, content).expect("write the password file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

#[test]
fn an_empty_section_is_the_documented_defaults() {
    let config = parsed("");
    assert_eq!(config, MailConfig::default());
    assert_eq!(config.transport, TransportKind::Outbox);
    assert_eq!(config.from, DEFAULT_FROM);
    assert_eq!(config.queue_capacity, DEFAULT_QUEUE_CAPACITY);
    assert_eq!(config.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(config.backoff_base_ms, DEFAULT_BACKOFF_BASE_MS);
    assert_eq!(config.backoff_cap_ms, DEFAULT_BACKOFF_CAP_MS);
    assert_eq!(
        (
            DEFAULT_QUEUE_CAPACITY,
            DEFAULT_MAX_ATTEMPTS,
            DEFAULT_BACKOFF_BASE_MS,
            DEFAULT_BACKOFF_CAP_MS
        ),
        (256, 6, 2_000, 300_000)
    );
    config.validate().expect("the defaults are valid");

    let smtp = parsed(&smtp_section(""));
    let section = smtp.smtp.as_ref().expect("[smtp]");
    assert_eq!(section.port, DEFAULT_SMTP_PORT);
    assert_eq!(section.security, Security::Starttls);
    assert_eq!(section.timeout_secs, DEFAULT_TIMEOUT_SECS);
    assert_eq!((DEFAULT_SMTP_PORT, DEFAULT_TIMEOUT_SECS), (587, 10));
    smtp.validate()
        .expect("a relay without credentials is valid");
}

#[test]
fn a_full_smtp_section_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let password = password_file(dir.path(), "hunter2\n");
    let config = parsed(&format!(
        "from = \"Gateway <gw@example.org>\"\nqueue_capacity = 16\nmax_attempts = 3\n\
         backoff_base_ms = 500\nbackoff_cap_ms = 60000\n{}",
        smtp_section(&format!(
            "port = 465\nsecurity = \"tls\"\nusername = \"gw\"\npassword_file = \"{password}\"\ntimeout_secs = 30"
        ))
    ));
    let section = config.smtp.as_ref().expect("[smtp]");
    assert_eq!((section.port, section.security), (465, Security::Tls));
    assert_eq!(section.username.as_deref(), Some("gw"));
    config.validate().expect("valid");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let top = parse("transport = \"outbox\"\nrelay = \"x\"\n").expect_err("unknown top key");
    assert!(top.to_string().contains("unknown field `relay`"), "{top}");
    let inner = parse(&smtp_section("password = \"inline\"")).expect_err("unknown smtp key");
    assert!(
        inner.to_string().contains("unknown field `password`"),
        "{inner}"
    );
    let bad = parse("transport = \"sendmail\"\n").expect_err("unknown transport");
    assert!(bad.to_string().contains("sendmail"), "{bad}");
    let bad = parse(&smtp_section("security = \"ssl\"")).expect_err("unknown security");
    assert!(bad.to_string().contains("ssl"), "{bad}");
}

#[test]
fn plain_text_smtp_is_for_this_machine_only() {
    let remote = parsed(&smtp_section("security = \"none\""));
    let error = remote.validate().expect_err("none to a remote host");
    assert!(
        matches!(error, ConfigError::PlaintextToRemote { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("relay.example.org") && message.contains("\"starttls\""),
        "{message}"
    );
    for host in ["127.0.0.1", "localhost", "::1", "127.0.0.2"] {
        let text =
            format!("transport = \"smtp\"\n[smtp]\nhost = \"{host}\"\nsecurity = \"none\"\n");
        parsed(&text)
            .validate()
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    let private =
        parsed("transport = \"smtp\"\n[smtp]\nhost = \"10.0.0.1\"\nsecurity = \"none\"\n");
    assert!(
        private.validate().is_err(),
        "a private address is not this machine"
    );
}

#[test]
fn the_password_comes_from_a_readable_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-file");
    let config = parsed(&smtp_section(&format!(
        "username = \"gw\"\npassword_file = \"{}\"",
        missing.display()
    )));
    let error = config.validate().expect_err("missing password file");
    assert!(matches!(error, ConfigError::PasswordFile { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("mail.smtp.password_file") && message.contains("no-such-file"),
        "{message}"
    );
    // And a mailer will not start on it.
    let start = Mailer::start(&config, dir.path()).expect_err("no start");
    assert!(
        matches!(start, MailError::Config(ConfigError::PasswordFile { .. })),
        "{start}"
    );

    let empty = password_file(dir.path(), "\n");
    let config = parsed(&smtp_section(&format!(
        "username = \"gw\"\npassword_file = \"{empty}\""
    )));
    let error = config.validate().expect_err("empty password file");
    assert!(error.to_string().contains("is empty"), "{error}");

    let config = parsed(&smtp_section("username = \"gw\""));
    assert!(matches!(
        config.validate(),
        Err(ConfigError::UsernameWithoutPassword)
    ));
    let config = parsed(&smtp_section(&format!("password_file = \"{empty}\"")));
    assert!(matches!(
        config.validate(),
        Err(ConfigError::PasswordWithoutUsername)
    ));
}

#[test]
fn other_mistakes_say_what_to_fix() {
    let error = parsed("transport = \"smtp\"\n")
        .validate()
        .expect_err("no [smtp]");
    assert!(matches!(error, ConfigError::SmtpSectionMissing), "{error}");

    let error = parsed("from = \"not an address\"\n")
        .validate()
        .expect_err("bad from");
    assert!(error.to_string().contains("mail.from"), "{error}");

    let error = parsed("queue_capacity = 0\n")
        .validate()
        .expect_err("zero queue");
    assert!(
        error.to_string().contains("mail.queue_capacity = 0"),
        "{error}"
    );

    let error = parsed("max_attempts = 0\n")
        .validate()
        .expect_err("zero attempts");
    assert!(error.to_string().contains("mail.max_attempts"), "{error}");

    let error = parsed("backoff_base_ms = 5000\nbackoff_cap_ms = 1000\n")
        .validate()
        .expect_err("cap below base");
    assert!(
        matches!(error, ConfigError::BackoffCapBelowBase { .. }),
        "{error}"
    );

    let error = parsed(&smtp_section("timeout_secs = 0"))
        .validate()
        .expect_err("no timeout");
    assert!(
        error.to_string().contains("mail.smtp.timeout_secs"),
        "{error}"
    );

    let error = parsed("transport = \"smtp\"\n[smtp]\nhost = \"relay example\"\n")
        .validate()
        .expect_err("bad host");
    assert!(matches!(error, ConfigError::BadHost { .. }), "{error}");

    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("ca.pem");
    fs::write(&not_pem, "hello").expect("write");
    let error = parsed(&smtp_section(&format!(
        "ca_file = \"{}\"",
        not_pem.display()
    )))
    .validate()
    .expect_err("a CA file without certificates");
    assert!(
        error.to_string().contains("holds no PEM certificate"),
        "{error}"
    );
}

#[test]
fn a_mail_is_checked_when_it_is_composed() {
    let to: Address = "ada@example.org".parse().expect("address");
    let ok = Mail::new("verify-email", to.clone(), "Confirm", "link\n").expect("valid");
    assert_eq!((ok.kind(), ok.subject()), ("verify-email", "Confirm"));
    let debug = format!("{ok:?}");
    assert!(!debug.contains("link"), "Debug hides the body: {debug}");
    assert_eq!(
        Mail::new("verify-email", to.clone(), "Confirm\r\nBcc: x@y.z", "b").err(),
        Some(InvalidMail::SubjectControl)
    );
    assert_eq!(
        Mail::new("verify-email", to.clone(), " ", "b").err(),
        Some(InvalidMail::EmptySubject)
    );
    assert!(matches!(
        Mail::new("Verify/../x", to.clone(), "s", "b"),
        Err(InvalidMail::Kind(_))
    ));
    assert_eq!(
        Mail::new(
            "k",
            to,
            "s",
            "x".repeat(portcullis_mail::message::MAX_BODY_BYTES + 1)
        )
        .err(),
        Some(InvalidMail::BodyTooLarge)
    );
    assert!("not an address".parse::<Address>().is_err());
}
