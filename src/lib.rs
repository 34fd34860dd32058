//! nkv: a notify key-value store.
//!
//! Module map (data flows top to bottom, see `docs/` and `protocol.md`):
//!
//! - [`key`]: what a valid key is, and prefix coverage on segment boundaries.
//! - [`addr`]: server addresses (`unix:PATH`, `tcp:HOST:PORT`) and the default.
//! - [`perms`]: who may reach the socket: the rules on its directory, its mode.
//! - [`protocol`]: wire frames and the codec (pure; `protocol.md` is the spec).
//! - [`store`]: the synchronous, durable, log-structured store.
//! - [`notify`]: subscriptions and their conflating mailboxes.
//! - [`engine`]: the single owner of the store; orders, commits, publishes.
//! - [`server`]: listeners and connections (`nkv-server`).
//! - [`systemd`]: socket activation, sd_notify and the journal (`nkv-server`
//!   as a service).
//! - [`client`]: the blocking Rust client used by the CLI and the C library.
//! - [`async_client`]: the async Rust client (tokio), on the same protocol code.
//! - [`ffi`]: the C ABI (`libnkv.so`, `include/nkv.h`).

pub mod acl;
pub mod addr;
pub mod async_client;
pub mod cli_docs;
pub mod client;
pub mod engine;
pub mod ffi;
pub mod key;
pub mod notify;
pub mod perms;
pub mod protocol;
pub mod server;
pub mod storage;
pub mod store;
pub mod systemd;
