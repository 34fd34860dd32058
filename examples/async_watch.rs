//! Watches a key with the async client while changing it: the watch always
//! holds the key's newest value (`None` while the key does not exist).
//!
//! ```sh
//! cargo run --release --bin nkv-server &            # or any running server
//! cargo run --example async_watch -- demo.light     # NKV_ADDR picks the server
//! ```
//!
//! It prints one line per value the watch holds, for example:
//!
//! ```text
//! watch demo.light: (absent)
//! watch demo.light: "on" (revision 7)
//! watch demo.light: "dim" (revision 8)
//! watch demo.light: "off" (revision 9)
//! watch demo.light: (absent)
//! ```
//!
//! A watch may skip a value that was replaced before it looked (it holds
//! the newest, not a history); a subscription stream gives every change.

use std::time::Duration;

use nkv::addr::Address;
use nkv::async_client::AsyncClient;
use nkv::client::{ClientOptions, Entry};
use nkv::protocol::Condition;

fn show(key: &str, entry: &Option<Entry>) {
    match entry {
        Some(entry) => println!(
            "watch {key}: {:?} (revision {})",
            String::from_utf8_lossy(&entry.value),
            entry.revision
        ),
        None => println!("watch {key}: (absent)"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo.light".into());
    let addr = Address::from_env_or_default()?;
    let client = AsyncClient::connect(&addr, ClientOptions::default()).await?;
    // Start from nothing, so the run ends where it began.
    let _ = client.delete(&key, Condition::None).await;

    let mut watch = client.watch(&key).await?;
    show(&key, &watch.borrow_and_update());
    let watched = key.clone();
    let printer = tokio::spawn(async move {
        let mut seen_a_value = false;
        while watch.changed().await.is_ok() {
            let entry = watch.borrow_and_update().clone();
            show(&watched, &entry);
            seen_a_value |= entry.is_some();
            if seen_a_value && entry.is_none() {
                break; // deleted at the end: done
            }
        }
    });

    for value in ["on", "dim", "off"] {
        client.put(&key, value.as_bytes(), Condition::None).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.delete(&key, Condition::None).await?;
    tokio::time::timeout(Duration::from_secs(10), printer).await??;
    client.close();
    Ok(())
}
