//! Clusters, node pools and nodes, the states TKE shows for them (derived from their nodes'
//! instances), scale-in order, and the message centre's messages.

use super::{ChangeAction, OsChange, OsCustomizeType, OsRow};
use crate::ids::{AccountId, ClusterId, InstanceId, MessageId, NodePoolId};
use crate::instance::{Instance, InstanceState, OperationState};
use crate::time::Timestamp;

wire_enum! {
    /// `ClusterType`.
    ClusterType {
        /// Managed control plane.
        Managed = "MANAGED_CLUSTER",
        /// The user's own masters.
        Independent = "INDEPENDENT_CLUSTER",
    }
}

wire_enum! {
    /// `NodeRole` / `InstanceRole`.
    NodeRole {
        /// A worker (the default).
        Worker = "WORKER",
        /// Master and etcd.
        MasterEtcd = "MASTER_ETCD",
        /// Master only.
        Master = "MASTER",
        /// Etcd only.
        Etcd = "ETCD",
    }
}

wire_enum! {
    /// How a node joined its pool (`nodepool-instance-type`).
    NodeSource {
        /// Added by `AddExistedInstances` or created by `CreateClusterInstances`.
        Manual = "MANUALLY_ADDED",
        /// Created by a pool's scaling.
        Autoscaling = "AUTOSCALING_ADDED",
    }
}

/// A cluster: a group of the account's instances and the OS policy applied to them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cluster {
    /// Id.
    pub id: ClusterId,
    /// Owner.
    pub owner: AccountId,
    /// Region.
    pub region: String,
    /// `ClusterName`.
    pub name: String,
    /// `ClusterDescription`.
    pub description: String,
    /// `ClusterType`.
    pub cluster_type: ClusterType,
    /// `ClusterVersion`.
    pub version: String,
    /// The cluster-level OS reference (`ClusterOs`).
    pub os: String,
    /// `OsCustomizeType`.
    pub os_customize: OsCustomizeType,
    /// `VpcId`.
    pub vpc_id: String,
    /// `ClusterCIDRSettings.ClusterCIDR`.
    pub cidr: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// What a pool's nodes are launched with (`LaunchConfigurePara`, `AutoScalingGroupPara`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LaunchTemplate {
    /// Zone of new nodes.
    pub zone: String,
    /// Instance type.
    pub instance_type: Option<String>,
    /// System disk, GiB.
    pub system_disk_gib: Option<u64>,
}

/// A node pool: nodes of one cluster launched alike, with their own OS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodePool {
    /// Id.
    pub id: NodePoolId,
    /// Its cluster.
    pub cluster: ClusterId,
    /// Owner.
    pub owner: AccountId,
    /// Region.
    pub region: String,
    /// `Name`.
    pub name: String,
    /// The pool-level OS reference (`NodePoolOs`).
    pub os: String,
    /// `OsCustomizeType`.
    pub os_customize: OsCustomizeType,
    /// `MinNodesNum`.
    pub min_nodes: u64,
    /// `MaxNodesNum`.
    pub max_nodes: u64,
    /// `DesiredNodesNum`.
    pub desired_nodes: u64,
    /// `EnableAutoscale`.
    pub autoscale: bool,
    /// How its nodes are launched.
    pub launch: LaunchTemplate,
    /// `Labels`, as `key=value`.
    pub labels: Vec<(String, String)>,
    /// `DeletionProtection`.
    pub deletion_protection: bool,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A node: an instance in a cluster, with a role and maybe a pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// The instance.
    pub instance: InstanceId,
    /// The cluster.
    pub cluster: ClusterId,
    /// The pool, if any.
    pub pool: Option<NodePoolId>,
    /// Role.
    pub role: NodeRole,
    /// How it joined.
    pub source: NodeSource,
    /// Whether it was made or added by the cluster's creation (the cluster is `Creating` until
    /// these are ready).
    pub initial: bool,
    /// When it joined.
    pub joined_at: Timestamp,
}

wire_enum! {
    /// A node's `InstanceState` in `DescribeClusterInstances`.
    NodeState {
        /// Ready.
        Running = "running",
        /// Its disk is being made or reinstalled.
        Initializing = "initializing",
        /// Its last operation failed.
        Failed = "failed",
    }
}

/// A node's state, from its instance's.
pub fn node_state(instance: &Instance) -> NodeState {
    match (instance.state, instance.latest_operation_state) {
        (InstanceState::LaunchFailed, _) => NodeState::Failed,
        (_, Some(OperationState::Operating)) => NodeState::Initializing,
        (_, Some(OperationState::Failed)) => NodeState::Failed,
        _ => NodeState::Running,
    }
}

