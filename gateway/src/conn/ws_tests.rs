//! The WebSocket layer against a tungstenite client context in memory: binary messages carry Blynk
//! frames through it both ways (the layer a device over WebSocket will sit on), a message cut at
//! every byte arrives whole, pings are answered below the session, and an oversize message closes.

use super::*;
use crate::conn::ws_test_client::WsTestClient;
use portcullis_protocol::frame::{self, Decoded, Payload};
use portcullis_protocol::{Command, Status};

const LIMITS: WsLimits = WsLimits {
    read_buffer_bytes: 256,
    max_message_bytes: 1024,
};

/// Every Blynk frame in `bytes`, as (command, message id, body).
fn blynk_frames(mut bytes: &[u8]) -> Vec<(Command, u16, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        match frame::decode(bytes, 1024).expect("well-formed frames") {
            Decoded::Frame { frame, consumed } => {
                frames.push((frame.command, frame.msg_id, frame.body().to_vec()));
                bytes = &bytes[consumed..];
            }
            Decoded::NeedMore { .. } => panic!("a frame cut inside one message"),
        }
    }
    frames
}

#[test]
fn blynk_frames_travel_in_binary_messages_both_ways() {
    let mut client = WsTestClient::new();
    let mut layer = WsLayer::server(LIMITS);
    let mut frames = Vec::new();
    frame::encode(&mut frames, Command::HardwareLogin, 1, b"token").expect("encodes");
    frame::encode(&mut frames, Command::Ping, 2, b"").expect("encodes");
    let wire = client.frame(Message::binary(frames.clone()));

    let mut input = &wire[..];
    let WsRead::Binary(message) = layer.read(&mut input) else {
        panic!("a binary message")
    };
    assert!(input.is_empty(), "the whole message was used");
    assert_eq!(
        blynk_frames(&message),
        vec![
            (Command::HardwareLogin, 1, b"token".to_vec()),
            (Command::Ping, 2, Vec::new())
        ]
    );
    assert_eq!(layer.read(&mut input), WsRead::NeedMore);

    // The answers go back framed as one binary message the client reads as Blynk frames.
    let mut answers = Vec::new();
    frame::encode_response(&mut answers, 1, Status::Ok);
    frame::encode_response(&mut answers, 2, Status::Ok);
    layer.send_binary(answers.clone());
    let got = client.messages(&layer.take_output());
    assert_eq!(got, vec![Message::binary(answers.clone())]);
    let Some(Message::Binary(bytes)) = got.first() else {
        unreachable!()
    };
    let Decoded::Frame { frame, .. } = frame::decode(bytes, 1024).expect("decodes") else {
        panic!("a whole frame")
    };
    assert_eq!(frame.payload, Payload::Status(Status::Ok));
}

#[test]
fn a_message_cut_at_every_byte_arrives_whole() {
    let mut frames = Vec::new();
    frame::encode(&mut frames, Command::Hardware, 7, b"vw\x005\x0021.5").expect("encodes");
    let wire = WsTestClient::new().frame(Message::binary(frames.clone()));
    for cut in 1..wire.len() {
        let mut layer = WsLayer::server(LIMITS);
        let mut first = &wire[..cut];
        assert_eq!(layer.read(&mut first), WsRead::NeedMore, "cut at {cut}");
        assert!(first.is_empty(), "the layer keeps the partial frame itself");
        let mut rest = &wire[cut..];
        assert_eq!(
            layer.read(&mut rest),
            WsRead::Binary(frames.clone().into()),
            "cut at {cut}"
        );
    }
}

#[test]
fn pings_are_answered_below_the_session_and_an_oversize_message_closes() {
    let mut client = WsTestClient::new();
    let mut layer = WsLayer::server(LIMITS);
    let ping = client.frame(Message::Ping(b"hi".to_vec().into()));
    let mut input = &ping[..];
    assert_eq!(layer.read(&mut input), WsRead::NeedMore);
    assert_eq!(
        client.messages(&layer.take_output()),
        vec![Message::Pong(b"hi".to_vec().into())]
    );

    let big = client.frame(Message::binary(vec![0u8; LIMITS.max_message_bytes + 1]));
    let mut input = &big[..];
    assert!(matches!(
        layer.read(&mut input),
        WsRead::Close(CloseReason::Malformed(why)) if why.contains("too large")
    ));
}
