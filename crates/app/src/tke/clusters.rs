//! Clusters and the nodes of a cluster: `CreateCluster`, `DescribeClusters`,
//! `ModifyClusterImage`, `DeleteCluster`, `CreateClusterInstances`, `AddExistedInstances`,
//! `DescribeClusterInstances`, `DeleteClusterInstances`, `UpgradeClusterInstances`.
//!
//! A node's disk is made by the instance machinery's durable jobs: a new node is a launch, an
//! added or upgraded node a reinstall of its system disk (its old data is gone), each from the
//! image of the OS level the seed assigns to the operation.

use imaged_domain::instance::{Instance, InstanceOp};
use imaged_domain::query::Page;
use imaged_domain::tke::{
    cluster_status, node_state, os_for, Cluster, ClusterType, Node, NodeOperation, NodePool, NodeRole, NodeSource,
    NodeState, OsCustomizeType, DEFAULT_CLUSTER_VERSION, MAX_CLUSTER_NAME_CHARS, MAX_NODES_PER_CALL,
};
use imaged_domain::{AccountId, ClusterId, Image, ImageId, InstanceId, NodePoolId, Region};
use imaged_metastore::TkeWrite;

use super::{TkeError, UsableOs, DEFAULT_OS};
use crate::instances::{operation, reinstall, InstanceError, RunRequest};
use crate::secrets::random_bytes;
use crate::service::Service;

/// What `CreateCluster` asks for.
#[derive(Debug, Clone)]
pub struct NewCluster {
    /// `ClusterType`.
    pub cluster_type: ClusterType,
    /// `ClusterBasicSettings.ClusterName`.
    pub name: String,
    /// `ClusterDescription`.
    pub description: String,
    /// `ClusterVersion`.
    pub version: Option<String>,
    /// `ClusterOs` (default: the recommended TencentOS Server 3.1).
    pub os: Option<String>,
    /// `OsCustomizeType`.
    pub os_customize: OsCustomizeType,
    /// `VpcId`.
    pub vpc_id: String,
    /// `ClusterCIDRSettings.ClusterCIDR`.
    pub cidr: String,
    /// `RunInstancesForNode`: nodes to create, per role (their `ImageId` is ignored).
    pub run_nodes: Vec<(NodeRole, RunRequest)>,
    /// `ExistedInstancesForNode`: instances to add, per role.
    pub existing: Vec<(NodeRole, Vec<String>)>,
}

/// A cluster as `DescribeClusters` shows it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The record.
    pub cluster: Cluster,
    /// `ClusterStatus`.
    pub status: &'static str,
    /// Worker nodes.
    pub workers: u64,
    /// Master (and master-etcd) nodes.
    pub masters: u64,
    /// Etcd nodes.
    pub etcd: u64,
    /// The image new nodes of the cluster level get now.
    pub image_id: Option<ImageId>,
}

/// A node as `DescribeClusterInstances` shows it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The record.
    pub node: Node,
    /// Its instance.
    pub instance: Instance,
    /// `InstanceState`.
    pub state: NodeState,
}

/// Which nodes `DescribeClusterInstances` lists.
#[derive(Debug, Clone, Default)]
pub struct NodeQuery {
    /// `InstanceIds`.
    pub ids: Option<Vec<String>>,
    /// `InstanceRole` (default `WORKER`).
    pub role: Option<NodeRole>,
    /// Filter `nodepool-id`.
    pub pool: Option<String>,
    /// Filter `nodepool-instance-type` (`None`: all).
    pub source: Option<NodeSource>,
}

/// What `AddExistedInstances` and `DeleteClusterInstances` did, instance by instance.
#[derive(Debug, Clone, Default)]
pub struct NodeOutcome {
    /// Done.
    pub succeeded: Vec<String>,
    /// Refused, with why.
    pub failed: Vec<(String, String)>,
    /// No such instance (deletion).
    pub not_found: Vec<String>,
}

fn check_name(name: &str) -> Result<(), TkeError> {
    if name.chars().count() > MAX_CLUSTER_NAME_CHARS {
        return Err(TkeError::Param(format!("ClusterName is longer than {MAX_CLUSTER_NAME_CHARS} characters")));
    }
    Ok(())
}

