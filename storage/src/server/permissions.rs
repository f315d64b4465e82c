//! What a link may send, decided by the role and the gateway node its hello named: the store's
//! one rule about links, applied to every request before it reaches the schema ([`check`]).
//!
//! | request | device traffic | admin | metrics |
//! |---|---|---|---|
//! | `Ping`, `Stats` | yes | yes | yes |
//! | key and backup requests ([`admin_only`]) | no | yes | no |
//! | `SetPresence`, `ResetPresence` | its own node's sessions only | yes | no |
//! | everything else | yes | yes | no |
//!
//! | acting party claimed | device traffic | admin | metrics |
//! |---|---|---|---|
//! | none | yes | yes | yes |
//! | `Party::Operator` | no | yes | no |
//! | `Party::User`, `Party::ApiKey` | yes | yes | no |
//!
//! The link only bounds which party a request may claim; whether that party may do what it asks
//! is the schema's decision (`schema::acting`), from the store's own records: a gateway claims
//! the user or key it authenticated, and the store resolves and checks it again.
//!
//! A presence change names its node in the request (the session tag, `ResetPresence { node }`)
//! rather than taking it from the link: the schema runs requests without knowing which link sent
//! them (a group mixes links; tools and tests call it directly), so the node has to be in the
//! request, and this check makes a device-traffic link's requests name its own node, so one
//! gateway can never end another's sessions. An admin link may name any node (an operator
//! clearing the sessions of a gateway that is gone for good).

use crate::schema::admin_only;
use portcullis_protocol::store::{Acting, ClientHello, ClientRole, NodeName, Party, Request};
use thiserror::Error;

/// Why a link may not send a request. All are the caller's: its role does not allow it (a
/// deployment or client bug, never the store's).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum Refusal {
    /// A key or backup request on a link that is not an admin link.
    #[error(
        "only an admin link may manage the encryption keys or take backups ({request} on a {role} link)"
    )]
    AdminOnly {
        request: &'static str,
        role: ClientRole,
    },
    /// A metrics link asked for more than a liveness check and the store's counters.
    #[error("a metrics link may send only Ping and Stats, not {request}")]
    MetricsOnly { request: &'static str },
    /// A link that may not claim the operator did.
    #[error("only an admin link may act as the operator ({request} on a {role} link)")]
    OperatorClaim {
        request: &'static str,
        role: ClientRole,
    },
    /// A metrics link claimed an acting party.
    #[error("a metrics link acts for nobody ({request} named an acting party)")]
    MetricsActing { request: &'static str },
    /// A device-traffic link named another node's sessions.
    #[error(
        "a link of gateway node {link} may change only its own node's presence, not node {named}'s"
    )]
    OtherNode { link: NodeName, named: NodeName },
}

