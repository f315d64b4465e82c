//! Test doubles for [`StoreAccess`]: [`ScriptedStore`] answers each request with a closure and
//! records what it was sent, batch by batch; [`fleet`] is a small in-memory store of devices and
//! users in two organizations for the scope tests. No real engine runs in unit tests.

use crate::store_access::{Answer, LinkError, StoreAccess};
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    DeviceId, DeviceRecord, History, HistoryPoint, PinValue, Request, Response, StoreError,
    UserRecord,
};

/// Answers every request with `answer`; keeps every request, and each batch's size.
pub(crate) struct ScriptedStore<F> {
    answer: F,
    pub(crate) requests: Vec<Request>,
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
    fn call_many(&mut self, requests: Vec<Request>) -> Result<Vec<Answer>, LinkError> {
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
        self.requests.extend(requests);
        Ok(answers)
    }
}

/// A device of `org`, id `id`, online when `id` is odd.
pub(crate) fn device(id: DeviceId, org: &str) -> DeviceRecord {
    DeviceRecord {
        id,
        org: org.into(),
        template: "TMPL1".into(),
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

/// The store behind the scope tests: devices 1 and 2 of org "a", device 3 of org "b";
/// users ann@a.example (org "a") and bob@b.example (org "b"). Every device has V5 = "42" and
/// one history point; device 99 and the email nobody@x.example exist nowhere.
pub(crate) fn fleet() -> ScriptedStore<impl FnMut(&Request) -> Answer> {
    let devices = vec![device(1, "a"), device(2, "a"), device(3, "b")];
    let users: Vec<UserRecord> = [("ann@a.example", "a"), ("bob@b.example", "b")]
        .into_iter()
        .map(|(email, org)| UserRecord {
            email: email.into(),
            org: org.into(),
            password_phc: "$argon2id$not-for-printing".into(),
            created_ms: 1_700_000_000_000,
        })
        .collect();
    let find = move |id: DeviceId, devices: &[DeviceRecord]| {
        devices
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("device {id}")))
    };
    ScriptedStore::new(move |request| match request {
        Request::GetDevice { device } => find(*device, &devices).map(Response::Device),
        Request::ListDevices { after, limit, org } => Ok(Response::Devices(
            devices
                .iter()
                .filter(|d| after.is_none_or(|a| d.id > a))
                .filter(|d| org.as_ref().is_none_or(|o| &d.org == o))
                .take(*limit as usize)
                .cloned()
                .collect(),
        )),
        Request::ReadPins { device, .. } => find(*device, &devices).map(|_| {
            Response::Pins(vec![PinValue {
                pin: v5(),
                value: b"42".to_vec(),
                at_ms: 7,
            }])
        }),
        Request::ReadHistory { device, .. } => find(*device, &devices).map(|_| {
            Response::History(History::Points {
                points: vec![HistoryPoint {
                    at_ms: 7,
                    value: b"42".to_vec(),
                }],
                next: None,
            })
        }),
        Request::GetUser { email } => Ok(Response::User(
            users.iter().find(|u| &u.email == email).cloned(),
        )),
        other => Err(StoreError::Invalid(format!("the fleet has no {other:?}"))),
    })
}
