//! Invariants of every parser a peer or an operator can feed, one function per fuzz target. Each
//! takes arbitrary bytes and panics if the parser panics or breaks a stated property; "returns an
//! error" is always acceptable. Shared verbatim by the libFuzzer targets (`fuzz_targets/`) and by
//! the stable corpus replay (`gateway/tests/fuzz_corpus.rs`, which includes this file by path).

use portcullis_gateway::config::Config;
use portcullis_gateway::conn::Transport;
use portcullis_gateway::conn::select::{Selection, select};
use portcullis_gateway::protocols::Outbox;
use portcullis_gateway::protocols::app_ws::session::{AppAction, AppSession};
use portcullis_gateway::protocols::blynk::device::{DeviceSession, SessionLimits, SyncFilter};
use portcullis_gateway::protocols::http::rest::{self, RestCall};
use portcullis_gateway::protocols::http::routes::REST_ROUTES;
use portcullis_gateway::protocols::http::{HttpSession, Outcome, answer};
use portcullis_protocol::app::AppEvent;
use portcullis_protocol::body::{self, Internal, MAX_INFO_FIELD_LEN};
use portcullis_protocol::frame::{self, Decoded, HEADER_LEN, Payload};
use portcullis_protocol::store::{
    self, ClientHello, PinValue, ReplyEnvelope, RequestEnvelope, ServerHello,
};
use std::path::Path;

/// The first two bytes pick the decoder's body limit; the rest is the byte stream.
fn split_limit(data: &[u8]) -> (usize, &[u8]) {
    match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => (1024, data),
    }
}

/// Device frame decoder: every decoded frame re-encodes to exactly the bytes it was decoded from,
/// never exceeds the body limit, and every strict prefix of it decodes as "need more".
pub fn device_frame(data: &[u8]) {
    let (max_body, mut stream) = split_limit(data);
    let mut first = true;
    loop {
        match frame::decode(stream, max_body) {
            Err(_) => return,
            Ok(Decoded::NeedMore { needed }) => {
                assert!(
                    needed > stream.len(),
                    "NeedMore({needed}) with {} bytes",
                    stream.len()
                );
                return;
            }
            Ok(Decoded::Frame { frame, consumed }) => {
                assert!((HEADER_LEN..=stream.len()).contains(&consumed));
                assert_eq!(consumed, frame.wire_len());
                if let Payload::Body(body) = frame.payload {
                    assert!(body.len() <= max_body);
                }
                let encoded = frame::to_vec(&frame).expect("a decoded frame re-encodes");
                assert_eq!(encoded, &stream[..consumed], "re-encoding differs");
                if first {
                    for cut in 0..consumed {
                        assert!(matches!(
                            frame::decode(&stream[..cut], max_body),
                            Ok(Decoded::NeedMore { .. })
                        ));
                    }
                    first = false;
                }
                stream = &stream[consumed..];
            }
        }
    }
}

/// Device session step: whatever a logged-in device sends, every frame the session answers with
/// decodes cleanly, and answers to the device respect its announced (or default) buffer size.
pub fn session_step(data: &[u8]) {
    let limits = SessionLimits::default();
    let mut session = DeviceSession::new(1, std::sync::Arc::from("TMPL1"));
    let mut out = Outbox::default();
    let mut stream = data;
    while let Ok(Decoded::Frame { frame, consumed }) = frame::decode(stream, 4096) {
        out.clear();
        let _call = session.on_frame(&frame, &mut out);
        check_outbox(&out);
        assert!(session.heartbeat_timeout(&limits).as_secs() >= 1);
        stream = &stream[consumed..];
    }
    // Replay the frames' bodies as stored pin values: a sync reply must fit the device buffer.
    let values: Vec<PinValue> = data
        .chunks(37)
        .enumerate()
        .map(|(i, chunk)| PinValue {
            pin: body::PinAddr::new(body::PinKind::Virtual, (i % 256) as u8),
            value: chunk.to_vec(),
            at_ms: 0,
        })
        .collect();
    out.clear();
    session.on_sync_reply(7, SyncFilter::Everything, &values, &limits, &mut out);
    let max = session.max_outbound_frame(&limits);
    for sent in out.frames() {
        assert!(
            sent.len() <= max,
            "sync frame of {} bytes > buff-in {max}",
            sent.len()
        );
    }
    check_outbox(&out);
}

