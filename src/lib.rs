//! nkv: a notify key-value store.
//!
//! Module map (data flows top to bottom, see `docs/` and `protocol.md`):
//!
//! - [`key`]: what a valid key is, and prefix coverage on segment boundaries.
//! - [`protocol`]: wire frames and the codec (pure; `protocol.md` is the spec).
//! - [`store`]: the synchronous, durable, log-structured store.
//! - [`notify`]: subscriptions and their conflating mailboxes.
//! - [`addr`]: server addresses (`unix:PATH`, `tcp:HOST:PORT`) and the default.
//! - [`client`]: the blocking Rust client used by the CLI and the C library.

pub mod addr;
pub mod client;
pub mod key;
pub mod notify;
pub mod protocol;
pub mod store;
