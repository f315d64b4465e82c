//! From a request to the module of its concept: [`Store::execute_read`] for the requests that
//! write nothing, [`Store::prepare`] for the members of a write group. Both decide first
//! (`acting::decide`, with the view they read through), then validate and act: nothing about a
//! subject is read for, or said to, a party that may not see it.

use super::acting::{self, Who};
use super::devices::{self, load_device, require_device, set_info, write_property};
use super::group::{Change, Committed, Group};
use super::presence::set_presence;
use super::{
    Result, SchemaError, Store, apikeys, audit, history, now_ms, orgs, revocations, roles,
    sessions, templates, user_changes, users,
};
use crate::engine::Engine;
use portcullis_protocol::store::{Acting, Request, Response};

impl<E: Engine> Store<E> {
    pub(super) fn execute_read(
        &self,
        acting: Option<&Acting>,
        request: Request,
    ) -> Result<Response> {
        let view = Committed(&self.engine);
        let now = now_ms();
        let who = match acting::decide(&view, acting, &request, now) {
            Ok(who) => who,
            // "None when there is none, or the acting party may not see them."
            Err(SchemaError::NotFound(_)) if matches!(request, Request::FindUser { .. }) => {
                return Ok(Response::User(None));
            }
            Err(err) => return Err(err),
        };
        match request {
            Request::Ping => Ok(Response::Pong),
            Request::ListDevices {
                after,
                limit,
                scope,
            } => devices::list_devices(&view, &who, after, limit, &scope).map(Response::Devices),
            Request::GetDevice { device } => Ok(Response::Device(
                load_device(&view, device)?.to_wire(device)?,
            )),
            Request::Authenticate { token_hash } => {
                devices::authenticate(&view, &token_hash).map(Response::Authenticated)
            }
            Request::ReadPins { device, pins } => self.read_pins(device, pins).map(Response::Pins),
            Request::ReadProperties { device } => {
                self.read_properties(device).map(Response::Properties)
            }
            Request::ReadHistory {
                device,
                pin,
                from_ms,
                to_ms,
                step_ms,
                limit,
                after,
            } => {
                require_device(&view, device)?;
                let query = history::Query {
                    device,
                    pin,
                    from_ms,
                    to_ms,
                    step_ms,
                    limit,
                    after,
                };
                history::read(&self.engine, query, now).map(Response::History)
            }
            Request::Backup { dir } => self.backup(&dir),
            Request::Stats => Ok(Response::Stats(self.counters.snapshot())),
            Request::ReloadKeys => self.reload_keys().map(Response::Keys),
            Request::KeyUsage => self.key_usage().map(Response::Keys),
            Request::GetUser { email } => users::credentials(&view, &email),
            Request::GetOrg { org } => orgs::get_org(&view, org),
            Request::ListOrgs { org } => orgs::list_orgs(&view, &who, org),
            Request::ListRoles { org } => roles::list_roles(&view, org),
            Request::FindUser { user } => users::find(&view, user),
            Request::ListUsers { org, after, limit } => users::list_users(&view, org, after, limit),
            Request::ResolveSession { token_hash } => sessions::resolve(&view, &token_hash, now),
            Request::GetTemplate { id } => templates::get(&view, id),
            Request::ListTemplates { org } => templates::list(&view, org),
            Request::ListApiKeys { org } => apikeys::list(&view, org),
            Request::ReadAudit {
                org,
                subtree,
                after,
                limit,
            } => audit::read(&view, org, subtree, after, limit).map(Response::Audit),
            Request::Revocations { after } => {
                revocations::read(&view, after, now).map(Response::Revocations)
            }
            write => Err(SchemaError::Internal(format!(
                "a write reached the read path: {}",
                write.name()
            ))),
        }
    }

