//! The one blocking store client (`portcullis_store_client::StoreClient`) as the link operations
//! run on ([`StoreAccess`]), for the admin CLI and the load generator's provisioning (the gateway's
//! worker threads wrap a client in their own reconnecting `WorkerLink`). Failures of the link keep
//! the client's own error (and so its messages and hints) inside the [`LinkError`]. The impl lives
//! on this side so the store client stays a transport that knows no operation.

use crate::{LinkError, StoreAccess};
use portcullis_protocol::store::{Acting, Request, Response, StoreError};
use portcullis_store_client::StoreClient;

impl StoreAccess for StoreClient {
    fn call_many(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, StoreError>>, LinkError> {
        StoreClient::call_many_as(self, acting, requests).map_err(LinkError::new)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Fault, OperationError, Principal, devices};
    use portcullis_protocol::store::{Request, Response, ServerHello, StoreError, WIRE_VERSION};
    use portcullis_store_client::StoreClient;
    use portcullis_store_client::fake_store::{admin_hello, serving, spawn};
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn operations_run_on_the_blocking_client_and_keep_its_errors() {
        let (_dir, path, server) = serving(|request| match request {
            Request::GetDevice { device: 1 } => Ok(Response::Device(crate::scripted::device(1, 2))),
            _ => Err(StoreError::NotFound("device".into())),
        });
        let mut client = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect("connects");
        let ann = crate::scripted::ann();
        assert_eq!(devices::get(&mut client, &ann, 1).expect("visible").id, 1);
        // What the store hides comes back as its NotFound, which is the operation's.
        assert!(matches!(
            devices::get(&mut client, &ann, 2),
            Err(OperationError::NotFound(crate::Missing::Device(2)))
        ));
        drop(client);
        server.join().expect("server ok");

        // A store that hangs up: the operation's error is the client's, word for word.
        let accepted = ServerHello::Accepted {
            version: WIRE_VERSION,
        };
        let (_dir, path, _server) = spawn(accepted, |_| None);
        let mut client = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect("connects");
        let error = devices::get(&mut client, &Principal::Operator, 1).expect_err("hung up");
        assert_eq!(error.fault(), Fault::StoreUnavailable);
        assert!(
            error.to_string().contains("closed the connection"),
            "{error}"
        );
    }
}
