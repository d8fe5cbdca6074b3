//! The TKE and message-centre records: clusters, node pools, nodes, image-logic changes, beta
//! applications, messages and each account's notification channel.

use async_trait::async_trait;
use imaged_domain::instance::Instance;
use imaged_domain::time::Timestamp;
use imaged_domain::tke::{BetaApplication, BetaStatus, Cluster, Message, Node, NodePool, OsChange};
use imaged_domain::{AccountId, ApplicationId, ClusterId, InstanceId, MessageId, NodePoolId};

use crate::{JobRecord, Refused, Result};

/// What one TKE request writes, all in one transaction, or nothing.
#[derive(Debug, Clone, Default)]
pub struct TkeWrite {
    /// Pools the request read and must still be stored exactly so (a read-modify-write such
    /// as a scale-out), else `WrongState` and nothing is written: two concurrent scale-outs of
    /// one pool cannot both launch.
    pub expect_pools: Vec<NodePool>,
    /// Clusters inserted or replaced.
    pub clusters: Vec<Cluster>,
    /// Node pools inserted or replaced.
    pub pools: Vec<NodePool>,
    /// Nodes inserted or replaced. A node whose instance is a node of another cluster is
    /// refused with `DuplicateId`.
    pub nodes: Vec<Node>,
    /// Instances that leave their cluster (the instances stay).
    pub removed_nodes: Vec<InstanceId>,
    /// New instances (the nodes a request creates).
    pub new_instances: Vec<Instance>,
    /// Existing instances that begin an operation (reinstall, terminate): each must have had
    /// none in progress, else `Busy`.
    pub operating: Vec<Instance>,
    /// Jobs queued (the launches and operations that make the nodes' disks).
    pub jobs: Vec<JobRecord>,
    /// Pools deleted.
    pub deleted_pools: Vec<NodePoolId>,
    /// Clusters deleted, with their pools and node records.
    pub deleted_clusters: Vec<ClusterId>,
}

/// Clusters, node pools and nodes, image-logic changes and beta applications.
#[async_trait]
pub trait TkeStore: Send + Sync {
    /// Applies `write` in one transaction; nothing is written when it is refused.
    async fn tke_write(&self, write: &TkeWrite) -> Result<Result<(), Refused>>;
    /// A cluster by id.
    async fn get_cluster(&self, id: &ClusterId) -> Result<Option<Cluster>>;
    /// The clusters `owner` has in `region`, oldest first.
    async fn list_clusters(&self, owner: AccountId, region: &str) -> Result<Vec<Cluster>>;
    /// A node pool by id.
    async fn get_pool(&self, id: &NodePoolId) -> Result<Option<NodePool>>;
    /// The pools of a cluster, oldest first.
    async fn list_pools(&self, cluster: &ClusterId) -> Result<Vec<NodePool>>;
    /// The nodes of a cluster with their instances (`None` when the instance is gone), in
    /// joining order.
    async fn cluster_nodes(&self, cluster: &ClusterId) -> Result<Vec<(Node, Option<Instance>)>>;
    /// The node record of an instance.
    async fn node_of(&self, instance: &InstanceId) -> Result<Option<Node>>;
    /// The accounts with a cluster or a node pool whose OS reference is `os`.
    async fn os_users(&self, os: &str) -> Result<Vec<AccountId>>;
    /// In one transaction: records an image-logic change (returning its id) with the
    /// messages announcing it and the jobs delivering them.
    async fn schedule_os_change(&self, change: &OsChange, messages: &[Message], jobs: &[JobRecord]) -> Result<u64>;
    /// Every image-logic change, by effective time.
    async fn os_changes(&self) -> Result<Vec<OsChange>>;
    /// Records a beta application.
    async fn insert_beta_application(&self, application: &BetaApplication) -> Result<()>;
    /// The applications of one account or of all, oldest first.
    async fn beta_applications(&self, account: Option<AccountId>) -> Result<Vec<BetaApplication>>;
    /// Decides a pending application; false when there is no pending application of that id.
    async fn decide_beta_application(
        &self,
        id: &ApplicationId,
        status: BetaStatus,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<bool>;
}

/// Each account's message centre and its outbound channel.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// One page of an account's messages, newest first, and how many match in all.
    async fn list_messages(
        &self,
        account: AccountId,
        unread_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Message>)>;
    /// A message by id.
    async fn get_message(&self, id: &MessageId) -> Result<Option<Message>>;
    /// Marks the account's messages among `ids` read; returns how many were unread.
    async fn mark_messages_read(&self, account: AccountId, ids: &[MessageId]) -> Result<u64>;
    /// Sets or clears the account's webhook.
    async fn set_webhook(&self, account: AccountId, url: Option<&str>) -> Result<()>;
    /// The account's webhook.
    async fn webhook(&self, account: AccountId) -> Result<Option<String>>;
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| crate::MetaStoreError::Corrupt(e.to_string()))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| crate::MetaStoreError::Corrupt(format!("{what} document: {e}")))
}