/// Whether the link that said `hello` may send `request` acting for `acting`.
pub(crate) fn check(
    hello: &ClientHello,
    acting: Option<&Acting>,
    request: &Request,
) -> Result<(), Refusal> {
    match (&hello.role, acting.map(|a| a.party)) {
        (_, None) | (ClientRole::Admin, Some(_)) => {}
        (ClientRole::Metrics, Some(_)) => {
            return Err(Refusal::MetricsActing {
                request: request.name(),
            });
        }
        (role @ ClientRole::DeviceTraffic(_), Some(Party::Operator)) => {
            return Err(Refusal::OperatorClaim {
                request: request.name(),
                role: role.clone(),
            });
        }
        (ClientRole::DeviceTraffic(_), Some(Party::User(_) | Party::ApiKey(_))) => {}
    }
    let named_node = match request {
        Request::SetPresence { presence, .. } => Some(&presence.session().node),
        Request::ResetPresence { node } => Some(node),
        _ => None,
    };
    match &hello.role {
        ClientRole::Admin => Ok(()),
        ClientRole::Metrics => match request {
            Request::Ping | Request::Stats => Ok(()),
            other => Err(Refusal::MetricsOnly {
                request: other.name(),
            }),
        },
        role @ ClientRole::DeviceTraffic(_) => {
            if admin_only(request) {
                return Err(Refusal::AdminOnly {
                    request: request.name(),
                    role: role.clone(),
                });
            }
            match named_node {
                Some(named) if *named != hello.node => Err(Refusal::OtherNode {
                    link: hello.node.clone(),
                    named: named.clone(),
                }),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::store::{Presence, SessionTag, TrafficLink};

    fn node(name: &str) -> NodeName {
        NodeName::new(name).expect("valid name")
    }

    /// One request of every kind the rule tells apart, with the node a presence change names.
    fn requests(named: &str) -> Vec<Request> {
        let session = SessionTag {
            node: node(named),
            local: 1,
        };
        vec![
            Request::Ping,
            Request::Stats,
            Request::GetDevice { device: 1 },
            Request::WritePins { writes: Vec::new() },
            Request::GetUser {
                email: "a@b.c".into(),
            },
            Request::SetPresence {
                device: 1,
                presence: Presence::Online {
                    addr: "a".into(),
                    session: session.clone(),
                },
                at_ms: 1,
            },
            Request::SetPresence {
                device: 1,
                presence: Presence::Offline { session },
                at_ms: 1,
            },
            Request::ResetPresence { node: node(named) },
            Request::ReloadKeys,
            Request::KeyUsage,
            Request::Reseal { after: None },
            Request::Backup { dir: "/b".into() },
        ]
    }

    fn allowed(role: ClientRole, named: &str) -> Vec<&'static str> {
        let hello = ClientHello::new(node("gw1"), role);
        requests(named)
            .iter()
            .filter(|r| check(&hello, None, r).is_ok())
            .map(Request::name)
            .collect()
    }

    #[test]
    fn the_role_rule_matrix() {
        let everything: Vec<&str> = requests("gw1").iter().map(Request::name).collect();
        let shard = ClientRole::DeviceTraffic(TrafficLink::Shard(0));
        let device_traffic = [
            "Ping",
            "Stats",
            "GetDevice",
            "WritePins",
            "GetUser",
            "SetPresence",
            "SetPresence",
            "ResetPresence",
        ];
        assert_eq!(allowed(shard.clone(), "gw1"), device_traffic);
        assert_eq!(
            allowed(shard, "gw2"),
            ["Ping", "Stats", "GetDevice", "WritePins", "GetUser"],
            "never another node's presence"
        );
        for worker in [TrafficLink::Control, TrafficLink::Worker(3)] {
            assert_eq!(
                allowed(ClientRole::DeviceTraffic(worker), "gw1"),
                device_traffic
            );
        }
        assert_eq!(allowed(ClientRole::Admin, "gw1"), everything);
        assert_eq!(allowed(ClientRole::Admin, "gw2"), everything, "any node");
        assert_eq!(allowed(ClientRole::Metrics, "gw1"), ["Ping", "Stats"]);
    }

    #[test]
    fn which_party_each_role_may_claim() {
        let acting = |party| Acting {
            party,
            from: "local".into(),
        };
        let parties = [
            Party::Operator,
            Party::User(portcullis_protocol::authz::UserId(7)),
            Party::ApiKey(portcullis_protocol::store::ApiKeyId(3)),
        ];
        let claims = |role: ClientRole| -> Vec<bool> {
            let hello = ClientHello::new(node("gw1"), role);
            parties
                .iter()
                .map(|p| check(&hello, Some(&acting(*p)), &Request::Ping).is_ok())
                .collect()
        };
        assert_eq!(claims(ClientRole::Admin), [true, true, true]);
        let shard = ClientRole::DeviceTraffic(TrafficLink::Shard(0));
        assert_eq!(claims(shard.clone()), [false, true, true]);
        assert_eq!(claims(ClientRole::Metrics), [false, false, false]);
        let hello = ClientHello::new(node("gw1"), shard);
        let err = check(&hello, Some(&acting(Party::Operator)), &Request::Stats).expect_err("no");
        assert!(
            err.to_string()
                .starts_with("only an admin link may act as the operator"),
            "{err}"
        );
    }

    #[test]
    fn refusals_say_what_the_role_allows() {
        let metrics = ClientHello::new(node("gw1"), ClientRole::Metrics);
        let err = check(&metrics, None, &Request::GetDevice { device: 1 }).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "a metrics link may send only Ping and Stats, not GetDevice"
        );
        let shard = ClientHello::new(
            node("gw1"),
            ClientRole::DeviceTraffic(TrafficLink::Shard(2)),
        );
        let err = check(&shard, None, &Request::KeyUsage).expect_err("refused");
        assert!(
            err.to_string().starts_with("only an admin link may"),
            "{err}"
        );
        assert!(
            err.to_string().contains("device traffic (shard 2)"),
            "{err}"
        );
        let err =
            check(&shard, None, &Request::ResetPresence { node: node("gw2") }).expect_err("other");
        assert_eq!(
            err.to_string(),
            "a link of gateway node gw1 may change only its own node's presence, not node gw2's"
        );
    }
}
