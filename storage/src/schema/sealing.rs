//! The store's side of key rotation (encryption at rest, see `engine::sealed`): the admin
//! requests `ReloadKeys` and `KeyUsage` (answered on the link's thread) and `Reseal` (a member
//! of the group committer's write path, so a step never races a device's write), the `Reseal`
//! cursor's wire form, and the reload the store runs on SIGHUP.
//!
//! Reseal cursor: one byte, the index of the column family in [`Cf::ALL`], then the last row
//! key looked at. Opaque to clients; checked here since it comes from a peer.

use super::{Result, SchemaError, Store, now_ms};
use crate::engine::sealed::KeyUse;
use crate::engine::{Cf, Engine};
use portcullis_protocol::store::{
    KeyCount, KeyStatus, MAX_RESEAL_BATCH, MAX_RESEAL_CURSOR_LEN, ResealProgress,
};

fn not_sealed() -> SchemaError {
    SchemaError::Invalid(
        "this store does not encrypt at rest (it was started without a key file)".into(),
    )
}

fn encode_cursor(cf: Cf, key: &[u8]) -> Vec<u8> {
    let index = Cf::ALL.iter().position(|c| *c == cf).unwrap_or(0);
    let mut cursor = Vec::with_capacity(1 + key.len());
    cursor.push(u8::try_from(index).unwrap_or(0));
    cursor.extend_from_slice(key);
    cursor
}

fn decode_cursor(cursor: &[u8]) -> Result<(Cf, Vec<u8>)> {
    if cursor.len() > MAX_RESEAL_CURSOR_LEN {
        return Err(SchemaError::Invalid(format!(
            "the reseal cursor is {} bytes long; the limit is {MAX_RESEAL_CURSOR_LEN}",
            cursor.len()
        )));
    }
    let (&index, key) = cursor
        .split_first()
        .ok_or_else(|| SchemaError::Invalid("the reseal cursor is empty".into()))?;
    let cf = Cf::ALL
        .get(usize::from(index))
        .ok_or_else(|| SchemaError::Invalid("the reseal cursor names no column family".into()))?;
    Ok((*cf, key.to_vec()))
}

fn status((current, loaded): (u32, Vec<u32>)) -> KeyStatus {
    KeyStatus {
        current,
        loaded,
        in_use: Vec::new(),
    }
}

impl<E: Engine> Store<E> {
    /// Re-reads the key file and adopts it (see `Sealing::reload_keys`); a refusal is logged
    /// with its reason, and the store goes on with the keys it has.
    pub fn reload_keys(&self) -> Result<KeyStatus> {
        let sealing = self.engine.sealing().ok_or_else(not_sealed)?;
        match sealing.reload_keys() {
            Ok((current, loaded)) => {
                tracing::info!(
                    current,
                    ?loaded,
                    "key file reloaded; new writes use key {current}"
                );
                Ok(status((current, loaded)))
            }
            Err(err) => {
                let (current, _) = sealing.key_status();
                tracing::error!(%err, current, "key file reload refused; keeping the current keys");
                Err(SchemaError::Invalid(format!(
                    "{err}; the store keeps its current keys (current key {current})"
                )))
            }
        }
    }

    /// Counts the stored values per key id.
    pub(super) fn key_usage(&self) -> Result<KeyStatus> {
        let sealing = self.engine.sealing().ok_or_else(not_sealed)?;
        let KeyUse {
            current,
            loaded,
            counts,
        } = sealing.count_keys()?;
        tracing::info!(current, ?counts, "stored values counted by key id");
        Ok(KeyStatus {
            current,
            loaded,
            in_use: counts
                .into_iter()
                .map(|(id, values)| KeyCount { id, values })
                .collect(),
        })
    }

