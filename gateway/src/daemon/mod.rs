//! The gateway process's life: `serve` brings the pieces up in order and takes them down, the
//! child store is supervised, SIGHUP reloads the configuration's live keys (`config_reload`) and
//! the certificate, systemd is told what is happening, logging is set up (the diagnostics log
//! and the reopenable security log), and the mailer serves the REST API's flows (`mail`).

pub mod config_reload;
pub mod logging;
mod mail;
pub mod revocation_poller;
pub mod serve;
pub mod store_supervisor;
pub mod systemd;
