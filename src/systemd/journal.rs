//! Logs that read well in the journal.
//!
//! Under systemd, stderr is usually a stream to journald, which stamps
//! every line with the time, the unit and the pid itself and shows the
//! priority in colour. So when stderr is the journal, the server's lines
//! carry neither a timestamp nor ANSI colours, but begin with the syslog
//! priority in angle brackets (`<3>` error … `<7>` debug), which journald
//! strips and records as the line's priority (sd-daemon(3)): then
//! `journalctl -p warning -u nkv` shows the warnings.

use std::os::fd::AsFd;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether `fd` is the stream `JOURNAL_STREAM` names: systemd sets it to
/// `DEVICE:INODE` of the stream it connected stdout or stderr to, so a
/// process whose stderr was redirected elsewhere (or that inherited the
/// variable from a parent) can tell it is not talking to the journal.
pub fn is_journal(fd: impl AsFd, journal_stream: Option<&str>) -> bool {
    let Some(value) = journal_stream else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(fd) else {
        return false;
    };
    names(value, stat.st_dev, stat.st_ino)
}

/// Whether `value` (`DEVICE:INODE`, in decimal) names the file `dev`,
/// `ino`.
fn names(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// Whether this process's stderr is the journal.
pub fn stderr_is_journal() -> bool {
    is_journal(
        std::io::stderr(),
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
    )
}

/// The syslog priority of a tracing level (sd-daemon(3)): error 3
/// (`SD_ERR`), warn 4, info 6, debug and trace 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event formatter for the journal: the lines of `inner` (which should
/// leave out the time and the level, the journal has both), each prefixed
/// with the event's priority, so that a message of several lines keeps its
/// priority on every one. No ANSI colours: the inner formatter writes to a
/// plain string.
#[derive(Debug, Clone)]
pub struct JournalFormat<F> {
    /// Formats the event itself.
    pub inner: F,
}

impl<S, N, F> FormatEvent<S, N> for JournalFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut text), event)?;
        let priority = priority(event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_this_very_file() {
        let file = tempfile::tempfile().unwrap();
        let stat = rustix::fs::fstat(&file).unwrap();
        let value = format!("{}:{}", stat.st_dev, stat.st_ino);
        assert!(is_journal(&file, Some(&value)));
        let other = format!("{}:{}", stat.st_dev, stat.st_ino + 1);
        assert!(!is_journal(&file, Some(&other)));
        assert!(!is_journal(&file, Some("garbage")));
        assert!(!is_journal(&file, None));
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
