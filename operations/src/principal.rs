//! Who acts: the [`Principal`] every operation takes. There are two kinds: the local operator
//! (the admin CLI, admitted by the store socket's uid check or the remote store's mutual TLS) and
//! a member of an organization, established by a session token ([`crate::sessions`]), an API key
//! ([`crate::apikeys`]) or a password login. A member carries what the permission decision needs
//! (`authz::Member`: user id, organization path, permissions) and the party the store resolves
//! again on its side ([`Acting`]), with the address the request came from for the audit log.
//! What a principal may do is not decided here but in [`crate::access`] and, again, by the store.

use portcullis_protocol::authz::{self, Actor, OrgId, OrgPath, Permissions, UserId};
use portcullis_protocol::store::{Acting, ApiKeyId, Party};
use std::fmt;

/// The address the operator acts from, in audit lines.
pub const OPERATOR_FROM: &str = "local";

/// The acting party of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The local operator running `portcullis admin`: may see and do everything.
    Operator,
    /// A user acting within their organization.
    Member(Member),
}

/// How a member proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A session token or a password checked just now.
    Session,
    /// An API key: the creator acts, limited to the key's permissions.
    ApiKey(ApiKeyId),
}

/// A user acting within their organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    actor: authz::Member,
    /// Normalized email, for logs.
    email: String,
    credential: Credential,
    /// The client's address, for the audit log.
    from: String,
}

impl Principal {
    /// A member as the store resolved them (a login, a session, a key).
    pub fn member(
        actor: authz::Member,
        email: impl Into<String>,
        credential: Credential,
        from: impl Into<String>,
    ) -> Principal {
        Principal::Member(Member {
            actor,
            email: email.into(),
            credential,
            from: from.into(),
        })
    }

    /// The member behind this principal; `None` for the operator.
    pub fn as_member(&self) -> Option<&Member> {
        match self {
            Principal::Operator => None,
            Principal::Member(member) => Some(member),
        }
    }

    /// The organization the principal belongs to: where its lists start when the caller names
    /// none (the root for the operator).
    pub fn home_org(&self) -> OrgId {
        self.as_member().map_or(OrgId::ROOT, |m| m.org().org())
    }

    /// The decision's view of this principal.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Operator => Actor::Operator,
            Principal::Member(member) => Actor::Member(member.actor.clone()),
        }
    }

    /// Whom the store is told the request acts for.
    pub fn acting(&self) -> Acting {
        match self {
            Principal::Operator => Acting {
                party: Party::Operator,
                from: OPERATOR_FROM.to_owned(),
            },
            Principal::Member(member) => Acting {
                party: match member.credential {
                    Credential::Session => Party::User(member.actor.user),
                    Credential::ApiKey(key) => Party::ApiKey(key),
                },
                from: member.from.clone(),
            },
        }
    }
}

impl Member {
    pub fn user(&self) -> UserId {
        self.actor.user
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    pub fn org(&self) -> &OrgPath {
        &self.actor.org
    }

    pub fn permissions(&self) -> Permissions {
        self.actor.permissions
    }

    pub fn credential(&self) -> Credential {
        self.credential
    }

    pub fn from(&self) -> &str {
        &self.from
    }
}

/// For logs: `operator`, or `user 7 EMAIL (org 3)` (with `via key 2` for a key).
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Operator => f.write_str("operator"),
            Principal::Member(member) => {
                write!(
                    f,
                    "user {} {} ({})",
                    member.actor.user.0,
                    member.email.escape_debug(),
                    member.actor.org.org()
                )?;
                if let Credential::ApiKey(key) = member.credential {
                    write!(f, " via {key}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use portcullis_protocol::authz::BuiltInRole;

    /// A member of the organization at `path` with a built-in role's permissions.
    pub(crate) fn member_of(user: u64, path: &[u32], role: BuiltInRole) -> Principal {
        let org = OrgPath::new(path.iter().map(|id| OrgId(*id)).collect()).expect("a path");
        Principal::member(
            authz::Member {
                user: UserId(user),
                org,
                permissions: role.default_permissions(),
            },
            format!("u{user}@example.com"),
            Credential::Session,
            "192.0.2.1",
        )
    }

    #[test]
    fn members_act_as_themselves_or_their_key_and_print_safely() {
        let ann = member_of(7, &[1, 3], BuiltInRole::Staff);
        assert_eq!(ann.to_string(), "user 7 u7@example.com (org 3)");
        assert_eq!(ann.acting().party, Party::User(UserId(7)));
        assert_eq!(ann.acting().from, "192.0.2.1");
        let Principal::Member(mut member) = ann else {
            panic!("a member")
        };
        member.credential = Credential::ApiKey(ApiKeyId(2));
        member.email = "a\n@b".into();
        let keyed = Principal::Member(member);
        assert_eq!(keyed.acting().party, Party::ApiKey(ApiKeyId(2)));
        assert!(!keyed.to_string().contains('\n'));
        assert!(keyed.to_string().ends_with("via key 2"));
        assert_eq!(Principal::Operator.acting().party, Party::Operator);
        assert_eq!(Principal::Operator.actor(), Actor::Operator);
    }
}
