//! Sharing a custom image with other accounts of the same region
//! (`ModifyImageSharePermission`, `DescribeImageSharePermission`). The recipient sees it as
//! `SHARED_IMAGE` there and may only launch from it; cancelling stops new launches at once,
//! while instances already launched keep their disks.

use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageState, ImageType, LicenseType, Region};
use imaged_metastore::Refused;

use crate::images::ImageError;
use crate::service::{now, AppError, Service};

/// Why a sharing request is refused.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The image cannot be found or is not a custom image.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The caller does not own the image (a recipient, or a catalogue image).
    #[error("the image `{0}` does not belong to you")]
    NotOwner(String),
    /// Not NORMAL.
    #[error("the image `{0}` is {1}: only NORMAL images can be shared")]
    State(String, ImageState),
    /// Bring-your-own-licence images cannot be shared.
    #[error("BYOL images cannot be shared")]
    Byol,
    /// Not an account id, or no such account.
    #[error("the account `{0}` does not exist")]
    NoSuchAccount(String),
    /// The caller's own account.
    #[error("an image cannot be shared with its owner")]
    Yourself,
    /// Shared with that account already.
    #[error("the image is already shared with {0}")]
    AlreadyShared(AccountId),
    /// The share limit.
    #[error("an image can be shared with at most {0} accounts")]
    Limit(u32),
    /// `Permission` is neither SHARE nor CANCEL.
    #[error("Permission must be SHARE or CANCEL, not `{0}`")]
    Permission(String),
    /// The store failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<imaged_metastore::MetaStoreError> for ShareError {
    fn from(e: imaged_metastore::MetaStoreError) -> Self {
        Self::App(e.into())
    }
}

impl Service {
    /// A custom image the caller owns in `region` (sharing is the owner's alone).
    async fn owned_image(&self, caller: AccountId, region: &Region, raw: &str) -> Result<Image, ShareError> {
        let id = ImageId::parse(raw).map_err(|_| ImageError::Malformed(raw.to_owned()))?;
        match self.seen_image(caller, region, &id).await? {
            None => Err(ImageError::NotFound(raw.to_owned()).into()),
            Some((image, ImageType::PrivateImage)) => Ok(image),
            Some(_) => Err(ShareError::NotOwner(raw.to_owned())),
        }
    }

    /// `ModifyImageSharePermission`: `SHARE` with each account (existing, not the caller, up to
    /// the share limit; the image NORMAL and not BYOL), or `CANCEL` (accounts it is not shared
    /// with are ignored). Accounts are checked before any is shared.
    pub async fn modify_share_permission(
        &self,
        caller: AccountId,
        region: &Region,
        image_id: &str,
        accounts: &[String],
        permission: &str,
    ) -> Result<(), ShareError> {
        let share = match permission {
            "SHARE" => true,
            "CANCEL" => false,
            other => return Err(ShareError::Permission(other.to_owned())),
        };
        let image = self.owned_image(caller, region, image_id).await?;
        let mut targets = Vec::with_capacity(accounts.len());
        for raw in accounts {
            let account = AccountId::parse(raw).map_err(|_| ShareError::NoSuchAccount(raw.clone()))?;
            if share && account == caller {
                return Err(ShareError::Yourself);
            }
            if share && self.store().get_account(account).await?.is_none() {
                return Err(ShareError::NoSuchAccount(raw.clone()));
            }
            targets.push(account);
        }
        if !share {
            for account in targets {
                if self.store().unshare_image(&image.id, account).await? {
                    tracing::info!(image = %image.id, %account, "share cancelled");
                }
            }
            return Ok(());
        }
        if image.state != ImageState::Normal {
            return Err(ShareError::State(image_id.to_owned(), image.state));
        }
        if image.license_type == LicenseType::Byol {
            return Err(ShareError::Byol);
        }
        let limit = self.limits().shares_per_image;
        for account in targets {
            match self.store().share_image(&image.id, account, limit, now()).await? {
                Ok(()) => tracing::info!(image = %image.id, %account, "image shared"),
                Err(Refused::AlreadyShared) => return Err(ShareError::AlreadyShared(account)),
                Err(Refused::ShareLimit) => return Err(ShareError::Limit(limit)),
                Err(other) => return Err(AppError::Conflict(format!("{other:?}")).into()),
            }
        }
        Ok(())
    }

    /// `DescribeImageSharePermission`: the accounts the caller's image is shared with.
    pub async fn share_permissions(
        &self,
        caller: AccountId,
        region: &Region,
        image_id: &str,
    ) -> Result<Vec<(AccountId, Timestamp)>, ShareError> {
        let image = self.owned_image(caller, region, image_id).await?;
        Ok(self.store().image_shares(&image.id).await?)
    }
}
