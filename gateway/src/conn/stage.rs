//! The connection state machine, the same for every protocol: `Selecting → Serving(session) →
//! Closing`, where an upgrade may hand a serving connection to another protocol's session (HTTP →
//! app WebSocket). It is generic over the session type so this layer knows no protocol; the
//! reactor plugs in `crate::protocols::Session`. Advanced only through [`Stage::upgrade`], which
//! consumes the stage: a transition that makes no sense for the current stage closes the
//! connection with an internal reason instead of carrying on in a state nobody designed.
//!
//! What happens inside a protocol (a device's login, an app's login) is that protocol's own
//! state machine, kept in its session.

use super::close::CloseReason;

#[derive(Debug)]
pub enum Stage<S> {
    /// Waiting for the TLS handshake (when there is one) and for the first bytes or the ALPN
    /// answer that say which protocol the connection speaks (see `conn/select.rs`).
    Selecting,
    /// A protocol's session owns the connection.
    Serving(S),
    /// The last bytes are being flushed; nothing more is read.
    Closing(CloseReason),
}

/// What moves a connection from one stage to the next.
#[derive(Debug)]
pub enum Transition<S> {
    /// The selector picked a protocol: its session starts.
    Selected(S),
    /// The serving session handed the connection to another protocol's session.
    Upgraded(S),
    Close(CloseReason),
}

impl<S> Stage<S> {
    /// Consumes the stage and returns the next one.
    pub fn upgrade(self, transition: Transition<S>) -> Stage<S> {
        match (self, transition) {
            (Stage::Closing(reason), _) => Stage::Closing(reason),
            (_, Transition::Close(reason)) => Stage::Closing(reason),
            (Stage::Selecting, Transition::Selected(session)) => Stage::Serving(session),
            (Stage::Serving(_), Transition::Upgraded(session)) => Stage::Serving(session),
            (stage, transition) => Stage::Closing(CloseReason::Internal(format!(
                "{} is not valid while {}",
                transition.name(),
                stage.name()
            ))),
        }
    }

    /// Moves `self` on in place (the stage is taken and put back).
    pub fn advance(&mut self, transition: Transition<S>) {
        let current = std::mem::replace(self, Stage::Selecting);
        *self = current.upgrade(transition);
    }

    pub fn session(&self) -> Option<&S> {
        match self {
            Stage::Serving(session) => Some(session),
            _ => None,
        }
    }

    pub fn session_mut(&mut self) -> Option<&mut S> {
        match self {
            Stage::Serving(session) => Some(session),
            _ => None,
        }
    }

    pub fn is_closing(&self) -> bool {
        matches!(self, Stage::Closing(_))
    }

    fn name(&self) -> &'static str {
        match self {
            Stage::Selecting => "selecting a protocol",
            Stage::Serving(_) => "serving",
            Stage::Closing(_) => "closing",
        }
    }
}

impl<S> Transition<S> {
    fn name(&self) -> &'static str {
        match self {
            Transition::Selected(_) => "selecting a protocol",
            Transition::Upgraded(_) => "an upgrade",
            Transition::Close(_) => "closing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_only_move_forward() {
        let s: Stage<&str> = Stage::Selecting;
        let s = s.upgrade(Transition::Selected("blynk"));
        assert_eq!(s.session(), Some(&"blynk"));
        // An upgrade replaces the session (HTTP → WebSocket).
        let s = s.upgrade(Transition::Upgraded("app"));
        assert_eq!(s.session(), Some(&"app"));
        // Selecting again is refused and closes, naming it an internal error.
        let s = s.upgrade(Transition::Selected("blynk"));
        assert!(matches!(s, Stage::Closing(CloseReason::Internal(_))));
        // Closing is final, and keeps its first reason.
        let s = s.upgrade(Transition::Close(CloseReason::PeerClosed));
        assert!(matches!(s, Stage::Closing(CloseReason::Internal(_))));
        // An upgrade before any protocol was selected is refused too.
        let s: Stage<&str> = Stage::Selecting;
        assert!(s.upgrade(Transition::Upgraded("app")).is_closing());
    }

    #[test]
    fn advance_moves_in_place() {
        let mut s: Stage<u8> = Stage::Selecting;
        s.advance(Transition::Selected(1));
        assert_eq!(s.session(), Some(&1));
        s.advance(Transition::Close(CloseReason::Shutdown));
        assert!(matches!(s, Stage::Closing(CloseReason::Shutdown)));
    }
}
