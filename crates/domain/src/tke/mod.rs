//! TKE node operating systems (the seed `000`): the OS catalogue clusters and node pools choose
//! from, which level's OS each node operation uses, beta images behind an application, and
//! image-logic changes announced at least a week ahead.
//!
//! imaged runs no Kubernetes: a cluster is a group of this deployment's instances with the OS
//! policy TKE applies to them; a node is an instance with a role and, optionally, a pool.
//!
//! Layout: this file (image-logic changes, OS references, which level each operation uses,
//! beta gating); `catalogue` (the OS table); `cluster` (clusters, pools, nodes, their derived
//! states, messages), both re-exported here.

mod catalogue;
mod cluster;

pub use catalogue::{os_row, OsRow, OS_CATALOGUE};
pub use cluster::*;

use crate::ids::{AccountId, ApplicationId, ImageId};
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
}