impl Service {
    /// The caller's cluster `id` in `region`.
    pub async fn own_cluster(&self, caller: AccountId, region: &Region, id: &str) -> Result<Cluster, TkeError> {
        let parsed = ClusterId::parse(id).map_err(|_| TkeError::ClusterMalformed(id.to_owned()))?;
        self.store()
            .get_cluster(&parsed)
            .await?
            .filter(|c| c.owner == caller && c.region == region.region)
            .ok_or_else(|| TkeError::ClusterNotFound(id.to_owned()))
    }

    /// Plans new nodes of `cluster` (and `pool`) from `image`: PENDING instances, their node
    /// records and the launch job, into `write`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plan_new_nodes(
        &self,
        write: &mut TkeWrite,
        region: &Region,
        cluster: &Cluster,
        pool: Option<&NodePoolId>,
        (role, source, initial): (NodeRole, NodeSource, bool),
        req: &RunRequest,
        image: &Image,
        request_id: &str,
    ) -> Result<Vec<InstanceId>, TkeError> {
        let mut req = req.clone();
        if req.zone.is_empty() {
            req.zone = region.zones.first().map(|z| z.zone.clone()).unwrap_or_default();
        }
        let (instances, params) = self.new_instances(cluster.owner, region, &req, image, request_id)?;
        let joined = self.clock_now();
        for instance in &instances {
            write.nodes.push(Node {
                instance: instance.id.clone(),
                cluster: cluster.id.clone(),
                pool: pool.cloned(),
                role,
                source,
                initial,
                joined_at: joined,
            });
        }
        write.jobs.push(self.instance_job("launch", region, cluster.owner, &params, self.host_name())?);
        write.new_instances.extend(instances);
        Ok(params.instances)
    }

    /// Plans the reinstall of `instance` from `image` as the node `node`, into `write`.
    pub(crate) fn plan_reinstall(
        &self,
        write: &mut TkeWrite,
        region: &Region,
        instance: Instance,
        node: Node,
        image: &Image,
        request_id: &str,
    ) -> Result<(), TkeError> {
        let owner = instance.owner;
        let (instance, params) = reinstall(instance, image, request_id)?;
        write.jobs.push(self.instance_job("instance", region, owner, &params, self.host_of(&instance))?);
        write.operating.push(instance);
        write.nodes.push(node);
        Ok(())
    }

    /// Plans the termination of `instances` (leaving their cluster), into `write`.
    pub(crate) fn plan_terminate(
        &self,
        write: &mut TkeWrite,
        region: &Region,
        caller: AccountId,
        instances: Vec<Instance>,
        request_id: &str,
    ) -> Result<(), TkeError> {
        if instances.is_empty() {
            return Ok(());
        }
        write.removed_nodes.extend(instances.iter().map(|i| i.id.clone()));
        let (instances, params) = operation(instances, InstanceOp::Terminate, request_id)?;
        for (group, job) in self.jobs_by_host("instance", region, caller, &params, instances)? {
            write.jobs.push(job);
            write.operating.extend(group);
        }
        Ok(())
    }

    /// An existing instance of the caller's that may become a node: its own, in the region,
    /// not a node of a cluster yet.
    async fn joinable(&self, caller: AccountId, region: &Region, id: &str) -> Result<Instance, String> {
        let instance = self.own_instance(caller, region, id).await.map_err(|e| e.to_string())?;
        match self.store().node_of(&instance.id).await.map_err(|e| e.to_string())? {
            Some(node) => Err(format!("the instance {id} is already a node of the cluster {}", node.cluster)),
            None => Ok(instance),
        }
    }

    /// `CreateCluster`: the cluster, its new nodes (launched from the cluster OS) and its added
    /// instances (reinstalled from it), in one step.
    pub async fn create_cluster(
        &self,
        caller: AccountId,
        region: &Region,
        req: NewCluster,
        request_id: &str,
    ) -> Result<ClusterId, TkeError> {
        check_name(&req.name)?;
        let os = self.usable_os(caller, region, req.os.as_deref().unwrap_or(DEFAULT_OS)).await?;
        let cluster = Cluster {
            id: ClusterId::from_random(random_bytes()?),
            owner: caller,
            region: region.region.clone(),
            name: req.name,
            description: req.description,
            cluster_type: req.cluster_type,
            version: req.version.unwrap_or_else(|| DEFAULT_CLUSTER_VERSION.into()),
            os: os.reference.as_text().to_owned(),
            os_customize: req.os_customize,
            vpc_id: req.vpc_id,
            cidr: req.cidr,
            created_at: self.clock_now(),
        };
        let mut write = TkeWrite { clusters: vec![cluster.clone()], ..TkeWrite::default() };
        for (role, run) in &req.run_nodes {
            let kind = (*role, NodeSource::Manual, true);
            self.plan_new_nodes(&mut write, region, &cluster, None, kind, run, &os.image, request_id)?;
        }
        let existing: Vec<(NodeRole, &String)> =
            req.existing.iter().flat_map(|(role, ids)| ids.iter().map(move |id| (*role, id))).collect();
        if existing.len() > MAX_NODES_PER_CALL {
            return Err(TkeError::Param(format!("at most {MAX_NODES_PER_CALL} existing instances at once")));
        }
        for (role, id) in existing {
            let instance = self.joinable(caller, region, id).await.map_err(TkeError::Param)?;
            let node = self.node(&cluster, None, instance.id.clone(), role, NodeSource::Manual, true);
            self.plan_reinstall(&mut write, region, instance, node, &os.image, request_id)?;
        }
        self.commit_tke(&write).await?;
        Ok(cluster.id)
    }

    fn node(
        &self,
        cluster: &Cluster,
        pool: Option<&NodePool>,
        instance: InstanceId,
        role: NodeRole,
        source: NodeSource,
        initial: bool,
    ) -> Node {
        Node {
            instance,
            cluster: cluster.id.clone(),
            pool: pool.map(|p| p.id.clone()),
            role,
            source,
            initial,
            joined_at: self.clock_now(),
        }
    }

    async fn cluster_view(
        &self,
        cluster: Cluster,
        changes: &[imaged_domain::tke::OsChange],
    ) -> Result<ClusterView, TkeError> {
        let nodes = self.node_states(&cluster.id).await?;
        let count = |roles: &[NodeRole]| nodes.iter().filter(|(n, _)| roles.contains(&n.role)).count() as u64;
        Ok(ClusterView {
            status: cluster_status(&nodes),
            workers: count(&[NodeRole::Worker]),
            masters: count(&[NodeRole::Master, NodeRole::MasterEtcd]),
            etcd: count(&[NodeRole::Etcd, NodeRole::MasterEtcd]),
            image_id: self.os_image_now(&cluster.os, changes),
            cluster,
        })
    }

    /// The nodes of a cluster with their states.
    pub(crate) async fn node_states(&self, cluster: &ClusterId) -> Result<Vec<(Node, NodeState)>, TkeError> {
        Ok(self
            .store()
            .cluster_nodes(cluster)
            .await?
            .into_iter()
            .map(|(node, instance)| {
                let state = instance.as_ref().map_or(NodeState::Failed, node_state);
                (node, state)
            })
            .collect())
    }

    /// `DescribeClusters`: the caller's clusters in the region (those of `ids` and `names`, if
    /// given), oldest first.
    pub async fn describe_clusters(
        &self,
        caller: AccountId,
        region: &Region,
        ids: Option<&[String]>,
        names: Option<&[String]>,
    ) -> Result<Vec<ClusterView>, TkeError> {
        let wanted: Option<Vec<ClusterId>> = ids
            .map(|ids| {
                ids.iter()
                    .map(|s| ClusterId::parse(s).map_err(|_| TkeError::ClusterMalformed(s.clone())))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let matched: Vec<Cluster> = self
            .store()
            .list_clusters(caller, &region.region)
            .await?
            .into_iter()
            .filter(|c| wanted.as_ref().is_none_or(|w| w.contains(&c.id)))
            .filter(|c| names.is_none_or(|n| n.contains(&c.name)))
            .collect();
        let changes = self.os_changes().await?;
        let mut views = Vec::with_capacity(matched.len());
        for cluster in matched {
            views.push(self.cluster_view(cluster, &changes).await?);
        }
        Ok(views)
    }

    /// `ModifyClusterImage`: the cluster-level OS from now on. No existing node changes; only
    /// nodes created, added or upgraded afterwards get it.
    pub async fn modify_cluster_image(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        os: &str,
    ) -> Result<(), TkeError> {
        let mut cluster = self.own_cluster(caller, region, id).await?;
        let os = self.usable_os(caller, region, os).await?;
        cluster.os = os.reference.as_text().to_owned();
        self.commit_tke(&TkeWrite { clusters: vec![cluster], ..TkeWrite::default() }).await
    }

    /// `DeleteCluster`: the cluster and its pools; its nodes' instances are terminated
    /// (`terminate`) or kept as plain instances.
    pub async fn delete_cluster(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        terminate: bool,
        request_id: &str,
    ) -> Result<(), TkeError> {
        let cluster = self.own_cluster(caller, region, id).await?;
        if let Some(p) = self.store().list_pools(&cluster.id).await?.into_iter().find(|p| p.deletion_protection) {
            return Err(TkeError::Denied(format!("the node pool {} has deletion protection", p.id)));
        }
        let mut write = TkeWrite { deleted_clusters: vec![cluster.id.clone()], ..TkeWrite::default() };
        if terminate {
            let instances: Vec<Instance> =
                self.store().cluster_nodes(&cluster.id).await?.into_iter().filter_map(|(_, i)| i).collect();
            self.plan_terminate(&mut write, region, caller, instances, request_id)?;
        }
        self.commit_tke(&write).await
    }

    /// `CreateClusterInstances`: new nodes launched from the cluster-level OS.
    pub async fn create_cluster_instances(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        run: &RunRequest,
        request_id: &str,
    ) -> Result<Vec<InstanceId>, TkeError> {
        let cluster = self.own_cluster(caller, region, id).await?;
        let os = self.usable_os(caller, region, os_for(NodeOperation::CreateNodes, &cluster.os, None)).await?;
        let mut write = TkeWrite::default();
        let kind = (NodeRole::Worker, NodeSource::Manual, false);
        let ids = self.plan_new_nodes(&mut write, region, &cluster, None, kind, run, &os.image, request_id)?;
        self.commit_tke(&write).await?;
        Ok(ids)
    }

    /// `AddExistedInstances`: each instance's system disk reinstalled from the OS that applies
    /// (an explicit `ImageId` first; else the pool's when it joins a pool, the cluster's
    /// otherwise), instance by instance: those that cannot join are reported, not fatal.
    /// `pool`: the pool to join; `image`: the explicit image.
    pub async fn add_existed_instances(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        ids: &[String],
        (pool, image): (Option<&str>, Option<&str>),
        request_id: &str,
    ) -> Result<NodeOutcome, TkeError> {
        if ids.len() > MAX_NODES_PER_CALL {
            return Err(TkeError::Param(format!("at most {MAX_NODES_PER_CALL} instances at once")));
        }
        let cluster = self.own_cluster(caller, region, id).await?;
        let pool = match pool {
            Some(p) => Some(self.own_pool(&cluster, p).await?),
            None => None,
        };
        let op = if pool.is_some() { NodeOperation::AddExistingToPool } else { NodeOperation::AddExistingToCluster };
        let reference = image.unwrap_or_else(|| os_for(op, &cluster.os, pool.as_ref().map(|p| p.os.as_str())));
        let os: UsableOs = self.usable_os(caller, region, reference).await?;
        let mut outcome = NodeOutcome::default();
        let mut write = TkeWrite::default();
        for id in ids {
            if outcome.succeeded.contains(id) {
                continue;
            }
            let planned = match self.joinable(caller, region, id).await {
                Ok(instance) => {
                    let node = self.node(
                        &cluster,
                        pool.as_ref(),
                        instance.id.clone(),
                        NodeRole::Worker,
                        NodeSource::Manual,
                        false,
                    );
                    self.plan_reinstall(&mut write, region, instance, node, &os.image, request_id)
                        .map_err(|e| e.to_string())
                }
                Err(why) => Err(why),
            };
            match planned {
                Ok(()) => outcome.succeeded.push(id.clone()),
                Err(why) => outcome.failed.push((id.clone(), why)),
            }
        }
        self.commit_tke(&write).await?;
        Ok(outcome)
    }

    /// `DescribeClusterInstances`: one page of the cluster's nodes that match, and how many do.
    pub async fn describe_cluster_instances(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        query: &NodeQuery,
        page: Page,
    ) -> Result<(u64, Vec<NodeView>), TkeError> {
        let cluster = self.own_cluster(caller, region, id).await?;
        let role = query.role.unwrap_or(NodeRole::Worker);
        let matched: Vec<NodeView> = self
            .store()
            .cluster_nodes(&cluster.id)
            .await?
            .into_iter()
            .filter_map(|(node, instance)| {
                let instance = instance?;
                let keep = node.role == role
                    && query.ids.as_ref().is_none_or(|ids| ids.iter().any(|i| i == instance.id.as_str()))
                    && query.pool.as_ref().is_none_or(|p| node.pool.as_ref().is_some_and(|np| np.as_str() == p))
                    && query.source.is_none_or(|s| node.source == s);
                keep.then(|| NodeView { state: node_state(&instance), node, instance })
            })
            .collect();
        Ok((matched.len() as u64, page.slice(&matched).to_vec()))
    }

    /// `DeleteClusterInstances`: the nodes leave the cluster; their instances are terminated
    /// (`terminate`) or kept.
    pub async fn delete_cluster_instances(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        ids: &[String],
        terminate: bool,
        request_id: &str,
    ) -> Result<NodeOutcome, TkeError> {
        let cluster = self.own_cluster(caller, region, id).await?;
        let nodes = self.store().cluster_nodes(&cluster.id).await?;
        let mut outcome = NodeOutcome::default();
        let mut write = TkeWrite::default();
        let mut doomed = Vec::new();
        for id in ids {
            match nodes.iter().find(|(n, _)| n.instance.as_str() == id) {
                None => outcome.not_found.push(id.clone()),
                Some((node, instance)) => {
                    if outcome.succeeded.contains(id) {
                        continue;
                    }
                    match (terminate, instance) {
                        (true, Some(instance)) if instance.busy() => {
                            outcome.failed.push((id.clone(), "another operation is in progress".into()));
                            continue;
                        }
                        (true, Some(instance)) => doomed.push(instance.clone()),
                        _ => write.removed_nodes.push(node.instance.clone()),
                    }
                    outcome.succeeded.push(id.clone());
                }
            }
        }
        self.plan_terminate(&mut write, region, caller, doomed, request_id)?;
        self.commit_tke(&write).await?;
        Ok(outcome)
    }

    /// `UpgradeClusterInstances`: the nodes reinstalled from the cluster-level OS (also nodes
    /// of a pool: the seed puts upgrades at the cluster level).
    pub async fn upgrade_cluster_instances(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        ids: &[String],
        request_id: &str,
    ) -> Result<(), TkeError> {
        if ids.len() > MAX_NODES_PER_CALL {
            return Err(TkeError::Param(format!("at most {MAX_NODES_PER_CALL} instances at once")));
        }
        let cluster = self.own_cluster(caller, region, id).await?;
        let os = self.usable_os(caller, region, os_for(NodeOperation::Upgrade, &cluster.os, None)).await?;
        let nodes = self.store().cluster_nodes(&cluster.id).await?;
        let mut write = TkeWrite::default();
        let mut seen = Vec::new();
        for id in ids {
            if seen.contains(id) {
                continue;
            }
            seen.push(id.clone());
            let Some((node, Some(instance))) = nodes.iter().find(|(n, _)| n.instance.as_str() == id) else {
                return Err(InstanceError::InstanceNotFound(id.clone()).into());
            };
            self.plan_reinstall(&mut write, region, instance.clone(), node.clone(), &os.image, request_id)?;
        }
        self.commit_tke(&write).await
    }
}
