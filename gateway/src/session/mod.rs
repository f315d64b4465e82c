//! Sans-IO connection stages. Nothing here touches a socket: a stage takes decoded frames or store
//! replies and writes its decisions into an [`Outbox`] (frames to send, store calls to make, or a
//! reason to close). The reactor owns the sockets and carries those decisions out.

pub mod account_failures;
pub mod app;
pub mod device;
pub mod http;
pub mod login;
pub mod outbox;
pub mod quota;
pub mod sniff;
pub mod throttle;

pub use app::{AppAction, AppSession};
pub use device::{DeviceSession, SessionLimits, SyncFilter};
pub use login::{LoginDecision, decide_login};
pub use outbox::{CloseReason, Outbox, StoreCall};
pub use quota::{QuotaLimits, QuotaVerdict};
pub use sniff::{Sniffed, sniff};
