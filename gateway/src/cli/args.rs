//! How the admin commands read ids from the command line: organizations, users, roles (by
//! built-in name or id), templates (`TMPL…`) and API keys. Each parser says what it expected and
//! where to find a valid value, so a typo is answered before anything reaches the store. Shared by
//! every noun; it imports none of them.

use portcullis_protocol::authz::{BuiltInRole, OrgId, RoleId, UserId};
use portcullis_protocol::store::{ApiKeyId, TemplateId};

/// An organization id (1 is the root).
pub fn parse_org(text: &str) -> Result<OrgId, String> {
    text.trim().parse::<u32>().map(OrgId).map_err(|_| {
        format!("{text:?} is not an organization id (a number; see `portcullis admin org list`)")
    })
}

/// A user id (not an email: `user show --email` finds the id of an address).
pub fn parse_user(text: &str) -> Result<UserId, String> {
    text.trim().parse::<u64>().map(UserId).map_err(|_| {
        format!(
            "{text:?} is not a user id (a number; see `portcullis admin user list --org ORG` or `user show --email EMAIL`)"
        )
    })
}

/// A role by built-in name (`admin`, `staff`, `user`, any case) or id.
pub fn parse_role(text: &str) -> Result<RoleId, String> {
    let text = text.trim();
    if let Some(role) = BuiltInRole::ALL
        .into_iter()
        .find(|role| role.name().eq_ignore_ascii_case(text))
    {
        return Ok(role.id());
    }
    text.parse::<u32>().map(RoleId).map_err(|_| {
        format!(
            "{text:?} is neither admin, staff, user nor a role id (see `portcullis admin role list --org ORG`)"
        )
    })
}

/// A template id in Blynk's form (`TMPL` and 1 to 28 letters, digits, `_` or `-`).
pub fn parse_template(text: &str) -> Result<TemplateId, String> {
    TemplateId::parse(text.trim())
}

/// An API key's id: the number in `pk_<id>_…`, or the number alone.
pub fn parse_key(text: &str) -> Result<ApiKeyId, String> {
    let text = text.trim();
    let digits = text
        .strip_prefix("pk_")
        .map_or(text, |rest| rest.split('_').next().unwrap_or(rest));
    digits.parse::<u64>().map(ApiKeyId).map_err(|_| {
        format!(
            "{text:?} is not an API key id (a number; see `portcullis admin apikey list --org ORG`)"
        )
    })
}

/// A role as people read it: `Admin (1)` for a built-in role, `role 104` for a custom one.
pub fn role_label(role: RoleId) -> String {
    match BuiltInRole::from_id(role) {
        Some(built_in) => format!("{} ({})", built_in.name(), role.0),
        None => format!("role {}", role.0),
    }
}

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_or_say_where_to_look() {
        assert_eq!(parse_org(" 3 "), Ok(OrgId(3)));
        assert!(parse_org("acme").expect_err("a name").contains("org list"));
        assert!(parse_org("-1").is_err());
        assert_eq!(parse_user("42"), Ok(UserId(42)));
        assert!(
            parse_user("a@b.c")
                .expect_err("an email")
                .contains("--email")
        );
        assert_eq!(parse_key("pk_12_secretpart"), Ok(ApiKeyId(12)));
        assert_eq!(parse_key("7"), Ok(ApiKeyId(7)));
        assert!(
            parse_key("pk_x_y")
                .expect_err("no id")
                .contains("apikey list")
        );
        assert_eq!(
            parse_template("TMPL1").map(|t| t.to_string()),
            Ok("TMPL1".into())
        );
        assert!(parse_template("tmpl1").is_err());
    }

    #[test]
    fn roles_parse_by_built_in_name_or_id() {
        assert_eq!(parse_role("admin"), Ok(RoleId(1)));
        assert_eq!(parse_role("STAFF"), Ok(RoleId(2)));
        assert_eq!(parse_role("User"), Ok(RoleId(3)));
        assert_eq!(parse_role("104"), Ok(RoleId(104)));
        let err = parse_role("owner").expect_err("unknown name");
        assert!(err.contains("role list"), "{err}");
        assert_eq!(role_label(RoleId(2)), "Staff (2)");
        assert_eq!(role_label(RoleId(104)), "role 104");
    }
}
