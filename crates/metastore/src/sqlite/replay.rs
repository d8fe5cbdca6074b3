//! SQLite records of used signatures: `ReplayStore`.

use async_trait::async_trait;
use rusqlite::params;

use super::{db_err, SqliteStore};
use crate::{ReplayStore, Result};
use imaged_domain::time::Timestamp;

#[async_trait]
impl ReplayStore for SqliteStore {
    async fn remember_signature(
        &self,
        signature: &str,
        fingerprint: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<Option<String>> {
        let (signature, fingerprint) = (signature.to_owned(), fingerprint.to_owned());
        self.writer
            .run(move |conn| {
                let recorded = conn
                    .prepare_cached(
                        "INSERT INTO seen_signatures (signature, fingerprint, expires_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (signature) DO UPDATE SET fingerprint = excluded.fingerprint,
                           expires_at = excluded.expires_at
                         WHERE seen_signatures.expires_at < ?4",
                    )
                    .and_then(|mut st| st.execute(params![signature, fingerprint, expires_at.0, now.0]))
                    .map_err(db_err)?;
                if recorded == 1 {
                    return Ok(None);
                }
                conn.prepare_cached("SELECT fingerprint FROM seen_signatures WHERE signature = ?1")
                    .and_then(|mut st| st.query_row(params![signature], |r| r.get(0)))
                    .map(Some)
                    .map_err(db_err)
            })
            .await
    }

    async fn forget_signatures(&self, now: Timestamp) -> Result<u64> {
        self.writer
            .run(move |conn| {
                conn.execute("DELETE FROM seen_signatures WHERE expires_at < ?1", params![now.0])
                    .map(|n| n as u64)
                    .map_err(db_err)
            })
            .await
    }
}
