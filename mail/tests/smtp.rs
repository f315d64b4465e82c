//! The SMTP transport against a real SMTP conversation on loopback (the responder in
//! `common`): delivery, a relay that is down (retries, `Failing`, `RelayDown`, recovery by a
//! retry and by a probe), a permanent refusal that is not retried, and a full queue.

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Logs, SmtpServer, WAIT, free_port, header, split_message, wait_for};
use portcullis_mail::{
    Address, Health, Mail, MailConfig, Mailer, Refused, Security, ShutdownOutcome, SmtpConfig,
    TransportKind,
};

fn relay_config(port: u16) -> MailConfig {
    let mut smtp = SmtpConfig::new("127.0.0.1");
    smtp.port = port;
    smtp.security = Security::None;
    smtp.timeout_secs = 2;
    MailConfig {
        transport: TransportKind::Smtp,
        from: "Gateway <gw@example.org>".to_owned(),
        smtp: Some(smtp),
        backoff_base_ms: 20,
        backoff_cap_ms: 100,
        ..MailConfig::default()
    }
}

fn mail(kind: &str, to: &str, secret: &str) -> Mail {
    let to: Address = to.parse().expect("a valid test address");
    Mail::new(
        kind,
        to,
        "Confirm your address",
        format!("Hello,\n\nopen https://gw.example/verify?t={secret}\n.\nthat was a lone dot.\n"),
    )
    .expect("a valid mail")
}

fn is_failing(mailer: &Mailer) -> bool {
    matches!(mailer.health(), Health::Failing { .. })
}

#[test]
fn a_mail_goes_to_a_loopback_relay() {
    let logs = Logs::capture();
    let server = SmtpServer::start(Behaviour::Accept);
    let mailer = Mailer::start(
        &relay_config(server.port()),
        std::path::Path::new("/nonexistent"),
    )
    .expect("start the mailer");
    assert_eq!(mailer.outbox_dir(), None);
    mailer
        .submit(mail("verify-email", "ada@example.org", "s3cret-token"))
        .expect("the mailer takes the mail");
    assert!(
        wait_for(WAIT, || server.messages().len() == 1),
        "the relay got the mail"
    );
    assert_eq!(mailer.health(), Health::Healthy);
    assert_eq!(mailer.shutdown(WAIT), ShutdownOutcome::Drained);

    let got = server.messages().remove(0);
    assert_eq!(got.from, "<gw@example.org>");
    assert_eq!(got.to, ["<ada@example.org>"]);
    let (headers, body) = split_message(&got.data);
    assert_eq!(header(&headers, "Subject"), Some("Confirm your address"));
    assert_eq!(header(&headers, "To"), Some("ada@example.org"));
    assert_eq!(header(&headers, "From"), Some("Gateway <gw@example.org>"));
    assert!(
        body.contains("open https://gw.example/verify?t=s3cret-token\r\n"),
        "{body}"
    );
    // The dot-stuffed lone dot came through as a line of its own.
    assert!(body.contains("\r\n.\r\nthat was a lone dot."), "{body}");
    let log = logs.text();
    let sent = logs.lines_with(&[
        " INFO ",
        "sent to the relay 127.0.0.1",
        "to=ada@example.org",
    ]);
    assert_eq!(sent.len(), 1, "{log}");
    assert!(!log.contains("s3cret-token"), "no body in the log: {log}");
}

#[test]
fn a_relay_that_is_down_is_retried_reported_and_recovers() {
    let logs = Logs::capture();
    let port = free_port();
    let config = MailConfig {
        max_attempts: 32,
        ..relay_config(port)
    };
    let mailer = Mailer::start(&config, std::path::Path::new("/nonexistent")).expect("start");
    mailer
        .submit(mail("verify-email", "ada-down@example.org", "first"))
        .expect("healthy until the first attempt");
    assert!(
        wait_for(WAIT, || is_failing(&mailer)),
        "health turns Failing"
    );
    let Health::Failing { since, last_error } = mailer.health() else {
        unreachable!("checked just above")
    };
    assert!(!last_error.is_empty());
    assert_eq!(
        mailer.submit(mail("invite", "bob@example.org", "second")),
        Err(Refused::RelayDown { since })
    );
    assert!(
        wait_for(WAIT, || {
            logs.lines_with(&[
                " WARN ",
                "it will be tried again",
                "to=ada-down@example.org",
            ])
            .len()
                >= 2
        }),
        "attempts are retried: {}",
        logs.text()
    );

    let server = SmtpServer::start_on(port, Behaviour::Accept).expect("the relay comes back");
    assert!(
        wait_for(WAIT, || server.messages().len() == 1),
        "a retry delivers the first mail"
    );
    assert!(wait_for(WAIT, || mailer.health() == Health::Healthy));
    mailer
        .submit(mail("invite", "bob@example.org", "third"))
        .expect("taken again once healthy");
    assert!(wait_for(WAIT, || server.messages().len() == 2));
    let bodies: Vec<String> = server.messages().into_iter().map(|m| m.data).collect();
    assert!(bodies[0].contains("t=first") && bodies[1].contains("t=third"));
    assert!(
        !logs
            .lines_with(&[" INFO ", "mail goes out again"])
            .is_empty()
    );
    assert_eq!(mailer.shutdown(WAIT), ShutdownOutcome::Drained);
}

