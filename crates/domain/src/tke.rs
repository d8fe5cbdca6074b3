//! TKE node operating systems (the seed `000`): the OS catalogue clusters and node pools choose
//! from, which level's OS each node operation uses, beta images behind an application, and
//! image-logic changes announced at least a week ahead.
//!
//! imaged runs no Kubernetes: a cluster is a group of this deployment's instances with the OS
//! policy TKE applies to them; a node is an instance with a role and, optionally, a pool.

use crate::ids::{AccountId, ApplicationId, ClusterId, ImageId, InstanceId, MessageId, NodePoolId};
use crate::instance::{Instance, InstanceState, OperationState};
use crate::time::Timestamp;

/// The shortest notice of an image-logic change: one week.
pub const NOTICE_SECS: i64 = 7 * 86_400;
/// Nodes one call may create or add at once.
pub const MAX_NODES_PER_CALL: usize = 100;
/// Largest node pool.
pub const MAX_POOL_NODES: u64 = 2000;
/// Longest cluster name, in characters.
pub const MAX_CLUSTER_NAME_CHARS: usize = 50;
/// Longest node pool name, in characters.
pub const MAX_POOL_NAME_CHARS: usize = 63;
/// The Kubernetes version a cluster reports when none is asked for.
pub const DEFAULT_CLUSTER_VERSION: &str = "1.28.3";

/// One row of the TKE OS catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsRow {
    /// The key `ClusterOs`, `NodePoolOs` and `OsName` take.
    pub os_name: &'static str,
    /// The series (`SeriesName`).
    pub series: &'static str,
    /// The name the console shows (`Alias`).
    pub alias: &'static str,
    /// The seed's "OS type" column.
    pub os_type: &'static str,
    /// The backing CVM image (before any change).
    pub image_id: &'static str,
    /// TKE's architecture vocabulary (`x86`, `amd64`, `arm64`).
    pub arch: &'static str,
    /// In beta test: usable only after an approved application.
    pub beta: bool,
    /// The one the seed recommends.
    pub recommended: bool,
    /// A market image for a special use (qGPU sharing).
    pub market: bool,
    /// Kernel version, when the seed names one.
    pub kernel: Option<&'static str>,
    /// The seed's remarks.
    pub remarks: &'static [&'static str],
}

/// The catalogue: the seed's table in its order, then the market images for special uses.
pub const OS_CATALOGUE: &[OsRow] = &[
    OsRow {
        os_name: "tlinux3.1x86_64",
        series: "TencentOS Server 3.1 (TK4)",
        alias: "TencentOS Server 3.1 (TK4)",
        os_type: "TencentOS Server",
        image_id: "img-eb30mz89",
        arch: "amd64",
        beta: false,
        recommended: true,
        market: false,
        kernel: Some("5.4.119"),
        remarks: &[
            "We recommend you use the latest release of TencentOS Server.",
            "Kernel version: 5.4.119.",
            "Automatic installation of the GPU driver is not supported; install it yourself.",
        ],
    },
    OsRow {
        os_name: "tlinux2.4x86_64",
        series: "TencentOS Server 2.4",
        alias: "TencentOS Server 2.4 (former name: Tencent Linux release 2.4 (Final))",
        os_type: "Tlinux",
        image_id: "img-hdt9xxkt",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: false,
        kernel: Some("4.14.105"),
        remarks: &["Kernel version: 4.14.105."],
    },
    OsRow {
        os_name: "ubuntu20.04x86_64",
        series: "Ubuntu Server 20.04.1 LTS",
        alias: "Ubuntu Server 20.04.1 LTS 64-bit",
        os_type: "Ubuntu",
        image_id: "img-22trbn9x",
        arch: "amd64",
        beta: true,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["Ubuntu 20.04.1 public kernel.", "In beta test: apply before use."],
    },
    OsRow {
        os_name: "ubuntu18.04.1x86_64",
        series: "Ubuntu 18.04 LTS",
        alias: "Ubuntu 18.04 LTS 64-bit",
        os_type: "Ubuntu",
        image_id: "img-pi0ii46r",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["Ubuntu 18.04.1 public kernel."],
    },
    OsRow {
        os_name: "centos8.0x86_64",
        series: "CentOS 8.0",
        alias: "CentOS 8.0",
        os_type: "CentOS",
        image_id: "img-25szkc8t",
        arch: "amd64",
        beta: true,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["CentOS 8.0 public kernel.", "In beta test: apply before use."],
    },
    OsRow {
        os_name: "centos7.6.0_x64",
        series: "CentOS 7.6",
        alias: "CentOS 7.6",
        os_type: "CentOS",
        image_id: "img-9qabwvbn",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["CentOS 7.6 public kernel."],
    },
    OsRow {
        os_name: "tlinux3.1x86_64_qgpu",
        series: "TencentOS Server 3.1 (TK4) qGPU",
        alias: "TencentOS Server 3.1 with qGPU (market image)",
        os_type: "TencentOS Server",
        image_id: "img-qgpu0a1b",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: true,
        kernel: Some("5.4.119"),
        remarks: &["Market image for qGPU sharing: GPU driver and qGPU runtime preinstalled."],
    },
];