    /// One reseal step after `after`. Runs under the group writer's lock, between groups.
    pub(super) fn reseal_step(&self, after: Option<&[u8]>) -> Result<ResealProgress> {
        let sealing = self.engine.sealing().ok_or_else(not_sealed)?;
        let after = after.map(decode_cursor).transpose()?;
        let step = sealing.reseal_step(after, MAX_RESEAL_BATCH as usize, now_ms())?;
        if step.resealed + step.dropped > 0 {
            tracing::debug!(
                resealed = step.resealed,
                dropped = step.dropped,
                "values re-sealed with the current key"
            );
        }
        Ok(ResealProgress {
            scanned: step.scanned,
            resealed: step.resealed,
            dropped: step.dropped,
            next: step.next.map(|(cf, key)| encode_cursor(cf, &key)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{AsOperator, ensure_template, tmpl};
    use super::*;
    use crate::engine::memory::MemoryEngine;
    use crate::engine::sealed::{Keyring, Sealed, rotate_key};
    use portcullis_protocol::authz::OrgId;
    use portcullis_protocol::body::{PinAddr, PinKind};
    use portcullis_protocol::store::{History, PinWrite, Request, Response, StoreError};
    use std::sync::Arc;

    type SealedStore = Store<Sealed<Arc<MemoryEngine>>>;

    fn sealed_store(dir: &std::path::Path) -> (Arc<SealedStore>, std::path::PathBuf) {
        let path = dir.join("keys");
        rotate_key(&path).expect("key");
        let engine = Sealed::open(
            Arc::new(MemoryEngine::new()),
            Keyring::load(&path).expect("load"),
        )
        .expect("sealed");
        (Arc::new(Store::open(engine).expect("store")), path)
    }

    fn pin() -> PinAddr {
        PinAddr::new(PinKind::Virtual, 1)
    }

    fn write(device: u64, value: u64) -> Request {
        Request::WritePins {
            writes: vec![PinWrite {
                device,
                pin: pin(),
                value: value.to_string().into_bytes(),
                at_ms: crate::engine::unix_ms(),
            }],
        }
    }

    fn latest(s: &SealedStore, device: u64) -> Vec<u8> {
        match s.op(Request::ReadPins { device, pins: None }) {
            Ok(Response::Pins(p)) => p[0].value.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn reseal_pass(s: &SealedStore) -> u64 {
        let mut after = None;
        let mut resealed = 0;
        loop {
            match s.op(Request::Reseal { after }) {
                Ok(Response::Resealed(p)) => {
                    resealed += p.resealed;
                    after = p.next;
                }
                other => panic!("{other:?}"),
            }
            if after.is_none() {
                return resealed;
            }
        }
    }

    /// A device keeps writing while passes of reseal run: the latest value is always the last
    /// one written, never an older one put back by a reseal that read it before the write.
    #[test]
    fn reseal_never_puts_back_an_older_value_of_a_concurrent_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, path) = sealed_store(dir.path());
        ensure_template(&s, OrgId::ROOT, "TMPL1");
        let device = match s.op(Request::CreateDevice {
            org: OrgId::ROOT,
            template: tmpl("TMPL1"),
            owner: None,
            name: "d".into(),
            token_hash: [1; 32],
        }) {
            Ok(Response::Device(d)) => d.id,
            other => panic!("{other:?}"),
        };
        for i in 0..2000 {
            assert_eq!(s.op(write(device, i)), Ok(Response::Done));
        }
        rotate_key(&path).expect("rotate");
        assert_eq!(s.reload_keys().expect("reload").current, 2);
        const WRITES: u64 = 3000;
        let writer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 2000..2000 + WRITES {
                    assert_eq!(s.op(write(device, i)), Ok(Response::Done));
                    assert_eq!(latest(&s, device), i.to_string().into_bytes());
                }
            })
        };
        let mut resealed = 0;
        while !writer.is_finished() {
            resealed += reseal_pass(&s);
        }
        writer.join().expect("writer");
        resealed += reseal_pass(&s);
        assert!(
            resealed >= 2000,
            "history and the rest moved to key 2: {resealed}"
        );
        assert_eq!(
            latest(&s, device),
            (2000 + WRITES - 1).to_string().into_bytes()
        );
        let usage = s.key_usage().expect("usage");
        assert_eq!(
            usage.in_use,
            vec![KeyCount {
                id: 2,
                values: usage.in_use[0].values
            }]
        );
        match s.op(Request::ReadHistory {
            device,
            pin: pin(),
            from_ms: 0,
            to_ms: u64::MAX,
            step_ms: None,
            limit: 10_000,
            after: None,
        }) {
            Ok(Response::History(History::Points { points, next })) => {
                assert_eq!((points.len() as u64, next), (2000 + WRITES, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_clear_store_refuses_the_key_requests() {
        let s = Store::open(Sealed::clear(MemoryEngine::new()).expect("clear")).expect("store");
        for request in [
            Request::ReloadKeys,
            Request::KeyUsage,
            Request::Reseal { after: None },
        ] {
            let err = s.op(request).expect_err("not sealed");
            assert!(
                matches!(&err, StoreError::Invalid(m) if m.contains("does not encrypt")),
                "{err}"
            );
        }
        let err = s
            .op(Request::Reseal {
                after: Some(vec![99]),
            })
            .expect_err("bad cursor");
        assert!(matches!(err, StoreError::Invalid(_)));
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = encode_cursor(Cf::History, b"abc");
        assert_eq!(
            decode_cursor(&c).expect("cursor"),
            (Cf::History, b"abc".to_vec())
        );
        assert!(decode_cursor(&[]).is_err());
        assert!(decode_cursor(&[200, 1]).is_err());
        assert!(decode_cursor(&vec![0; MAX_RESEAL_CURSOR_LEN + 1]).is_err());
    }
}
