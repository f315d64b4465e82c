//! The one hello exchange every client of the store runs, blocking or not: the client's first
//! frame is its [`ClientHello`] ([`encode_hello`]), and the store's [`ServerHello`] is judged by
//! [`check_answer`], the one version check. A store of another wire version is a
//! [`HelloError::VersionMismatch`] whether it accepted us or not (it may not know it cannot serve
//! us), with the same text in every client; a refusal at our own version is the store's decision
//! about this client ([`HelloError::Refused`], e.g. a peer uid check or a bad node name).

use portcullis_protocol::store::{
    ClientHello, ServerHello, WIRE_VERSION, WireError, decode_frame, encode_frame,
};
use thiserror::Error;

/// Why the store did not accept our hello. Neither is the client's bug: both are the operator's
/// to fix (matching releases, or the store's access rules).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HelloError {
    /// The store speaks another version of the wire protocol: the binaries are from different
    /// builds.
    #[error("the store {}", mismatch_text(*ours, *theirs, reason.as_deref()))]
    VersionMismatch {
        ours: u16,
        theirs: u16,
        /// What the store said, when it refused.
        reason: Option<String>,
    },
    /// The store speaks our version but refused this client; its reason says why.
    #[error("the store refused the link: {reason}")]
    Refused { version: u16, reason: String },
}

/// The text of a version mismatch after "the store" (or "the store at ADDR"): the same words in
/// every client, saying what to do.
pub fn mismatch_text(ours: u16, theirs: u16, reason: Option<&str>) -> String {
    format!(
        "speaks wire version {theirs}, this program speaks {ours}; run a portcullis and \
         portcullis-store from the same release{}",
        reason
            .map(|r| format!(" (store said: {r})"))
            .unwrap_or_default()
    )
}

/// Appends the hello frame to `out`.
pub fn encode_hello(hello: &ClientHello, out: &mut Vec<u8>) -> Result<(), WireError> {
    encode_frame(hello, out)
}

/// Judges the store's answer to our hello.
pub fn check_answer(answer: ServerHello) -> Result<(), HelloError> {
    match answer {
        ServerHello::Accepted { version } if version == WIRE_VERSION => Ok(()),
        ServerHello::Accepted { version } => Err(HelloError::VersionMismatch {
            ours: WIRE_VERSION,
            theirs: version,
            reason: None,
        }),
        ServerHello::Refused { version, reason } if version == WIRE_VERSION => {
            Err(HelloError::Refused { version, reason })
        }
        ServerHello::Refused { version, reason } => Err(HelloError::VersionMismatch {
            ours: WIRE_VERSION,
            theirs: version,
            reason: Some(reason),
        }),
    }
}

/// The store's judged answer to a hello and the bytes it used.
pub type DecodedAnswer = (Result<(), HelloError>, usize);

/// Decodes and judges the store's hello at the front of `buf`: `Ok(None)` while it is
/// incomplete, otherwise the verdict and the bytes the hello used. The error is a frame that
/// does not decode (the store broke the wire contract).
pub fn decode_answer(buf: &[u8]) -> Result<Option<DecodedAnswer>, WireError> {
    Ok(decode_frame::<ServerHello>(buf)?.map(|(answer, used)| (check_answer(answer), used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_version_accepted_is_accepted() {
        assert_eq!(
            check_answer(ServerHello::Accepted {
                version: WIRE_VERSION
            }),
            Ok(())
        );
        // A store that accepts but speaks another version cannot serve us either.
        let err = check_answer(ServerHello::Accepted {
            version: WIRE_VERSION + 1,
        })
        .expect_err("mismatch");
        assert_eq!(
            err,
            HelloError::VersionMismatch {
                ours: WIRE_VERSION,
                theirs: WIRE_VERSION + 1,
                reason: None
            }
        );
        assert!(err.to_string().contains("same release"), "{err}");
    }

    #[test]
    fn a_refusal_at_another_version_is_a_mismatch_with_the_stores_words() {
        let err = check_answer(ServerHello::Refused {
            version: 2,
            reason: "this store speaks wire version 2, not 3".into(),
        })
        .expect_err("mismatch");
        assert!(matches!(err, HelloError::VersionMismatch { theirs: 2, .. }));
        let text = err.to_string();
        assert!(
            text.starts_with("the store speaks wire version 2"),
            "{text}"
        );
        assert!(text.contains("(store said: this store speaks"), "{text}");
    }

    #[test]
    fn a_refusal_at_our_version_is_the_stores_decision() {
        let err = check_answer(ServerHello::Refused {
            version: WIRE_VERSION,
            reason: "peer uid 1001 is not the store's uid 1000; refused".into(),
        })
        .expect_err("refused");
        assert!(matches!(err, HelloError::Refused { .. }));
        assert!(err.to_string().contains("uid 1001"), "{err}");
    }

    #[test]
    fn the_answer_is_decoded_once_complete() {
        let mut frame = Vec::new();
        encode_frame(
            &ServerHello::Accepted {
                version: WIRE_VERSION,
            },
            &mut frame,
        )
        .expect("encodes");
        assert_eq!(decode_answer(&frame[..2]).expect("valid"), None);
        assert_eq!(
            decode_answer(&frame).expect("valid"),
            Some((Ok(()), frame.len()))
        );
        assert!(decode_answer(&[0, 0, 0, 2, 0xff, 0xff]).is_err());
    }
}
