//! Who acts: the [`Principal`] every operation takes. Today there are two kinds, the local
//! operator (the admin CLI, admitted by the store socket's uid check or the remote store's
//! mutual TLS) and a user logged in to one organization (the app API). What a principal may see
//! and do is not decided here but in [`crate::access`], the one place that reads these fields.
//!
//! Issue 13 (organizations, roles and permissions) extends [`Member`]: its organization becomes
//! an organization id in a tree instead of a free string, and it gains a role (a set of
//! permissions). Callers build members only through [`Principal::member`] and read them through
//! the accessors, so those changes stay inside this crate.

use std::fmt;

/// The acting party of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The local operator running `portcullis admin`: may see and do everything. Who the
    /// operator is (a uid, a certificate) is established before the store link opens.
    Operator,
    /// A user logged in to an organization.
    Member(Member),
}

/// A user acting within their organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Normalized email address: the user's login name and key.
    email: String,
    /// The organization whose devices the user sees. Issue 13: an `OrgId` (a node of the
    /// organization tree) replaces this string, and a `role` field joins it here.
    org: String,
}

impl Principal {
    /// A user of `org`, as a successful login ([`crate::login`]) establishes one. `email` is
    /// expected normalized ([`portcullis_protocol::app::normalize_email`]).
    pub fn member(email: impl Into<String>, org: impl Into<String>) -> Principal {
        Principal::Member(Member {
            email: email.into(),
            org: org.into(),
        })
    }

    /// The member behind this principal; `None` for the operator.
    pub fn as_member(&self) -> Option<&Member> {
        match self {
            Principal::Operator => None,
            Principal::Member(member) => Some(member),
        }
    }
}

impl Member {
    pub fn email(&self) -> &str {
        &self.email
    }

    pub fn org(&self) -> &str {
        &self.org
    }
}

/// For logs and audit lines: `operator`, or `user EMAIL (org ORG)`.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Operator => f.write_str("operator"),
            Principal::Member(member) => {
                write!(
                    f,
                    "user {} (org {:?})",
                    member.email.escape_debug(),
                    member.org
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_email_and_org_and_print_safely() {
        let principal = Principal::member("ann@example.com", "acme");
        let member = principal.as_member().expect("a member");
        assert_eq!((member.email(), member.org()), ("ann@example.com", "acme"));
        assert_eq!(principal.to_string(), "user ann@example.com (org \"acme\")");
        assert_eq!(Principal::Operator.to_string(), "operator");
        assert!(Principal::Operator.as_member().is_none());
        let hostile = Principal::member("a\n@b", "x\u{1b}");
        assert!(!hostile.to_string().contains(['\n', '\u{1b}']));
    }
}
