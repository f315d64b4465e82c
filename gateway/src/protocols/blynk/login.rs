//! The login step: the first frame of a device connection must be a login (command 29, or 2 from
//! older libraries) carrying a plausible token. The token is hashed here and only the hash goes to
//! the store.

use portcullis_protocol::frame::Frame;
use portcullis_protocol::store::TokenHash;
use portcullis_protocol::token::{is_plausible_token, token_hash};

/// What to do with the first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginDecision {
    /// Ask the store who owns this token.
    Authenticate { token_hash: TokenHash, msg_id: u16 },
    /// Answer INVALID_TOKEN without asking anyone (wrong length or alphabet) and close.
    RefuseToken { msg_id: u16, reason: &'static str },
    /// Not a login at all: close without answering.
    NotALogin { command: u8 },
}

pub fn decide_login(frame: &Frame<'_>) -> LoginDecision {
    if !frame.command.is_login() {
        return LoginDecision::NotALogin {
            command: frame.command.code(),
        };
    }
    // The Blynk server trims the body; some firmwares append a NUL or a newline.
    let token = frame
        .body()
        .trim_ascii()
        .strip_suffix(b"\0")
        .unwrap_or(frame.body().trim_ascii());
    if !is_plausible_token(token) {
        let reason = if token.len() != 32 {
            "token has the wrong length"
        } else {
            "token has characters outside base64url"
        };
        return LoginDecision::RefuseToken {
            msg_id: frame.msg_id,
            reason,
        };
    }
    LoginDecision::Authenticate {
        token_hash: token_hash(token),
        msg_id: frame.msg_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::Command;
    use portcullis_protocol::frame::Payload;

    fn login(command: Command, body: &[u8]) -> LoginDecision {
        decide_login(&Frame {
            command,
            msg_id: 1,
            payload: Payload::Body(body),
        })
    }

    #[test]
    fn accepts_both_login_commands() {
        let token = b"0123456789abcdef0123456789abcdef";
        for command in [Command::HardwareLogin, Command::Login] {
            assert_eq!(
                login(command, token),
                LoginDecision::Authenticate {
                    token_hash: token_hash(token),
                    msg_id: 1
                }
            );
        }
        assert!(matches!(
            login(Command::Login, b" 0123456789abcdef0123456789abcdef\n"),
            LoginDecision::Authenticate { .. }
        ));
    }

    #[test]
    fn refuses_bad_tokens_and_non_logins() {
        assert!(matches!(
            login(Command::HardwareLogin, b"short"),
            LoginDecision::RefuseToken { .. }
        ));
        assert!(matches!(
            login(Command::HardwareLogin, b"0123456789abcdef0123456789abcd!!"),
            LoginDecision::RefuseToken { .. }
        ));
        assert_eq!(
            login(Command::Ping, b""),
            LoginDecision::NotALogin { command: 6 }
        );
    }
}
