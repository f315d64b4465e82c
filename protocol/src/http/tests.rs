//! The reader end to end, as a caller drives it: fragmented input at every split point,
//! pipelining, each refusal with its status, the keep-alive matrix, chunked edge cases, and
//! property tests that a written request reads back whatever the cuts.

use super::*;
use proptest::prelude::*;

/// Feeds `bytes` in one piece to a fresh reader with `limits`.
fn read_with(limits: Limits, bytes: &[u8]) -> Result<Parsed, RequestError> {
    RequestReader::new(limits).read(bytes)
}

fn read(bytes: &[u8]) -> Result<Parsed, RequestError> {
    read_with(Limits::default(), bytes)
}

fn complete(bytes: &[u8]) -> (Request, usize) {
    match read(bytes) {
        Ok(Parsed::Complete { request, used }) => (request, used),
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn refusal(limits: Limits, bytes: &[u8]) -> RequestError {
    match read_with(limits, bytes) {
        Err(error) => error,
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn status_of(text: &str) -> u16 {
    refusal(Limits::default(), text.as_bytes()).status()
}

/// Every request a connection carries, reading `stream` cut at `cuts` (offsets into the stream,
/// ascending), as a caller with a growing buffer would. Ends with the refusal, if any.
fn drive(
    limits: Limits,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<(Request, usize)>, Option<RequestError>) {
    let mut reader = RequestReader::new(limits);
    let mut requests = Vec::new();
    let mut start = 0;
    let ends = cuts
        .iter()
        .copied()
        .filter(|&c| c <= stream.len())
        .chain([stream.len()]);
    for end in ends {
        loop {
            match reader.read(&stream[start..end]) {
                Ok(Parsed::Complete { request, used }) => {
                    assert!(used > 0 && start + used <= end);
                    start += used;
                    requests.push((request, used));
                }
                Ok(Parsed::NeedMore(_)) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
    }
    (requests, None)
}

const GET: &str = "GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n";
const POST: &str = "POST /devices HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
const CHUNKED: &str = "PUT /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: 1\r\n\r\n";

#[test]
fn a_get_with_every_part() {
    let (request, used) = complete(GET.as_bytes());
    assert_eq!(used, GET.len());
    assert_eq!(request.method, Method::Get);
    assert_eq!(request.path, "/metrics");
    assert_eq!(request.query.as_deref(), Some("x=1"));
    assert_eq!(request.version, Version::Http11);
    assert_eq!(request.header("ACCEPT"), Some(&b"*/*"[..]));
    assert!(request.body.is_empty() && request.keep_alive);
}

#[test]
fn bodies_by_length_and_chunked() {
    let (request, used) = complete(POST.as_bytes());
    assert_eq!((request.body.as_slice(), used), (&b"hello"[..], POST.len()));
    let (request, used) = complete(CHUNKED.as_bytes());
    assert_eq!(
        (request.body.as_slice(), used),
        (&b"abcde"[..], CHUNKED.len())
    );
    let empty = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert!(complete(empty.as_bytes()).0.body.is_empty());
    let zero = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(complete(zero.as_bytes()).1, zero.len());
}

#[test]
fn every_split_point_gives_the_same_requests() {
    let stream = [GET, POST, CHUNKED, GET].concat();
    let whole = drive(Limits::default(), stream.as_bytes(), &[]);
    assert_eq!(whole.0.len(), 4);
    assert_eq!(whole.1, None);
    for cut in 0..=stream.len() {
        assert_eq!(
            drive(Limits::default(), stream.as_bytes(), &[cut]),
            whole,
            "cut at {cut}"
        );
    }
    let every_byte: Vec<usize> = (0..=stream.len()).collect();
    assert_eq!(
        drive(Limits::default(), stream.as_bytes(), &every_byte),
        whole
    );
}

#[test]
fn byte_by_byte_the_phase_turns_from_head_to_body_at_the_blank_line() {
    let head_len = POST.find("\r\n\r\n").expect("fixture") + 4;
    let mut reader = RequestReader::new(Limits::default());
    for cut in 0..POST.len() {
        let expected = if cut < head_len {
            Phase::Head
        } else {
            Phase::Body
        };
        assert_eq!(
            reader.read(&POST.as_bytes()[..cut]),
            Ok(Parsed::NeedMore(expected)),
            "at {cut}"
        );
        assert_eq!(reader.phase(), expected);
    }
    assert!(matches!(
        reader.read(POST.as_bytes()),
        Ok(Parsed::Complete { .. })
    ));
    assert_eq!(reader.phase(), Phase::Head, "ready for the next request");
}

#[test]
fn pipelined_requests_are_read_from_the_rest() {
    let stream = format!("{GET}{POST}\r\n{CHUNKED}");
    let (requests, error) = drive(Limits::default(), stream.as_bytes(), &[]);
    assert_eq!(error, None);
    let paths: Vec<&str> = requests.iter().map(|(r, _)| r.path.as_str()).collect();
    assert_eq!(paths, ["/metrics", "/devices", "/p"]);
    let used: usize = requests.iter().map(|(_, used)| used).sum();
    assert_eq!(
        used,
        stream.len(),
        "the stray CRLF belongs to the next request"
    );
}

#[test]
fn keep_alive_matrix() {
    let cases = [
        ("HTTP/1.1", "", true),
        ("HTTP/1.1", "Connection: close\r\n", false),
        ("HTTP/1.1", "Connection: Keep-Alive\r\n", true),
        ("HTTP/1.1", "Connection: upgrade, CLOSE\r\n", false),
        (
            "HTTP/1.1",
            "Connection: keep-alive\r\nConnection: close\r\n",
            false,
        ),
        ("HTTP/1.0", "", false),
        ("HTTP/1.0", "Connection: keep-alive\r\n", true),
        ("HTTP/1.0", "Connection: close\r\n", false),
        ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
    ];
    for (version, connection, keep_alive) in cases {
        let text = format!("GET / {version}\r\nHost: h\r\n{connection}\r\n");
        assert_eq!(
            complete(text.as_bytes()).0.keep_alive,
            keep_alive,
            "{text:?}"
        );
    }
}

#[test]
fn the_answer_to_a_request_closes_when_either_side_says_so() {
    let (keep, _) = complete(GET.as_bytes());
    assert!(!WriteMode::answering(&keep, false).close);
    assert!(WriteMode::answering(&keep, true).close);
    let (close, _) = complete(b"HEAD / HTTP/1.0\r\n\r\n");
    let mode = WriteMode::answering(&close, false);
    assert!(mode.close && mode.omit_body);
}

#[test]
fn head_limits_414_431() {
    let limits = Limits {
        max_head_bytes: 64,
        ..Limits::default()
    };
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(64));
    assert_eq!(
        refusal(limits, long_line.as_bytes()),
        RequestError::RequestLineTooLong { max: 64 }
    );
    let long_head = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(40));
    assert_eq!(refusal(limits, long_head.as_bytes()).status(), 431);
    // Exactly at the limit is accepted; the limit is the head's, not the buffer's.
    let exact = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "v".repeat(64 - 32)
    );
    assert_eq!(exact.len(), 64);
    let with_body = format!("{exact}trailing bytes of the next request");
    assert!(matches!(
        read_with(limits, with_body.as_bytes()),
        Ok(Parsed::Complete { used: 64, .. })
    ));
    // A head that reaches the limit without a line feed is refused without waiting for more.
    assert_eq!(
        refusal(limits, &[b'G'; 64]),
        RequestError::RequestLineTooLong { max: 64 }
    );
}

#[test]
fn header_count_limit_431() {
    let limits = Limits {
        max_headers: 3,
        ..Limits::default()
    };
    let three = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(matches!(
        read_with(limits, three.as_bytes()),
        Ok(Parsed::Complete { .. })
    ));
    let four = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        refusal(limits, four.as_bytes()),
        RequestError::TooManyHeaders { max: 3 }
    );
    let huge = Limits {
        max_headers: 10_000,
        ..Limits::default()
    };
    let many: String = (0..=MAX_HEADERS_CEILING)
        .map(|i| format!("H{i}: v\r\n"))
        .collect();
    let text = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    assert_eq!(
        refusal(huge, text.as_bytes()),
        RequestError::TooManyHeaders {
            max: MAX_HEADERS_CEILING
        }
    );
}

#[test]
fn malformed_heads_are_400() {
    for text in [
        "GET \x01 HTTP/1.1\r\n\r\n",
        "\x16\x03\x01garbage\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nName : v\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
        "GET / FOO/1.1\r\nHost: h\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET relative HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        assert_eq!(status_of(text), 400, "{text:?}");
    }
    let (old, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(old.version, Version::Http10, "HTTP/1.0 needs no Host");
}

#[test]
fn unknown_versions_505_unknown_methods_501() {
    assert_eq!(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    assert_eq!(status_of("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
    assert_eq!(status_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
    assert_eq!(status_of("BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
    assert_eq!(status_of("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
    assert_eq!(status_of("get / HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
}

#[test]
fn length_refusals_and_smuggling() {
    let with = |headers: &str| format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
    let cases = [
        ("Content-Length: 3\r\nContent-Length: 3\r\n", 400),
        ("Content-Length: 3\r\nContent-Length: 4\r\n", 400),
        ("Content-Length: 3, 3\r\n", 400),
        ("Content-Length: -1\r\n", 400),
        ("Content-Length: 0x10\r\n", 400),
        ("Content-Length: 99999999999999999999999999\r\n", 400),
        ("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", 400),
        ("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", 400),
        ("Transfer-Encoding: chunked, gzip\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("Transfer-Encoding: \r\n", 400),
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
        ("Content-Length: 65537\r\n", 413),
    ];
    for (headers, status) in cases {
        assert_eq!(status_of(&with(headers)), status, "{headers:?}");
    }
    let http10 = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(
        refusal(Limits::default(), http10.as_bytes()),
        RequestError::TransferEncodingInHttp10
    );
    let no_chunked = Limits {
        accept_chunked: false,
        ..Limits::default()
    };
    let chunked = with("Transfer-Encoding: chunked\r\n");
    assert_eq!(refusal(no_chunked, chunked.as_bytes()).status(), 411);
    let chunked = format!("{}0\r\n\r\n", with("Transfer-Encoding: Chunked\r\n"));
    let (request, _) = complete(chunked.as_bytes());
    assert!(request.body.is_empty(), "coding names are case-insensitive");
}

#[test]
fn an_oversize_length_is_refused_before_the_body_arrives() {
    let limits = Limits {
        max_body_bytes: 4,
        ..Limits::default()
    };
    let head = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(
        refusal(limits, head.as_bytes()),
        RequestError::BodyTooLarge { max: 4 }
    );
    let fits = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n";
    assert_eq!(
        read_with(limits, fits.as_bytes()),
        Ok(Parsed::NeedMore(Phase::Body))
    );
}

#[test]
fn chunked_edge_cases_through_the_reader() {
    let head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let limits = Limits {
        max_body_bytes: 8,
        ..Limits::default()
    };
    let body_of = |chunks: &str| {
        let text = format!("{head}{chunks}");
        read_with(limits, text.as_bytes())
    };
    let ok = body_of("A\r\n0123456789\r\n0\r\n\r\n");
    assert_eq!(ok, Err(RequestError::BodyTooLarge { max: 8 }));
    let exact = body_of("8;name=\"quoted\"\r\nabcdefgh\r\n0\r\n\r\n");
    assert!(matches!(exact, Ok(Parsed::Complete { .. })), "{exact:?}");
    assert_eq!(
        body_of("ffffffffffffffffff\r\n"),
        Err(RequestError::ChunkSizeOverflow)
    );
    assert!(matches!(
        body_of("3\r\nabcd\r\n"),
        Err(RequestError::BadChunk(_))
    ));
    assert!(matches!(body_of("z\r\n"), Err(RequestError::BadChunk(_))));
    // Trailer fields are read and dropped, never mixed into the headers.
    let text = format!("{head}1\r\nx\r\n0\r\nHost: other\r\nX-Sum: 1\r\n\r\n");
    let (request, used) = complete(text.as_bytes());
    assert_eq!(used, text.len());
    assert_eq!(request.headers.get_all("host").count(), 1);
    assert_eq!(request.header("x-sum"), None);
    // Incomplete at every point before the final CRLF.
    let text = format!("{head}2\r\nab\r\n0\r\n\r\n");
    for cut in head.len()..text.len() {
        assert_eq!(
            read(&text.as_bytes()[..cut]),
            Ok(Parsed::NeedMore(Phase::Body)),
            "{cut}"
        );
    }
}

#[test]
fn a_refusal_sticks() {
    let mut reader = RequestReader::new(Limits::default());
    let bad = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    assert_eq!(reader.read(bad), Err(RequestError::DuplicateHost));
    assert_eq!(
        reader.read(GET.as_bytes()),
        Err(RequestError::DuplicateHost)
    );
}

#[test]
fn continue_is_awaited_until_the_body_starts() {
    let head = "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let mut reader = RequestReader::new(Limits::default());
    assert!(!reader.awaits_continue());
    assert_eq!(
        reader.read(head.as_bytes()),
        Ok(Parsed::NeedMore(Phase::Body))
    );
    assert!(reader.awaits_continue());
    let partial = format!("{head}a");
    assert_eq!(
        reader.read(partial.as_bytes()),
        Ok(Parsed::NeedMore(Phase::Body))
    );
    assert!(!reader.awaits_continue());
    let plain = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
    let mut reader = RequestReader::new(Limits::default());
    let _ = reader.read(plain.as_bytes());
    assert!(!reader.awaits_continue());
}

#[test]
fn every_refusal_is_written_as_a_closing_plain_text_answer() {
    let error = refusal(Limits::default(), b"GET / HTTP/2.0\r\n\r\n");
    let bytes = error.response().to_bytes(WriteMode::CLOSE);
    let text = String::from_utf8(bytes).expect("ASCII");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(
        head.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    assert!(head.ends_with("Connection: close"));
    assert_eq!(body, "HTTP version \"HTTP/2.0\" is not supported\n");
}

/// A request and its bytes on the wire, framed by length or in chunks of the given sizes.
#[derive(Debug, Clone)]
struct Written {
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunks: Option<Vec<usize>>,
    close: bool,
}

impl Written {
    fn wire(&self) -> Vec<u8> {
        let mut out = format!("{} {}", self.method, self.path);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(query);
        }
        out.push_str(" HTTP/1.1\r\nHost: example\r\n");
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.close {
            out.push_str("Connection: close\r\n");
        }
        let mut out = out.into_bytes();
        match &self.chunks {
            None => {
                if !self.body.is_empty() {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                    );
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&self.body);
            }
            Some(sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = self.body.as_slice();
                for &size in sizes {
                    let size = size.min(rest.len());
                    if size == 0 {
                        break;
                    }
                    out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..size]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[size..];
                }
                if !rest.is_empty() {
                    out.extend_from_slice(format!("{:X};last\r\n", rest.len()).as_bytes());
                    out.extend_from_slice(rest);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }

    fn check(&self, request: &Request) {
        assert_eq!(request.method, self.method);
        assert_eq!(request.path, self.path);
        assert_eq!(request.query, self.query);
        assert_eq!(request.body, self.body);
        assert_eq!(request.keep_alive, !self.close);
        for (name, value) in &self.headers {
            assert!(request.headers.get_all(name).any(|v| v == value.as_bytes()));
        }
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

fn written() -> impl Strategy<Value = Written> {
    let method = proptest::sample::select(Method::ALL.to_vec());
    let path = proptest::collection::vec("[a-z0-9%._~-]{1,8}|\\{x\\}", 0..4)
        .prop_map(|segments| format!("/{}", segments.join("/")));
    let query = proptest::option::of("[a-z0-9=&%]{0,12}");
    let headers = proptest::collection::vec(
        (token(), "[ -~]{0,20}")
            .prop_filter("not a framing or connection field", |(name, _)| {
                let name = name.to_ascii_lowercase();
                !["host", "content-length", "transfer-encoding", "connection"]
                    .contains(&name.as_str())
            })
            .prop_map(|(name, value)| (name, value.trim().to_owned())),
        0..6,
    );
    let body = proptest::collection::vec(any::<u8>(), 0..200);
    let chunks = proptest::option::of(proptest::collection::vec(1usize..64, 0..6));
    (method, path, query, headers, body, chunks, any::<bool>()).prop_map(
        |(method, path, query, headers, body, chunks, close)| Written {
            method,
            path,
            query,
            headers,
            body,
            chunks,
            close,
        },
    )
}

proptest! {
    #[test]
    fn written_requests_read_back_whatever_the_cuts(
        requests in proptest::collection::vec(written(), 1..4),
        cuts in proptest::collection::vec(0usize..2000, 0..6),
    ) {
        let wires: Vec<Vec<u8>> = requests.iter().map(Written::wire).collect();
        let stream = wires.concat();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let (read, error) = drive(Limits::default(), &stream, &cuts);
        prop_assert_eq!(error, None);
        prop_assert_eq!(read.len(), requests.len());
        for ((request, used), (expected, wire)) in read.iter().zip(requests.iter().zip(&wires)) {
            prop_assert_eq!(*used, wire.len());
            expected.check(request);
        }
    }

    #[test]
    fn arbitrary_bytes_read_the_same_whole_or_cut(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        prefix in proptest::sample::select(vec![&b""[..], b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"]),
        cut in 0usize..400,
    ) {
        let stream = [prefix, bytes.as_slice()].concat();
        let limits = Limits { max_head_bytes: 128, max_headers: 4, max_body_bytes: 64, accept_chunked: true };
        let whole = drive(limits, &stream, &[]);
        prop_assert_eq!(drive(limits, &stream, &[cut]), whole.clone());
        for (request, _) in &whole.0 {
            prop_assert!(request.body.len() <= 64);
            prop_assert!(request.headers.len() <= 4);
        }
    }
}
