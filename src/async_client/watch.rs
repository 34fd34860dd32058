//! [`AsyncClient::watch`]: a key's newest value in a
//! [`tokio::sync::watch`] channel, kept by a subscription to the key.
//!
//! A subscription to `a` also covers `a.b`; only events of the key itself
//! count. The value is published at the points where the subscription's
//! view is consistent: live events as they come, but a snapshot (the first
//! one, or the one after a `Reset`) only once its `Synced` arrives, so the
//! receiver never sees a transient "absent" while a snapshot is rebuilt.

use futures_util::StreamExt;
use tokio::sync::watch;

use super::{AsyncClient, Subscription};
use crate::client::{Entry, Error, ErrorKind, SubscriptionEvent};

/// The state of one key as a subscription's events tell it.
#[derive(Debug)]
struct KeyView {
    key: String,
    /// The last consistent state (what the receiver holds).
    current: Option<Entry>,
    /// While a snapshot is being received: the state so far (`None` inside:
    /// absent unless the snapshot says otherwise).
    rebuilding: Option<Option<Entry>>,
}

impl KeyView {
    /// Before the first snapshot.
    fn new(key: &str) -> KeyView {
        KeyView {
            key: key.to_owned(),
            current: None,
            rebuilding: Some(None),
        }
    }

    /// Applies an event; true when `current` changed.
    fn apply(&mut self, event: &SubscriptionEvent) -> bool {
        let state = match event {
            SubscriptionEvent::Update {
                key,
                value,
                revision,
                ..
            } if *key == self.key => Some(Entry {
                value: value.clone(),
                revision: *revision,
            }),
            SubscriptionEvent::Delete { key, .. } if *key == self.key => None,
            SubscriptionEvent::Reset => {
                self.rebuilding = Some(None);
                return false;
            }
            SubscriptionEvent::Synced { .. } => match self.rebuilding.take() {
                Some(state) => state,
                None => return false,
            },
            // Keys below this one, Disconnected (the value stays what it
            // was until the resume says otherwise), Closed.
            _ => return false,
        };
        if let Some(rebuilding) = &mut self.rebuilding {
            *rebuilding = state;
            return false;
        }
        if self.current == state {
            // An event of the last revision seen, delivered again after a
            // resume: nothing new for the receivers.
            return false;
        }
        self.current = state;
        true
    }
}

impl AsyncClient {
    /// Watches `key`: the receiver always holds its newest value with its
    /// revision (`None` while the key does not exist). Its initial value is
    /// the key's state when this returns; across a lost connection it
    /// converges to the newest state once resumed (a key deleted meanwhile
    /// becomes `None`).
    ///
    /// A task on the current runtime keeps it up to date; it unsubscribes
    /// once every receiver is dropped. When the client is closed, the
    /// sender is dropped: [`changed`](watch::Receiver::changed) then fails.
    ///
    /// ```no_run
    /// # async fn run(client: nkv::async_client::AsyncClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut state = client.watch("net.eth0.state").await?;
    /// loop {
    ///     match &*state.borrow_and_update() {
    ///         Some(entry) => println!("{:?} at revision {}", entry.value, entry.revision),
    ///         None => println!("(absent)"),
    ///     }
    ///     state.changed().await?;
    /// }
    /// # }
    /// ```
    pub async fn watch(&self, key: &str) -> Result<watch::Receiver<Option<Entry>>, Error> {
        self.shared.limits().key(key)?;
        let mut sub = self.subscribe(key).await?;
        let mut view = KeyView::new(key);
        let synced = async {
            while let Some(event) = sub.next().await {
                view.apply(&event);
                if matches!(event, SubscriptionEvent::Synced { .. }) {
                    return Ok(());
                }
            }
            Err(Error::closed())
        };
        match tokio::time::timeout(self.timeout, synced).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no snapshot of {key:?} within {:?}", self.timeout),
                ))
            }
        }
        let (sender, receiver) = watch::channel(view.current.clone());
        tokio::spawn(follow(sub, view, sender));
        Ok(receiver)
    }
}

/// Keeps `sender` up to date until every receiver is gone (dropping the
/// subscription then unsubscribes) or the subscription ends.
async fn follow(mut sub: Subscription, mut view: KeyView, sender: watch::Sender<Option<Entry>>) {
    loop {
        tokio::select! {
            _ = sender.closed() => return,
            event = sub.next() => {
                let Some(event) = event else { return };
                if view.apply(&event) {
                    sender.send_replace(view.current.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn update(key: &str, revision: u64) -> SubscriptionEvent {
        SubscriptionEvent::Update {
            key: key.into(),
            value: Bytes::from(revision.to_string()),
            revision,
            coalesced: 0,
        }
    }

    fn entry(revision: u64) -> Option<Entry> {
        Some(Entry {
            value: Bytes::from(revision.to_string()),
            revision,
        })
    }

    #[test]
    fn the_snapshot_counts_at_synced_and_keys_below_never() {
        let mut view = KeyView::new("a");
        assert!(!view.apply(&update("a", 3)));
        assert!(!view.apply(&update("a.b", 4)));
        assert_eq!(view.current, None);
        assert!(view.apply(&SubscriptionEvent::Synced { revision: 4 }));
        assert_eq!(view.current, entry(3));
        assert!(!view.apply(&update("a.b", 5)));
        assert!(view.apply(&update("a", 6)));
        assert_eq!(view.current, entry(6));
    }

    #[test]
    fn a_reset_snapshot_without_the_key_makes_it_absent_at_synced_only() {
        let mut view = KeyView::new("a");
        view.apply(&update("a", 3));
        view.apply(&SubscriptionEvent::Synced { revision: 3 });
        view.apply(&SubscriptionEvent::Disconnected);
        assert!(!view.apply(&SubscriptionEvent::Reset));
        assert_eq!(view.current, entry(3), "no transient absence");
        assert!(view.apply(&SubscriptionEvent::Synced { revision: 9 }));
        assert_eq!(view.current, None);
    }

    #[test]
    fn a_repeated_event_changes_nothing() {
        let mut view = KeyView::new("a");
        view.apply(&SubscriptionEvent::Synced { revision: 1 });
        assert!(view.apply(&update("a", 5)));
        assert!(!view.apply(&update("a", 5)));
    }
}