fn check_outbox(out: &Outbox) {
    for sent in out.frames() {
        match frame::decode(sent, frame::MAX_WIRE_BODY_LEN) {
            Ok(Decoded::Frame { consumed, frame }) => {
                assert_eq!(consumed, sent.len());
                assert_ne!(frame.msg_id, 0, "message id 0 sent to a device");
            }
            other => panic!("the session sent an undecodable frame: {other:?}"),
        }
    }
}

/// Info-message and body parsers: never panic; info fields are capped and free of control
/// characters (they end up in logs and the admin CLI).
pub fn info_message(data: &[u8]) {
    if let Internal::Info(info) = body::parse_internal(data) {
        let fields = [
            &info.template,
            &info.firmware,
            &info.lib_version,
            &info.device_type,
        ];
        for field in fields.into_iter().flatten() {
            // A lossy replacement character is 3 bytes in UTF-8.
            assert!(
                field.len() <= 3 * MAX_INFO_FIELD_LEN,
                "field of {} bytes",
                field.len()
            );
            assert!(!field.chars().any(char::is_control), "{field:?}");
        }
    }
    let _ = body::parse_hardware(data);
    let _ = body::parse_sync(data);
    let _ = body::parse_property(data);
    assert!(body::split_args(data).count() <= data.len() + 1);
}

/// Protocol selector on the plain port: a definite answer never changes when more bytes arrive.
pub fn sniffer(data: &[u8]) {
    let choose = |bytes: &[u8]| select(Transport::Plain, None, bytes);
    let full = choose(data);
    let mut settled = None;
    for cut in 0..=data.len().min(16) {
        let got = choose(&data[..cut]);
        match &settled {
            Some(answer) => assert_eq!(&got, answer, "changed after {cut} bytes"),
            None if got != Selection::NeedMore => settled = Some(got),
            None => {}
        }
    }
    if let Some(answer) = settled {
        assert_eq!(full, answer);
    }
}

/// Store wire decoder: any decoded message re-encodes and decodes to itself; a frame is never
/// reported longer than the limit; the store's hello reader never takes another version's hello
/// for one of ours.
pub fn store_wire(data: &[u8]) {
    if let Ok(Some(len)) = store::frame_len(data) {
        assert!(len <= store::MAX_FRAME_LEN);
    }
    round_trip::<RequestEnvelope>(data);
    round_trip::<ReplyEnvelope>(data);
    round_trip::<ClientHello>(data);
    round_trip::<ServerHello>(data);
    // The store's hello reader: the version first, then (ours only) the whole hello.
    if let Ok(Some((store::ClientHelloFrame::Ours(hello), used))) = store::decode_client_hello(data)
    {
        assert!(used <= data.len());
        assert_eq!(hello.version, store::WIRE_VERSION);
    }
}

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(Some((msg, used))) = store::decode_frame::<T>(data) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        store::encode_frame(&msg, &mut again).expect("a decoded message re-encodes");
        match store::decode_frame::<T>(&again) {
            Ok(Some((back, n))) => {
                assert_eq!(n, again.len());
                assert_eq!(back, msg);
            }
            other => panic!("re-encoded message does not decode: {other:?}"),
        }
    }
}

/// Config loader: never panics; an accepted file renders to TOML that parses to the same config.
pub fn config_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    if let Ok(config) = Config::from_toml(text, path) {
        let rendered = config.to_toml();
        let again = Config::from_toml(&rendered, path)
            .unwrap_or_else(|e| panic!("rendered config is refused: {e}\n{rendered}"));
        assert_eq!(again, config);
    }
}

/// The server config the TLS target handshakes with: a development certificate generated once per
/// process into a private temporary directory.
fn tls_config() -> std::sync::Arc<rustls::ServerConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ServerConfig>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("portcullis-fuzz-tls-{}", std::process::id()));
            let paths = portcullis_gateway::tls::ensure_dev_certificate(&dir, &[])
                .expect("a development certificate can be generated");
            let config = portcullis_gateway::tls::load_server_config(&paths.cert, &paths.key)
                .expect("the generated certificate loads");
            let _ = std::fs::remove_dir_all(&dir);
            config
        })
        .clone()
}

