//! PostgreSQL accounts and API keys: `AccountStore` and `KeyStore`.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{db_err, PostgresStore};
use crate::{account_from_column, AccountRecord, AccountStore, KeyRecord, KeyStatus, KeyStore, Refused, Result, Role};
use imaged_domain::time::Timestamp;
use imaged_domain::AccountId;

fn to_account(r: &Row) -> Result<AccountRecord> {
    Ok(AccountRecord {
        id: account_from_column(r.get(0)),
        name: r.get(1),
        role: Role::parse(r.get(2))?,
        created_at: Timestamp(r.get(3)),
        image_quota: r.get::<_, Option<i64>>(4).map(|q| u32::try_from(q).unwrap_or(u32::MAX)),
        storage_quota_gib: r.get::<_, Option<i64>>(5).map(|q| q.unsigned_abs()),
    })
}

fn to_key(r: &Row) -> Result<KeyRecord> {
    Ok(KeyRecord {
        secret_id: r.get(0),
        account: account_from_column(r.get(1)),
        sealed_secret: r.get(2),
        status: KeyStatus::parse(r.get(3))?,
        created_at: Timestamp(r.get(4)),
    })
}

const ACCOUNT_COLUMNS: &str = "id, name, role, created_at, image_quota, storage_quota_gib";
const KEY_COLUMNS: &str = "secret_id, account_id, sealed_secret, status, created_at";

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_account(&self, name: &str, role: Role, now: Timestamp) -> Result<Result<AccountRecord, Refused>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "INSERT INTO accounts (name, role, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING RETURNING {ACCOUNT_COLUMNS}"
                ),
                &[&name, &role.as_str(), &now.0],
            )
            .await
            .map_err(db_err)?;
        match row {
            Some(r) => to_account(&r).map(Ok),
            None => Ok(Err(Refused::DuplicateAccountName)),
        }
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"), &[&(id.0 as i64)])
            .await
            .map_err(db_err)?
            .map(|r| to_account(&r))
            .transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        let conn = self.conn().await?;
        let rows =
            conn.query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"), &[]).await.map_err(db_err)?;
        rows.iter().map(to_account).collect()
    }

    async fn set_image_quota(&self, id: AccountId, quota: Option<u32>) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("UPDATE accounts SET image_quota = $1 WHERE id = $2", &[&quota.map(i64::from), &(id.0 as i64)])
            .await
            .map(|n| n == 1)
            .map_err(db_err)
    }

    async fn set_storage_quota(&self, id: AccountId, gib: Option<u64>) -> Result<bool> {
        let gib = gib.map(|g| i64::try_from(g).unwrap_or(i64::MAX));
        let conn = self.conn().await?;
        conn.execute("UPDATE accounts SET storage_quota_gib = $1 WHERE id = $2", &[&gib, &(id.0 as i64)])
            .await
            .map(|n| n == 1)
            .map_err(db_err)
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
            &[&key.secret_id, &(key.account.0 as i64), &key.sealed_secret, &key.status.as_str(), &key.created_at.0],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn get_key(&self, secret_id: &str) -> Result<Option<KeyRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_id = $1"), &[&secret_id])
            .await
            .map_err(db_err)?
            .map(|r| to_key(&r))
            .transpose()
    }

    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<KeyRecord>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::BIGINT IS NULL OR account_id = $1
                     ORDER BY created_at, secret_id"
                ),
                &[&account.map(|a| a.0 as i64)],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(to_key).collect()
    }

    async fn set_key_status(&self, secret_id: &str, status: KeyStatus) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("UPDATE api_keys SET status = $1 WHERE secret_id = $2", &[&status.as_str(), &secret_id])
            .await
            .map(|n| n == 1)
            .map_err(db_err)
    }

    async fn delete_key(&self, secret_id: &str) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM api_keys WHERE secret_id = $1", &[&secret_id]).await.map(|n| n == 1).map_err(db_err)
    }
}
