//! Test support of the admin commands: a fake store (`portcullis_store_client::fake_store`) that
//! answers each request with a closure and records it together with the party it acted for, so a
//! test checks both the request's shape and that the CLI acted as the operator; and helpers that
//! run a command and return its text or JSON.

use portcullis_operations::Principal;
use portcullis_protocol::store::{
    Acting, ReplyEnvelope, Request, Response, ServerHello, StoreError, WIRE_VERSION,
};
use portcullis_store_client::StoreClient;
use portcullis_store_client::fake_store::{admin_hello, spawn};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The requests a fake store was sent, each with whom it acted for.
pub type Seen = Arc<Mutex<Vec<(Option<Acting>, Request)>>>;

/// A connected client of a fake store answering with `answer`; the directory holds its socket.
pub fn store(
    mut answer: impl FnMut(&Request) -> Result<Response, StoreError> + Send + 'static,
) -> (tempfile::TempDir, StoreClient, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let hello = ServerHello::Accepted {
        version: WIRE_VERSION,
    };
    let (dir, path, _server) = spawn(hello, move |envelope| {
        let result = answer(&envelope.request);
        record
            .lock()
            .expect("lock")
            .push((envelope.acting, envelope.request));
        Some(ReplyEnvelope {
            id: envelope.id,
            result,
        })
    });
    let client =
        StoreClient::connect(&path, admin_hello(), Duration::from_secs(5)).expect("connects");
    (dir, client, seen)
}

/// The requests sent so far, asserting that every one acted as the operator from `local`.
pub fn requests(seen: &Seen) -> Vec<Request> {
    let operator = Principal::Operator.acting();
    seen.lock()
        .expect("lock")
        .iter()
        .map(|(acting, request)| {
            assert_eq!(acting.as_ref(), Some(&operator), "{request:?}");
            request.clone()
        })
        .collect()
}

/// What a command printed, as text.
pub fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("utf-8")
}

/// What a command printed, as one JSON document.
pub fn json(out: Vec<u8>) -> serde_json::Value {
    serde_json::from_slice(&out).expect("one JSON document")
}
