//! The token file shared by `provision` and the scenarios: one device per line, `<id> <token>`,
//! where the id is the store's device id (used by the telemetry read-back) and the token the
//! 32-character device token. Lines starting with `#` are comments. The file is written with mode
//! 0600 because tokens are secrets.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenFileError {
    #[error("cannot read token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write token file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {}, line {line}: {why} (expected `<device id> <32-character token>`)", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
    #[error("token file {} holds {have} devices but {want} were asked for; run `portcullis-loadgen provision` with more", path.display())]
    TooFew {
        path: PathBuf,
        have: usize,
        want: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLine {
    pub id: u64,
    pub token: String,
}

/// Reads the first `want` devices (all of them when `want` is `None`).
pub fn read(path: &Path, want: Option<usize>) -> Result<Vec<TokenLine>, TokenFileError> {
    let file = std::fs::File::open(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut devices = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        if want.is_some_and(|w| devices.len() >= w) {
            break;
        }
        let line = line.map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = |why| TokenFileError::Malformed {
            path: path.to_owned(),
            line: n + 1,
            why,
        };
        let (id, token) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| malformed("no token after the device id"))?;
        let id = id
            .parse::<u64>()
            .map_err(|_| malformed("the device id is not a number"))?;
        let token = token.trim();
        if !portcullis_protocol::token::is_plausible_token(token.as_bytes()) {
            return Err(malformed("the token is not 32 base64url characters"));
        }
        devices.push(TokenLine {
            id,
            token: token.to_owned(),
        });
    }
    if let Some(want) = want
        && devices.len() < want
    {
        return Err(TokenFileError::TooFew {
            path: path.to_owned(),
            have: devices.len(),
            want,
        });
    }
    Ok(devices)
}

/// Writes (replacing) the token file with mode 0600.
pub fn write(path: &Path, devices: &[TokenLine]) -> Result<(), TokenFileError> {
    let werr = |source| TokenFileError::Write {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(werr)?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "# portcullis-loadgen token file: <device id> <token>").map_err(werr)?;
    for device in devices {
        writeln!(out, "{} {}", device.id, device.token).map_err(werr)?;
    }
    out.flush().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.txt");
        let devices: Vec<TokenLine> = (1..=3)
            .map(|id| TokenLine {
                id,
                token: format!("{id:0>32}"),
            })
            .collect();
        write(&path, &devices).expect("writes");
        assert_eq!(read(&path, None).expect("reads"), devices);
        assert_eq!(read(&path, Some(2)).expect("reads").len(), 2);
        let err = read(&path, Some(5)).expect_err("too few");
        assert!(err.to_string().contains("holds 3 devices"), "{err}");

        std::fs::write(&path, "7 short\n").expect("write");
        let err = read(&path, None).expect_err("bad token");
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::write(&path, "x 0123456789abcdef0123456789abcdef\n").expect("write");
        assert!(read(&path, None).is_err());
    }
}
