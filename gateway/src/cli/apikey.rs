//! `portcullis admin apikey list|revoke`: the API keys of an organization, through
//! `portcullis_operations::apikeys` as the operator. Listing shows what each key may do and when it
//! was last used, never its secret (the store has only its hash). Keys are not created here: a key
//! acts as the user who created it, and the operator is no user; users create keys with the REST
//! API (`POST /api/v1/api-keys`).

use super::args::{parse_key, parse_org};
use super::events::AdminEvent;
use super::render::{self, failure, format_ms, names, printable, write_table};
use portcullis_operations::{Principal, StoreAccess, apikeys};
use portcullis_protocol::authz::{OrgId, Permission, Permissions};
use portcullis_protocol::store::{ApiKeyId, ApiKeyRecord};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, clap::Subcommand)]
pub enum ApikeyCommand {
    /// List the keys of an organization: name, creator, permissions, expiry, last use (never
    /// the secret).
    List {
        /// Organization id (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: OrgId,
    },
    /// Revoke a key: every request with it is refused from now on. Cannot be undone.
    Revoke {
        /// Key id: the number in pk_<id>_… (see `apikey list --org ID`).
        #[arg(value_parser = parse_key)]
        id: ApiKeyId,
    },
}

/// Runs an API key command as the operator.
pub fn execute(
    store: &mut impl StoreAccess,
    command: ApikeyCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let operator = &Principal::Operator;
    match command {
        ApikeyCommand::List { org } => {
            let keys = apikeys::list(store, operator, org).map_err(failure)?;
            list(&keys, org, json, out)
        }
        ApikeyCommand::Revoke { id } => {
            apikeys::revoke(store, operator, id).map_err(failure)?;
            AdminEvent::new("admin_apikey_revoked", id.to_string(), "revoked").record();
            if json {
                return render::json(out, &serde_json::json!({"revoked": id.0}));
            }
            writeln!(
                out,
                "Revoked API key {}: requests with it are refused from now on.",
                id.0
            )?;
            Ok(())
        }
    }
}

/// A key as the admin CLI shows it: never a secret or its hash.
#[derive(Serialize)]
struct KeyView<'a> {
    id: u64,
    name: &'a str,
    creator: u64,
    org: u32,
    permissions: Permissions,
    created_ms: u64,
    expires_ms: Option<u64>,
    last_used_ms: Option<u64>,
    revoked: bool,
}

impl<'a> From<&'a ApiKeyRecord> for KeyView<'a> {
    fn from(key: &'a ApiKeyRecord) -> Self {
        Self {
            id: key.id.0,
            name: &key.name,
            creator: key.creator.0,
            org: key.org.0,
            permissions: key.permissions,
            created_ms: key.created_ms,
            expires_ms: key.expires_ms,
            last_used_ms: key.last_used_ms,
            revoked: key.revoked,
        }
    }
}

fn list(keys: &[ApiKeyRecord], org: OrgId, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        let views: Vec<KeyView<'_>> = keys.iter().map(KeyView::from).collect();
        return render::json(out, &views);
    }
    if keys.is_empty() {
        writeln!(
            out,
            "Org {} has no API keys (users create them with POST /api/v1/api-keys).",
            org.0
        )?;
        return Ok(());
    }
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|key| {
            [
                key.id.0.to_string(),
                printable(&key.name),
                key.creator.0.to_string(),
                names(key.permissions.iter().map(Permission::name)),
                key.expires_ms.map_or_else(|| "never".into(), format_ms),
                key.last_used_ms.map_or_else(|| "never".into(), format_ms),
                if key.revoked { "revoked" } else { "active" }.into(),
            ]
        })
        .collect();
    write_table(
        out,
        [
            "ID",
            "NAME",
            "CREATOR",
            "PERMISSIONS",
            "EXPIRES",
            "LAST USED",
            "STATUS",
        ],
        &rows,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_store::{self, requests};
    use portcullis_protocol::authz::UserId;
    use portcullis_protocol::store::{Request, Response, StoreError};

    fn store_answer(request: &Request) -> Result<Response, StoreError> {
        match request {
            Request::ListApiKeys { org } => Ok(Response::ApiKeys(vec![ApiKeyRecord {
                id: ApiKeyId(3),
                name: "ci\x07".into(),
                creator: UserId(7),
                org: *org,
                permissions: Permissions::NONE.with(Permission::OrgDevicesView),
                created_ms: 1_700_000_000_000,
                expires_ms: None,
                last_used_ms: Some(1_700_000_000_500),
                revoked: false,
            }])),
            Request::RevokeApiKey { key: ApiKeyId(3) } => Ok(Response::Done),
            Request::RevokeApiKey { key } => Err(StoreError::NotFound(key.to_string())),
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        }
    }

    fn run(
        client: &mut portcullis_store_client::StoreClient,
        command: ApikeyCommand,
        json: bool,
    ) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        execute(client, command, json, &mut out)?;
        Ok(out)
    }

    #[test]
    fn list_shows_keys_without_secrets_and_revoke_names_the_key() {
        let (_dir, mut client, seen) = test_store::store(store_answer);
        let listed = test_store::json(
            run(&mut client, ApikeyCommand::List { org: OrgId(2) }, true).expect("lists"),
        );
        assert_eq!(
            listed,
            serde_json::json!([{"id": 3, "name": "ci\x07", "creator": 7, "org": 2,
                "permissions": ["org_devices.view"], "created_ms": 1_700_000_000_000u64,
                "expires_ms": null, "last_used_ms": 1_700_000_000_500u64, "revoked": false}])
        );
        let text = test_store::text(
            run(&mut client, ApikeyCommand::List { org: OrgId(2) }, false).expect("lists"),
        );
        assert!(
            text.contains("ci\u{fffd}")
                && text.contains("org_devices.view")
                && text.contains("never"),
            "{text}"
        );
        let text = test_store::text(
            run(
                &mut client,
                ApikeyCommand::Revoke { id: ApiKeyId(3) },
                false,
            )
            .expect("revokes"),
        );
        assert!(text.starts_with("Revoked API key 3"), "{text}");
        let err = run(
            &mut client,
            ApikeyCommand::Revoke { id: ApiKeyId(9) },
            false,
        )
        .expect_err("unknown");
        assert!(err.to_string().contains("apikey list"), "{err}");
        assert_eq!(
            requests(&seen),
            [
                Request::ListApiKeys { org: OrgId(2) },
                Request::ListApiKeys { org: OrgId(2) },
                Request::RevokeApiKey { key: ApiKeyId(3) },
                Request::RevokeApiKey { key: ApiKeyId(9) },
            ]
        );
    }
}
