//! Scoped API keys: a key acts as its creator, limited to a subset of the creator's permissions
//! (and, at each use, to what the creator still holds), with an optional expiry. The key is
//! `pk_<id>_<secret>`: the id names the record, the secret is random, shown once and stored only
//! hashed. A key cannot mint a broader key: [`create`] checks `authz::grantable` against the
//! principal, which for a key is the key's own permissions.

use crate::error::OperationError;
use crate::principal::Principal;
use crate::secrets::{self, Secret};
use crate::store_access::{StoreAccess, act_for};
use crate::users::done;
use portcullis_protocol::authz::{OrgId, Permissions, grantable};
use portcullis_protocol::store::{ApiKeyId, ApiKeyRecord, Request, Response};

/// What every key starts with.
pub const KEY_PREFIX: &str = "pk_";

/// A created key: its record and the full key, shown once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: ApiKeyRecord,
    pub secret: KeySecret,
}

/// `pk_<id>_<secret>`; `Debug` prints only the id.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

impl KeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.0.split('_').nth(1).unwrap_or("?");
        write!(f, "KeySecret(pk_{id}_…)")
    }
}

/// The id and secret of a presented key, if it has the shape of one.
pub fn parse_key(presented: &str) -> Option<(ApiKeyId, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = id.parse().ok()?;
    secrets::plausible(secret).then_some((ApiKeyId(id), secret))
}

pub fn create(
    store: &mut impl StoreAccess,
    principal: &Principal,
    name: String,
    permissions: Permissions,
    expires_ms: Option<u64>,
) -> Result<CreatedKey, OperationError> {
    grantable(&principal.actor(), permissions).map_err(|beyond| OperationError::NotPermitted {
        needs: beyond.to_string(),
    })?;
    let secret = Secret::generate()?;
    let request = Request::CreateApiKey {
        name,
        permissions,
        secret_hash: secret.hash(),
        expires_ms,
    };
    let key = act_for(store, principal, request, |r| match r {
        Response::ApiKey(key) => Ok(key),
        other => Err(Box::new(other)),
    })?;
    let secret = KeySecret(format!("{KEY_PREFIX}{}_{}", key.id.0, secret.expose()));
    Ok(CreatedKey { key, secret })
}

pub fn list(
    store: &mut impl StoreAccess,
    principal: &Principal,
    org: OrgId,
) -> Result<Vec<ApiKeyRecord>, OperationError> {
    act_for(
        store,
        principal,
        Request::ListApiKeys { org },
        |r| match r {
            Response::ApiKeys(keys) => Ok(keys),
            other => Err(Box::new(other)),
        },
    )
}

pub fn revoke(
    store: &mut impl StoreAccess,
    principal: &Principal,
    key: ApiKeyId,
) -> Result<(), OperationError> {
    act_for(store, principal, Request::RevokeApiKey { key }, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_their_shape() {
        let secret = Secret::generate().expect("random");
        let key = format!("pk_12_{}", secret.expose());
        assert_eq!(parse_key(&key), Some((ApiKeyId(12), secret.expose())));
        for bad in ["pk_", "pk_x_abc", "pk_1_short", "sk_1_abc", ""] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
        let shown = KeySecret(key);
        assert_eq!(format!("{shown:?}"), "KeySecret(pk_12_…)");
    }
}
