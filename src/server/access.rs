//! Who may connect and what each caller may do: tokens checked at HELLO,
//! and the ACL (see [`crate::acl`]) applied to every request.
//!
//! A Unix-socket caller is known by its peer credentials (`SO_PEERCRED`:
//! uid, gid, pid; supplementary groups and the process name from
//! `/proc/PID`); a TCP caller by the name of the token it presented. The
//! server's own user and root may do everything. Without `--acl`, everyone
//! who got in may do everything: the socket's mode and the tokens are the
//! gate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::acl::{Acl, Caller, Right, Rights, SystemNames};

/// The named secrets of a token file. Each line is `NAME SECRET`, or a
/// lone `SECRET` (named `default`); `#` starts a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
}

/// Shortest secret accepted: 16 bytes (32 hex digits of
/// `openssl rand -hex 16`).
pub const MIN_SECRET_LEN: usize = 16;

impl Tokens {
    /// Parses the text of a token file.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            let (name, secret) = match words.as_slice() {
                [] => continue,
                [secret] => ("default", *secret),
                [name, secret] => (*name, *secret),
                _ => return Err(format!("line {}: expected NAME SECRET", n + 1)),
            };
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "line {}: the secret is {} bytes, fewer than {MIN_SECRET_LEN} \
                     (make one with: openssl rand -hex 32)",
                    n + 1,
                    secret.len()
                ));
            }
            entries.push((name.to_owned(), secret.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err("no token in the file".into());
        }
        Ok(Tokens { entries })
    }

    /// Reads `path` (see [`Tokens::parse`]).
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// The name of the token equal to `presented`. Every secret is compared
    /// in full, in time that depends only on the lengths, so timing does
    /// not tell how much of a guess was right.
    pub fn find(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, secret) in &self.entries {
            if constant_time_eq(secret, presented) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    // Keep the compiler from ending the loop early.
    std::hint::black_box(diff) == 0
}

/// Where the access files live, to load them again on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct AccessFiles {
    /// `--token-file`.
    pub tokens: Option<PathBuf>,
    /// `--acl`.
    pub acl: Option<PathBuf>,
}

/// The access rules in force.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Option<Tokens>,
    acl: Option<Acl>,
}