#[test]
fn a_mail_out_of_attempts_is_dropped_and_a_probe_brings_health_back() {
    let logs = Logs::capture();
    let port = free_port();
    let config = MailConfig {
        max_attempts: 2,
        ..relay_config(port)
    };
    let mailer = Mailer::start(&config, std::path::Path::new("/nonexistent")).expect("start");
    mailer
        .submit(mail(
            "password-reset",
            "cy-dropped@example.org",
            "dropped-secret",
        ))
        .expect("taken");
    assert!(
        wait_for(WAIT, || !logs
            .lines_with(&[
                "mail dropped: delivery failed 2 times",
                "cy-dropped@example.org"
            ])
            .is_empty()),
        "{}",
        logs.text()
    );
    let log = logs.text();
    let dropped = logs
        .lines_with(&["mail dropped", "cy-dropped@example.org"])
        .remove(0);
    assert!(dropped.contains("ERROR"), "{dropped}");
    assert!(dropped.contains("password-reset"), "{dropped}");
    assert!(!log.contains("dropped-secret"), "no body in the log: {log}");
    assert!(is_failing(&mailer), "still failing: nothing succeeded");

    let server = SmtpServer::start_on(port, Behaviour::Accept).expect("the relay comes back");
    assert!(
        wait_for(WAIT, || mailer.health() == Health::Healthy),
        "a probe notices the relay is back"
    );
    assert!(server.seen().noops >= 1, "the probe said NOOP");
    assert!(
        server.messages().is_empty(),
        "the dropped mail stays dropped"
    );
    mailer
        .submit(mail("invite", "bob@example.org", "after"))
        .expect("taken again");
    assert!(wait_for(WAIT, || server.messages().len() == 1));
    assert_eq!(mailer.shutdown(WAIT), ShutdownOutcome::Drained);
}

#[test]
fn a_permanent_refusal_is_not_retried() {
    let logs = Logs::capture();
    let server = SmtpServer::start(Behaviour::RejectRcpt);
    let mailer = Mailer::start(
        &relay_config(server.port()),
        std::path::Path::new("/nonexistent"),
    )
    .expect("start");
    mailer
        .submit(mail(
            "verify-email",
            "nobody@example.org",
            "rejected-secret",
        ))
        .expect("taken");
    assert!(
        wait_for(WAIT, || !logs
            .lines_with(&["refused for good", "nobody@example.org"])
            .is_empty()),
        "{}",
        logs.text()
    );
    // Several back-offs' worth of time: a retry would have come by now.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(server.seen().rcpt_commands, 1, "not retried");
    assert_eq!(server.seen().connections, 1);
    assert_eq!(
        mailer.health(),
        Health::Healthy,
        "the relay answered: it is up"
    );
    let log = logs.text();
    let line = logs
        .lines_with(&["refused for good", "nobody@example.org"])
        .remove(0);
    assert!(
        line.contains("ERROR") && line.contains("nobody@example.org") && line.contains("550"),
        "{line}"
    );
    assert!(
        !log.contains("rejected-secret"),
        "no body in the log: {log}"
    );
    assert_eq!(mailer.shutdown(WAIT), ShutdownOutcome::Drained);
}

#[test]
fn a_full_queue_is_refused_at_once_while_the_relay_stalls() {
    let _logs = Logs::capture();
    let server = SmtpServer::start(Behaviour::Stall);
    let config = MailConfig {
        queue_capacity: 2,
        ..relay_config(server.port())
    };
    let mailer = Mailer::start(&config, std::path::Path::new("/nonexistent")).expect("start");
    let mut taken = 0;
    let mut refusal = None;
    for i in 0..10 {
        let started = Instant::now();
        let answer = mailer.submit(mail("invite", "bob@example.org", &format!("q{i}")));
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "submit never blocks"
        );
        match answer {
            Ok(()) => taken += 1,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    assert_eq!(refusal, Some(Refused::QueueFull));
    // The worker holds at most one in delivery, `capacity` in its list, `capacity` queued.
    assert!((2..=5).contains(&taken), "took {taken}");
    let started = Instant::now();
    let outcome = mailer.shutdown(Duration::from_millis(100));
    assert!(
        matches!(
            outcome,
            ShutdownOutcome::WorkerBusy | ShutdownOutcome::DeadlinePassed { .. }
        ),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown keeps its deadline"
    );
}