/// TLS session (the first bytes any TLS client sends before it has proven anything): arbitrary
/// ciphertext, cut into pieces whose sizes the first byte picks, never panics, never yields
/// application data without a handshake, and never holds more than one record's worth of bytes.
pub fn tls_session(data: &[u8]) {
    use portcullis_gateway::conn::tls::{MAX_PARTIAL_RECORD, TlsSession};
    let (piece, rest) = match data {
        [first, rest @ ..] => (usize::from(*first).max(1), rest),
        [] => return,
    };
    let mut session = TlsSession::new(tls_config()).expect("a session starts");
    let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
    let mut input = rest.to_vec();
    for chunk in input.chunks_mut(piece) {
        match session.receive(chunk, &mut plaintext, &mut outgoing) {
            Ok(_) => {
                assert!(session.held_bytes() <= MAX_PARTIAL_RECORD + piece);
            }
            Err(_) => break,
        }
    }
    // Without the server's key no input can finish a handshake, so nothing is ever decrypted.
    assert!(session.is_handshaking());
    assert!(plaintext.is_empty());
}

/// The public ports' HTTP stage (the request reader, the router, the WebSocket upgrade): every
/// answer is a well-formed HTTP response (a status line, and a Content-Length that matches the
/// body unless it is a 1xx), and once a prefix of the input settles the first final answer,
/// more bytes never change it.
pub fn http_head(data: &[u8]) {
    // The default pre-login buffer, which bounds a request head.
    const MAX_HEAD: usize = 4116;
    let final_answers = |bytes: &[u8]| -> Vec<Vec<u8>> {
        let exchange = HttpSession::new(MAX_HEAD).exchange(bytes, answer);
        for answer in &exchange.answers {
            check_http_answer(answer);
        }
        assert!(exchange.used <= bytes.len());
        exchange
            .answers
            .into_iter()
            .filter(|a| !a.starts_with(b"HTTP/1.1 1"))
            .collect()
    };
    let full = final_answers(data);
    for cut in 0..=data.len().min(512) {
        if let Some(first) = final_answers(&data[..cut]).into_iter().next() {
            assert_eq!(Some(&first), full.first(), "more bytes changed the answer");
            break;
        }
    }
}

fn check_http_answer(answer: &[u8]) {
    let text = std::str::from_utf8(answer).unwrap();
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head = format!("{head}\r\n");
    if text.starts_with("HTTP/1.1 1") {
        assert!(
            body.is_empty() && !head.contains("Content-Length"),
            "{text}"
        );
    } else {
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{text}"
        );
    }
}

/// Frames each `\n`-separated piece of `data` as a masked client text frame (mask key zero), so
/// the fuzzer steers the JSON, not the framing.
fn client_frames(data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    for payload in data.split(|&b| b == b'\n') {
        wire.push(0x81);
        match u16::try_from(payload.len()) {
            Ok(len) if len < 126 => wire.push(0x80 | len as u8),
            Ok(len) => {
                wire.push(0x80 | 126);
                wire.extend_from_slice(&len.to_be_bytes());
            }
            Err(_) => return wire,
        }
        wire.extend_from_slice(&[0, 0, 0, 0]);
        wire.extend_from_slice(payload);
    }
    wire
}

/// App WebSocket session: arbitrary client frames (first byte even) or raw bytes (odd), in two
/// pieces, with any login answered as successful, never panic; everything the session sends is
/// well-formed server framing of JSON events (and pongs); it never asks the store for
/// more subscriptions than its cap, and never for anything before login.
pub fn app_session(data: &[u8]) {
    const CAP: usize = 3;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let wire = if mode % 2 == 0 {
        client_frames(rest)
    } else {
        rest.to_vec()
    };
    let cut = (usize::from(mode) * 7) % (wire.len() + 1);
    let mut session = AppSession::new();
    let mut actions = Vec::new();
    let mut output = Vec::new();
    let mut subscribes = 0;
    for piece in [&wire[..cut], &wire[cut..]] {
        session.receive(piece, CAP, &mut actions);
        for action in &actions {
            let allowed = match action {
                AppAction::Login { .. } | AppAction::Close(_) => true,
                _ => session.is_logged_in(),
            };
            assert!(allowed, "{action:?} before login");
        }
        // None is ever confirmed here, so all of them stay pending and count against the cap.
        subscribes += actions
            .iter()
            .filter(|a| matches!(a, AppAction::Subscribe { .. }))
            .count();
        assert!(subscribes <= CAP, "{subscribes} subscriptions asked for");
        if actions.iter().any(|a| matches!(a, AppAction::Login { .. })) {
            session.logged_in("a@b.c".into(), "o".into());
        }
        actions.clear();
        output.extend(session.take_output());
    }
    let mut app =
        tungstenite::protocol::WebSocketContext::new(tungstenite::protocol::Role::Client, None);
    let mut stream = std::io::Cursor::new(output);
    let mut sink = Vec::new();
    let mut duplex = Duplex(&mut stream, &mut sink);
    loop {
        match app.read(&mut duplex) {
            Ok(tungstenite::Message::Text(text)) => {
                let parsed = serde_json::from_str::<AppEvent>(text.as_str());
                assert!(parsed.is_ok(), "not an event: {text}");
            }
            // Pongs answer the app's pings.
            Ok(tungstenite::Message::Pong(_)) => {}
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(other) => panic!("the session sent {other:?}"),
        }
    }
}

