//! The client end of a WebSocket for tests, in memory: it frames what a client sends (masked, as
//! browsers and apps do) and reads back what the server's layer (`ws.rs`) sent. Shared by the
//! tests of the layer and of the sessions that run over it.

use super::ws::Pipe;
use serde::de::DeserializeOwned;
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocketContext};

pub(crate) struct WsTestClient {
    ws: WebSocketContext,
}

impl WsTestClient {
    pub fn new() -> Self {
        Self {
            ws: WebSocketContext::new(Role::Client, None),
        }
    }

    /// The bytes a client sends for `message`.
    pub fn frame(&mut self, message: Message) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pipe = Pipe {
            input: &[],
            output: &mut out,
        };
        self.ws.write(&mut pipe, message).expect("test fixture");
        self.ws.flush(&mut pipe).expect("test fixture");
        out
    }

    /// The bytes of one text message.
    pub fn text(&mut self, text: &str) -> Vec<u8> {
        self.frame(Message::text(text))
    }

    /// Every whole message in what the server sent, in order.
    pub fn messages(&mut self, wire: &[u8]) -> Vec<Message> {
        let mut sink = Vec::new();
        let mut pipe = Pipe {
            input: wire,
            output: &mut sink,
        };
        let mut messages = Vec::new();
        while let Ok(message) = self.ws.read(&mut pipe) {
            messages.push(message);
        }
        messages
    }

    /// The text messages in what the server sent, each read as JSON.
    pub fn json<T: DeserializeOwned>(&mut self, wire: &[u8]) -> Vec<T> {
        self.messages(wire)
            .into_iter()
            .filter_map(|message| match message {
                Message::Text(text) => {
                    Some(serde_json::from_str(text.as_str()).expect("JSON from the server"))
                }
                _ => None,
            })
            .collect()
    }
}
