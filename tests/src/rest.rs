//! A REST client for the end-to-end tests: the real `curl` binary, run as a subprocess against
//! `https://127.0.0.1:<tls port>/api/v1/...`, trusting the gateway's generated CA. Each call is
//! bounded (`--max-time`), may carry a bearer credential and a JSON body, may leave from
//! another loopback source address (`--interface`), and comes back as the status, the headers
//! and the body (parsed as JSON when it is JSON). Also reads the mail outbox, where the
//! gateway's account flows leave their `.eml` files by default.

use crate::{Gateway, wait_for};
use portcullis_protocol::app::client_hash;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one curl call may take, connection included.
pub const CALL_TIMEOUT_SECS: u32 = 15;

/// An answer of the API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The raw body, byte for byte.
    pub body: Vec<u8>,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The API's error message (`{"error":{"message":…}}`), if the body is one.
    pub fn message(&self) -> Option<&str> {
        self.json["error"]["message"].as_str()
    }

    /// Panics with the whole answer unless the status is `status`; returns the JSON.
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status,
            status,
            "unexpected answer: {} {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        &self.json
    }
}

/// The REST API of one gateway, reached through curl.
#[derive(Debug, Clone)]
pub struct Rest {
    port: u16,
    ca: PathBuf,
    source: Option<Ipv4Addr>,
}

impl Rest {
    /// The API on `gw`'s TLS port, from 127.0.0.1.
    pub fn new(gw: &Gateway) -> Rest {
        Rest {
            port: gw.tls_port,
            ca: gw.data_dir.join("tls").join("ca.pem"),
            source: None,
        }
    }

    /// The same API, with calls leaving from `source` (any 127.0.0.0/8 address on Linux).
    pub fn from_source(&self, source: Ipv4Addr) -> Rest {
        Rest {
            source: Some(source),
            ..self.clone()
        }
    }

