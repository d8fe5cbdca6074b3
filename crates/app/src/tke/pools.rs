//! Node pools: `CreateClusterNodePool`, `DescribeClusterNodePools`,
//! `DescribeClusterNodePoolDetail`, `ModifyClusterNodePool`,
//! `ModifyNodePoolDesiredCapacityAboutAsg`, `DeleteClusterNodePool`. A pool's nodes are launched
//! from the pool-level OS; changing it changes no existing node.

use imaged_domain::instance::MAX_INSTANCE_COUNT;
use imaged_domain::tke::{
    os_for, pool_life_state, scale_in_victims, Cluster, LaunchTemplate, NodeOperation, NodePool, NodeRole, NodeSource,
    NodeState, OsCustomizeType, MAX_POOL_NAME_CHARS, MAX_POOL_NODES,
};
use imaged_domain::{AccountId, ImageId, NodePoolId, Region};
use imaged_metastore::TkeWrite;

use super::TkeError;
use crate::instances::RunRequest;
use crate::secrets::random_bytes;
use crate::service::Service;

/// What `CreateClusterNodePool` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewPool {
    /// `Name`.
    pub name: String,
    /// `NodePoolOs` (default: the cluster's OS).
    pub os: Option<String>,
    /// `OsCustomizeType`.
    pub os_customize: Option<OsCustomizeType>,
    /// `AutoScalingGroupPara.MinSize`.
    pub min: u64,
    /// `AutoScalingGroupPara.MaxSize`.
    pub max: u64,
    /// `AutoScalingGroupPara.DesiredCapacity`.
    pub desired: u64,
    /// `EnableAutoscale`.
    pub autoscale: bool,
    /// From `LaunchConfigurePara` and the group's zones.
    pub launch: LaunchTemplate,
    /// `Labels`.
    pub labels: Vec<(String, String)>,
    /// `DeletionProtection`.
    pub deletion_protection: bool,
}

/// What `ModifyClusterNodePool` changes (absent: unchanged).
#[derive(Debug, Clone, Default)]
pub struct PoolChanges {
    /// `Name`.
    pub name: Option<String>,
    /// `MinNodesNum`.
    pub min: Option<u64>,
    /// `MaxNodesNum`.
    pub max: Option<u64>,
    /// `OsName`.
    pub os: Option<String>,
    /// `OsCustomizeType`.
    pub os_customize: Option<OsCustomizeType>,
    /// `EnableAutoscale`.
    pub autoscale: Option<bool>,
    /// `DeletionProtection`.
    pub deletion_protection: Option<bool>,
    /// `Labels`.
    pub labels: Option<Vec<(String, String)>>,
}

/// Node counts of one kind (`ManuallyAdded`, `AutoscalingAdded`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Initializing.
    pub initializing: u64,
    /// Ready.
    pub normal: u64,
    /// All.
    pub total: u64,
}

/// A pool as `DescribeClusterNodePools` shows it.
#[derive(Debug, Clone)]
pub struct PoolView {
    /// The record.
    pub pool: NodePool,
    /// `LifeState`.
    pub life_state: &'static str,
    /// Nodes added by hand.
    pub manual: NodeCounts,
    /// Nodes the pool's scaling made.
    pub autoscaled: NodeCounts,
    /// The image new nodes of the pool get now.
    pub image_id: Option<ImageId>,
}

fn check_size(name: &str, min: u64, desired: u64, max: u64) -> Result<(), TkeError> {
    if name.chars().count() > MAX_POOL_NAME_CHARS {
        return Err(TkeError::Param(format!("the node pool name is longer than {MAX_POOL_NAME_CHARS} characters")));
    }
    if !(min <= desired && desired <= max && max <= MAX_POOL_NODES) {
        return Err(TkeError::Param(format!(
            "the node pool needs MinSize <= DesiredCapacity <= MaxSize <= {MAX_POOL_NODES}; got {min}, {desired}, {max}"
        )));
    }
    Ok(())
}

impl Service {
    /// The pool `id` of `cluster`.
    pub(crate) async fn own_pool(&self, cluster: &Cluster, id: &str) -> Result<NodePool, TkeError> {
        let parsed = NodePoolId::parse(id).map_err(|_| TkeError::PoolMalformed(id.to_owned()))?;
        self.store()
            .get_pool(&parsed)
            .await?
            .filter(|p| p.cluster == cluster.id)
            .ok_or_else(|| TkeError::PoolNotFound(id.to_owned()))
    }

