//! PostgreSQL TKE records and the message centre: `TkeStore`, `MessageStore`.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use super::instances::put_instance;
use super::{begin_tx, db_err, insert_job_row, PostgresStore};
use crate::tke::{decode, encode};
use crate::{account_from_column, decode_instance, JobRecord, MessageStore, Refused, Result, TkeStore, TkeWrite};
use imaged_domain::instance::Instance;
use imaged_domain::time::Timestamp;
use imaged_domain::tke::{BetaApplication, BetaStatus, Cluster, Message, Node, NodePool, OsChange};
use imaged_domain::{AccountId, ApplicationId, ClusterId, InstanceId, MessageId, NodePoolId};

async fn write_tx(tx: &Transaction<'_>, w: &TkeWrite) -> Result<Result<(), Refused>> {
    for expected in &w.expect_pools {
        // The row lock makes a concurrent writer of the same pool wait, then see the new row.
        let row = tx
            .query_opt("SELECT doc FROM tke_node_pools WHERE id = $1 FOR UPDATE", &[&expected.id.as_str()])
            .await
            .map_err(db_err)?;
        let current: Option<NodePool> = row.map(|r| decode("node pool", r.get(0))).transpose()?;
        if current.as_ref() != Some(expected) {
            return Ok(Err(Refused::WrongState));
        }
    }
    if let Err(refused) = begin_tx(tx, &w.operating).await? {
        return Ok(Err(refused));
    }
    for c in &w.clusters {
        tx.execute(
            "INSERT INTO tke_clusters (id, owner_id, region, os, created_at, doc) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET os = excluded.os, doc = excluded.doc",
            &[&c.id.as_str(), &(c.owner.0 as i64), &c.region, &c.os, &c.created_at.0, &encode(c)?],
        )
        .await
        .map_err(db_err)?;
    }
    for p in &w.pools {
        tx.execute(
            "INSERT INTO tke_node_pools (id, cluster_id, owner_id, os, created_at, doc) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET os = excluded.os, doc = excluded.doc",
            &[&p.id.as_str(), &p.cluster.as_str(), &(p.owner.0 as i64), &p.os, &p.created_at.0, &encode(p)?],
        )
        .await
        .map_err(db_err)?;
    }
    for n in &w.nodes {
        let written = tx
            .execute(
                "INSERT INTO tke_nodes (instance_id, cluster_id, pool_id, joined_at, doc) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (instance_id) DO UPDATE SET pool_id = excluded.pool_id, doc = excluded.doc
                 WHERE tke_nodes.cluster_id = excluded.cluster_id",
                &[
                    &n.instance.as_str(),
                    &n.cluster.as_str(),
                    &n.pool.as_ref().map(NodePoolId::as_str),
                    &n.joined_at.0,
                    &encode(n)?,
                ],
            )
            .await
            .map_err(db_err)?;
        if written == 0 {
            return Ok(Err(Refused::DuplicateId));
        }
    }
    for id in &w.removed_nodes {
        tx.execute("DELETE FROM tke_nodes WHERE instance_id = $1", &[&id.as_str()]).await.map_err(db_err)?;
    }
    for instance in &w.new_instances {
        put_instance(tx, instance).await?;
    }
    for job in &w.jobs {
        insert_job_row(tx, job).await?;
    }
    for id in &w.deleted_pools {
        tx.execute("DELETE FROM tke_node_pools WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?;
    }
    for id in &w.deleted_clusters {
        for sql in [
            "DELETE FROM tke_nodes WHERE cluster_id = $1",
            "DELETE FROM tke_node_pools WHERE cluster_id = $1",
            "DELETE FROM tke_clusters WHERE id = $1",
        ] {
            tx.execute(sql, &[&id.as_str()]).await.map_err(db_err)?;
        }
    }
    Ok(Ok(()))
}

impl PostgresStore {
    async fn docs<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>> {
        let conn = self.conn().await?;
        let rows = conn.query(sql, args).await.map_err(db_err)?;
        rows.iter().map(|r| decode(what, r.get(0))).collect()
    }

    async fn doc<T: serde::de::DeserializeOwned>(&self, what: &str, sql: &str, id: &str) -> Result<Option<T>> {
        let conn = self.conn().await?;
        let row = conn.query_opt(sql, &[&id]).await.map_err(db_err)?;
        row.map(|r| decode(what, r.get(0))).transpose()
    }
}

async fn insert_message(tx: &Transaction<'_>, m: &Message) -> Result<()> {
    tx.execute(
        "INSERT INTO messages (id, account_id, is_read, created_at, doc) VALUES ($1, $2, $3, $4, $5)",
        &[&m.id.as_str(), &(m.account.0 as i64), &m.read, &m.created_at.0, &encode(m)?],
    )
    .await
    .map(|_| ())
    .map_err(db_err)
}

fn message_of(doc: &str, read: bool) -> Result<Message> {
    let mut m: Message = decode("message", doc)?;
    m.read = read;
    Ok(m)
}

#[async_trait]
impl TkeStore for PostgresStore {
    async fn tke_write(&self, write: &TkeWrite) -> Result<Result<(), Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let outcome = write_tx(&tx, write).await?;
        if outcome.is_ok() {
            tx.commit().await.map_err(db_err)?;
        }
        Ok(outcome)
    }

    async fn get_cluster(&self, id: &ClusterId) -> Result<Option<Cluster>> {
        self.doc("cluster", "SELECT doc FROM tke_clusters WHERE id = $1", id.as_str()).await
    }

    async fn list_clusters(&self, owner: AccountId, region: &str) -> Result<Vec<Cluster>> {
        self.docs(
            "cluster",
            "SELECT doc FROM tke_clusters WHERE owner_id = $1 AND region = $2 ORDER BY created_at, id",
            &[&(owner.0 as i64), &region],
        )
        .await
    }

    async fn get_pool(&self, id: &NodePoolId) -> Result<Option<NodePool>> {
        self.doc("node pool", "SELECT doc FROM tke_node_pools WHERE id = $1", id.as_str()).await
    }

    async fn list_pools(&self, cluster: &ClusterId) -> Result<Vec<NodePool>> {
        self.docs(
            "node pool",
            "SELECT doc FROM tke_node_pools WHERE cluster_id = $1 ORDER BY created_at, id",
            &[&cluster.as_str()],
        )
        .await
    }

    async fn cluster_nodes(&self, cluster: &ClusterId) -> Result<Vec<(Node, Option<Instance>)>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT n.doc, i.doc FROM tke_nodes n LEFT JOIN instances i ON i.id = n.instance_id
                 WHERE n.cluster_id = $1 ORDER BY n.joined_at, n.instance_id",
                &[&cluster.as_str()],
            )
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let instance: Option<&str> = r.get(1);
                Ok((decode("node", r.get(0))?, instance.map(decode_instance).transpose()?))
            })
            .collect()
    }

    async fn node_of(&self, instance: &InstanceId) -> Result<Option<Node>> {
        self.doc("node", "SELECT doc FROM tke_nodes WHERE instance_id = $1", instance.as_str()).await
    }

    async fn os_users(&self, os: &str) -> Result<Vec<AccountId>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT owner_id FROM tke_clusters WHERE os = $1
                 UNION SELECT owner_id FROM tke_node_pools WHERE os = $1 ORDER BY 1",
                &[&os],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| account_from_column(r.get(0))).collect())
    }

    async fn schedule_os_change(&self, change: &OsChange, messages: &[Message], jobs: &[JobRecord]) -> Result<u64> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let row = tx
            .query_one(
                "INSERT INTO tke_os_changes (os_name, effective_at, doc) VALUES ($1, $2, '') RETURNING id",
                &[&change.os_name, &change.effective_at.0],
            )
            .await
            .map_err(db_err)?;
        let id = row.get::<_, i64>(0).unsigned_abs();
        let stored = OsChange { id, ..change.clone() };
        tx.execute("UPDATE tke_os_changes SET doc = $2 WHERE id = $1", &[&(id as i64), &encode(&stored)?])
            .await
            .map_err(db_err)?;
        for m in messages {
            insert_message(&tx, m).await?;
        }
        for job in jobs {
            insert_job_row(&tx, job).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(id)
    }

    async fn os_changes(&self) -> Result<Vec<OsChange>> {
        self.docs("image change", "SELECT doc FROM tke_os_changes ORDER BY effective_at, id", &[]).await
    }

    async fn insert_beta_application(&self, application: &BetaApplication) -> Result<()> {
        let a = application;
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO tke_beta_applications (id, account_id, status, created_at, doc) VALUES ($1, $2, $3, $4, $5)",
            &[&a.id.as_str(), &(a.account.0 as i64), &a.status.as_str(), &a.created_at.0, &encode(a)?],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn beta_applications(&self, account: Option<AccountId>) -> Result<Vec<BetaApplication>> {
        let account = account.map(|a| a.0 as i64);
        self.docs(
            "beta application",
            "SELECT doc FROM tke_beta_applications WHERE $1::BIGINT IS NULL OR account_id = $1
             ORDER BY created_at, id",
            &[&account],
        )
        .await
    }

    async fn decide_beta_application(
        &self,
        id: &ApplicationId,
        status: BetaStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let row = tx
            .query_opt(
                "SELECT doc FROM tke_beta_applications WHERE id = $1 AND status = 'PENDING' FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(false) };
        let mut a: BetaApplication = decode("beta application", row.get(0))?;
        a.status = status;
        a.decision_reason = reason.map(str::to_owned);
        a.decided_at = Some(now);
        tx.execute(
            "UPDATE tke_beta_applications SET status = $2, doc = $3 WHERE id = $1",
            &[&id.as_str(), &status.as_str(), &encode(&a)?],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn list_messages(
        &self,
        account: AccountId,
        unread_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Message>)> {
        let conn = self.conn().await?;
        let filter = "account_id = $1 AND (NOT $2 OR NOT is_read)";
        let acct = account.0 as i64;
        let total: i64 = conn
            .query_one(&format!("SELECT COUNT(*) FROM messages WHERE {filter}"), &[&acct, &unread_only])
            .await
            .map_err(db_err)?
            .get(0);
        let (limit, offset) = (i64::try_from(limit).unwrap_or(i64::MAX), i64::try_from(offset).unwrap_or(0));
        let rows = conn
            .query(
                &format!(
                    "SELECT doc, is_read FROM messages WHERE {filter} ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
                ),
                &[&acct, &unread_only, &limit, &offset],
            )
            .await
            .map_err(db_err)?;
        let page = rows.iter().map(|r| message_of(r.get(0), r.get(1))).collect::<Result<Vec<_>>>()?;
        Ok((total.unsigned_abs(), page))
    }

    async fn get_message(&self, id: &MessageId) -> Result<Option<Message>> {
        let conn = self.conn().await?;
        let row =
            conn.query_opt("SELECT doc, is_read FROM messages WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        row.map(|r| message_of(r.get(0), r.get(1))).transpose()
    }

    async fn mark_messages_read(&self, account: AccountId, ids: &[MessageId]) -> Result<u64> {
        let ids: Vec<&str> = ids.iter().map(MessageId::as_str).collect();
        let conn = self.conn().await?;
        conn.execute(
            "UPDATE messages SET is_read = true WHERE id = ANY($1) AND account_id = $2 AND NOT is_read",
            &[&ids, &(account.0 as i64)],
        )
        .await
        .map_err(db_err)
    }

    async fn set_webhook(&self, account: AccountId, url: Option<&str>) -> Result<()> {
        let conn = self.conn().await?;
        let acct = account.0 as i64;
        match url {
            Some(url) => {
                conn.execute(
                    "INSERT INTO notification_channels (account_id, webhook_url) VALUES ($1, $2)
                     ON CONFLICT (account_id) DO UPDATE SET webhook_url = excluded.webhook_url",
                    &[&acct, &url],
                )
                .await
            }
            None => conn.execute("DELETE FROM notification_channels WHERE account_id = $1", &[&acct]).await,
        }
        .map(|_| ())
        .map_err(db_err)
    }

    async fn webhook(&self, account: AccountId) -> Result<Option<String>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT webhook_url FROM notification_channels WHERE account_id = $1", &[&(account.0 as i64)])
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }
}
