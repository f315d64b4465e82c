//! The relay over TLS, with rustls on ring and a private CA in `mail.smtp.ca_file`, as a
//! self-hosted relay would have it: STARTTLS and implicit TLS deliver; a certificate the CA
//! did not sign, or a relay that does not offer STARTTLS, fails before any mail is sent.

mod common;

use std::path::Path;

use common::tls::RelayPki;
use common::{Behaviour, Logs, ServerTls, SmtpServer, WAIT, header, split_message, wait_for};
use portcullis_mail::{
    Address, Health, Mail, MailConfig, Mailer, Security, ShutdownOutcome, SmtpConfig, TransportKind,
};

fn tls_config(port: u16, security: Security, ca_file: &Path) -> MailConfig {
    let mut smtp = SmtpConfig::new("localhost");
    smtp.port = port;
    smtp.security = security;
    smtp.ca_file = Some(ca_file.to_owned());
    smtp.timeout_secs = 2;
    MailConfig {
        transport: TransportKind::Smtp,
        from: "gw@example.org".to_owned(),
        smtp: Some(smtp),
        backoff_base_ms: 20,
        backoff_cap_ms: 100,
        ..MailConfig::default()
    }
}

fn mail(to: &str) -> Mail {
    let to: Address = to.parse().expect("a valid test address");
    Mail::new(
        "verify-email",
        to,
        "Over TLS",
        "open https://gw.example/v?t=tls-secret\n",
    )
    .expect("a valid mail")
}

fn deliver_over(tls: fn(&RelayPki) -> ServerTls, security: Security, to: &str) {
    let _logs = Logs::capture();
    let pki = RelayPki::new();
    let server = SmtpServer::start_with(0, Behaviour::Accept, tls(&pki)).expect("relay");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tls_config(server.port(), security, &pki.write_ca(dir.path()));
    let mailer = Mailer::start(&config, dir.path()).expect("start");
    mailer.submit(mail(to)).expect("taken");
    assert!(
        wait_for(WAIT, || server.messages().len() == 1),
        "delivered: {:?}",
        mailer.health()
    );
    let got = server.messages().remove(0);
    assert!(got.tls, "the mail came over TLS");
    let (headers, body) = split_message(&got.data);
    assert_eq!(header(&headers, "Subject"), Some("Over TLS"));
    assert!(body.contains("t=tls-secret"), "{body}");
    assert_eq!(mailer.health(), Health::Healthy);
    assert_eq!(mailer.shutdown(WAIT), ShutdownOutcome::Drained);
}

// `ServerTls` needs the relay's configuration, made per test; these build it from the PKI.
fn starttls(pki: &RelayPki) -> ServerTls {
    ServerTls::Starttls(pki.server.clone())
}

fn wrapper(pki: &RelayPki) -> ServerTls {
    ServerTls::Wrapper(pki.server.clone())
}

#[test]
fn starttls_to_a_relay_signed_by_the_configured_ca() {
    deliver_over(starttls, Security::Starttls, "ada-starttls@example.org");
}

#[test]
fn implicit_tls_to_a_relay_signed_by_the_configured_ca() {
    deliver_over(wrapper, Security::Tls, "ada-tls@example.org");
}

fn refused_before_any_mail(server: &SmtpServer, config: &MailConfig, dir: &Path) -> String {
    let mailer = Mailer::start(config, dir).expect("start");
    mailer
        .submit(mail("bob-refused@example.org"))
        .expect("taken");
    assert!(
        wait_for(WAIT, || matches!(mailer.health(), Health::Failing { .. })),
        "the relay is taken as failing"
    );
    let Health::Failing { last_error, .. } = mailer.health() else {
        unreachable!("checked just above")
    };
    assert!(server.messages().is_empty(), "nothing was sent");
    assert_eq!(server.seen().rcpt_commands, 0, "not even a recipient");
    let _ = mailer.shutdown(std::time::Duration::from_millis(100));
    last_error
}

#[test]
fn a_relay_certificate_from_another_ca_is_refused() {
    let _logs = Logs::capture();
    let (relay_pki, other_pki) = (RelayPki::new(), RelayPki::new());
    let server = SmtpServer::start_with(0, Behaviour::Accept, wrapper(&relay_pki)).expect("relay");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tls_config(
        server.port(),
        Security::Tls,
        &other_pki.write_ca(dir.path()),
    );
    let error = refused_before_any_mail(&server, &config, dir.path());
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[test]
fn a_relay_that_does_not_offer_starttls_gets_no_mail_in_clear() {
    let _logs = Logs::capture();
    let pki = RelayPki::new();
    let server = SmtpServer::start_with(0, Behaviour::Accept, ServerTls::None).expect("relay");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tls_config(server.port(), Security::Starttls, &pki.write_ca(dir.path()));
    let error = refused_before_any_mail(&server, &config, dir.path());
    assert!(!error.is_empty());
}
