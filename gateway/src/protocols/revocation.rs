//! What one page of the store's revocation feed ends, as the sessions see it: the devices, users
//! and sessions it names, looked up per connection when a shard closes what was revoked
//! (`reactor/commands.rs`). A logged-in Blynk device is named by its device id; a logged-in app
//! by its user (the principal it logged in as) and, when it logged in with a session token
//! (`login_token`), by that token's hash, so a logout ends the connections of that session.

use super::Session;
use portcullis_protocol::authz::UserId;
use portcullis_protocol::store::{DeviceId, Revoked, SecretHash};
use std::collections::HashSet;

/// The revocations of one page, by kind, for one pass over a shard's connections.
#[derive(Debug, Default)]
pub struct RevocationSet {
    devices: HashSet<DeviceId>,
    users: HashSet<UserId>,
    sessions: HashSet<SecretHash>,
}

impl RevocationSet {
    pub fn new(revoked: &[Revoked]) -> Self {
        let mut set = Self::default();
        for entry in revoked {
            match *entry {
                Revoked::Device(device) => {
                    set.devices.insert(device);
                }
                Revoked::User(user) => {
                    set.users.insert(user);
                }
                Revoked::Session(hash) => {
                    set.sessions.insert(hash);
                }
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.users.is_empty() && self.sessions.is_empty()
    }

    /// Whether the session's credential is revoked, and what revoked it (for the close reason);
    /// `None` for a session that is not logged in or not named.
    pub fn ends(&self, session: &Session) -> Option<&'static str> {
        match session {
            Session::Blynk(device) => device
                .device()
                .filter(|d| self.devices.contains(d))
                .map(|_| "device re-provisioned or deleted"),
            Session::AppWs(app) => {
                if app.user().is_some_and(|u| self.users.contains(&u)) {
                    Some("user suspended, deleted or logged out everywhere")
                } else if app
                    .session_hash()
                    .is_some_and(|h| self.sessions.contains(h))
                {
                    Some("session logged out")
                } else {
                    None
                }
            }
            Session::Http(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::ProtocolLimits;
    use crate::protocols::blynk::device::DeviceSession;
    use crate::protocols::blynk::{BlynkSession, BlynkTransition};
    use std::sync::Arc;

    fn device(id: DeviceId) -> Session {
        let session = BlynkSession::new()
            .upgrade(BlynkTransition::LoginSent { msg_id: 1 })
            .and_then(|s| {
                s.upgrade(BlynkTransition::Authenticated(DeviceSession::new(
                    id,
                    Arc::from("TMPL1"),
                )))
            })
            .expect("test fixture");
        Session::Blynk(session)
    }

    #[test]
    fn a_page_ends_exactly_the_devices_it_names() {
        let set = RevocationSet::new(&[
            Revoked::Device(42),
            Revoked::User(UserId(7)),
            Revoked::Session([3; 32]),
        ]);
        assert!(!set.is_empty());
        assert_eq!(
            set.ends(&device(42)),
            Some("device re-provisioned or deleted")
        );
        assert_eq!(set.ends(&device(43)), None);
        // Not logged in yet: nothing to end (its login will meet the store's answer).
        assert_eq!(set.ends(&Session::Blynk(BlynkSession::new())), None);
        // An app that has not logged in names no user.
        assert_eq!(set.ends(&Session::AppWs(Box::default())), None);
        let limits: ProtocolLimits =
            crate::config::limits::shard_limits(&crate::config::Config::default()).protocol;
        let http =
            Session::start(crate::conn::select::Protocol::Http, &limits).expect("HTTP is served");
        assert_eq!(set.ends(&http), None);
        assert!(RevocationSet::new(&[]).is_empty());
    }
}
