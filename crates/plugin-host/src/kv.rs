//! The small key-value store each plugin gets, e.g. to cache reputation lookups.
//!
//! Keys are namespaced by plugin, so one plugin can never read another's entries. Sizes are capped
//! so a plugin cannot grow the host's memory without bound. This store lives in the process;
//! the server will back it with its storage.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_ENTRIES_PER_PLUGIN: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct KvStore {
    entries: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl KvStore {
    pub(crate) fn get(&self, plugin: &str, key: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(plugin)?.get(key)?;
        match entry.expires {
            Some(expires) if expires <= Instant::now() => None,
            _ => Some(entry.value.clone()),
        }
    }

    /// Stores a value; silently refuses oversized keys or values and full namespaces, as a cache may.
    pub(crate) fn set(&self, plugin: &str, key: String, value: String, ttl_seconds: Option<u32>) {
        if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            tracing::warn!(plugin, "Key-value entry refused: too large.");
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let namespace = entries.entry(plugin.to_owned()).or_default();
        let now = Instant::now();
        if namespace.len() >= MAX_ENTRIES_PER_PLUGIN && !namespace.contains_key(&key) {
            namespace.retain(|_, entry| entry.expires.is_none_or(|e| e > now));
            if namespace.len() >= MAX_ENTRIES_PER_PLUGIN {
                tracing::warn!(
                    plugin,
                    "Key-value entry refused: the plugin's store is full."
                );
                return;
            }
        }
        let expires = ttl_seconds.map(|s| now + Duration::from_secs(u64::from(s)));
        namespace.insert(key, Entry { value, expires });
    }
}