/// Reads from one buffer, writes to another (the client's pongs go nowhere).
struct Duplex<'a>(&'a mut std::io::Cursor<Vec<u8>>, &'a mut Vec<u8>);

impl std::io::Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The REST API's input side, with no store. A first byte below 0x80: the input is a byte
/// stream on a public port (read, routed, matched as the HTTP session does); a call routed to a
/// worker then has its path parameters, query and JSON body decoded as its handler decodes them
/// (`rest::check_input`). A first byte of 0x80 or more: the next byte picks an endpoint of
/// `REST_ROUTES` and the rest, split at the first two `\n`, is its path parameter, query and body,
/// so the fuzzer reaches every body type without having to build an HTTP head. Never panics;
/// every refusal is a 400 in the API's error shape (`{"error":{"message":"..."}}`), framed as
/// well-formed HTTP, and a message stays within a bound of the input's size.
pub fn rest_request(data: &[u8]) {
    const MAX_HEAD: usize = 4116;
    let call = match data.split_first() {
        Some((mode, rest)) if *mode >= 0x80 => direct_call(rest),
        _ => {
            let exchange = HttpSession::new(MAX_HEAD).exchange(data, answer);
            for answer in &exchange.answers {
                check_http_answer(answer);
            }
            match exchange.outcome {
                Outcome::Working(call) => Some(*call),
                _ => None,
            }
        }
    };
    let Some(call) = call else { return };
    if let Err(error) = rest::check_input(&call) {
        assert_eq!(error.status, 400, "{error:?}");
        // A message may quote the input, escaped: one byte becomes at most six (`\u{1c}`).
        let params: usize = call.params.iter().map(|(_, v)| v.len()).sum();
        let quoted = call.body.len() + call.query.as_ref().map_or(0, String::len) + params;
        let limit = 1024 + 6 * quoted;
        assert!(
            error.message.len() <= limit,
            "a {}-byte message",
            error.message.len()
        );
        let bytes = error
            .response()
            .to_bytes(portcullis_protocol::http::WriteMode::KEEP_ALIVE);
        check_http_answer(&bytes);
        let text = std::str::from_utf8(&bytes).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        let shape: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(shape["error"]["message"].is_string(), "{body}");
    }
}

/// A call built straight from bytes: endpoint index, then `param \n query \n body`.
fn direct_call(data: &[u8]) -> Option<RestCall> {
    let (index, rest) = data.split_first()?;
    let (_, pattern, endpoint) = REST_ROUTES[usize::from(*index) % REST_ROUTES.len()];
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let param = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let query = parts
        .next()
        .map(|q| String::from_utf8_lossy(q).into_owned());
    let body = parts.next().unwrap_or_default().to_vec();
    let params = pattern
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| (name.to_owned(), param.clone()))
        .collect();
    Some(RestCall {
        endpoint,
        params,
        query,
        bearer: None,
        body,
        peer: None,
    })
}

/// One fuzz target's invariant check.
pub type Check = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: &[(&str, Check)] = &[
    ("device_frame", device_frame),
    ("session_step", session_step),
    ("info_message", info_message),
    ("sniffer", sniffer),
    ("store_wire", store_wire),
    ("config_loader", config_loader),
    ("tls_session", tls_session),
    ("http_head", http_head),
    ("app_session", app_session),
    ("rest_request", rest_request),
];
