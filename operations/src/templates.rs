//! Templates (Blynk's products): what devices of one kind declare, with their datastreams. A
//! template belongs to an organization; the devices of that organization and of every one below
//! it may use it. Its id has Blynk's form (`TMPL…`) and is what firmware announces.

use crate::error::{InvalidInput, OperationError};
use crate::principal::Principal;
use crate::secrets::Secret;
use crate::store_access::{StoreAccess, act_for};
use crate::users::done;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::store::{Datastream, Request, Response, TemplateId, TemplateRecord};

/// Characters after `TMPL` in a generated id.
pub const GENERATED_ID_CHARS: usize = 10;

fn template(response: Response) -> Result<TemplateRecord, Box<Response>> {
    match response {
        Response::Template(template) => Ok(template),
        other => Err(Box::new(other)),
    }
}

/// A template id: the one given (checked), or a fresh random one.
pub fn template_id(given: Option<&str>) -> Result<TemplateId, OperationError> {
    match given {
        Some(id) => TemplateId::parse(id).map_err(|why| InvalidInput::BadTemplateId(why).into()),
        None => {
            let random = Secret::generate()?;
            let tail: String = random
                .expose()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(GENERATED_ID_CHARS)
                .collect();
            TemplateId::parse(&format!("TMPL{tail}"))
                .map_err(|why| InvalidInput::BadTemplateId(why).into())
        }
    }
}

pub fn create(
    store: &mut impl StoreAccess,
    principal: &Principal,
    org: OrgId,
    id: TemplateId,
    name: String,
    datastreams: Vec<Datastream>,
) -> Result<TemplateRecord, OperationError> {
    let request = Request::CreateTemplate {
        org,
        id,
        name,
        datastreams,
    };
    act_for(store, principal, request, template)
}

pub fn get(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: TemplateId,
) -> Result<TemplateRecord, OperationError> {
    act_for(store, principal, Request::GetTemplate { id }, template)
}

/// The templates the devices of `org` may use (its own and those above it).
pub fn list(
    store: &mut impl StoreAccess,
    principal: &Principal,
    org: OrgId,
) -> Result<Vec<TemplateRecord>, OperationError> {
    act_for(
        store,
        principal,
        Request::ListTemplates { org },
        |r| match r {
            Response::Templates(templates) => Ok(templates),
            other => Err(Box::new(other)),
        },
    )
}

pub fn update(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: TemplateId,
    name: Option<String>,
    datastreams: Option<Vec<Datastream>>,
) -> Result<TemplateRecord, OperationError> {
    let request = Request::UpdateTemplate {
        id,
        name,
        datastreams,
    };
    act_for(store, principal, request, template)
}

pub fn delete(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: TemplateId,
) -> Result<(), OperationError> {
    act_for(store, principal, Request::DeleteTemplate { id }, done)
}
