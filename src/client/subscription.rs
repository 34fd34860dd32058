//! Subscription events as handlers see them, and the resume bookkeeping the
//! client keeps per subscription (`link.rs`) so that it can re-subscribe
//! after a reconnect without losing a change.
//!
//! The resume point is the last revision up to which the handler is known
//! to have seen every change:
//!
//! - SYNCED at revision S: everything up to S has been delivered, so the
//!   resume point becomes S;
//! - a live event (after SYNCED) of revision R: the server delivers pending
//!   events in revision order, so every revision below R is complete. R
//!   itself may not be: a prefix delete gives several keys the same
//!   revision, and the connection may drop between two of them. The resume
//!   point becomes R - 1, and after a reconnect events of revision R may be
//!   delivered a second time (harmless: they carry the same state);
//! - events before the first SYNCED (the snapshot) come in key order, not
//!   revision order, so they prove nothing;
//! - RESET: the server could not resume; what the handler holds is void
//!   until the next SYNCED.

use bytes::Bytes;

use crate::protocol::{ErrorCode, Event, Request};

/// What a subscription handler receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// The key has this value (from the snapshot or a live write).
    Update {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Revision of the write.
        revision: u64,
        /// How many earlier updates of this key were folded into this one
        /// because the subscriber was behind.
        coalesced: u64,
    },
    /// The key was deleted.
    Delete {
        /// The key.
        key: String,
        /// Revision of the delete.
        revision: u64,
        /// How many earlier events of this key were folded into this one.
        coalesced: u64,
    },
    /// The snapshot (or the resumed changes) is complete: the handler's view
    /// is consistent at `revision`; live events follow.
    Synced {
        /// The revision the view is consistent at.
        revision: u64,
    },
    /// Forget every key held for this subscription: a full snapshot and
    /// [`SubscriptionEvent::Synced`] follow.
    Reset,
    /// The connection was lost. When the client reconnects it resumes the
    /// subscription: the changes that were missed (or `Reset` and a
    /// snapshot), then `Synced`.
    Disconnected,
    /// Grouped subscriptions only: the next `count` updates and deletes
    /// belong together (one transaction or prefix delete); applied together
    /// they make the view consistent at `revision`.
    Group {
        /// How many events of the group follow.
        count: u32,
        /// The revision the view is consistent at after the last of them.
        revision: u64,
    },
    /// The subscription ended (the client was closed, the server ended it,
    /// or it could not be resumed). The last event of a subscription; the
    /// handler is dropped right after.
    Closed {
        /// Why, for humans.
        reason: String,
    },
}

impl SubscriptionEvent {
    /// The event a wire event stands for (`Closed` included).
    pub(crate) fn from_wire(event: Event) -> SubscriptionEvent {
        match event {
            Event::Update {
                revision,
                coalesced,
                key,
                value,
            } => SubscriptionEvent::Update {
                key,
                value,
                revision,
                coalesced: u64::from(coalesced),
            },
            Event::Delete {
                revision,
                coalesced,
                key,
            } => SubscriptionEvent::Delete {
                key,
                revision,
                coalesced: u64::from(coalesced),
            },
            Event::Synced { revision } => SubscriptionEvent::Synced { revision },
            Event::Reset => SubscriptionEvent::Reset,
            Event::Group { count, revision } => SubscriptionEvent::Group { count, revision },
            Event::Closed { code, message } => SubscriptionEvent::Closed {
                reason: format!("{code}: {message}"),
            },
        }
    }
}

/// What an event means for the life of a subscription (both clients apply
/// the same rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Not a CLOSED: deliver it.
    No,
    /// CLOSED `SHUTTING_DOWN` with reconnecting on: the server is going
    /// away, not ending this subscription for cause; keep it and resume it
    /// on the next server.
    Resume,
    /// The subscription is over, for this reason.
    End(String),
}

impl Closing {
    /// What `event` means when the client does (or does not) reconnect.
    pub(crate) fn of(event: &Event, reconnect: bool) -> Closing {
        match event {
            Event::Closed { code, .. } if *code == ErrorCode::ShuttingDown && reconnect => {
                Closing::Resume
            }
            Event::Closed { code, message } => Closing::End(format!("{code}: {message}")),
            _ => Closing::No,
        }
    }
}

/// What the client remembers about one active subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubState {
    /// The prefix subscribed to.
    pub prefix: String,
    /// Where to resume from: every change up to this revision has been
    /// delivered. `None`: nothing is known complete (a fresh subscription
    /// before its first SYNCED, or after a RESET), so a re-subscribe must
    /// ask for a full snapshot.
    pub resume: Option<u64>,
    /// True once SYNCED was seen on the current connection: from then on
    /// events are live and in revision order.
    pub live: bool,
    /// Live events that belong together are announced by GROUP.
    pub grouped: bool,
}