/// `ClusterStatus`: `Creating` while a node the creation made is initializing, else `Running`.
pub fn cluster_status(nodes: &[(Node, NodeState)]) -> &'static str {
    if nodes.iter().any(|(n, s)| n.initial && *s == NodeState::Initializing) {
        "Creating"
    } else {
        "Running"
    }
}

/// A pool's `LifeState`: `creating` while a node its creation made is initializing, `updating`
/// while any of its nodes is, else `normal`.
pub fn pool_life_state(nodes: &[(Node, NodeState)]) -> &'static str {
    let initializing = |n: &&(Node, NodeState)| n.1 == NodeState::Initializing;
    if nodes.iter().filter(initializing).any(|(n, _)| n.initial) {
        "creating"
    } else if nodes.iter().any(|n| initializing(&n)) {
        "updating"
    } else {
        "normal"
    }
}

/// Which of a pool's nodes a scale-in removes to reach `desired`: autoscaling-added nodes
/// first, newest first (manually added nodes only when no autoscaled one is left).
pub fn scale_in_victims(nodes: &[Node], desired: u64) -> Vec<InstanceId> {
    let excess = (nodes.len() as u64).saturating_sub(desired);
    let mut order: Vec<&Node> = nodes.iter().collect();
    order.sort_by(|a, b| {
        (a.source == NodeSource::Manual)
            .cmp(&(b.source == NodeSource::Manual))
            .then(b.joined_at.cmp(&a.joined_at))
            .then(b.instance.cmp(&a.instance))
    });
    order.into_iter().take(usize::try_from(excess).unwrap_or(usize::MAX)).map(|n| n.instance.clone()).collect()
}

/// A message in an account's message centre.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Id.
    pub id: MessageId,
    /// The recipient.
    pub account: AccountId,
    /// `Category`, e.g. `TKE_IMAGE_CHANGE`.
    pub category: String,
    /// `Title`.
    pub title: String,
    /// `Content`.
    pub content: String,
    /// When it was sent.
    pub created_at: Timestamp,
    /// When what it announces takes effect.
    pub effective_at: Option<Timestamp>,
    /// Whether the recipient marked it read.
    pub read: bool,
}

/// The category of image-logic change announcements.
pub const IMAGE_CHANGE_CATEGORY: &str = "TKE_IMAGE_CHANGE";

/// The announcement of `change` to an account using its OS.
pub fn change_announcement(change: &OsChange, row: &OsRow) -> (String, String) {
    let what = match &change.action {
        ChangeAction::Remap(image) => format!("will use the image {image} (today {})", row.image_id),
        ChangeAction::Retire => "will be retired: no new node may use it".to_owned(),
    };
    let title = format!("TKE image change: {} on {}", row.os_name, change.effective_at.iso8601());
    let content = format!(
        "From {} the OS `{}` ({}) {what}. Existing nodes made from the earlier image are not affected; only nodes created or reinstalled from then on are. {}",
        change.effective_at.iso8601(),
        row.os_name,
        row.alias,
        change.note
    );
    (title, content.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8, source: NodeSource, at: i64) -> Node {
        Node {
            instance: InstanceId::from_random([n; 8]),
            cluster: ClusterId::from_random([0; 8]),
            pool: None,
            role: NodeRole::Worker,
            source,
            initial: false,
            joined_at: Timestamp(at),
        }
    }

    #[test]
    fn cluster_and_pool_states_follow_their_nodes() {
        let mut initial = node(1, NodeSource::Autoscaling, 1);
        initial.initial = true;
        let later = node(2, NodeSource::Manual, 2);
        use NodeState::{Initializing, Running};
        assert_eq!(cluster_status(&[(initial.clone(), Initializing), (later.clone(), Running)]), "Creating");
        assert_eq!(cluster_status(&[(initial.clone(), Running), (later.clone(), Initializing)]), "Running");
        assert_eq!(pool_life_state(&[(initial.clone(), Initializing)]), "creating");
        assert_eq!(pool_life_state(&[(initial.clone(), Running), (later.clone(), Initializing)]), "updating");
        assert_eq!(pool_life_state(&[(initial, Running), (later, Running)]), "normal");
    }

    #[test]
    fn scale_in_removes_the_newest_autoscaled_nodes_first() {
        let nodes = vec![
            node(1, NodeSource::Manual, 50),
            node(2, NodeSource::Autoscaling, 10),
            node(3, NodeSource::Autoscaling, 20),
        ];
        assert_eq!(scale_in_victims(&nodes, 2), vec![nodes[2].instance.clone()]);
        assert_eq!(scale_in_victims(&nodes, 0).last(), Some(&nodes[0].instance));
        assert!(scale_in_victims(&nodes, 5).is_empty());
    }
}