    /// Plans `count` new nodes of `pool` from the pool-level OS (a scale-out), into `write`;
    /// `initial` for the nodes of the pool's creation.
    async fn plan_scale_out(
        &self,
        write: &mut TkeWrite,
        region: &Region,
        (cluster, pool): (&Cluster, &NodePool),
        (count, initial): (u64, bool),
        request_id: &str,
    ) -> Result<(), TkeError> {
        if count == 0 {
            return Ok(());
        }
        let reference = os_for(NodeOperation::ScalePoolOut, &cluster.os, Some(&pool.os));
        let os = self.usable_os(cluster.owner, region, reference).await?;
        let mut left = count;
        while left > 0 {
            let batch = left.min(u64::from(MAX_INSTANCE_COUNT));
            let run = RunRequest {
                zone: pool.launch.zone.clone(),
                instance_type: pool.launch.instance_type.clone(),
                count: Some(batch),
                name: Some(format!("{}-node", pool.name)),
                system_disk_gib: pool.launch.system_disk_gib,
                ..RunRequest::default()
            };
            let kind = (NodeRole::Worker, NodeSource::Autoscaling, initial);
            self.plan_new_nodes(write, region, cluster, Some(&pool.id), kind, &run, &os.image, request_id)?;
            left -= batch;
        }
        Ok(())
    }

    /// `CreateClusterNodePool`: the pool, with its desired nodes launched from its OS.
    pub async fn create_node_pool(
        &self,
        caller: AccountId,
        region: &Region,
        cluster: &str,
        req: NewPool,
        request_id: &str,
    ) -> Result<NodePoolId, TkeError> {
        let cluster = self.own_cluster(caller, region, cluster).await?;
        check_size(&req.name, req.min, req.desired, req.max)?;
        let os = self.usable_os(caller, region, req.os.as_deref().unwrap_or(&cluster.os)).await?;
        let mut launch = req.launch;
        if launch.zone.is_empty() {
            launch.zone = region.zones.first().map(|z| z.zone.clone()).unwrap_or_default();
        }
        let pool = NodePool {
            id: NodePoolId::from_random(random_bytes()?),
            cluster: cluster.id.clone(),
            owner: caller,
            region: region.region.clone(),
            name: req.name,
            os: os.reference.as_text().to_owned(),
            os_customize: req.os_customize.unwrap_or(cluster.os_customize),
            min_nodes: req.min,
            max_nodes: req.max,
            desired_nodes: req.desired,
            autoscale: req.autoscale,
            launch,
            labels: req.labels,
            deletion_protection: req.deletion_protection,
            created_at: self.clock_now(),
        };
        let mut write = TkeWrite { pools: vec![pool.clone()], ..TkeWrite::default() };
        self.plan_scale_out(&mut write, region, (&cluster, &pool), (pool.desired_nodes, true), request_id).await?;
        self.commit_tke(&write).await?;
        Ok(pool.id)
    }

    async fn pool_view(
        &self,
        pool: NodePool,
        nodes: &[(imaged_domain::tke::Node, NodeState)],
    ) -> Result<PoolView, TkeError> {
        let mine: Vec<_> = nodes.iter().filter(|(n, _)| n.pool.as_ref() == Some(&pool.id)).cloned().collect();
        let count = |source: NodeSource| {
            let of: Vec<_> = mine.iter().filter(|(n, _)| n.source == source).collect();
            NodeCounts {
                initializing: of.iter().filter(|(_, s)| *s == NodeState::Initializing).count() as u64,
                normal: of.iter().filter(|(_, s)| *s == NodeState::Running).count() as u64,
                total: of.len() as u64,
            }
        };
        let changes = self.os_changes().await?;
        Ok(PoolView {
            life_state: pool_life_state(&mine),
            manual: count(NodeSource::Manual),
            autoscaled: count(NodeSource::Autoscaling),
            image_id: self.os_image_now(&pool.os, &changes),
            pool,
        })
    }

    /// `DescribeClusterNodePools`: the cluster's pools.
    pub async fn describe_node_pools(
        &self,
        caller: AccountId,
        region: &Region,
        cluster: &str,
    ) -> Result<Vec<PoolView>, TkeError> {
        let cluster = self.own_cluster(caller, region, cluster).await?;
        let nodes = self.node_states(&cluster.id).await?;
        let mut views = Vec::new();
        for pool in self.store().list_pools(&cluster.id).await? {
            views.push(self.pool_view(pool, &nodes).await?);
        }
        Ok(views)
    }

    /// `DescribeClusterNodePoolDetail`: one pool.
    pub async fn node_pool_detail(
        &self,
        caller: AccountId,
        region: &Region,
        cluster: &str,
        pool: &str,
    ) -> Result<PoolView, TkeError> {
        let cluster = self.own_cluster(caller, region, cluster).await?;
        let pool = self.own_pool(&cluster, pool).await?;
        let nodes = self.node_states(&cluster.id).await?;
        self.pool_view(pool, &nodes).await
    }

