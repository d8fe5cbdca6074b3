//! TKE node operating systems: the OS catalogue as it stands today (image-logic changes
//! applied by the service's clock), which OS a reference means and whether the caller may use
//! it (beta gating, retirement, launchability), beta applications, and the operator's
//! scheduling of image-logic changes with their announcements.
//!
//! Layout: this file (catalogue, references, beta, changes); [`clusters`] (clusters and the
//! nodes of a cluster); [`pools`] (node pools and their scaling).

pub mod clusters;
pub mod pools;

use imaged_domain::instance::InstanceRuleError;
use imaged_domain::time::Timestamp;
use imaged_domain::tke::{
    beta_gate, catalogue_at, change_announcement, check_notice, os_row, resolve_os, BetaApplication, BetaGate,
    BetaStatus, ChangeAction, Message, OsChange, OsRef, ResolvedOs, TkeRuleError, IMAGE_CHANGE_CATEGORY,
};
use imaged_domain::{AccountId, ApplicationId, Image, ImageId, ImageKind, ImageState, MessageId, Region};
use imaged_metastore::{MetaStoreError, Refused, TkeWrite};

use crate::instances::InstanceError;
use crate::secrets::random_bytes;
use crate::service::{AppError, Service};

/// Why a TKE request is refused.
#[derive(Debug, thiserror::Error)]
pub enum TkeError {
    /// The seed's rules (unknown or retired OS, malformed image, notice).
    #[error(transparent)]
    Rule(#[from] TkeRuleError),
    /// A beta OS the caller may not use yet.
    #[error(transparent)]
    Beta(#[from] BetaGate),
    /// The OS reference names an image the caller cannot launch here.
    #[error("the image `{0}` does not exist or cannot be used here")]
    ImageNotFound(String),
    /// A malformed cluster id.
    #[error("malformed cluster id `{0}`")]
    ClusterMalformed(String),
    /// No cluster of the caller's has that id in the region.
    #[error("the cluster `{0}` does not exist")]
    ClusterNotFound(String),
    /// A malformed node pool id.
    #[error("malformed node pool id `{0}`")]
    PoolMalformed(String),
    /// No node pool of that id in the cluster.
    #[error("the node pool `{0}` does not exist in the cluster")]
    PoolNotFound(String),
    /// A parameter the action cannot take.
    #[error("{0}")]
    Param(String),
    /// The state of a resource forbids the operation (deletion protection, retired OS…).
    #[error("{0}")]
    Denied(String),
    /// The instance machinery refused (zone, count, state, busy).
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The store failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<MetaStoreError> for TkeError {
    fn from(e: MetaStoreError) -> Self {
        Self::App(e.into())
    }
}

impl From<crate::secrets::SecretsError> for TkeError {
    fn from(e: crate::secrets::SecretsError) -> Self {
        Self::App(e.into())
    }
}

/// An OS reference the caller may use now: what it is stored as, and the image new nodes get.
#[derive(Debug, Clone)]
pub struct UsableOs {
    /// The reference (`ClusterOs`, `NodePoolOs`).
    pub reference: OsRef,
    /// The image it means today.
    pub image: Image,
}

/// The default cluster OS: the one the seed recommends.
pub const DEFAULT_OS: &str = "tlinux3.1x86_64";

fn image_refused(e: InstanceError, text: &str) -> TkeError {
    match e {
        InstanceError::ImageMalformed(_) | InstanceError::ImageNotFound(_) | InstanceError::ImageState(..) => {
            TkeError::ImageNotFound(text.to_owned())
        }
        other => TkeError::Instance(other),
    }
}

impl Service {
    /// Every image-logic change, scheduled or in effect.
    pub async fn os_changes(&self) -> Result<Vec<OsChange>, AppError> {
        Ok(self.store().os_changes().await?)
    }

    /// `DescribeOSImages`: the catalogue as it stands now.
    pub async fn tke_os_images(&self) -> Result<Vec<ResolvedOs>, AppError> {
        Ok(catalogue_at(&self.os_changes().await?, self.clock_now()))
    }

    /// The image an OS reference means now, without checking who may use it (for display).
    pub(crate) fn os_image_now(&self, reference: &str, changes: &[OsChange]) -> Option<ImageId> {
        match OsRef::from_stored(reference) {
            OsRef::Image(id) => Some(id),
            OsRef::Name(name) => resolve_os(&name, changes, self.clock_now()).map(|r| r.image_id),
        }
    }

    /// The OS `text` refers to, if `caller` may use it in `region` now: a catalogue name that
    /// is not retired (and, in beta, with an approved application) whose image the caller can
    /// launch here, or an image id the caller may launch (its own, one shared with it, a
    /// market image).
    pub async fn usable_os(&self, caller: AccountId, region: &Region, text: &str) -> Result<UsableOs, TkeError> {
        let changes = self.os_changes().await?;
        let now = self.clock_now();
        let reference = OsRef::parse(text, &changes, now)?;
        let image_id = match &reference {
            OsRef::Name(name) => {
                let resolved = resolve_os(name, &changes, now).ok_or_else(|| TkeRuleError::UnknownOs(name.clone()))?;
                if let Some(at) = resolved.retired_at {
                    return Err(TkeRuleError::Retired(name.clone(), at.iso8601()).into());
                }
                beta_gate(resolved.row, &self.store().beta_applications(Some(caller)).await?)?;
                resolved.image_id
            }
            OsRef::Image(id) => id.clone(),
        };
        let image =
            self.launchable_image(caller, region, image_id.as_str()).await.map_err(|e| image_refused(e, text))?;
        Ok(UsableOs { reference, image })
    }

    /// `ApplyForBetaImage`: files `caller`'s application to use the beta OS `os_name`; an
    /// application already pending or approved is returned as it is.
    pub async fn apply_for_beta(
        &self,
        caller: AccountId,
        os_name: &str,
        reason: &str,
    ) -> Result<BetaApplication, TkeError> {
        let row = os_row(os_name).ok_or_else(|| TkeRuleError::UnknownOs(os_name.to_owned()))?;
        if !row.beta {
            return Err(TkeError::Param(format!("the OS `{os_name}` is not in beta test: no application is needed")));
        }
        let mine = self.store().beta_applications(Some(caller)).await?;
        if let Some(open) = mine
            .into_iter()
            .rev()
            .find(|a| a.os_name == os_name && matches!(a.status, BetaStatus::Pending | BetaStatus::Approved))
        {
            return Ok(open);
        }
        let application = BetaApplication {
            id: ApplicationId::from_random(random_bytes()?),
            account: caller,
            os_name: os_name.to_owned(),
            reason: reason.to_owned(),
            status: BetaStatus::Pending,
            decision_reason: None,
            created_at: self.clock_now(),
            decided_at: None,
        };
        self.store().insert_beta_application(&application).await?;
        Ok(application)
    }

    /// The beta applications of one account, or of all (operator).
    pub async fn beta_applications(&self, account: Option<AccountId>) -> Result<Vec<BetaApplication>, AppError> {
        Ok(self.store().beta_applications(account).await?)
    }

    /// Approves or rejects (with a reason) a pending application (operator).
    pub async fn decide_beta(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
    ) -> Result<BetaApplication, TkeError> {
        let parsed = ApplicationId::parse(id).map_err(|e| TkeError::Param(e.to_string()))?;
        let status = if approve { BetaStatus::Approved } else { BetaStatus::Rejected };
        if !approve && reason.is_none_or(|r| r.trim().is_empty()) {
            return Err(TkeError::Param("a rejection needs a reason".into()));
        }
        if !self.store().decide_beta_application(&parsed, status, reason, self.clock_now()).await? {
            return Err(TkeError::Param(format!("no pending application {id}")));
        }
        let all = self.store().beta_applications(None).await?;
        all.into_iter().find(|a| a.id == parsed).ok_or_else(|| TkeError::Param(format!("no application {id}")))
    }

    /// Schedules an image-logic change (operator): at least a week ahead by the service's
    /// clock; every account with a cluster or node pool on the OS is told now, in its message
    /// centre and through its webhook if it has one. Returns the change and how many accounts
    /// were told.
    pub async fn schedule_os_change(
        &self,
        os_name: &str,
        action: ChangeAction,
        effective: Timestamp,
        note: &str,
    ) -> Result<(OsChange, usize), TkeError> {
        let row = os_row(os_name).ok_or_else(|| TkeRuleError::UnknownOs(os_name.to_owned()))?;
        if let ChangeAction::Remap(image) = &action {
            let kind = if row.market { ImageKind::Market } else { ImageKind::Public };
            let found = self.store().get_image(image).await?;
            if !found.is_some_and(|i| i.kind == kind && i.state == ImageState::Normal) {
                return Err(TkeError::ImageNotFound(image.to_string()));
            }
        }
        let now = self.clock_now();
        check_notice(now, effective)?;
        let change = OsChange {
            id: 0,
            os_name: os_name.to_owned(),
            action,
            effective_at: effective,
            scheduled_at: now,
            note: note.to_owned(),
        };
        let (title, content) = change_announcement(&change, row);
        let users = self.store().os_users(os_name).await?;
        let mut messages = Vec::with_capacity(users.len());
        let mut deliveries = Vec::new();
        for account in &users {
            let message = Message {
                id: MessageId::from_random(random_bytes()?),
                account: *account,
                category: IMAGE_CHANGE_CATEGORY.into(),
                title: title.clone(),
                content: content.clone(),
                created_at: now,
                effective_at: Some(effective),
                read: false,
            };
            if let Some(url) = self.store().webhook(*account).await? {
                deliveries.push(crate::messages::delivery_job(&message, &url, now)?);
            }
            messages.push(message);
        }
        let id = self.store().schedule_os_change(&change, &messages, &deliveries).await?;
        if !deliveries.is_empty() {
            self.wake_workers();
        }
        Ok((OsChange { id, ..change }, users.len()))
    }

    /// Writes `write` at once; wakes the workers for its jobs.
    pub(crate) async fn commit_tke(&self, write: &TkeWrite) -> Result<(), TkeError> {
        match self.store().tke_write(write).await? {
            Ok(()) => {
                if !write.jobs.is_empty() {
                    self.wake_workers();
                }
                Ok(())
            }
            Err(Refused::Busy) => Err(InstanceError::Rule(InstanceRuleError::Busy).into()),
            Err(Refused::DuplicateId) => {
                Err(TkeError::Param("an instance is already a node of another cluster".into()))
            }
            Err(Refused::WrongState) => Err(TkeError::Denied(
                "the node pool changed meanwhile (another request); read it again and retry".into(),
            )),
            Err(other) => Err(AppError::Conflict(format!("{other:?}")).into()),
        }
    }
}
