//! SQLite instances and client tokens: `InstanceStore`.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{begin_tx, db_err, insert_job_row, SqliteStore};
use crate::{decode_instance, encode_instance, InstanceStore, JobRecord, MetaStoreError, Refused, Result};
use imaged_domain::instance::Instance;
use imaged_domain::{AccountId, Image, InstanceId};

pub(super) fn put_instance(conn: &Connection, instance: &Instance) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO instances (id, owner_id, region, busy, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET busy = excluded.busy, doc = excluded.doc",
    )
    .and_then(|mut st| {
        st.execute(params![
            instance.id.as_str(),
            instance.owner.0 as i64,
            instance.region,
            instance.busy(),
            instance.created_at.0,
            encode_instance(instance).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        ])
    })
    .map(|_| ())
    .map_err(db_err)
}

#[async_trait]
impl InstanceStore for SqliteStore {
    async fn insert_instances_with_job(
        &self,
        instances: &[Instance],
        job: &JobRecord,
        client_token: Option<&str>,
    ) -> Result<Result<u64, Refused>> {
        let (instances, job, token) = (instances.to_vec(), job.clone(), client_token.map(str::to_owned));
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if let (Some(token), Some(first)) = (&token, instances.first()) {
                    let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
                    let ids = serde_json::to_string(&ids).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
                    let added = tx
                        .execute(
                            "INSERT INTO client_tokens (owner_id, token, instance_ids, created_at)
                             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                            params![first.owner.0 as i64, token, ids, job.created_at.0],
                        )
                        .map_err(db_err)?;
                    if added == 0 {
                        return Ok(Err(Refused::DuplicateId));
                    }
                }
                for instance in &instances {
                    put_instance(&tx, instance)?;
                }
                let id = insert_job_row(&tx, &job)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(id))
            })
            .await
    }

    async fn instances_for_token(&self, owner: AccountId, token: &str) -> Result<Option<Vec<InstanceId>>> {
        let token = token.to_owned();
        let ids: Option<String> = self
            .readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT instance_ids FROM client_tokens WHERE owner_id = ?1 AND token = ?2",
                    params![owner.0 as i64, token],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)
            })
            .await?;
        ids.map(|j| crate::decode_instance_ids(&j)).transpose()
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        self.doc_by_id("SELECT doc FROM instances WHERE id = ?1", id.as_str())
            .await?
            .map(|d| decode_instance(&d))
            .transpose()
    }

    async fn list_instances(&self, owner: AccountId, region: &str) -> Result<Vec<Instance>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT doc FROM instances WHERE owner_id = ?1 AND region = ?2 ORDER BY created_at, id",
                    )
                    .map_err(db_err)?;
                let rows = st.query_map(params![owner.0 as i64, region], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| decode_instance(&r.map_err(db_err)?)).collect()
            })
            .await
    }

    async fn put_instances(&self, instances: &[Instance]) -> Result<()> {
        self.put_all(instances, put_instance).await
    }

    async fn begin_operation(&self, instances: &[Instance], job: &JobRecord) -> Result<Result<u64, Refused>> {
        let (instances, job) = (instances.to_vec(), job.clone());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if let Err(refused) = begin_tx(&tx, &instances)? {
                    return Ok(Err(refused));
                }
                let id = insert_job_row(&tx, &job)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(id))
            })
            .await
    }

    async fn begin_capture(
        &self,
        image: &Image,
        quota: u32,
        instance: &Instance,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>> {
        self.insert_image_beginning(image, quota, std::slice::from_ref(instance), job).await
    }

    async fn disk_bases_in_use(&self) -> Result<std::collections::BTreeSet<String>> {
        self.readers
            .run(move |conn| {
                let mut st = conn.prepare_cached("SELECT doc FROM instances").map_err(db_err)?;
                let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db_err)?;
                let mut bases = std::collections::BTreeSet::new();
                for doc in rows {
                    bases.extend(decode_instance(&doc.map_err(db_err)?)?.disk_base);
                }
                Ok(bases)
            })
            .await
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<bool> {
        let id = id.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                // A terminated node leaves its cluster with it.
                tx.execute("DELETE FROM tke_nodes WHERE instance_id = ?1", params![id.as_str()]).map_err(db_err)?;
                let n = tx.execute("DELETE FROM instances WHERE id = ?1", params![id.as_str()]).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(n == 1)
            })
            .await
    }
}
