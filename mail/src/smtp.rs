//! The SMTP transport: lettre's synchronous [`SmtpTransport`] built from `[mail.smtp]`
//! (STARTTLS, implicit TLS or, to a loopback relay only, none; rustls on ring with either the
//! built-in Mozilla roots or the configured CA file alone; optional credentials), one
//! connection per mail, and the sorting of lettre's errors into [`DeliveryError`]s.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport as _};

use crate::config::{ConfigError, LoadedSmtp, Security};
use crate::transport::DeliveryError;

/// Permanent reply codes that refuse the gateway rather than one mail: 530 (authentication
/// or encryption required), 534 (mechanism too weak), 535 (credentials invalid), 538
/// (encryption required for this mechanism).
const REFUSES_US: [u16; 4] = [530, 534, 535, 538];

/// A configured relay.
pub(crate) struct Relay {
    transport: SmtpTransport,
    host: String,
    port: u16,
}

impl Relay {
    pub(crate) fn new(smtp: &LoadedSmtp) -> Result<Relay, ConfigError> {
        let tls = match smtp.security {
            Security::None => Tls::None,
            Security::Starttls => Tls::Required(tls_parameters(smtp)?),
            Security::Tls => Tls::Wrapper(tls_parameters(smtp)?),
        };
        let mut builder = SmtpTransport::builder_dangerous(smtp.host.as_str())
            .port(smtp.port)
            .tls(tls)
            .timeout(Some(smtp.timeout));
        if let Some((user, password)) = &smtp.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
        }
        Ok(Relay {
            transport: builder.build(),
            host: smtp.host.clone(),
            port: smtp.port,
        })
    }

    /// `host:port`, for logs.
    pub(crate) fn describe(&self) -> String {
        format!("sent to the relay {}:{}", self.host, self.port)
    }

    pub(crate) fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        self.transport.send(message).map(drop).map_err(classify)
    }

    /// Connects, says hello, negotiates TLS, authenticates and sends NOOP: all a mail needs
    /// but the mail.
    pub(crate) fn probe(&self) -> Result<(), DeliveryError> {
        match self.transport.test_connection() {
            Ok(true) => Ok(()),
            Ok(false) => Err(DeliveryError::RelayUnavailable(
                "the relay did not answer NOOP".to_owned(),
            )),
            Err(e) => Err(classify(e)),
        }
    }
}

fn tls_parameters(smtp: &LoadedSmtp) -> Result<TlsParameters, ConfigError> {
    let builder = TlsParameters::builder(smtp.host.clone());
    let builder = match &smtp.ca_pem {
        None => builder.certificate_store(CertificateStore::WebpkiRoots),
        Some(pem) => {
            let ca = Certificate::from_pem(pem).map_err(|e| ca_problem(smtp, e))?;
            builder
                .certificate_store(CertificateStore::None)
                .add_root_certificate(ca)
        }
    };
    builder.build_rustls().map_err(|e| ca_problem(smtp, e))
}

fn ca_problem(smtp: &LoadedSmtp, e: lettre::transport::smtp::Error) -> ConfigError {
    ConfigError::CaFileContent {
        path: smtp.ca_file.clone().unwrap_or_default(),
        problem: format!("cannot be used to check the relay: {e}"),
    }
}

fn classify(e: lettre::transport::smtp::Error) -> DeliveryError {
    let text = e.to_string();
    match e.status().map(u16::from) {
        Some(code) if e.is_permanent() && REFUSES_US.contains(&code) => {
            DeliveryError::RelayRefusesUs(text)
        }
        Some(_) if e.is_permanent() => DeliveryError::Rejected(text),
        _ => DeliveryError::RelayUnavailable(text),
    }
}