/// The catalogue row of an OS name.
pub fn os_row(os_name: &str) -> Option<&'static OsRow> {
    OS_CATALOGUE.iter().find(|r| r.os_name == os_name)
}

wire_enum! {
    /// `OsCustomizeType`.
    OsCustomizeType {
        /// A general image (the default).
        General = "GENERAL",
        /// A container-optimised image.
        DockerCustomize = "DOCKER_CUSTOMIZE",
    }
}

/// What an image-logic change does to an OS name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChangeAction {
    /// The name maps to this image from the effective time on.
    Remap(ImageId),
    /// The name is offline from the effective time on: no new node may use it.
    Retire,
}

/// An image-logic change, scheduled by the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OsChange {
    /// Its id (assigned by the store; 0 before).
    pub id: u64,
    /// The OS name it changes.
    pub os_name: String,
    /// What it does.
    pub action: ChangeAction,
    /// When it takes effect.
    pub effective_at: Timestamp,
    /// When it was scheduled (and announced).
    pub scheduled_at: Timestamp,
    /// The operator's note, quoted in the announcement.
    pub note: String,
}

/// Why a TKE request breaks the seed's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TkeRuleError {
    /// A change scheduled with less than a week's notice.
    #[error("an image-logic change needs at least 7 days' notice: {0} is {1} s from now")]
    NoticeTooShort(String, i64),
    /// Not an OS name of the catalogue.
    #[error("`{0}` is not an OS TKE supports (see DescribeOSImages)")]
    UnknownOs(String),
    /// A malformed image id.
    #[error("malformed image id `{0}`")]
    MalformedImage(String),
    /// The OS was retired by an image-logic change.
    #[error("the OS `{0}` was retired on {1}; choose another OS (DescribeOSImages)")]
    Retired(String, String),
}

/// Checks the week's notice of a change to take effect at `effective`, scheduled at `now`.
pub fn check_notice(now: Timestamp, effective: Timestamp) -> Result<(), TkeRuleError> {
    let ahead = effective.0.saturating_sub(now.0);
    if ahead < NOTICE_SECS {
        return Err(TkeRuleError::NoticeTooShort(effective.iso8601(), ahead));
    }
    Ok(())
}

/// An OS name as it stands at some moment, changes applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOs {
    /// The catalogue row.
    pub row: &'static OsRow,
    /// The image new nodes get.
    pub image_id: ImageId,
    /// When it was retired, if it was.
    pub retired_at: Option<Timestamp>,
}

impl ResolvedOs {
    /// `Status`: `online` or `offline`.
    pub fn status(&self) -> &'static str {
        if self.retired_at.is_some() {
            "offline"
        } else {
            "online"
        }
    }
}

/// `os_name` at `now`: its catalogue row with every change effective by then applied in
/// effective order (a later change wins). `None` for a name the catalogue lacks.
pub fn resolve_os(os_name: &str, changes: &[OsChange], now: Timestamp) -> Option<ResolvedOs> {
    let row = os_row(os_name)?;
    let mut image_id = ImageId::parse(row.image_id).ok()?;
    let mut retired_at = None;
    let mut effective: Vec<&OsChange> =
        changes.iter().filter(|c| c.os_name == os_name && c.effective_at <= now).collect();
    effective.sort_by_key(|c| (c.effective_at, c.id));
    for change in effective {
        match &change.action {
            ChangeAction::Remap(image) => {
                image_id = image.clone();
                retired_at = None;
            }
            ChangeAction::Retire => retired_at = Some(change.effective_at),
        }
    }
    Some(ResolvedOs { row, image_id, retired_at })
}

