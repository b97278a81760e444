//! The small key-value store each plugin gets, e.g. to cache reputation lookups.
//!
//! Keys are namespaced by plugin, so one plugin can never read another's entries. Each plugin's
//! namespace is bounded in entries and in bytes (keys and values counted): a plugin cannot grow the
//! host's memory past its quota ([`crate::HostConfig::max_kv_bytes_per_plugin`]). This store lives
//! in the process; the server will back it with its storage.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_ENTRIES_PER_PLUGIN: usize = 10_000;

#[derive(Debug)]
pub(crate) struct KvStore {
    namespaces: Mutex<HashMap<String, Namespace>>,
    max_bytes_per_plugin: usize,
}

#[derive(Debug, Default)]
struct Namespace {
    entries: HashMap<String, Entry>,
    /// Key and value bytes of every entry held.
    bytes: usize,
    /// No entry held expires before this (`None`: none expires). A full namespace whose entries
    /// all live on would otherwise be scanned in vain on every refused `set`: with the enrichment
    /// cache full under a stream of new IOCs, that scan of 10,000 entries per call was 1.6% of a
    /// worker's CPU.
    earliest_expiry: Option<Instant>,
    /// Scans for expired entries so far.
    #[cfg(test)]
    scans: usize,
}

#[derive(Debug)]
struct Entry {
    value: String,
    expires: Option<Instant>,
}

/// Why an entry was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    TooLarge,
    Full,
}

impl KvStore {
    pub(crate) fn new(max_bytes_per_plugin: usize) -> Self {
        KvStore {
            namespaces: Mutex::default(),
            max_bytes_per_plugin,
        }
    }

    pub(crate) fn get(&self, plugin: &str, key: &str) -> Option<String> {
        let namespaces = self.namespaces.lock().ok()?;
        let entry = namespaces.get(plugin)?.entries.get(key)?;
        match entry.expires {
            Some(expires) if expires <= Instant::now() => None,
            _ => Some(entry.value.clone()),
        }
    }

    /// Stores a value, or refuses it (a cache may): oversized keys or values, and entries that
    /// would take the plugin past its entry count or byte quota once expired entries are gone.
    pub(crate) fn set(
        &self,
        plugin: &str,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> Result<(), Refused> {
        if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            return Err(Refused::TooLarge);
        }
        let Ok(mut namespaces) = self.namespaces.lock() else {
            return Err(Refused::Full);
        };
        let namespace = namespaces.entry(plugin.to_owned()).or_default();
        let now = Instant::now();
        let replaced = namespace
            .entries
            .get(&key)
            .map_or(0, |old| key.len() + old.value.len());
        let fits = |namespace: &Namespace| {
            let entries = namespace.entries.len() + usize::from(replaced == 0);
            let bytes = namespace.bytes - replaced + key.len() + value.len();
            entries <= MAX_ENTRIES_PER_PLUGIN && bytes <= self.max_bytes_per_plugin
        };
        if !fits(namespace) {
            namespace.purge_expired(now);
            if !fits(namespace) {
                return Err(Refused::Full);
            }
        }
        let expires = ttl_seconds.map(|s| now + Duration::from_secs(u64::from(s)));
        namespace.earliest_expiry = earlier(namespace.earliest_expiry, expires);
        namespace.bytes = namespace.bytes - replaced + key.len() + value.len();
        namespace.entries.insert(key, Entry { value, expires });
        Ok(())
    }

    /// Key and value bytes `plugin` holds.
    #[cfg(test)]
    fn bytes(&self, plugin: &str) -> usize {
        self.namespaces
            .lock()
            .map(|namespaces| namespaces.get(plugin).map_or(0, |n| n.bytes))
            .unwrap_or(0)
    }
}

impl Namespace {
    /// Drops the entries expired by `now`, looking through them only if one may have.
    fn purge_expired(&mut self, now: Instant) {
        if self.earliest_expiry.is_none_or(|earliest| earliest > now) {
            return;
        }
        #[cfg(test)]
        {
            self.scans += 1;
        }
        let mut freed = 0;
        let mut earliest_kept = None;
        self.entries.retain(|key, entry| {
            let keep = entry.expires.is_none_or(|expires| expires > now);
            if keep {
                earliest_kept = earlier(earliest_kept, entry.expires);
            } else {
                freed += key.len() + entry.value.len();
            }
            keep
        });
        self.bytes -= freed;
        self.earliest_expiry = earliest_kept;
    }
}

