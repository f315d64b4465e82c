//! The two things the load generator asks the store directly, over the gateway's private store
//! socket (`<data-dir>/store.sock`, same access rule as `portcullis admin`): creating devices in
//! bulk for `provision` (the operations layer's `create_many`, as the operator: tokens generated
//! and hashed there, each batch pipelined on one link so the store can share WAL syncs between
//! them), and reading the telemetry pin of every device back after a `telemetry` run, so
//! "stored" is what the store holds, not what was sent.

use crate::tokens::TokenLine;
use portcullis_operations::devices::{NewDevice, create_many};
use portcullis_operations::{OperationError, Principal, templates};
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    ClientHello, ClientRole, NodeName, Request, Response, StoreError, TemplateId,
};
use portcullis_store_client::{StoreClient, StoreClientError};
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The name the load generator gives in its hello (it is no gateway node).
const LOADGEN_NODE: NodeName = NodeName::from_static("loadgen");

/// How long one pipelined batch may take before the link is considered stuck.
const STORE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum StoreOpError {
    #[error(transparent)]
    Link(#[from] StoreClientError),
    #[error("the store refused device {index}: {source}")]
    Refused { index: usize, source: StoreError },
    #[error("the store answered {request} with an unexpected {answer}")]
    Unexpected {
        request: &'static str,
        answer: String,
    },
    /// Provisioning failed as a whole: the link, or the operation refused the batch.
    #[error(transparent)]
    Provision(#[from] OperationError),
    #[error("device {index} was not created: {source}")]
    Create {
        index: usize,
        source: OperationError,
    },
}

/// An admin link's hello: provisioning creates devices, which only an admin or device-traffic
/// link may do, and the load generator is no gateway.
fn admin_hello() -> ClientHello {
    ClientHello::new(LOADGEN_NODE, ClientRole::Admin)
}

/// What `provision` did.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub devices: Vec<TokenLine>,
    pub took: Duration,
}

/// Creates `count` devices named `<prefix>-<n>` in `template`/`org`, `batch` requests per
/// pipelined call; `progress` is called after each batch with the total so far.
pub fn provision(
    socket: &Path,
    count: usize,
    batch: usize,
    names: (&str, &str, u32),
    mut progress: impl FnMut(usize),
) -> Result<Provisioned, StoreOpError> {
    let (prefix, template, org) = names;
    let org = OrgId(org);
    let template = templates::template_id(Some(template))?;
    let mut client = StoreClient::connect(socket, admin_hello(), STORE_TIMEOUT)?;
    ensure_template(&mut client, org, &template)?;
    let started = Instant::now();
    let mut devices = Vec::with_capacity(count);
    let batch = batch.max(1);
    while devices.len() < count {
        let n = batch.min(count - devices.len());
        let batch: Vec<NewDevice> = (0..n)
            .map(|i| NewDevice {
                name: format!("{prefix}-{}", devices.len() + i + 1),
                template: template.clone(),
                org,
                owner: None,
            })
            .collect();
        let answers = create_many(&mut client, &Principal::Operator, batch)?;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(created) => devices.push(TokenLine {
                    id: created.device.id,
                    token: created.token.expose().to_owned(),
                }),
                Err(source) => {
                    return Err(StoreOpError::Create {
                        index: devices.len() + i,
                        source,
                    });
                }
            }
        }
        progress(devices.len());
    }
    Ok(Provisioned {
        devices,
        took: started.elapsed(),
    })
}

/// Creates the devices' template in `org` unless it exists (a template is a device's product:
/// every device needs one).
fn ensure_template(
    client: &mut StoreClient,
    org: OrgId,
    id: &TemplateId,
) -> Result<(), OperationError> {
    match templates::get(client, &Principal::Operator, id.clone()) {
        Ok(_) => Ok(()),
        Err(OperationError::NotFound(_)) => {
            let name = "Load generator devices".to_owned();
            templates::create(
                client,
                &Principal::Operator,
                org,
                id.clone(),
                name,
                Vec::new(),
            )
            .map(|_| ())
        }
        Err(other) => Err(other),
    }
}

/// The telemetry pin's stored value of each device: the number of the last write the store
/// holds (writes carry their sequence number as the value). `None` where nothing is stored.
pub fn read_back(socket: &Path, ids: &[u64], pin: u8) -> Result<Vec<Option<u64>>, StoreOpError> {
    let mut client = StoreClient::connect(socket, admin_hello(), STORE_TIMEOUT)?;
    let pin = PinAddr::new(PinKind::Virtual, pin);
    let requests = ids
        .iter()
        .map(|&device| Request::ReadPins {
            device,
            pins: Some(vec![pin]),
        })
        .collect();
    let replies = client.call_many(requests)?;
    replies
        .into_iter()
        .enumerate()
        .map(|(index, reply)| match reply {
            Ok(Response::Pins(values)) => Ok(values
                .iter()
                .find(|v| v.pin == pin)
                .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse().ok())),
            Ok(other) => Err(StoreOpError::Unexpected {
                request: "ReadPins",
                answer: format!("{other:?}"),
            }),
            Err(source) => Err(StoreOpError::Refused { index, source }),
        })
        .collect()
}
