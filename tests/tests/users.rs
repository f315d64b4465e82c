//! User accounts end to end: `portcullis admin user create/show` against the real gateway and
//! store, and the promise behind them: neither the password nor its client hash ever reaches
//! the store's files, only an argon2id hash of the client hash.

#![allow(clippy::unwrap_used)] // test: a failed unwrap is a failed test

use portcullis_e2e::Gateway;
use portcullis_protocol::app::client_hash;
use std::path::Path;

/// Every regular file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

/// The files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|path| {
            std::fs::read(path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn users_are_created_shown_refused_twice_and_never_stored_in_clear() {
    let mut gw = Gateway::start("");
    let email = "Ops.Lead@Example.COM";
    let created = gw
        .admin(&["user", "create", "--email", email, "--org", "1"])
        .unwrap();
    assert_eq!(created["email"], "ops.lead@example.com");
    assert_eq!(created["org"], 1);
    let password = created["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 16, "generated password: {password}");

    let shown = gw
        .admin(&["user", "show", "--email", "OPS.LEAD@example.com"])
        .unwrap();
    assert_eq!(shown["email"], "ops.lead@example.com");
    assert_eq!(shown["org"], 1);
    assert!(shown["created_ms"].as_u64().unwrap() > 0);
    assert!(shown.get("password_phc").is_none() && shown.get("password").is_none());

    let duplicate = gw
        .admin(&["user", "create", "--email", "ops.lead@example.com"])
        .unwrap_err();
    assert!(
        duplicate.contains("already exists") && duplicate.contains("user show"),
        "{duplicate}"
    );
    let bad = gw
        .admin(&["user", "create", "--email", "not-an-address"])
        .unwrap_err();
    assert!(bad.contains("not an email address"), "{bad}");
    let unknown = gw
        .admin(&["user", "show", "--email", "nobody@example.com"])
        .unwrap_err();
    assert!(unknown.contains("no user has the email"), "{unknown}");

    assert!(gw.stop().success());
    let hash = client_hash(&password, email);
    // Positive control: the user's record is in these files and readable by this search (the
    // store does not encrypt at rest here), so not finding the secrets means they are not there.
    let store_dir = gw.data_dir.join("store");
    assert!(
        !files_containing(&store_dir, b"ops.lead@example.com").is_empty(),
        "the user's email is in the store's files"
    );
    let log = gw.log();
    for secret in [password.as_str(), hash.as_str()] {
        let found = files_containing(&gw.data_dir, secret.as_bytes());
        assert!(found.is_empty(), "a secret is stored in {found:?}");
        assert!(!log.contains(secret), "a secret is in the gateway's log");
    }
}