    /// `method path` (below `/api/v1`), with an optional bearer and JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("https://127.0.0.1:{}/api/v1{path}", self.port);
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--include", "--http1.1"])
            .args(["--max-time", &CALL_TIMEOUT_SECS.to_string()])
            .arg("--cacert")
            .arg(&self.ca)
            .args(["--request", method])
            // No `Expect: 100-continue` round trip for bodies.
            .args(["--header", "Expect:"])
            .args(["--write-out", "\n%{http_code}"]);
        if let Some(source) = self.source {
            cmd.args(["--interface", &source.to_string()]);
        }
        if let Some(token) = bearer {
            cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(body) = body {
            cmd.args(["--header", "Content-Type: application/json"])
                .args(["--data-binary", &body.to_string()]);
        }
        let out = cmd
            .arg(&url)
            .output()
            .expect("curl must be installed (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "curl {method} {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&out.stdout).unwrap_or_else(|| {
            panic!(
                "curl {method} {url}: cannot read its output: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn get(&self, path: &str, bearer: &str) -> Reply {
        self.call("GET", path, Some(bearer), None)
    }

    pub fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> Reply {
        self.call("POST", path, bearer, Some(body))
    }

    pub fn patch(&self, path: &str, bearer: &str, body: &Value) -> Reply {
        self.call("PATCH", path, Some(bearer), Some(body))
    }

    pub fn delete(&self, path: &str, bearer: &str) -> Reply {
        self.call("DELETE", path, Some(bearer), None)
    }

    /// `POST /auth/login` with the Blynk client hash of `password`.
    pub fn login(&self, email: &str, password: &str) -> Reply {
        let body = serde_json::json!({"email": email, "hash": client_hash(password, email)});
        self.post("/auth/login", None, &body)
    }

    /// Logs in and returns the session token; panics unless the login succeeds.
    pub fn session(&self, email: &str, password: &str) -> String {
        let reply = self.login(email, password);
        reply.expect(200)["token"]
            .as_str()
            .expect("a login answer has a token")
            .to_owned()
    }
}

/// Splits curl's `--include` output (every header block, then the body, then the status line
/// `--write-out` appends).
fn parse(out: &[u8]) -> Option<Reply> {
    let cut = out.iter().rposition(|&b| b == b'\n')?;
    let status: u16 = std::str::from_utf8(&out[cut + 1..])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let mut rest = &out[..cut];
    // Skip interim (1xx) header blocks, keep the last one.
    let (head, body) = loop {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let (head, body) = (&rest[..end], &rest[end + 4..]);
        if head.starts_with(b"HTTP/1.1 1") && body.starts_with(b"HTTP/") {
            rest = body;
            continue;
        }
        break (head, body);
    };
    let head = String::from_utf8_lossy(head);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_vec(),
        json: serde_json::from_slice(body).unwrap_or(Value::Null),
    })
}

/// The first-start Admin password the gateway printed on standard output (in its log).
pub fn first_admin_password(gw: &Gateway) -> String {
    const MARK: &str = "Its password, shown only this once, is: ";
    wait_for(
        "the first Admin's password",
        Duration::from_secs(10),
        || {
            let log = gw.log();
            let at = log.find(MARK)? + MARK.len();
            let password = log[at..].lines().next()?.trim();
            (!password.is_empty()).then(|| password.to_owned())
        },
    )
}

/// The email the gateway creates its first Admin with by default (`accounts.first_admin_email`).
pub const FIRST_ADMIN: &str = "admin@localhost.localdomain";

/// The `.eml` files of `<data-dir>/outbox/`, oldest name first.
pub fn outbox(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("outbox"))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Waits (bounded) for a mail to `to` in the outbox; returns its text, quoted-printable
/// soft line breaks and `=XX` escapes undone.
pub fn wait_for_mail(data_dir: &Path, to: &str) -> String {
    wait_for_mail_containing(data_dir, to, "")
}

/// Like [`wait_for_mail`], for a mail to `to` whose decoded text contains `needle`.
pub fn wait_for_mail_containing(data_dir: &Path, to: &str, needle: &str) -> String {
    wait_for(&format!("a mail to {to}"), Duration::from_secs(10), || {
        outbox(data_dir).iter().find_map(|path| {
            let text = decode_quoted_printable(&std::fs::read_to_string(path).ok()?);
            (text.to_ascii_lowercase().contains(&to.to_ascii_lowercase()) && text.contains(needle))
                .then_some(text)
        })
    })
}

/// The `token` query parameter of the first link to `#/<page>` in `mail`.
pub fn link_token(mail: &str, page: &str) -> Option<String> {
    let marker = format!("#/{page}?token=");
    let at = mail.find(&marker)? + marker.len();
    let token: String = mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        .collect();
    (!token.is_empty()).then_some(token)
}

/// The mail's text, with quoted-printable (`=\r\n` soft breaks, `=XX` bytes) undone when its
/// headers say the body is encoded so.
fn decode_quoted_printable(text: &str) -> String {
    if !text
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        return text.to_owned();
    }
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates an active user with a generated password through the admin CLI (`role`: `admin`,
/// `staff`, `user` or a custom role's id); returns their id and password.
pub fn create_user(gw: &Gateway, email: &str, org: u32, role: &str) -> (u64, String) {
    let org = org.to_string();
    let created = gw
        .admin(&[
            "user", "create", "--email", email, "--org", &org, "--role", role,
        ])
        .unwrap_or_else(|e| panic!("creating {email}: {e}"));
    let id = created["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {created}"));
    let password = created["password"]
        .as_str()
        .unwrap_or_else(|| panic!("no password in {created}"))
        .to_owned();
    (id, password)
}

/// A session of the first Admin (root organization), logged in with the password printed at
/// the first start.
pub fn root_admin_session(gw: &Gateway, rest: &Rest) -> String {
    rest.session(FIRST_ADMIN, &first_admin_password(gw))
}