/// The whole catalogue at `now`, in its order.
pub fn catalogue_at(changes: &[OsChange], now: Timestamp) -> Vec<ResolvedOs> {
    OS_CATALOGUE.iter().filter_map(|r| resolve_os(r.os_name, changes, now)).collect()
}

/// An OS reference (`ClusterOs`, `NodePoolOs`, `OsName`, `ImageId`): a catalogue name or an
/// image id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsRef {
    /// A name of the catalogue.
    Name(String),
    /// An image the caller may launch.
    Image(ImageId),
}

impl OsRef {
    /// Parses a reference: `img-…` is an image id; anything else must be a catalogue name.
    /// An image id that backs a catalogue OS at `now` means that OS, so that the OS follows
    /// its name's image-logic changes.
    pub fn parse(s: &str, changes: &[OsChange], now: Timestamp) -> Result<Self, TkeRuleError> {
        if s.starts_with(ImageId::PREFIX) {
            let id = ImageId::parse(s).map_err(|_| TkeRuleError::MalformedImage(s.to_owned()))?;
            let backed = catalogue_at(changes, now).into_iter().find(|r| r.image_id == id && !r.row.market);
            return Ok(match backed {
                Some(r) => OsRef::Name(r.row.os_name.to_owned()),
                None => OsRef::Image(id),
            });
        }
        os_row(s).map(|r| OsRef::Name(r.os_name.to_owned())).ok_or_else(|| TkeRuleError::UnknownOs(s.to_owned()))
    }

    /// The reference as stored and shown (`ClusterOs`, `NodePoolOs`).
    pub fn as_text(&self) -> &str {
        match self {
            OsRef::Name(n) => n,
            OsRef::Image(i) => i.as_str(),
        }
    }

    /// A stored reference (never fails on what [`OsRef::as_text`] wrote).
    pub fn from_stored(s: &str) -> Self {
        match ImageId::parse(s) {
            Ok(id) => OsRef::Image(id),
            Err(_) => OsRef::Name(s.to_owned()),
        }
    }
}

wire_enum! {
    /// The node operations of the seed, each of which uses one level's OS.
    NodeOperation {
        /// `CreateCluster` nodes and `CreateClusterInstances`.
        CreateNodes = "CreateNodes",
        /// `AddExistedInstances` without a node pool.
        AddExistingToCluster = "AddExistingToCluster",
        /// `AddExistedInstances` with `NodePool.AddToNodePool`.
        AddExistingToPool = "AddExistingToPool",
        /// A node pool scaled out (`ModifyNodePoolDesiredCapacityAboutAsg`, a pool's creation).
        ScalePoolOut = "ScalePoolOut",
        /// `UpgradeClusterInstances`: nodes reinstalled.
        Upgrade = "Upgrade",
    }
}

/// Which level's OS an operation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsLevel {
    /// `ClusterOs`.
    Cluster,
    /// `NodePoolOs`.
    NodePool,
}

/// The seed's rule: creating nodes, adding existing nodes to the cluster and upgrading use the
/// cluster level; adding existing nodes to a pool and scaling a pool out use the pool level.
pub fn os_level(op: NodeOperation) -> OsLevel {
    match op {
        NodeOperation::CreateNodes | NodeOperation::AddExistingToCluster | NodeOperation::Upgrade => OsLevel::Cluster,
        NodeOperation::AddExistingToPool | NodeOperation::ScalePoolOut => OsLevel::NodePool,
    }
}

/// The OS reference an operation uses, from the cluster's and (if any) the pool's.
pub fn os_for<'a>(op: NodeOperation, cluster_os: &'a str, pool_os: Option<&'a str>) -> &'a str {
    match (os_level(op), pool_os) {
        (OsLevel::NodePool, Some(pool)) => pool,
        _ => cluster_os,
    }
}