    /// Decides and validates one write request against `view` and says what it would write.
    pub(super) fn prepare(
        &self,
        view: &Group<'_, E>,
        acting: Option<&Acting>,
        request: Request,
    ) -> Result<(Response, Change)> {
        let who = acting::decide(view, acting, &request, now_ms())?;
        let done = |change: Change| (Response::Done, change);
        match request {
            Request::WritePins { writes } => self.write_pins(view, writes).map(done),
            Request::WriteProperty {
                device,
                pin,
                property,
                value,
                at_ms,
            } => write_property(view, device, pin, &property, value, at_ms).map(done),
            Request::SetPresence {
                device,
                presence,
                at_ms,
            } => set_presence(view, device, presence, at_ms).map(done),
            Request::SetInfo {
                device,
                info,
                at_ms,
            } => set_info(view, device, info, at_ms).map(done),
            other => prepare_account(view, &who, other),
        }
    }
}

/// The management and account writes.
fn prepare_account(
    view: &impl super::group::View,
    who: &Who,
    request: Request,
) -> Result<(Response, Change)> {
    match request {
        Request::CreateDevice {
            org,
            template,
            owner,
            name,
            token_hash,
        } => devices::create_device(view, who, org, template, owner, name, token_hash),
        Request::ReprovisionDevice { device, token_hash } => {
            devices::reprovision(view, who, device, token_hash)
        }
        Request::DeleteDevice { device } => devices::delete_device(view, who, device),
        Request::TransferDevice { device, org, owner } => {
            devices::transfer(view, who, device, org, owner)
        }
        Request::CreateUser {
            email,
            name,
            org,
            role,
            status,
            password_phc,
            invite,
        } => users::create_user(
            view,
            who,
            email,
            name,
            org,
            role,
            status,
            password_phc,
            invite,
        ),
        Request::UpdateUser { user, change } => user_changes::update_user(view, who, user, change),
        Request::DeleteUser { user } => user_changes::delete_user(view, who, user),
        Request::SignUp {
            email,
            name,
            org_name,
            password_phc,
            token_hash,
            expires_ms,
            from,
        } => users::sign_up(
            view,
            &who.with_address(from),
            email,
            name,
            org_name,
            password_phc,
            token_hash,
            expires_ms,
        ),
        Request::Bootstrap {
            email,
            password_phc,
        } => users::bootstrap(view, who, email, password_phc),
        Request::CreateOrg { parent, name } => orgs::create_org(view, who, parent, name),
        Request::UpdateOrg { org, name, parent } => orgs::update_org(view, who, org, name, parent),
        Request::CreateRole {
            org,
            name,
            permissions,
        } => roles::create_role(view, who, org, name, permissions),
        Request::UpdateRole {
            role,
            name,
            permissions,
        } => roles::update_role(view, who, role, name, permissions),
        Request::DeleteRole { role } => roles::delete_role(view, who, role),
        Request::CreateToken {
            user,
            purpose,
            token_hash,
            expires_ms,
        } => sessions::create_token(view, user, purpose, token_hash, expires_ms),
        Request::ConsumeToken {
            token_hash,
            using,
            from,
        } => sessions::consume_token(view, &who.with_address(from), token_hash, using),
        Request::CreateSession {
            user,
            token_hash,
            expires_ms,
        } => sessions::create_session(view, who, user, token_hash, expires_ms),
        Request::RevokeSessions { user, only } => sessions::revoke_sessions(view, who, user, only),
        Request::CreateTemplate {
            org,
            id,
            name,
            datastreams,
        } => templates::create(view, who, org, id, name, datastreams),
        Request::UpdateTemplate {
            id,
            name,
            datastreams,
        } => templates::update(view, who, id, name, datastreams),
        Request::DeleteTemplate { id } => templates::delete(view, who, id),
        Request::CreateApiKey {
            name,
            permissions,
            secret_hash,
            expires_ms,
        } => apikeys::create(view, who, name, permissions, secret_hash, expires_ms),
        Request::UseApiKey { key, secret_hash } => {
            apikeys::use_key(view, key, secret_hash, who.now)
        }
        Request::RevokeApiKey { key } => apikeys::revoke(view, who, key),
        read => Err(SchemaError::Internal(format!(
            "a read reached the write path: {}",
            read.name()
        ))),
    }
}