impl SubState {
    /// A subscription as requested: `since` is the caller's resume point,
    /// trusted as complete exactly as the server trusts it.
    pub fn new(prefix: String, since: Option<u64>) -> SubState {
        SubState {
            prefix,
            resume: since,
            live: false,
            grouped: false,
        }
    }

    /// The same, with GROUP events (`true`) or without.
    pub fn grouped(mut self, grouped: bool) -> SubState {
        self.grouped = grouped;
        self
    }

    /// The SUB that subscribes again from the resume point.
    pub fn resubscribe(&self) -> Request {
        let (prefix, since) = (self.prefix.clone(), self.resume);
        if self.grouped {
            Request::SubscribeGrouped { prefix, since }
        } else {
            Request::Subscribe { prefix, since }
        }
    }

    /// Updates the resume point for an event about to be delivered. GROUP
    /// is no data event: it moves nothing (the events it announces do, each
    /// to one below its revision, so a group cut by a lost connection is
    /// delivered again whole by the resume).
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::Synced { revision } => {
                self.resume = Some(*revision);
                self.live = true;
            }
            Event::Update { revision, .. } | Event::Delete { revision, .. } if self.live => {
                let complete = revision.saturating_sub(1);
                if self.resume.is_none_or(|r| complete > r) {
                    self.resume = Some(complete);
                }
            }
            Event::Reset => {
                self.resume = None;
                self.live = false;
            }
            _ => {}
        }
    }

    /// Called when the connection is lost: the next connection starts with
    /// a snapshot or resume phase again.
    pub fn disconnected(&mut self) {
        self.live = false;
    }

    /// True when a re-subscribe cannot resume, so the handler must first be
    /// told to forget what it holds.
    pub fn needs_reset(&self) -> bool {
        self.resume.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(revision: u64) -> Event {
        Event::Update {
            revision,
            coalesced: 0,
            key: "k".into(),
            value: Bytes::new(),
        }
    }

    #[test]
    fn snapshot_events_do_not_move_the_resume_point() {
        let mut s = SubState::new("p".into(), None);
        s.observe(&update(9));
        assert_eq!(s.resume, None);
        assert!(s.needs_reset());
        s.observe(&Event::Synced { revision: 5 });
        assert_eq!(s.resume, Some(5));
    }

    #[test]
    fn live_events_resume_one_below_their_revision() {
        let mut s = SubState::new("p".into(), None);
        s.observe(&Event::Synced { revision: 5 });
        s.observe(&update(9));
        assert_eq!(s.resume, Some(8));
        s.observe(&Event::Delete {
            revision: 12,
            coalesced: 2,
            key: "k".into(),
        });
        assert_eq!(s.resume, Some(11));
    }

    #[test]
    fn resume_phase_after_reconnect_keeps_the_old_point_until_synced() {
        let mut s = SubState::new("p".into(), Some(3));
        assert!(!s.needs_reset());
        s.observe(&Event::Synced { revision: 4 });
        s.disconnected();
        s.observe(&update(20));
        assert_eq!(s.resume, Some(4));
        s.observe(&Event::Synced { revision: 21 });
        assert_eq!(s.resume, Some(21));
    }

    #[test]
    fn a_group_marker_is_no_data_event() {
        // A transaction at 10 on two keys: the GROUP, then its events. A
        // loss right after the GROUP, or between the events, resumes at 9:
        // the whole group comes again.
        let mut s = SubState::new("p".into(), None).grouped(true);
        s.observe(&Event::Synced { revision: 5 });
        s.observe(&Event::Group {
            count: 2,
            revision: 10,
        });
        assert_eq!(s.resume, Some(5));
        s.observe(&update(10));
        assert_eq!(s.resume, Some(9));
        s.observe(&update(10));
        assert_eq!(s.resume, Some(9));
        assert_eq!(
            s.resubscribe(),
            Request::SubscribeGrouped {
                prefix: "p".into(),
                since: Some(9)
            }
        );
        let plain = SubState::new("p".into(), None);
        assert_eq!(
            plain.resubscribe(),
            Request::Subscribe {
                prefix: "p".into(),
                since: None
            }
        );
    }

    #[test]
    fn reset_voids_the_resume_point() {
        let mut s = SubState::new("p".into(), Some(3));
        s.observe(&Event::Reset);
        assert!(s.needs_reset());
        s.observe(&update(30));
        assert_eq!(s.resume, None);
    }
}
