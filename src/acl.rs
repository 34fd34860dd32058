//! Access rules: which caller may read, write or subscribe to which keys.
//!
//! An ACL file (`nkv-server --acl FILE`) holds one rule per line:
//!
//! ```text
//! # prefix   who                          rights
//! net        user:netd                    read,write,subscribe
//! net        user:ui                      read,subscribe
//! ui         user:ui                      all
//! log        user:logship group:audit     read,subscribe
//! *          token:backup                 read
//! default                                 none
//! ```
//!
//! - **prefix**: a key prefix in the sense of subscriptions (`net` covers
//!   `net` and `net.eth0.state`, not `network`), or `*` for every key.
//! - **who**: one or more of `user:NAME` or `user:UID`, `group:NAME` or
//!   `group:GID` (the caller's primary or supplementary groups),
//!   `token:NAME` (a TCP client that authenticated with that token) and
//!   `any` (every caller).
//! - **rights**: a comma-separated list of `read`, `write`, `subscribe`, or
//!   `all` or `none`.
//! - `default RIGHTS`: what a caller gets where no rule names it (without
//!   the line: `none`).
//!
//! The decision for a key and a caller: among the rules whose prefix
//! covers the key and that name the caller, those with the longest prefix
//! win, and the caller gets the union of their rights; where no rule names
//! the caller, the default applies. So a more specific rule can take
//! rights away as well as grant them. The server's own user and root are
//! not subject to the file: they may do everything (so an ACL can never
//! lock the operator out).

use std::fmt;
use std::path::Path;

use crate::key::{covers, SEPARATOR};

/// A set of rights on keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// GET, LIST, and seeing the key in snapshots and events.
    pub read: bool,
    /// PUT, DELETE, DELETE_PREFIX.
    pub write: bool,
    /// Opening a subscription that covers the key.
    pub subscribe: bool,
}

impl Rights {
    /// Every right.
    pub const ALL: Rights = Rights {
        read: true,
        write: true,
        subscribe: true,
    };

    /// No right.
    pub const NONE: Rights = Rights {
        read: false,
        write: false,
        subscribe: false,
    };

    fn union(self, other: Rights) -> Rights {
        Rights {
            read: self.read || other.read,
            write: self.write || other.write,
            subscribe: self.subscribe || other.subscribe,
        }
    }

    /// Whether `right` is in the set.
    pub fn has(self, right: Right) -> bool {
        match right {
            Right::Read => self.read,
            Right::Write => self.write,
            Right::Subscribe => self.subscribe,
        }
    }

    fn parse(text: &str) -> Result<Rights, String> {
        let mut rights = Rights::NONE;
        for word in text.split(',') {
            match word.trim() {
                "read" => rights.read = true,
                "write" => rights.write = true,
                "subscribe" => rights.subscribe = true,
                "all" => rights = Rights::ALL,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown right {other:?} (expected read, write, subscribe, all or none)"
                    ))
                }
            }
        }
        Ok(rights)
    }
}

/// One right, as a denied request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// See [`Rights::read`].
    Read,
    /// See [`Rights::write`].
    Write,
    /// See [`Rights::subscribe`].
    Subscribe,
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Subscribe => "subscribe",
        })
    }
}

/// Who is calling, as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id (`SO_PEERCRED` on a Unix socket; none over TCP).
    pub uid: Option<u32>,
    /// The primary and supplementary group ids.
    pub gids: Vec<u32>,
    /// The name of the token a TCP client authenticated with.
    pub token: Option<String>,
}

/// A principal named by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    User(u32),
    Group(u32),
    Token(String),
    Any,
}