wire_enum! {
    /// A beta application's state.
    BetaStatus {
        /// Waiting for the operator.
        Pending = "PENDING",
        /// The account may use the OS.
        Approved = "APPROVED",
        /// Refused, with the reviewer's reason.
        Rejected = "REJECTED",
    }
}

/// An account's application to use a beta OS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BetaApplication {
    /// Its id.
    pub id: ApplicationId,
    /// The applicant.
    pub account: AccountId,
    /// The beta OS.
    pub os_name: String,
    /// Why the applicant wants it.
    pub reason: String,
    /// State.
    pub status: BetaStatus,
    /// The reviewer's reason (rejections).
    pub decision_reason: Option<String>,
    /// When it was filed.
    pub created_at: Timestamp,
    /// When it was decided.
    pub decided_at: Option<Timestamp>,
}

/// Why a beta OS may not be used yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BetaGate {
    /// No application was filed.
    #[error(
        "the OS `{0}` is in beta test: apply with the imaged action ApplyForBetaImage (`imaged tke apply-beta`) and use it once the application is approved"
    )]
    NotApplied(String),
    /// The application waits for review.
    #[error("the OS `{0}` is in beta test and the application {1} is still pending review")]
    Pending(String, ApplicationId),
    /// The application was rejected.
    #[error(
        "the OS `{0}` is in beta test and the application {1} was rejected: {2}; apply again with ApplyForBetaImage"
    )]
    Rejected(String, ApplicationId, String),
}