impl Access {
    /// Loads the files; an error names the file and the line.
    pub fn load(files: &AccessFiles) -> Result<Access, String> {
        let tokens = files.tokens.as_deref().map(Tokens::load).transpose()?;
        let acl = match &files.acl {
            Some(path) => Some(
                Acl::load(path, &SystemNames)
                    .map_err(|e| format!("ACL file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Access { tokens, acl })
    }

    /// True when a token file is in force.
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Checks a HELLO's token. Over TCP a token is required when there is
    /// a token file; a presented token must be right on any transport.
    /// Returns the token's name.
    pub fn authenticate(&self, tcp: bool, token: Option<&str>) -> Result<Option<String>, String> {
        match (&self.tokens, token) {
            (Some(tokens), Some(token)) => match tokens.find(token.as_bytes()) {
                Some(name) => Ok(Some(name.to_owned())),
                None => Err("the token is not valid".into()),
            },
            (Some(_), None) if tcp => Err("this server requires a token over TCP".into()),
            _ => Ok(None),
        }
    }

    /// The rights of `peer` on `key`.
    pub fn rights(&self, peer: &Peer, key: &str) -> Rights {
        match &self.acl {
            _ if peer.trusted => Rights::ALL,
            None => Rights::ALL,
            Some(acl) => acl.rights(&peer.caller, key),
        }
    }

    /// True if `peer` has `right` somewhere under `prefix`.
    pub fn any_under(&self, peer: &Peer, prefix: &str, right: Right) -> bool {
        match &self.acl {
            Some(acl) if !peer.trusted => acl.any_under(&peer.caller, prefix, right),
            _ => true,
        }
    }

    /// True if `peer` has `right` everywhere under `prefix`.
    pub fn all_under(&self, peer: &Peer, prefix: &str, right: Right) -> bool {
        match &self.acl {
            Some(acl) if !peer.trusted => acl.all_under(&peer.caller, prefix, right),
            _ => true,
        }
    }
}

/// The rules in force, replaced as a whole on SIGHUP.
#[derive(Debug, Default)]
pub struct AccessHandle(RwLock<Arc<Access>>);

impl AccessHandle {
    /// A handle holding `access`.
    pub fn new(access: Access) -> AccessHandle {
        AccessHandle(RwLock::new(Arc::new(access)))
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<Access> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts new rules in force (connections see them at their next request).
    pub fn replace(&self, access: Access) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(access);
    }
}

/// A connected client as the access rules see it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Over TCP (no credentials).
    pub tcp: bool,
    /// Identity for the ACL.
    pub caller: Caller,
    /// The process id (Unix sockets).
    pub pid: Option<u32>,
    /// The process name, from `/proc/PID/comm` (Unix sockets).
    pub process: Option<String>,
    /// The server's own user or root: not subject to the ACL.
    pub trusted: bool,
}

impl Peer {
    /// A TCP client (its token name is set at HELLO).
    pub fn tcp() -> Peer {
        Peer {
            tcp: true,
            caller: Caller {
                uid: None,
                gids: Vec::new(),
                token: None,
            },
            pid: None,
            process: None,
            trusted: false,
        }
    }

    /// A Unix-socket client with these credentials.
    pub fn unix(uid: u32, gid: u32, pid: Option<u32>) -> Peer {
        let mut gids = vec![gid];
        if let Some(pid) = pid {
            gids.extend(supplementary_groups(pid).into_iter().filter(|g| *g != gid));
        }
        let own = rustix::process::geteuid().as_raw();
        Peer {
            tcp: false,
            caller: Caller {
                uid: Some(uid),
                gids,
                token: None,
            },
            pid,
            process: pid.and_then(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                Some(comm.trim_end().to_owned())
            }),
            trusted: uid == 0 || uid == own,
        }
    }

    /// How a denial names the caller: `uid 1002 (ui)`, `token backup`.
    pub fn describe(&self) -> String {
        match (&self.caller.uid, &self.caller.token, &self.process) {
            (Some(uid), _, Some(process)) => format!("uid {uid} ({process})"),
            (Some(uid), _, None) => format!("uid {uid}"),
            (None, Some(token), _) => format!("token {token}"),
            (None, None, _) => "this client".into(),
        }
    }
}

/// The `Groups:` line of `/proc/PID/status` (read once, at accept).
fn supplementary_groups(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn token_files_name_their_secrets() {
        let tokens = Tokens::parse(&format!("# comment\n{SECRET}\nbackup {SECRET}ff\n")).unwrap();
        assert_eq!(tokens.find(SECRET.as_bytes()), Some("default"));
        assert_eq!(
            tokens.find(format!("{SECRET}ff").as_bytes()),
            Some("backup")
        );
        assert_eq!(tokens.find(b"0123456789abcdef0123456789abcdee"), None);
        assert_eq!(tokens.find(b""), None);
        assert!(Tokens::parse("short").unwrap_err().contains("openssl rand"));
        assert!(Tokens::parse("# nothing\n").is_err());
        assert!(Tokens::parse("a b c").unwrap_err().contains("line 1"));
    }

    #[test]
    fn tcp_needs_a_token_when_there_is_a_file() {
        let access = Access {
            tokens: Some(Tokens::parse(SECRET).unwrap()),
            acl: None,
        };
        assert!(access.authenticate(true, None).is_err());
        assert!(access.authenticate(true, Some("wrong")).is_err());
        assert_eq!(
            access.authenticate(true, Some(SECRET)),
            Ok(Some("default".into()))
        );
        // Unix-socket callers are known by their credentials.
        assert_eq!(access.authenticate(false, None), Ok(None));
        assert!(access.authenticate(false, Some("wrong")).is_err());
        let open = Access::default();
        assert_eq!(open.authenticate(true, None), Ok(None));
    }
}
