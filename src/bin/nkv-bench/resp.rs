//! RESP (the Redis protocol) as the bench speaks it: commands encoded as
//! arrays of bulk strings, answers parsed and checked, no Redis client
//! library and no redis-benchmark, so that Redis is measured with the very
//! same load generator as nkv.

use std::io::{Read, Write};
use std::time::Duration;

use crate::wire::{OpKind, Stream, Target, Wire};

/// Appends a command (`*N` then `$len` bulk strings).
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// `<prefix><n>\r\n`, without `format!` (it is on the hot path).
fn push_header(out: &mut Vec<u8>, prefix: u8, n: usize) {
    out.push(prefix);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// One RESP value, borrowed from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `+text`.
    Simple(&'a [u8]),
    /// `-text`.
    Error(&'a [u8]),
    /// `:n`.
    Int(i64),
    /// `$n` then the bytes; `None` for `$-1`.
    Bulk(Option<&'a [u8]>),
    /// `*n` then n values; `None` for `*-1`.
    Array(Option<Vec<Value<'a>>>),
}

/// Finds the `\r\n`-terminated line at the start of `buf`: its content
/// and the bytes it takes with the terminator.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], end + 2))
}

fn int(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad RESP integer {:?}", String::from_utf8_lossy(text)))
}

/// Parses one value from the start of `buf`: `Ok(Some((value, consumed)))`,
/// `Ok(None)` when incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Value<'_>, usize)>, String> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((text, head)) = line(&buf[1..]) else {
        return Ok(None);
    };
    let head = head + 1;
    Ok(Some(match kind {
        b'+' => (Value::Simple(text), head),
        b'-' => (Value::Error(text), head),
        b':' => (Value::Int(int(text)?), head),
        b'$' => {
            let n = int(text)?;
            if n < 0 {
                (Value::Bulk(None), head)
            } else {
                let n = n as usize;
                if buf.len() < head + n + 2 {
                    return Ok(None);
                }
                if &buf[head + n..head + n + 2] != b"\r\n" {
                    return Err("RESP bulk string not terminated by CRLF".into());
                }
                (Value::Bulk(Some(&buf[head..head + n])), head + n + 2)
            }
        }
        b'*' => {
            let n = int(text)?;
            if n < 0 {
                (Value::Array(None), head)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                let mut at = head;
                for _ in 0..n {
                    let Some((item, used)) = parse(&buf[at..])? else {
                        return Ok(None);
                    };
                    items.push(item);
                    at += used;
                }
                (Value::Array(Some(items)), at)
            }
        }
        other => return Err(format!("unknown RESP type byte {other:#04x}")),
    }))
}

/// Parses a pub/sub `message` push (`*3 message CHANNEL PAYLOAD`) and
/// returns its payload; anything else is an error. No allocation: the
/// fan-out row parses millions of these.
pub fn parse_message(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((text, head)) = line(&buf[1..]) else {
        return Ok(None);
    };
    if kind != b'*' || text != b"3" {
        return match parse(buf)? {
            None => Ok(None),
            Some((other, _)) => Err(format!("expected a pub/sub message, got {}", show(&other))),
        };
    }
    let mut at = head + 1;
    let mut items: [&[u8]; 3] = [&[]; 3];
    for item in items.iter_mut() {
        match parse(&buf[at..])? {
            None => return Ok(None),
            Some((Value::Bulk(Some(bytes)), used)) => {
                *item = bytes;
                at += used;
            }
            Some((other, _)) => {
                return Err(format!("pub/sub message holding {}", show(&other)));
            }
        }
    }
    if items[0] != b"message" {
        return Err(format!(
            "expected a pub/sub message, got {:?}",
            String::from_utf8_lossy(items[0])
        ));
    }
    Ok(Some((items[2], at)))
}

/// The load generator's view of Redis: GET must answer a bulk string of
/// the value's length, SET must answer `+OK`.
#[derive(Debug)]
pub struct RedisWire {
    value_len: usize,
}

impl RedisWire {
    /// A connection whose GETs must return `value_len`-byte values.
    pub fn new(value_len: usize) -> RedisWire {
        RedisWire { value_len }
    }
}

impl Wire for RedisWire {
    fn hello(&mut self, out: &mut Vec<u8>) {
        encode_command(out, &[b"PING"]);
    }

    fn parse_hello(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        match parse(buf)? {
            None => Ok(None),
            Some((Value::Simple(b"PONG"), used)) => Ok(Some(used)),
            Some((other, _)) => Err(format!("Redis answered PING with {}", show(&other))),
        }
    }

    fn encode(&mut self, kind: OpKind, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
        match kind {
            OpKind::Get => encode_command(out, &[b"GET", key]),
            OpKind::Put => encode_command(out, &[b"SET", key, value]),
        }
    }

    fn parse(&mut self, kind: OpKind, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some((value, used)) = parse(buf)? else {
            return Ok(None);
        };
        match (kind, &value) {
            (OpKind::Get, Value::Bulk(Some(v))) if v.len() == self.value_len => Ok(Some(used)),
            (OpKind::Put, Value::Simple(b"OK")) => Ok(Some(used)),
            _ => Err(format!("Redis answered {kind:?} with {}", show(&value))),
        }
    }
}

/// A short description of a value for error messages.
pub fn show(value: &Value<'_>) -> String {
    match value {
        Value::Simple(t) => format!("+{}", String::from_utf8_lossy(t)),
        Value::Error(t) => format!("error -{}", String::from_utf8_lossy(t)),
        Value::Int(n) => format!(":{n}"),
        Value::Bulk(None) => "nil".into(),
        Value::Bulk(Some(b)) => format!("a bulk string of {} bytes", b.len()),
        Value::Array(None) => "nil array".into(),
        Value::Array(Some(items)) => format!("an array of {}", items.len()),
    }
}

/// An owned copy of a value, for answers that outlive the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// `+text`.
    Simple(String),
    /// `-text`.
    Error(String),
    /// `:n`.
    Int(i64),
    /// A bulk string (`None` for nil).
    Bulk(Option<Vec<u8>>),
    /// An array (`None` for nil).
    Array(Option<Vec<Owned>>),
}