impl Who {
    fn matches(&self, caller: &Caller) -> bool {
        match self {
            Who::User(uid) => caller.uid == Some(*uid),
            Who::Group(gid) => caller.gids.contains(gid),
            Who::Token(name) => caller.token.as_deref() == Some(name),
            Who::Any => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `""` for `*`.
    prefix: String,
    who: Vec<Who>,
    rights: Rights,
}

/// User and group names, for rules that name them.
pub trait Names {
    /// The uid of user `name`.
    fn uid(&self, name: &str) -> Option<u32>;
    /// The gid of group `name`.
    fn gid(&self, name: &str) -> Option<u32>;
}

/// Names from the system's user database (NSS, through `uzers`), as
/// `--socket-group` resolves them.
pub struct SystemNames;

impl Names for SystemNames {
    fn uid(&self, name: &str) -> Option<u32> {
        uzers::get_user_by_name(name).map(|u| u.uid())
    }
    fn gid(&self, name: &str) -> Option<u32> {
        uzers::get_group_by_name(name).map(|g| g.gid())
    }
}

/// A parsed ACL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    default: Rights,
}

/// A mistake in an ACL file, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    /// 1-based line number (0: the file itself).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for AclError {}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: &Path, names: &dyn Names) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError {
            line: 0,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Acl::parse(&text, names)
    }

    /// Parses the text of an ACL file (see the module docs).
    pub fn parse(text: &str, names: &dyn Names) -> Result<Acl, AclError> {
        let mut acl = Acl {
            rules: Vec::new(),
            default: Rights::NONE,
        };
        for (n, line) in text.lines().enumerate() {
            let fail = |message: String| AclError {
                line: n + 1,
                message,
            };
            let line = line.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["default", rights] => acl.default = Rights::parse(rights).map_err(fail)?,
                ["default", ..] => return Err(fail("expected: default RIGHTS".into())),
                [_] | [_, _] => {
                    return Err(fail("expected: PREFIX WHO... RIGHTS".into()));
                }
                [prefix, who @ .., rights] => {
                    let prefix = parse_prefix(prefix).map_err(fail)?;
                    let who = who
                        .iter()
                        .map(|w| parse_who(w, names))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(fail)?;
                    let rights = Rights::parse(rights).map_err(fail)?;
                    acl.rules.push(Rule {
                        prefix,
                        who,
                        rights,
                    });
                }
            }
        }
        Ok(acl)
    }

    /// The rights of `caller` on `key` (see the module docs).
    pub fn rights(&self, caller: &Caller, key: &str) -> Rights {
        let mut best: Option<(usize, Rights)> = None;
        for rule in &self.rules {
            if !covers(&rule.prefix, key) || !rule.who.iter().any(|w| w.matches(caller)) {
                continue;
            }
            let len = rule.prefix.len();
            best = match best {
                Some((l, r)) if l == len => Some((l, r.union(rule.rights))),
                Some((l, _)) if l > len => best,
                _ => Some((len, rule.rights)),
            };
        }
        best.map_or(self.default, |(_, rights)| rights)
    }

    /// True if `caller` has `right` on at least one key under `prefix`:
    /// on the prefix itself, or where a rule below it grants it.
    pub fn any_under(&self, caller: &Caller, prefix: &str, right: Right) -> bool {
        self.regions(prefix)
            .any(|region| self.rights(caller, region).has(right))
    }

    /// True if `caller` has `right` on every key under `prefix` (a
    /// DELETE_PREFIX): on the prefix and under every rule below it.
    pub fn all_under(&self, caller: &Caller, prefix: &str, right: Right) -> bool {
        self.regions(prefix)
            .all(|region| self.rights(caller, region).has(right))
    }

    /// The prefix and every rule prefix strictly below it: the places where
    /// a decision can change inside the subtree.
    fn regions<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::once(prefix).chain(
            self.rules
                .iter()
                .map(|r| r.prefix.as_str())
                .filter(move |p| p.len() > prefix.len() && covers(prefix, p)),
        )
    }
}

fn parse_prefix(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(String::new());
    }
    crate::key::validate_key(text, usize::MAX).map_err(|e| format!("prefix {text:?}: {e}"))?;
    debug_assert!(!text.ends_with(SEPARATOR));
    Ok(text.to_owned())
}

