//! HTTP/1.1 on the device ports. Today it serves one thing: the upgrade to the app WebSocket at
//! `/api/ws` (`upgrade.rs`), after which the connection belongs to the app API session; any other
//! request is answered with a status that says why, and the connection closes.

pub mod upgrade;

use super::app_ws::AppWsSession;
use super::{InputLimit, Progress, ProtocolLimits, Session, Step};
use crate::conn::CloseReason;
use upgrade::{HttpHead, read_head};

/// An HTTP connection waiting for its request.
#[derive(Debug, Default)]
pub struct HttpSession {}

impl HttpSession {
    pub fn receive(&mut self, input: &[u8], step: &mut Step<'_>) -> Progress {
        match read_head(input) {
            HttpHead::NeedMore => Progress {
                used: 0,
                paused: false,
            },
            HttpHead::Upgrade { response, consumed } => {
                step.out.raw(&response);
                step.out.upgrade = Some(Session::AppWs(Box::new(AppWsSession::new())));
                // An app receives streams of events: a larger send buffer than a device's.
                step.out.send_buffer = Some(step.services.limits.app_socket_send_buffer_bytes);
                Progress {
                    used: consumed,
                    paused: false,
                }
            }
            HttpHead::Refuse {
                response,
                status,
                why,
            } => {
                step.out.raw(&response);
                step.out.close(CloseReason::HttpRefused { status, why });
                Progress {
                    used: input.len(),
                    paused: false,
                }
            }
        }
    }

    pub fn on_deadline(&self) -> CloseReason {
        CloseReason::LoginTimeout
    }

    pub fn input_limit(&self, limits: &ProtocolLimits) -> InputLimit {
        InputLimit::PreAuth(limits.preauth_buffer_bytes)
    }
}