/// The earlier of two expiries, where `None` is never.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_cannot_hold_more_than_its_quota() {
        let quota = 1024 * 1024;
        let kv = KvStore::new(quota);
        let value = "v".repeat(60 * 1024);
        let mut stored = 0;
        for index in 0..20_000 {
            if kv
                .set("hoarder", format!("key-{index}"), value.clone(), None)
                .is_ok()
            {
                stored += 1;
            }
        }
        assert!(
            kv.bytes("hoarder") <= quota,
            "{} bytes",
            kv.bytes("hoarder")
        );
        assert!(stored > 0);
        assert!(
            kv.bytes("hoarder") + value.len() + "key-00000".len() > quota,
            "the quota, not something else, refused the rest"
        );
        assert_eq!(
            kv.set("hoarder", "one-more".into(), value.clone(), None),
            Err(Refused::Full)
        );
        // Another plugin has a quota of its own; replacing an entry reuses its bytes.
        assert_eq!(kv.set("other", "k".into(), value.clone(), None), Ok(()));
        assert_eq!(
            kv.set("hoarder", "key-0".into(), "small".into(), None),
            Ok(())
        );
        assert_eq!(kv.get("hoarder", "key-0").as_deref(), Some("small"));
        assert_eq!(
            kv.set("hoarder", "one-more".into(), value.clone(), None),
            Ok(()),
            "the bytes the replaced value freed are available again"
        );
    }

    #[test]
    fn expired_entries_make_room() {
        let kv = KvStore::new(100);
        assert_eq!(kv.set("p", "a".into(), "x".repeat(90), Some(0)), Ok(()));
        assert_eq!(kv.set("p", "b".into(), "y".repeat(90), None), Ok(()));
        assert_eq!(kv.get("p", "a"), None);
        assert_eq!(kv.bytes("p"), 91);
        assert_eq!(
            kv.set("p", "c".into(), "z".repeat(90), None),
            Err(Refused::Full)
        );
        assert_eq!(
            kv.set("p", "k".repeat(300), String::new(), None),
            Err(Refused::TooLarge)
        );
    }

    /// What a plugin's namespace has scanned for expired entries so far.
    fn scans(kv: &KvStore, plugin: &str) -> usize {
        kv.namespaces
            .lock()
            .map(|namespaces| namespaces.get(plugin).map_or(0, |n| n.scans))
            .unwrap_or(0)
    }

    #[test]
    fn a_full_namespace_looks_for_expired_entries_only_once_one_may_have_expired() {
        let kv = KvStore::new(1024 * 1024);
        for index in 0..MAX_ENTRIES_PER_PLUGIN {
            assert_eq!(
                kv.set("p", format!("k{index}"), "v".into(), Some(3600)),
                Ok(())
            );
        }
        for index in 0..100 {
            assert_eq!(
                kv.set("p", format!("new{index}"), "v".into(), Some(3600)),
                Err(Refused::Full)
            );
        }
        assert_eq!(scans(&kv, "p"), 0, "nothing could have expired: no scan");

        // One entry that expires at once: the next refused set finds it, and only that one scans.
        assert_eq!(kv.set("p", "k0".into(), "v".into(), Some(0)), Ok(()));
        assert_eq!(kv.set("p", "fresh".into(), "v".into(), Some(3600)), Ok(()));
        assert_eq!(scans(&kv, "p"), 1);
        assert_eq!(kv.get("p", "k0"), None);
        assert_eq!(kv.get("p", "fresh").as_deref(), Some("v"));
        assert_eq!(
            kv.set("p", "another".into(), "v".into(), Some(3600)),
            Err(Refused::Full)
        );
        assert_eq!(
            scans(&kv, "p"),
            1,
            "the scan left nothing that may expire sooner"
        );
    }
}
