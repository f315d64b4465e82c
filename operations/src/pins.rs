//! The latest stored value of a device's pins. The device lookup and the pin read travel
//! pipelined; the lookup decides whether the principal sees the device (and tells an unknown
//! device from one that never wrote a pin) before any value is returned.

use crate::devices::visible_device;
use crate::error::OperationError;
use crate::principal::Principal;
use crate::store_access::{StoreAccess, act_pair};
use portcullis_protocol::body::PinAddr;
use portcullis_protocol::store::{DeviceId, PinValue, Request, Response};

/// The stored values of `pins` of `device` (`None`: every pin it ever wrote), in the store's
/// order. Empty when the device never wrote one.
pub fn read_latest(
    store: &mut impl StoreAccess,
    principal: &Principal,
    device: DeviceId,
    pins: Option<Vec<PinAddr>>,
) -> Result<Vec<PinValue>, OperationError> {
    let (device_reply, pins_reply) = act_pair(
        store,
        principal,
        Request::GetDevice { device },
        Request::ReadPins { device, pins },
    )?;
    visible_device(device, device_reply)?;
    match pins_reply {
        Ok(Response::Pins(values)) => Ok(values),
        Ok(other) => Err(OperationError::unexpected("ReadPins", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Missing;
    use crate::scripted::{ScriptedStore, fleet, v5};
    use portcullis_protocol::store::StoreError;

    #[test]
    fn pins_scope_matrix() {
        for (who, principal, sees_device_of_a) in [
            ("operator", Principal::Operator, true),
            ("member of a", crate::scripted::ann(), true),
            ("member of b", crate::scripted::bob(), false),
        ] {
            let mut store = fleet();
            match read_latest(&mut store, &principal, 1, None) {
                Ok(values) if sees_device_of_a => assert_eq!(values[0].pin, v5(), "{who}"),
                Err(OperationError::NotFound(Missing::Device(1))) if !sees_device_of_a => {}
                other => panic!("{who}: {other:?}"),
            }
            let missing = read_latest(&mut store, &principal, 99, None).expect_err("missing");
            assert!(
                matches!(missing, OperationError::NotFound(Missing::Device(99))),
                "{who}: {missing:?}"
            );
            assert_eq!(store.batches, [2, 2], "{who}: lookup and read pipelined");
        }
    }

    #[test]
    fn a_device_without_pins_is_not_a_missing_device() {
        let mut store = ScriptedStore::new(|request| match request {
            Request::GetDevice { .. } => Ok(Response::Device(crate::scripted::device(2, 2))),
            Request::ReadPins { .. } => Ok(Response::Pins(Vec::new())),
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        assert_eq!(
            read_latest(&mut store, &Principal::Operator, 2, None).expect("reads"),
            []
        );
    }
}