    /// `ModifyClusterNodePool`: name, size bounds, OS and the rest. A new OS changes no
    /// existing node; nodes added or scaled out afterwards get it.
    pub async fn modify_node_pool(
        &self,
        caller: AccountId,
        region: &Region,
        cluster: &str,
        pool: &str,
        changes: PoolChanges,
    ) -> Result<(), TkeError> {
        let cluster = self.own_cluster(caller, region, cluster).await?;
        let read = self.own_pool(&cluster, pool).await?;
        let mut pool = read.clone();
        if let Some(name) = changes.name {
            pool.name = name;
        }
        pool.min_nodes = changes.min.unwrap_or(pool.min_nodes);
        pool.max_nodes = changes.max.unwrap_or(pool.max_nodes);
        check_size(&pool.name, pool.min_nodes, pool.desired_nodes, pool.max_nodes)?;
        if let Some(os) = changes.os {
            pool.os = self.usable_os(caller, region, &os).await?.reference.as_text().to_owned();
        }
        pool.os_customize = changes.os_customize.unwrap_or(pool.os_customize);
        pool.autoscale = changes.autoscale.unwrap_or(pool.autoscale);
        pool.deletion_protection = changes.deletion_protection.unwrap_or(pool.deletion_protection);
        if let Some(labels) = changes.labels {
            pool.labels = labels;
        }
        self.commit_tke(&TkeWrite { expect_pools: vec![read], pools: vec![pool], ..TkeWrite::default() }).await
    }

    /// `ModifyNodePoolDesiredCapacityAboutAsg`: scales the pool out (new nodes from the pool's
    /// OS) or in (its newest autoscaled nodes terminated first).
    pub async fn set_desired_capacity(
        &self,
        caller: AccountId,
        region: &Region,
        cluster: &str,
        pool: &str,
        desired: u64,
        request_id: &str,
    ) -> Result<(), TkeError> {
        let cluster = self.own_cluster(caller, region, cluster).await?;
        let read = self.own_pool(&cluster, pool).await?;
        let mut pool = read.clone();
        check_size(&pool.name, pool.min_nodes, desired, pool.max_nodes)?;
        let members: Vec<_> = self
            .store()
            .cluster_nodes(&cluster.id)
            .await?
            .into_iter()
            .filter(|(n, _)| n.pool.as_ref() == Some(&pool.id) && n.source == NodeSource::Autoscaling)
            .collect();
        // The desired capacity counts the nodes the pool's scaling made, as an Auto Scaling
        // group does; nodes added by hand come and go on their own.
        let current = members.len() as u64;
        pool.desired_nodes = desired;
        let mut write = TkeWrite { expect_pools: vec![read], pools: vec![pool.clone()], ..TkeWrite::default() };
        if desired > current {
            self.plan_scale_out(&mut write, region, (&cluster, &pool), (desired - current, false), request_id).await?;
        } else if desired < current {
            let nodes: Vec<_> = members.iter().map(|(n, _)| n.clone()).collect();
            let victims = scale_in_victims(&nodes, desired);
            let instances = members.into_iter().filter_map(|(n, i)| i.filter(|_| victims.contains(&n.instance)));
            self.plan_terminate(&mut write, region, caller, instances.collect(), request_id)?;
        }
        self.commit_tke(&write).await
    }

    /// `DeleteClusterNodePool`: the pools; their nodes stay in the cluster without a pool
    /// (`keep_instances`) or are terminated.
    pub async fn delete_node_pools(
        &self,
        caller: AccountId,
        region: &Region,
        cluster: &str,
        pools: &[String],
        keep_instances: bool,
        request_id: &str,
    ) -> Result<(), TkeError> {
        let cluster = self.own_cluster(caller, region, cluster).await?;
        let mut doomed = Vec::new();
        for id in pools {
            let pool = self.own_pool(&cluster, id).await?;
            if pool.deletion_protection {
                return Err(TkeError::Denied(format!("the node pool {id} has deletion protection")));
            }
            doomed.push(pool.id);
        }
        let mut write = TkeWrite { deleted_pools: doomed.clone(), ..TkeWrite::default() };
        let mut instances = Vec::new();
        for (mut node, instance) in self.store().cluster_nodes(&cluster.id).await? {
            if !node.pool.as_ref().is_some_and(|p| doomed.contains(p)) {
                continue;
            }
            match (keep_instances, instance) {
                (false, Some(instance)) => instances.push(instance),
                _ => {
                    node.pool = None;
                    write.nodes.push(node);
                }
            }
        }
        self.plan_terminate(&mut write, region, caller, instances, request_id)?;
        self.commit_tke(&write).await
    }
}
