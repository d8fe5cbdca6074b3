//! SQLite TKE records and the message centre: `TkeStore`, `MessageStore`.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::instances::put_instance;
use super::{begin_tx, db_err, insert_job_row, SqliteStore};
use crate::tke::{decode, encode};
use crate::{account_from_column, decode_instance, JobRecord, MessageStore, Refused, Result, TkeStore, TkeWrite};
use imaged_domain::instance::Instance;
use imaged_domain::time::Timestamp;
use imaged_domain::tke::{BetaApplication, BetaStatus, Cluster, Message, Node, NodePool, OsChange};
use imaged_domain::{AccountId, ApplicationId, ClusterId, InstanceId, MessageId, NodePoolId};

fn write_tx(tx: &Connection, w: &TkeWrite) -> Result<Result<(), Refused>> {
    for expected in &w.expect_pools {
        let doc: Option<String> = tx
            .query_row("SELECT doc FROM tke_node_pools WHERE id = ?1", params![expected.id.as_str()], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let current: Option<NodePool> = doc.map(|d| decode("node pool", &d)).transpose()?;
        if current.as_ref() != Some(expected) {
            return Ok(Err(Refused::WrongState));
        }
    }
    if let Err(refused) = begin_tx(tx, &w.operating)? {
        return Ok(Err(refused));
    }
    for c in &w.clusters {
        tx.execute(
            "INSERT INTO tke_clusters (id, owner_id, region, os, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET os = excluded.os, doc = excluded.doc",
            params![c.id.as_str(), c.owner.0 as i64, c.region, c.os, c.created_at.0, encode(c)?],
        )
        .map_err(db_err)?;
    }
    for p in &w.pools {
        tx.execute(
            "INSERT INTO tke_node_pools (id, cluster_id, owner_id, os, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET os = excluded.os, doc = excluded.doc",
            params![p.id.as_str(), p.cluster.as_str(), p.owner.0 as i64, p.os, p.created_at.0, encode(p)?],
        )
        .map_err(db_err)?;
    }
    for n in &w.nodes {
        let written = tx
            .execute(
                "INSERT INTO tke_nodes (instance_id, cluster_id, pool_id, joined_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (instance_id) DO UPDATE SET pool_id = excluded.pool_id, doc = excluded.doc
                 WHERE tke_nodes.cluster_id = excluded.cluster_id",
                params![
                    n.instance.as_str(),
                    n.cluster.as_str(),
                    n.pool.as_ref().map(NodePoolId::as_str),
                    n.joined_at.0,
                    encode(n)?
                ],
            )
            .map_err(db_err)?;
        if written == 0 {
            return Ok(Err(Refused::DuplicateId));
        }
    }
    for id in &w.removed_nodes {
        tx.execute("DELETE FROM tke_nodes WHERE instance_id = ?1", params![id.as_str()]).map_err(db_err)?;
    }
    for instance in &w.new_instances {
        put_instance(tx, instance)?;
    }
    for job in &w.jobs {
        insert_job_row(tx, job)?;
    }
    for id in &w.deleted_pools {
        tx.execute("DELETE FROM tke_node_pools WHERE id = ?1", params![id.as_str()]).map_err(db_err)?;
    }
    for id in &w.deleted_clusters {
        for sql in [
            "DELETE FROM tke_nodes WHERE cluster_id = ?1",
            "DELETE FROM tke_node_pools WHERE cluster_id = ?1",
            "DELETE FROM tke_clusters WHERE id = ?1",
        ] {
            tx.execute(sql, params![id.as_str()]).map_err(db_err)?;
        }
    }
    Ok(Ok(()))
}

fn docs<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    what: &str,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<T>> {
    let mut st = conn.prepare_cached(sql).map_err(db_err)?;
    let rows = st.query_map(args, |r| r.get::<_, String>(0)).map_err(db_err)?;
    rows.map(|r| decode(what, &r.map_err(db_err)?)).collect()
}

fn insert_message(tx: &Connection, m: &Message) -> Result<()> {
    tx.execute(
        "INSERT INTO messages (id, account_id, is_read, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![m.id.as_str(), m.account.0 as i64, m.read, m.created_at.0, encode(m)?],
    )
    .map(|_| ())
    .map_err(db_err)
}

fn message_of(doc: &str, read: bool) -> Result<Message> {
    let mut m: Message = decode("message", doc)?;
    m.read = read;
    Ok(m)
}

#[async_trait]
impl TkeStore for SqliteStore {
    async fn tke_write(&self, write: &TkeWrite) -> Result<Result<(), Refused>> {
        let w = write.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let outcome = write_tx(&tx, &w)?;
                if outcome.is_ok() {
                    tx.commit().map_err(db_err)?;
                }
                Ok(outcome)
            })
            .await
    }

    async fn get_cluster(&self, id: &ClusterId) -> Result<Option<Cluster>> {
        let doc = self.doc_by_id("SELECT doc FROM tke_clusters WHERE id = ?1", id.as_str()).await?;
        doc.map(|d| decode("cluster", &d)).transpose()
    }

    async fn list_clusters(&self, owner: AccountId, region: &str) -> Result<Vec<Cluster>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                docs(
                    conn,
                    "cluster",
                    "SELECT doc FROM tke_clusters WHERE owner_id = ?1 AND region = ?2 ORDER BY created_at, id",
                    &[&(owner.0 as i64), &region],
                )
            })
            .await
    }

    async fn get_pool(&self, id: &NodePoolId) -> Result<Option<NodePool>> {
        let doc = self.doc_by_id("SELECT doc FROM tke_node_pools WHERE id = ?1", id.as_str()).await?;
        doc.map(|d| decode("node pool", &d)).transpose()
    }

    async fn list_pools(&self, cluster: &ClusterId) -> Result<Vec<NodePool>> {
        let cluster = cluster.as_str().to_owned();
        self.readers
            .run(move |conn| {
                docs(
                    conn,
                    "node pool",
                    "SELECT doc FROM tke_node_pools WHERE cluster_id = ?1 ORDER BY created_at, id",
                    &[&cluster],
                )
            })
            .await
    }

    async fn cluster_nodes(&self, cluster: &ClusterId) -> Result<Vec<(Node, Option<Instance>)>> {
        let cluster = cluster.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT n.doc, i.doc FROM tke_nodes n LEFT JOIN instances i ON i.id = n.instance_id
                         WHERE n.cluster_id = ?1 ORDER BY n.joined_at, n.instance_id",
                    )
                    .map_err(db_err)?;
                let rows = st
                    .query_map(params![cluster], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
                    .map_err(db_err)?;
                rows.map(|r| {
                    let (node, instance) = r.map_err(db_err)?;
                    Ok((decode("node", &node)?, instance.map(|i| decode_instance(&i)).transpose()?))
                })
                .collect()
            })
            .await
    }

    async fn node_of(&self, instance: &InstanceId) -> Result<Option<Node>> {
        let doc = self.doc_by_id("SELECT doc FROM tke_nodes WHERE instance_id = ?1", instance.as_str()).await?;
        doc.map(|d| decode("node", &d)).transpose()
    }

    async fn os_users(&self, os: &str) -> Result<Vec<AccountId>> {
        let os = os.to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT owner_id FROM tke_clusters WHERE os = ?1
                         UNION SELECT owner_id FROM tke_node_pools WHERE os = ?1 ORDER BY 1",
                    )
                    .map_err(db_err)?;
                let rows = st.query_map(params![os], |r| r.get::<_, i64>(0)).map_err(db_err)?;
                rows.map(|r| r.map(account_from_column).map_err(db_err)).collect()
            })
            .await
    }

    async fn schedule_os_change(&self, change: &OsChange, messages: &[Message], jobs: &[JobRecord]) -> Result<u64> {
        let (change, messages, jobs) = (change.clone(), messages.to_vec(), jobs.to_vec());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                tx.execute(
                    "INSERT INTO tke_os_changes (os_name, effective_at, doc) VALUES (?1, ?2, '')",
                    params![change.os_name, change.effective_at.0],
                )
                .map_err(db_err)?;
                let id = tx.last_insert_rowid().unsigned_abs();
                let stored = OsChange { id, ..change };
                tx.execute("UPDATE tke_os_changes SET doc = ?2 WHERE id = ?1", params![id as i64, encode(&stored)?])
                    .map_err(db_err)?;
                for m in &messages {
                    insert_message(&tx, m)?;
                }
                for job in &jobs {
                    insert_job_row(&tx, job)?;
                }
                tx.commit().map_err(db_err)?;
                Ok(id)
            })
            .await
    }

    async fn os_changes(&self) -> Result<Vec<OsChange>> {
        self.readers
            .run(move |conn| {
                docs(conn, "image change", "SELECT doc FROM tke_os_changes ORDER BY effective_at, id", &[])
            })
            .await
    }

    async fn insert_beta_application(&self, application: &BetaApplication) -> Result<()> {
        let a = application.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO tke_beta_applications (id, account_id, status, created_at, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![a.id.as_str(), a.account.0 as i64, a.status.as_str(), a.created_at.0, encode(&a)?],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn beta_applications(&self, account: Option<AccountId>) -> Result<Vec<BetaApplication>> {
        let account = account.map(|a| a.0 as i64);
        self.readers
            .run(move |conn| {
                docs(
                    conn,
                    "beta application",
                    "SELECT doc FROM tke_beta_applications WHERE ?1 IS NULL OR account_id = ?1 ORDER BY created_at, id",
                    &[&account],
                )
            })
            .await
    }

    async fn decide_beta_application(
        &self,
        id: &ApplicationId,
        status: BetaStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let (id, reason) = (id.clone(), reason.map(str::to_owned));
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let doc: Option<String> = tx
                    .query_row(
                        "SELECT doc FROM tke_beta_applications WHERE id = ?1 AND status = 'PENDING'",
                        params![id.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_err)?;
                let Some(doc) = doc else { return Ok(false) };
                let mut a: BetaApplication = decode("beta application", &doc)?;
                a.status = status;
                a.decision_reason = reason;
                a.decided_at = Some(now);
                tx.execute(
                    "UPDATE tke_beta_applications SET status = ?2, doc = ?3 WHERE id = ?1",
                    params![id.as_str(), status.as_str(), encode(&a)?],
                )
                .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(true)
            })
            .await
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn list_messages(
        &self,
        account: AccountId,
        unread_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Message>)> {
        self.readers
            .run(move |conn| {
                let filter = "account_id = ?1 AND (?2 = 0 OR is_read = 0)";
                let total: i64 = conn
                    .query_row(
                        &format!("SELECT COUNT(*) FROM messages WHERE {filter}"),
                        params![account.0 as i64, unread_only],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                let mut st = conn
                    .prepare_cached(&format!(
                        "SELECT doc, is_read FROM messages WHERE {filter}
                         ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4"
                    ))
                    .map_err(db_err)?;
                let (limit, offset) = (i64::try_from(limit).unwrap_or(i64::MAX), i64::try_from(offset).unwrap_or(0));
                let rows = st
                    .query_map(params![account.0 as i64, unread_only, limit, offset], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
                    })
                    .map_err(db_err)?;
                let page = rows
                    .map(|r| {
                        let (doc, read) = r.map_err(db_err)?;
                        message_of(&doc, read)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((total.unsigned_abs(), page))
            })
            .await
    }

    async fn get_message(&self, id: &MessageId) -> Result<Option<Message>> {
        let id = id.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let row: Option<(String, bool)> = conn
                    .query_row("SELECT doc, is_read FROM messages WHERE id = ?1", params![id], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                    .map_err(db_err)?;
                row.map(|(doc, read)| message_of(&doc, read)).transpose()
            })
            .await
    }

    async fn mark_messages_read(&self, account: AccountId, ids: &[MessageId]) -> Result<u64> {
        let ids: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let mut n = 0;
                for id in &ids {
                    n += tx
                        .execute(
                            "UPDATE messages SET is_read = 1 WHERE id = ?1 AND account_id = ?2 AND is_read = 0",
                            params![id, account.0 as i64],
                        )
                        .map_err(db_err)?;
                }
                tx.commit().map_err(db_err)?;
                Ok(n as u64)
            })
            .await
    }

    async fn set_webhook(&self, account: AccountId, url: Option<&str>) -> Result<()> {
        let url = url.map(str::to_owned);
        self.writer
            .run(move |conn| {
                match url {
                    Some(url) => conn.execute(
                        "INSERT INTO notification_channels (account_id, webhook_url) VALUES (?1, ?2)
                         ON CONFLICT (account_id) DO UPDATE SET webhook_url = excluded.webhook_url",
                        params![account.0 as i64, url],
                    ),
                    None => conn
                        .execute("DELETE FROM notification_channels WHERE account_id = ?1", params![account.0 as i64]),
                }
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn webhook(&self, account: AccountId) -> Result<Option<String>> {
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT webhook_url FROM notification_channels WHERE account_id = ?1",
                    params![account.0 as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)
            })
            .await
    }
}
