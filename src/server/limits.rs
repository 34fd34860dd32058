//! File descriptors: the server raises its soft limit to the hard limit at
//! start, and checks that the connection cap leaves a reserve for the
//! store, so that client connections can never take the descriptor a
//! segment roll or a compaction needs.

/// Descriptors kept for the store (lock, active segment, compaction outputs
/// and hints, directory syncs), the listeners and the runtime.
pub const STORE_FD_RESERVE: u64 = 64;

/// What [`fit_connections`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// The cap fits as asked.
    Fits(usize),
    /// The cap was not asked for explicitly and is lowered to fit.
    Lowered {
        /// The cap that fits.
        to: usize,
        /// The cap that did not.
        from: usize,
    },
}

/// Raises the soft limit on open files to the hard limit; returns the soft
/// limit now in force (`None` if it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (limit.current, limit.maximum) {
        if current < max {
            limit.current = Some(max);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!("cannot raise the open-file limit from {current} to {max}: {e}");
                return Some(current);
            }
            tracing::debug!("open-file limit raised from {current} to {max}");
        }
    }
    // `None` means unlimited.
    Some(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Descriptors this process has open now.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Checks `cap` connections against `limit` open files with `in_use`
/// already open and the store's reserve. An explicit cap that does not fit
/// is an error naming the fix; a default one is lowered.
pub fn fit_connections(cap: usize, explicit: bool, limit: u64, in_use: u64) -> Result<Fit, String> {
    let room = limit.saturating_sub(in_use + STORE_FD_RESERVE);
    if cap as u64 <= room {
        return Ok(Fit::Fits(cap));
    }
    if explicit || room == 0 {
        return Err(format!(
            "--max-connections {cap} needs {} open files ({} more for the store), but the \
             limit is {limit}; raise it (ulimit -n, or LimitNOFILE= in a systemd unit) or \
             lower --max-connections to at most {room}",
            cap as u64 + in_use + STORE_FD_RESERVE,
            STORE_FD_RESERVE
        ));
    }
    Ok(Fit::Lowered {
        to: room as usize,
        from: cap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_that_fits_is_kept() {
        assert_eq!(fit_connections(100, true, 1024, 10), Ok(Fit::Fits(100)));
    }

    #[test]
    fn a_default_cap_is_lowered_and_an_explicit_one_refused() {
        assert_eq!(
            fit_connections(1024, false, 1024, 10),
            Ok(Fit::Lowered {
                to: 950,
                from: 1024
            })
        );
        let err = fit_connections(1024, true, 1024, 10).unwrap_err();
        assert!(err.contains("ulimit -n"), "{err}");
        assert!(err.contains("at most 950"), "{err}");
    }
}