/// Whether `account` may use `os` given its applications: always for an OS out of beta; for a
/// beta OS, only with an approved application (the latest decision counts).
pub fn beta_gate(os: &OsRow, applications: &[BetaApplication]) -> Result<(), BetaGate> {
    if !os.beta {
        return Ok(());
    }
    let mine: Vec<&BetaApplication> = applications.iter().filter(|a| a.os_name == os.os_name).collect();
    if mine.iter().any(|a| a.status == BetaStatus::Approved) {
        return Ok(());
    }
    let latest = mine.iter().max_by_key(|a| (a.created_at, a.id.as_str().to_owned()));
    Err(match latest {
        None => BetaGate::NotApplied(os.os_name.to_owned()),
        Some(a) if a.status == BetaStatus::Pending => BetaGate::Pending(os.os_name.to_owned(), a.id.clone()),
        Some(a) => BetaGate::Rejected(
            os.os_name.to_owned(),
            a.id.clone(),
            a.decision_reason.clone().unwrap_or_else(|| "no reason given".into()),
        ),
    })
}

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

    fn change(os: &str, action: ChangeAction, at: i64) -> OsChange {
        OsChange {
            id: u64::try_from(at).unwrap_or(0),
            os_name: os.into(),
            action,
            effective_at: Timestamp(at),
            scheduled_at: Timestamp(0),
            note: String::new(),
        }
    }

    #[test]
    fn the_catalogue_holds_the_seed_table_in_order() {
        let ids: Vec<&str> = OS_CATALOGUE.iter().filter(|r| !r.market).map(|r| r.image_id).collect();
        assert_eq!(
            ids,
            ["img-eb30mz89", "img-hdt9xxkt", "img-22trbn9x", "img-pi0ii46r", "img-25szkc8t", "img-9qabwvbn"]
        );
        let beta: Vec<&str> = OS_CATALOGUE.iter().filter(|r| r.beta).map(|r| r.image_id).collect();
        assert_eq!(beta, ["img-22trbn9x", "img-25szkc8t"]);
        assert!(OS_CATALOGUE[0].recommended && OS_CATALOGUE[0].remarks.iter().any(|r| r.contains("GPU driver")));
        assert!(OS_CATALOGUE.iter().any(|r| r.market && r.series.contains("qGPU")));
        let mut names: Vec<&str> = OS_CATALOGUE.iter().map(|r| r.os_name).collect();
        names.dedup();
        assert_eq!(names.len(), OS_CATALOGUE.len());
    }

    #[test]
    fn the_seeds_levels_per_operation() {
        use NodeOperation::*;
        assert_eq!(os_level(CreateNodes), OsLevel::Cluster);
        assert_eq!(os_level(AddExistingToCluster), OsLevel::Cluster);
        assert_eq!(os_level(Upgrade), OsLevel::Cluster);
        assert_eq!(os_level(AddExistingToPool), OsLevel::NodePool);
        assert_eq!(os_level(ScalePoolOut), OsLevel::NodePool);
        assert_eq!(os_for(Upgrade, "c", Some("p")), "c", "upgrading a pool's node uses the cluster's OS");
        assert_eq!(os_for(ScalePoolOut, "c", Some("p")), "p");
    }

    #[test]
    fn notice_must_be_a_week() {
        let now = Timestamp(1_000_000);
        assert!(check_notice(now, Timestamp(now.0 + NOTICE_SECS)).is_ok());
        assert!(matches!(check_notice(now, Timestamp(now.0 + NOTICE_SECS - 1)), Err(TkeRuleError::NoticeTooShort(..))));
        assert!(check_notice(now, Timestamp(now.0 - 5)).is_err());
    }

    #[test]
    fn changes_apply_only_from_their_effective_time() {
        let new = ImageId::parse("img-2wgyxc0a").expect("id");
        let changes = vec![change("centos7.6.0_x64", ChangeAction::Remap(new.clone()), 100)];
        let before = resolve_os("centos7.6.0_x64", &changes, Timestamp(99)).expect("row");
        assert_eq!(before.image_id.as_str(), "img-9qabwvbn");
        let after = resolve_os("centos7.6.0_x64", &changes, Timestamp(100)).expect("row");
        assert_eq!(after.image_id, new);
        assert_eq!(after.status(), "online");
        let mut changes = changes;
        changes.push(change("centos7.6.0_x64", ChangeAction::Retire, 200));
        assert_eq!(resolve_os("centos7.6.0_x64", &changes, Timestamp(200)).expect("row").status(), "offline");
        assert_eq!(resolve_os("tlinux2.4x86_64", &changes, Timestamp(300)).expect("row").status(), "online");
        assert!(resolve_os("windows", &changes, Timestamp(0)).is_none());
    }

    #[test]
    fn os_references_are_names_or_image_ids() {
        let none: &[OsChange] = &[];
        assert_eq!(OsRef::parse("tlinux3.1x86_64", none, Timestamp(0)), Ok(OsRef::Name("tlinux3.1x86_64".into())));
        assert_eq!(OsRef::parse("img-eb30mz89", none, Timestamp(0)), Ok(OsRef::Name("tlinux3.1x86_64".into())));
        let custom = OsRef::parse("img-abcdefgh", none, Timestamp(0)).expect("image");
        assert_eq!(custom, OsRef::Image(ImageId::parse("img-abcdefgh").expect("id")));
        assert_eq!(OsRef::from_stored(custom.as_text()), custom);
        assert!(matches!(OsRef::parse("img-BAD", none, Timestamp(0)), Err(TkeRuleError::MalformedImage(_))));
        assert!(matches!(OsRef::parse("windows2019", none, Timestamp(0)), Err(TkeRuleError::UnknownOs(_))));
    }

    fn app(status: BetaStatus, at: i64) -> BetaApplication {
        BetaApplication {
            id: ApplicationId::from_random([u8::try_from(at).unwrap_or(0); 8]),
            account: AccountId(1),
            os_name: "centos8.0x86_64".into(),
            reason: "testing".into(),
            status,
            decision_reason: (status == BetaStatus::Rejected).then(|| "not yet".into()),
            created_at: Timestamp(at),
            decided_at: None,
        }
    }

    #[test]
    fn beta_needs_an_approved_application() {
        let beta = os_row("centos8.0x86_64").expect("row");
        assert!(beta_gate(os_row("centos7.6.0_x64").expect("row"), &[]).is_ok());
        assert!(matches!(beta_gate(beta, &[]), Err(BetaGate::NotApplied(_))));
        assert!(matches!(beta_gate(beta, &[app(BetaStatus::Pending, 1)]), Err(BetaGate::Pending(..))));
        let rejected = beta_gate(beta, &[app(BetaStatus::Rejected, 1)]).expect_err("rejected");
        assert!(rejected.to_string().contains("not yet"), "{rejected}");
        assert!(beta_gate(beta, &[app(BetaStatus::Rejected, 1), app(BetaStatus::Approved, 2)]).is_ok());
        assert!(rejected.to_string().contains("ApplyForBetaImage"));
    }

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