fn parse_who(text: &str, names: &dyn Names) -> Result<Who, String> {
    if text == "any" {
        return Ok(Who::Any);
    }
    let (kind, name) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected user:NAME, group:NAME, token:NAME or any"))?;
    match kind {
        "user" => name
            .parse()
            .ok()
            .or_else(|| names.uid(name))
            .map(Who::User)
            .ok_or_else(|| format!("no user {name:?}")),
        "group" => name
            .parse()
            .ok()
            .or_else(|| names.gid(name))
            .map(Who::Group)
            .ok_or_else(|| format!("no group {name:?}")),
        "token" if !name.is_empty() => Ok(Who::Token(name.to_owned())),
        _ => Err(format!(
            "{text:?}: expected user:NAME, group:NAME, token:NAME or any"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Names for Fake {
        fn uid(&self, name: &str) -> Option<u32> {
            match name {
                "netd" => Some(1001),
                "ui" => Some(1002),
                "logship" => Some(1003),
                _ => None,
            }
        }
        fn gid(&self, name: &str) -> Option<u32> {
            (name == "audit").then_some(2001)
        }
    }

    const ROUTER: &str = "
        # the router of docs/security.md
        net        user:netd                read,write,subscribe
        net        user:ui                  read,subscribe
        ui         user:ui                  all
        log        user:logship group:audit read,subscribe
        net.wifi.psk user:ui                none
    ";

    fn user(uid: u32) -> Caller {
        Caller {
            uid: Some(uid),
            gids: vec![uid],
            token: None,
        }
    }

    #[test]
    fn longest_prefix_naming_the_caller_decides() {
        let acl = Acl::parse(ROUTER, &Fake).unwrap();
        let (netd, ui, logship) = (user(1001), user(1002), user(1003));
        assert_eq!(acl.rights(&netd, "net.eth0.state"), Rights::ALL);
        assert!(acl.rights(&ui, "net.eth0.state").read);
        assert!(!acl.rights(&ui, "net.eth0.state").write);
        assert!(acl.rights(&ui, "ui.theme").write);
        // A more specific rule takes the UI's read away.
        assert_eq!(acl.rights(&ui, "net.wifi.psk"), Rights::NONE);
        assert_eq!(acl.rights(&ui, "net.wifi.psk.old"), Rights::NONE);
        // netd is not named by the psk rule: its `net` rule still applies.
        assert!(acl.rights(&netd, "net.wifi.psk").read);
        assert!(!acl.rights(&logship, "net.eth0").read);
        assert!(acl.rights(&logship, "log.kernel").read);
        // Segment boundaries: `log` does not cover `logins`.
        assert_eq!(acl.rights(&logship, "logins"), Rights::NONE);
        // A group member.
        let auditor = Caller {
            uid: Some(5000),
            gids: vec![5000, 2001],
            token: None,
        };
        assert!(acl.rights(&auditor, "log.x").read);
    }

    #[test]
    fn default_tokens_and_any() {
        let acl = Acl::parse(
            "* token:backup read\ndefault read\npublic any read,write",
            &Fake,
        )
        .unwrap();
        let backup = Caller {
            uid: None,
            gids: vec![],
            token: Some("backup".into()),
        };
        assert_eq!(
            acl.rights(&backup, "a.b"),
            Rights {
                read: true,
                ..Rights::NONE
            }
        );
        assert!(acl.rights(&user(7), "a.b").read, "the default");
        assert!(!acl.rights(&user(7), "a.b").write);
        assert!(acl.rights(&user(7), "public.x").write);
    }

    #[test]
    fn subtree_checks_see_rules_below_the_prefix() {
        let acl = Acl::parse(ROUTER, &Fake).unwrap();
        let ui = user(1002);
        // The UI may subscribe to everything: it has the right below.
        assert!(acl.any_under(&ui, "", Right::Subscribe));
        assert!(!acl.any_under(&user(1003), "net", Right::Read));
        // netd may delete `net` whole; the UI may not delete `ui` and
        // `net` together, and nobody but netd may delete `net`.
        assert!(acl.all_under(&user(1001), "net", Right::Write));
        assert!(!acl.all_under(&ui, "", Right::Write));
        assert!(acl.all_under(&ui, "ui", Right::Write));
    }

    #[test]
    fn system_names_resolve_real_users_and_groups() {
        let acl = Acl::parse("cfg user:root read\ncfg group:root write", &SystemNames).unwrap();
        assert_eq!(
            acl.rights(&user(0), "cfg.x"),
            Rights {
                read: true,
                write: true,
                subscribe: false
            }
        );
        assert!(Acl::parse("cfg user:no-such-user-here read", &SystemNames).is_err());
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, line, needle) in [
            ("net user:nobody-here read", 1, "no user"),
            ("\nnet user:netd fly", 2, "unknown right"),
            ("net read", 1, "expected: PREFIX"),
            ("net. user:netd read", 1, "empty segment"),
            ("net who read", 1, "expected user:NAME"),
            ("default", 1, "expected: default"),
        ] {
            let err = Acl::parse(text, &Fake).unwrap_err();
            assert_eq!(err.line, line, "{text}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }
}
