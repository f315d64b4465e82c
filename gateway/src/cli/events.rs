//! Security events of the admin CLI: every change a command makes is written to the security log
//! (module `admin`) with the operator's Unix uid, which the store's audit log cannot know (it
//! records the operator as acting `from local`). One event type for every change, named by a
//! stable `kind` (`admin_device_created`, `admin_user_suspended`, ...). Never a secret: the
//! event says a token or password was issued, not which.

use crate::guard::security_log::{self, SecurityEvent};

/// One change made with the admin CLI.
#[derive(Debug)]
pub struct AdminEvent {
    /// Stable name, `admin_<noun>_<what happened>`.
    pub kind: &'static str,
    /// What was changed: `device 12`, `user 4`, `org 3`, `template TMPL1`, `key 2`.
    pub subject: String,
    /// What happened to it, in words (no secrets).
    pub what: String,
}

impl AdminEvent {
    pub fn new(kind: &'static str, subject: impl Into<String>, what: impl Into<String>) -> Self {
        Self {
            kind,
            subject: subject.into(),
            what: what.into(),
        }
    }

    /// Writes the event to the security log.
    pub fn record(&self) {
        security_log::record("admin", self);
    }
}

impl SecurityEvent for AdminEvent {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn source(&self) -> Option<std::net::IpAddr> {
        None
    }
    fn subject(&self) -> String {
        self.subject.clone()
    }
    fn reason(&self) -> String {
        format!(
            "by uid {} with the admin CLI: {}",
            nix::unistd::getuid(),
            self.what
        )
    }
    fn message(&self) -> &'static str {
        "admin action"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_change_and_the_uid() {
        let event = AdminEvent::new("admin_org_created", "org 3", "created below org 1");
        assert_eq!(event.kind(), "admin_org_created");
        assert_eq!(event.subject(), "org 3");
        let reason = event.reason();
        assert!(
            reason.starts_with("by uid ") && reason.ends_with("admin CLI: created below org 1"),
            "{reason}"
        );
    }
}
