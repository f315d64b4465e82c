//! The gateway's defences against abuse, all sans-IO and shared by every protocol: admission of
//! new connections (per-source caps and accept rates), the device and app login throttles, the
//! per-account count of failed app logins, the per-second budget of security events an outsider
//! can cause, and the security log those events are written to.

pub mod account_failures;
pub mod admission;
pub mod log_budget;
pub mod login_throttle;
pub mod security_events;
pub mod security_log;
