//! The embedded default end to end: mails submitted to a real mailer come back from
//! `<data-dir>/outbox/` as whole, private `.eml` files with the headers a mail reader needs,
//! the log says where mail went, and shutdown drains the queue.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Logs, WAIT, header, split_message, wait_for};
use portcullis_mail::{Address, Mail, MailConfig, MailError, Mailer, ShutdownOutcome};

fn address(text: &str) -> Address {
    text.parse().expect("a valid test address")
}

fn eml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn three_mails_become_three_whole_private_eml_files() {
    let logs = Logs::capture();
    let data = tempfile::tempdir().expect("a temporary data directory");
    let mailer = Mailer::start(&MailConfig::default(), data.path()).expect("start the mailer");
    let dir = data.path().join("outbox");
    assert_eq!(mailer.outbox_dir(), Some(dir.as_path()));

    let sent = [
        (
            "verify-email",
            "ada-three@example.org",
            "Confirm your address",
            "secret-link-1",
        ),
        (
            "invite",
            "bob-three@example.org",
            "You are invited",
            "secret-link-2",
        ),
        (
            "password-reset",
            "cy-three@example.org",
            "Reset your password (Grüße)",
            "secret-link-3",
        ),
    ];
    for (kind, to, subject, link) in sent {
        let body = format!("Hello,\n\nopen https://gw.example/x?t={link} within an hour.\n");
        let mail = Mail::new(kind, address(to), subject, body).expect("a valid mail");
        mailer.submit(mail).expect("the mailer takes the mail");
    }
    assert!(
        wait_for(WAIT, || eml_files(&dir).len() == 3),
        "three files in {dir:?}: {:?}",
        eml_files(&dir)
    );
    assert_eq!(mailer.shutdown(WAIT), ShutdownOutcome::Drained);

    let names = eml_files(&dir);
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "no temporary file remains: {names:?}"
    );
    assert_eq!(
        fs::metadata(&dir).expect("outbox").permissions().mode() & 0o777,
        0o700
    );
    for (kind, to, subject, link) in sent {
        let name = names
            .iter()
            .find(|n| n.ends_with(&format!("-{kind}.eml")))
            .unwrap_or_else(|| panic!("a file for {kind} in {names:?}"));
        let path = dir.join(name);
        let mode = fs::metadata(&path).expect("the file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is private");
        // `<unix-ms>-<seq>-<kind>.eml`
        let mut parts = name.splitn(3, '-');
        assert!(
            parts.next().is_some_and(|ms| ms.parse::<u64>().is_ok()),
            "{name}"
        );
        assert!(
            parts.next().is_some_and(|seq| seq.parse::<u64>().is_ok()),
            "{name}"
        );

        let text = fs::read_to_string(&path).expect("UTF-8 message");
        let (headers, body) = split_message(&text);
        assert_eq!(header(&headers, "To"), Some(to), "{text}");
        assert_eq!(
            header(&headers, "From"),
            Some("Portcullis <portcullis@localhost>")
        );
        if subject.is_ascii() {
            assert_eq!(header(&headers, "Subject"), Some(subject));
        } else {
            // Non-ASCII subjects travel as RFC 2047 encoded words.
            assert!(
                header(&headers, "Subject").is_some_and(|s| s.contains(" =?utf-8?")),
                "{text}"
            );
        }
        assert_eq!(header(&headers, "MIME-Version"), Some("1.0"));
        assert_eq!(
            header(&headers, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(header(&headers, "Date").is_some(), "{text}");
        assert!(
            header(&headers, "Message-ID")
                .is_some_and(|id| id.starts_with('<') && id.ends_with('>'))
        );
        assert!(
            body.contains(&format!(
                "open https://gw.example/x?t={link} within an hour."
            )),
            "{body}"
        );
        let written = format!("written to the outbox as {name}");
        let lines = logs.lines_with(&[" INFO ", &written, &format!("to={to}")]);
        assert_eq!(lines.len(), 1, "one info line per file: {}", logs.text());
        assert!(lines[0].contains(kind), "{}", lines[0]);
    }

    let log = logs.text();
    let dir_text = dir.display().to_string();
    let announced = logs.lines_with(&[" INFO ", "mail is not sent: it is written to", &dir_text]);
    assert_eq!(announced.len(), 1, "the outbox is announced once: {log}");
    assert!(
        announced[0].contains("(mail.transport = \"outbox\")"),
        "{log}"
    );
    assert!(!log.contains("secret-link"), "no body in the log: {log}");
}

#[test]
fn shutdown_writes_everything_already_queued() {
    let _logs = Logs::capture();
    let data = tempfile::tempdir().expect("a temporary data directory");
    let mailer = Mailer::start(&MailConfig::default(), data.path()).expect("start the mailer");
    for i in 0..5 {
        let mail = Mail::new(
            "verify-email",
            address("ada@example.org"),
            "Confirm",
            format!("{i}\n"),
        )
        .expect("a valid mail");
        mailer.submit(mail).expect("the mailer takes the mail");
    }
    assert_eq!(mailer.shutdown(WAIT), ShutdownOutcome::Drained);
    assert_eq!(eml_files(&data.path().join("outbox")).len(), 5);
}

#[test]
fn an_outbox_that_cannot_be_made_is_refused_at_start() {
    let _logs = Logs::capture();
    let data = tempfile::tempdir().expect("a temporary data directory");
    let not_a_dir = data.path().join("file");
    fs::write(&not_a_dir, b"").expect("a plain file");
    let error = Mailer::start(&MailConfig::default(), &not_a_dir).expect_err("no outbox there");
    assert!(matches!(error, MailError::Outbox { .. }), "{error}");
    assert!(error.to_string().contains("writable"), "{error}");
}

#[test]
fn a_full_queue_refuses_without_waiting() {
    let _logs = Logs::capture();
    // Capacity 1 and a worker that cannot keep up with a tight loop of submits.
    let data = tempfile::tempdir().expect("a temporary data directory");
    let config = MailConfig {
        queue_capacity: 1,
        ..MailConfig::default()
    };
    let mailer = Mailer::start(&config, data.path()).expect("start the mailer");
    let started = std::time::Instant::now();
    let mut refused = None;
    for i in 0..10_000 {
        let mail = Mail::new("invite", address("bob@example.org"), "Hi", format!("{i}\n"))
            .expect("a valid mail");
        if let Err(e) = mailer.submit(mail) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(portcullis_mail::Refused::QueueFull));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "submit never blocks"
    );
    assert!(matches!(mailer.shutdown(WAIT), ShutdownOutcome::Drained));
}
