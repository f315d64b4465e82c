//! Test doubles for [`StoreAccess`]: [`ScriptedStore`] answers each request with a closure and
//! records what it was sent, batch by batch; [`fleet`] is a small in-memory store of devices in
//! two sibling organizations that hides like the real store, for the scope tests. No real engine runs in unit tests.

use crate::principal::Principal;
use crate::principal::tests::member_of;
use crate::store_access::{Answer, LinkError, StoreAccess};
use portcullis_protocol::authz::{BuiltInRole, OrgId, UserId};
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    Acting, DeviceId, DeviceRecord, DeviceScope, History, HistoryPoint, Party, PinValue, Request,
    Response, StoreError, TemplateId,
};

/// Answers every request with `answer`; keeps every request, whom it acted for, and each
/// batch's size.
pub(crate) struct ScriptedStore<F> {
    answer: F,
    pub(crate) requests: Vec<Request>,
    pub(crate) acting: Vec<Option<Acting>>,
    pub(crate) batches: Vec<usize>,
    /// Fail every call as a broken link.
    down: bool,
    /// Leave out the last answer of each batch (a broken link implementation).
    drop_last: bool,
}

impl<F: FnMut(&Request) -> Answer> ScriptedStore<F> {
    pub(crate) fn new(answer: F) -> Self {
        ScriptedStore {
            answer,
            requests: Vec::new(),
            acting: Vec::new(),
            batches: Vec::new(),
            down: false,
            drop_last: false,
        }
    }

    pub(crate) fn down(mut self) -> Self {
        self.down = true;
        self
    }

    pub(crate) fn dropping_answers(mut self) -> Self {
        self.drop_last = true;
        self
    }
}

impl<F: FnMut(&Request) -> Answer> StoreAccess for ScriptedStore<F> {
    fn call_many(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Answer>, LinkError> {
        if self.down {
            return Err(LinkError::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the store is not running",
            )));
        }
        self.batches.push(requests.len());
        let mut answers: Vec<_> = requests.iter().map(&mut self.answer).collect();
        if self.drop_last {
            answers.pop();
        }
        self.acting
            .extend(std::iter::repeat_n(acting.cloned(), requests.len()));
        self.requests.extend(requests);
        Ok(answers)
    }
}

/// Ann, Staff of org 2 (below the root), user 1.
pub(crate) fn ann() -> Principal {
    member_of(1, &[1, 2], BuiltInRole::Staff)
}

/// Bob, Staff of org 3 (beside org 2), user 2.
pub(crate) fn bob() -> Principal {
    member_of(2, &[1, 3], BuiltInRole::Staff)
}

/// A device of `org`, id `id`, online when `id` is odd.
pub(crate) fn device(id: DeviceId, org: u32) -> DeviceRecord {
    DeviceRecord {
        id,
        org: OrgId(org),
        template: TemplateId::parse("TMPL1").expect("a valid id"),
        owner: None,
        name: format!("dev{id}"),
        created_ms: 1_700_000_000_000,
        sessions: u32::from(id % 2 == 1),
        last_seen_ms: None,
        last_addr: None,
        info: None,
    }
}

/// The pin every fleet device has stored.
pub(crate) fn v5() -> PinAddr {
    PinAddr::new(PinKind::Virtual, 5)
}

/// A store that hides like the real one, for the scope tests: devices 1 and 2 of org 2,
/// device 3 of org 3; [`ann`] (user 1) sees org 2, [`bob`] (user 2) org 3, the operator
/// everything, and a hidden device answers exactly like device 99, which exists nowhere. Every
/// device has V5 = "42" and one history point.
pub(crate) fn fleet() -> Fleet {
    Fleet {
        devices: vec![device(1, 2), device(2, 2), device(3, 3)],
        requests: Vec::new(),
        batches: Vec::new(),
        down: false,
    }
}

pub(crate) struct Fleet {
    devices: Vec<DeviceRecord>,
    pub(crate) requests: Vec<Request>,
    pub(crate) batches: Vec<usize>,
    down: bool,
}

impl Fleet {
    pub(crate) fn down(mut self) -> Self {
        self.down = true;
        self
    }

    fn sees(acting: Option<&Acting>, device: &DeviceRecord) -> bool {
        match acting.map(|a| a.party) {
            Some(Party::Operator) => true,
            Some(Party::User(UserId(1))) => device.org == OrgId(2),
            Some(Party::User(UserId(2))) => device.org == OrgId(3),
            _ => false,
        }
    }

    fn answer(&self, acting: Option<&Acting>, request: &Request) -> Answer {
        let find = |id: DeviceId| {
            self.devices
                .iter()
                .find(|d| d.id == id && Fleet::sees(acting, d))
                .cloned()
                .ok_or_else(|| StoreError::NotFound(format!("device {id}")))
        };
        match request {
            Request::GetDevice { device } => find(*device).map(Response::Device),
            Request::ListDevices {
                after,
                limit,
                scope,
            } => Ok(Response::Devices(
                self.devices
                    .iter()
                    .filter(|d| after.is_none_or(|a| d.id > a))
                    .filter(|d| match scope {
                        DeviceScope::All => true,
                        DeviceScope::Org { org, .. } => d.org == *org,
                    })
                    .filter(|d| Fleet::sees(acting, d))
                    .take(*limit as usize)
                    .cloned()
                    .collect(),
            )),
            Request::ReadPins { device, .. } => find(*device).map(|_| {
                Response::Pins(vec![PinValue {
                    pin: v5(),
                    value: b"42".to_vec(),
                    at_ms: 7,
                }])
            }),
            Request::ReadHistory { device, .. } => find(*device).map(|_| {
                Response::History(History::Points {
                    points: vec![HistoryPoint {
                        at_ms: 7,
                        value: b"42".to_vec(),
                    }],
                    next: None,
                })
            }),
            other => Err(StoreError::Invalid(format!(
                "the fleet has no {}",
                other.name()
            ))),
        }
    }
}

impl StoreAccess for Fleet {
    fn call_many(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Answer>, LinkError> {
        if self.down {
            return Err(LinkError::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the store is not running",
            )));
        }
        self.batches.push(requests.len());
        let answers = requests.iter().map(|r| self.answer(acting, r)).collect();
        self.requests.extend(requests);
        Ok(answers)
    }
}
