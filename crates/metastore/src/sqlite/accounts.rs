//! SQLite accounts and API keys: `AccountStore` and `KeyStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{db_err, SqliteStore};
use crate::{
    account_from_column, AccountRecord, AccountStore, KeyRecord, KeyStatus, KeyStore, Refused, Result, Role,
    FIRST_ACCOUNT_ID,
};
use imaged_domain::time::Timestamp;
use imaged_domain::AccountId;

type AccountRow = (i64, String, String, i64, Option<i64>, Option<i64>);

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_account(row: AccountRow) -> Result<AccountRecord> {
    Ok(AccountRecord {
        id: account_from_column(row.0),
        name: row.1,
        role: Role::parse(&row.2)?,
        created_at: Timestamp(row.3),
        image_quota: row.4.map(|q| u32::try_from(q).unwrap_or(u32::MAX)),
        storage_quota_gib: row.5.map(|q| q.unsigned_abs()),
    })
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, Vec<u8>, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_key(row: (String, i64, Vec<u8>, String, i64)) -> Result<KeyRecord> {
    Ok(KeyRecord {
        secret_id: row.0,
        account: account_from_column(row.1),
        sealed_secret: row.2,
        status: KeyStatus::parse(&row.3)?,
        created_at: Timestamp(row.4),
    })
}

const ACCOUNT_COLUMNS: &str = "id, name, role, created_at, image_quota, storage_quota_gib";
const KEY_COLUMNS: &str = "secret_id, account_id, sealed_secret, status, created_at";

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, name: &str, role: Role, now: Timestamp) -> Result<Result<AccountRecord, Refused>> {
        let name = name.to_owned();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let taken: bool = tx
                    .query_row("SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)", params![name], |r| r.get(0))
                    .map_err(db_err)?;
                if taken {
                    return Ok(Err(Refused::DuplicateAccountName));
                }
                let next: i64 = tx
                    .query_row(
                        "SELECT COALESCE(MAX(id) + 1, ?1) FROM accounts",
                        params![FIRST_ACCOUNT_ID as i64],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                tx.execute(
                    "INSERT INTO accounts (id, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![next, name, role.as_str(), now.0],
                )
                .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(AccountRecord {
                    id: account_from_column(next),
                    name,
                    role,
                    created_at: now,
                    image_quota: None,
                    storage_quota_gib: None,
                }))
            })
            .await
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>> {
        self.readers
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"))
                    .and_then(|mut st| st.query_row(params![id.0 as i64], account_row).optional())
                    .map_err(db_err)?
                    .map(to_account)
                    .transpose()
            })
            .await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        self.readers
            .run(|conn| {
                let mut st =
                    conn.prepare(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id")).map_err(db_err)?;
                let rows = st.query_map([], account_row).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(to_account)).collect()
            })
            .await
    }

    async fn set_image_quota(&self, id: AccountId, quota: Option<u32>) -> Result<bool> {
        self.writer
            .run(move |conn| {
                conn.execute("UPDATE accounts SET image_quota = ?1 WHERE id = ?2", params![quota, id.0 as i64])
                    .map(|n| n == 1)
                    .map_err(db_err)
            })
            .await
    }

    async fn set_storage_quota(&self, id: AccountId, gib: Option<u64>) -> Result<bool> {
        let gib = gib.map(|g| i64::try_from(g).unwrap_or(i64::MAX));
        self.writer
            .run(move |conn| {
                conn.execute("UPDATE accounts SET storage_quota_gib = ?1 WHERE id = ?2", params![gib, id.0 as i64])
                    .map(|n| n == 1)
                    .map_err(db_err)
            })
            .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let key = key.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![
                        key.secret_id,
                        key.account.0 as i64,
                        key.sealed_secret,
                        key.status.as_str(),
                        key.created_at.0
                    ],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn get_key(&self, secret_id: &str) -> Result<Option<KeyRecord>> {
        let secret_id = secret_id.to_owned();
        self.readers
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_id = ?1"))
                    .and_then(|mut st| st.query_row(params![secret_id], key_row).optional())
                    .map_err(db_err)?
                    .map(to_key)
                    .transpose()
            })
            .await
    }

    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<KeyRecord>> {
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare(&format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR account_id = ?1 ORDER BY created_at, secret_id"
                    ))
                    .map_err(db_err)?;
                let rows = st.query_map(params![account.map(|a| a.0 as i64)], key_row).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(to_key)).collect()
            })
            .await
    }

    async fn set_key_status(&self, secret_id: &str, status: KeyStatus) -> Result<bool> {
        let secret_id = secret_id.to_owned();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "UPDATE api_keys SET status = ?1 WHERE secret_id = ?2",
                    params![status.as_str(), secret_id],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn delete_key(&self, secret_id: &str) -> Result<bool> {
        let secret_id = secret_id.to_owned();
        self.writer
            .run(move |conn| {
                conn.execute("DELETE FROM api_keys WHERE secret_id = ?1", params![secret_id])
                    .map(|n| n == 1)
                    .map_err(db_err)
            })
            .await
    }
}