impl Owned {
    fn from(value: &Value<'_>) -> Owned {
        match value {
            Value::Simple(t) => Owned::Simple(String::from_utf8_lossy(t).into_owned()),
            Value::Error(t) => Owned::Error(String::from_utf8_lossy(t).into_owned()),
            Value::Int(n) => Owned::Int(*n),
            Value::Bulk(b) => Owned::Bulk(b.map(<[u8]>::to_vec)),
            Value::Array(a) => Owned::Array(
                a.as_ref()
                    .map(|items| items.iter().map(Owned::from).collect()),
            ),
        }
    }
}

/// A blocking Redis connection for control commands, one at a time.
#[derive(Debug)]
pub struct RedisConn {
    stream: Stream,
    buf: Vec<u8>,
    filled: usize,
}

impl RedisConn {
    /// Connects (no handshake: RESP2 needs none).
    pub fn connect(target: &Target) -> Result<RedisConn, String> {
        let stream = target
            .connect()
            .map_err(|e| format!("cannot connect to Redis at {}: {e}", target.address()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        Ok(RedisConn {
            stream,
            buf: vec![0; 64 * 1024],
            filled: 0,
        })
    }

    /// Sends a command and returns its answer (error answers included:
    /// the caller decides, e.g. LOADING during a restart).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Owned, String> {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        self.stream
            .write_all(&out)
            .map_err(|e| format!("Redis write: {e}"))?;
        self.read_value()
    }

    /// Reads the next value.
    pub fn read_value(&mut self) -> Result<Owned, String> {
        loop {
            if let Some((value, used)) = parse(&self.buf[..self.filled])? {
                let owned = Owned::from(&value);
                self.buf.copy_within(used..self.filled, 0);
                self.filled -= used;
                return Ok(owned);
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.filled..])
                .map_err(|e| format!("Redis read: {e}"))?;
            if n == 0 {
                return Err("Redis closed the connection".into());
            }
            self.filled += n;
        }
    }

    /// A command whose error answer is an `Err`.
    pub fn ok(&mut self, args: &[&[u8]]) -> Result<Owned, String> {
        match self.command(args)? {
            Owned::Error(e) => Err(format!(
                "Redis answered {} with -{e}",
                String::from_utf8_lossy(args[0])
            )),
            other => Ok(other),
        }
    }

    /// `INFO section` as `name:value` pairs.
    pub fn info(&mut self, section: &str) -> Result<Vec<(String, String)>, String> {
        match self.ok(&[b"INFO", section.as_bytes()])? {
            Owned::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text)
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect()),
            other => Err(format!("INFO answered {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_parses() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"0123456789"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n");
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Value::Simple(b"OK"), 5)));
        assert_eq!(parse(b"$3\r\nab").unwrap(), None);
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Value::Bulk(None), 5)));
        let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(parse_message(msg).unwrap(), Some((&b"hi"[..], msg.len())));
        let mut w = RedisWire::new(2);
        assert!(w.parse(OpKind::Get, b"$-1\r\n").is_err());
        assert!(w.parse(OpKind::Put, b"-ERR x\r\n").is_err());
        assert_eq!(w.parse(OpKind::Get, b"$2\r\nhi\r\n").unwrap(), Some(8));
    }
}
