//! The replay check: every verified signature is recorded, for as long as the clock check
//! accepts it, with the client address that first used it; a later change from another
//! address is refused. The record lives in the metadata store (`ReplayStore`), so every server
//! of a deployment sees the first use. A first use never changes while it is recorded, so each
//! server also keeps the ones it has seen in memory: a repeated request (an SDK's polling loop
//! sends byte-identical requests within one second) is decided without the store.

use std::collections::HashMap;
use std::sync::Mutex;

use imaged_domain::time::Timestamp;

use crate::service::{now, AppError, Service, SIGNATURE_WINDOW_SECS};

/// Signatures a server remembers in memory at most (older ones are then dropped first).
const CACHED_SIGNATURES: usize = 65_536;

/// First uses seen by this server: signature → (first client, expiry).
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    seen: Mutex<HashMap<String, (String, i64)>>,
}

impl ReplayCache {
    fn get(&self, signature: &str, now: i64) -> Option<String> {
        let seen = self.seen.lock().ok()?;
        seen.get(signature).filter(|(_, expires)| *expires >= now).map(|(client, _)| client.clone())
    }

    fn put(&self, signature: &str, first_client: &str, expires: i64, now: i64) {
        let Ok(mut seen) = self.seen.lock() else { return };
        if seen.len() >= CACHED_SIGNATURES {
            seen.retain(|_, (_, e)| *e >= now);
            if seen.len() >= CACHED_SIGNATURES {
                seen.clear();
            }
        }
        seen.insert(signature.to_owned(), (first_client.to_owned(), expires));
    }
}

impl Service {
    /// The replay check of a verified signature made at `signed_at`, used by `client` (its
    /// address): true on its first use, and afterwards for reads and for uses by the client
    /// that used it first.
    pub async fn admit_signature(
        &self,
        signature: &str,
        client: &str,
        read_only: bool,
        signed_at: Timestamp,
    ) -> Result<bool, AppError> {
        if !self.data().replay_check {
            return Ok(true);
        }
        let now = now();
        let first_client = match self.replay_cache().get(signature, now.0) {
            Some(first) => first,
            None => {
                // Recorded while the clock check still accepts its timestamp.
                let expires = Timestamp(signed_at.0.saturating_add(SIGNATURE_WINDOW_SECS + 1));
                let first = self.store().remember_signature(signature, client, expires, now).await?;
                let first = first.unwrap_or_else(|| client.to_owned());
                self.replay_cache().put(signature, &first, expires.0, now.0);
                first
            }
        };
        Ok(read_only || first_client == client)
    }

    /// Forgets signatures whose window has passed; returns how many.
    pub async fn forget_expired_signatures(&self) -> Result<u64, AppError> {
        Ok(self.store().forget_signatures(now()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_answers_until_expiry_and_stays_bounded() {
        let cache = ReplayCache::default();
        cache.put("sig", "10.0.0.1", 100, 50);
        assert_eq!(cache.get("sig", 100).as_deref(), Some("10.0.0.1"));
        assert_eq!(cache.get("sig", 101), None, "expired");
        for n in 0..CACHED_SIGNATURES + 10 {
            cache.put(&format!("s{n}"), "c", 1_000, 60);
        }
        assert!(cache.seen.lock().map(|s| s.len()).unwrap_or(usize::MAX) <= CACHED_SIGNATURES);
    }
}
