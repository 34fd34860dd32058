//! nkv: a notify key-value store.
//!
//! Module map (data flows top to bottom, see `docs/` and `protocol.md`):
//!
//! - [`addr`]: server addresses and the default socket path.
//! - [`key`]: what a valid key is, and prefix coverage on segment boundaries.
//! - [`protocol`]: wire frames and the codec (pure; `protocol.md` is the spec).
//! - [`store`]: the synchronous, durable, log-structured store.
//! - [`notify`]: subscriptions and their conflating mailboxes.
//! - [`engine`]: the single owner of the store; orders, commits, publishes.
//! - [`server`]: listeners and connections (`nkv-server`).

pub mod addr;
pub mod engine;
pub mod key;
pub mod notify;
pub mod protocol;
pub mod server;
pub mod store;
