//! PostgreSQL instances and client tokens: `InstanceStore`.

use async_trait::async_trait;

use super::{begin_tx, db_err, insert_job_row, PostgresStore};
use crate::{decode_instance, encode_instance, InstanceStore, JobRecord, MetaStoreError, Refused, Result};
use imaged_domain::instance::Instance;
use imaged_domain::{AccountId, Image, InstanceId};

const PUT_INSTANCE: &str = "INSERT INTO instances (id, owner_id, region, busy, created_at, doc)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (id) DO UPDATE SET busy = excluded.busy, doc = excluded.doc";

pub(super) async fn put_instance<C: tokio_postgres::GenericClient>(client: &C, instance: &Instance) -> Result<()> {
    let doc = encode_instance(instance)?;
    client
        .execute(
            PUT_INSTANCE,
            &[
                &instance.id.as_str(),
                &(instance.owner.0 as i64),
                &instance.region,
                &instance.busy(),
                &instance.created_at.0,
                &doc,
            ],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
}

#[async_trait]
impl InstanceStore for PostgresStore {
    async fn insert_instances_with_job(
        &self,
        instances: &[Instance],
        job: &JobRecord,
        client_token: Option<&str>,
    ) -> Result<Result<u64, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if let (Some(token), Some(first)) = (client_token, instances.first()) {
            let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
            let ids = serde_json::to_string(&ids).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
            let added = tx
                .execute(
                    "INSERT INTO client_tokens (owner_id, token, instance_ids, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&(first.owner.0 as i64), &token, &ids, &job.created_at.0],
                )
                .await
                .map_err(db_err)?;
            if added == 0 {
                return Ok(Err(Refused::DuplicateId));
            }
        }
        for instance in instances {
            put_instance(&tx, instance).await?;
        }
        let id = insert_job_row(&tx, job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(id))
    }

    async fn instances_for_token(&self, owner: AccountId, token: &str) -> Result<Option<Vec<InstanceId>>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT instance_ids FROM client_tokens WHERE owner_id = $1 AND token = $2",
                &[&(owner.0 as i64), &token],
            )
            .await
            .map_err(db_err)?;
        row.map(|r| crate::decode_instance_ids(r.get(0))).transpose()
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        let conn = self.conn().await?;
        conn.query_opt("SELECT doc FROM instances WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?
            .map(|r| decode_instance(r.get(0)))
            .transpose()
    }

    async fn list_instances(&self, owner: AccountId, region: &str) -> Result<Vec<Instance>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT doc FROM instances WHERE owner_id = $1 AND region = $2 ORDER BY created_at, id",
                &[&(owner.0 as i64), &region],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| decode_instance(r.get(0))).collect()
    }

    async fn put_instances(&self, instances: &[Instance]) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        for instance in instances {
            put_instance(&tx, instance).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn begin_operation(&self, instances: &[Instance], job: &JobRecord) -> Result<Result<u64, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if let Err(refused) = begin_tx(&tx, instances).await? {
            return Ok(Err(refused));
        }
        let id = insert_job_row(&tx, job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(id))
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
        let conn = self.conn().await?;
        let rows = conn.query("SELECT doc FROM instances", &[]).await.map_err(db_err)?;
        let mut bases = std::collections::BTreeSet::new();
        for r in &rows {
            bases.extend(decode_instance(r.get(0))?.disk_base);
        }
        Ok(bases)
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        // A terminated node leaves its cluster with it.
        tx.execute("DELETE FROM tke_nodes WHERE instance_id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        let n = tx.execute("DELETE FROM instances WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }
}
