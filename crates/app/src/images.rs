//! The custom-image lifecycle after creation: `ModifyImageAttribute`, `DeleteImages`,
//! `DescribeImageFromFamily`, and how a caller sees one image (own, shared with it, catalogue).

use imaged_domain::import::check_family;
use imaged_domain::rules::{self, validate_image_description, validate_image_name, NameError};
use imaged_domain::{AccountId, Image, ImageId, ImageState, ImageType, Region};
use imaged_metastore::Refused;

use crate::service::{AppError, Service};

/// Why an image action is refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A malformed id.
    #[error("malformed image id `{0}`")]
    Malformed(String),
    /// Not an image the caller can see here.
    #[error("the image `{0}` does not exist")]
    NotFound(String),
    /// A public or marketplace image.
    #[error("`{0}` is not a custom image of yours")]
    NotCustom(String),
    /// An image shared with the caller (launch only).
    #[error("`{0}` is shared with you: it can only launch instances")]
    Shared(String),
    /// The image's state forbids the action.
    #[error("the image `{0}` is {1}")]
    State(String, ImageState),
    /// The image is shared with other accounts.
    #[error("the image `{0}` is shared with other accounts; cancel the sharing first")]
    InShared(String),
    /// Name or description.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Name taken.
    #[error("an image named `{0}` already exists")]
    DuplicateName(String),
    /// A malformed family.
    #[error("malformed image family `{0}`")]
    Family(String),
    /// More ids than allowed.
    #[error("at most {0} image ids are allowed")]
    TooMany(usize),
    /// The store failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<imaged_metastore::MetaStoreError> for ImageError {
    fn from(e: imaged_metastore::MetaStoreError) -> Self {
        Self::App(e.into())
    }
}

/// What `ModifyImageAttribute` changes (absent fields stay).
#[derive(Debug, Clone, Default)]
pub struct ImageChanges {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New family (empty clears it).
    pub family: Option<String>,
    /// Deprecated or not.
    pub deprecated: Option<bool>,
}

/// Image ids one `DeleteImages` call may name.
pub const MAX_DELETE_IDS: usize = 100;

impl Service {
    /// The image `id` as `caller` sees it in `region`, or `None` when it may not see it.
    pub async fn seen_image(
        &self,
        caller: AccountId,
        region: &Region,
        id: &ImageId,
    ) -> Result<Option<(Image, ImageType)>, AppError> {
        let Some(image) = self.store().get_image(id).await? else { return Ok(None) };
        let shared = image.owner.is_some_and(|o| o != caller)
            && self.store().image_shares(id).await?.iter().any(|(a, _)| *a == caller);
        Ok(rules::seen_as(&image, caller, region, shared).map(|seen| (image, seen)))
    }

    /// A custom image the caller owns in `region`.
    pub(crate) async fn own_custom_image(
        &self,
        caller: AccountId,
        region: &Region,
        raw: &str,
    ) -> Result<Image, ImageError> {
        let id = ImageId::parse(raw).map_err(|_| ImageError::Malformed(raw.to_owned()))?;
        let (image, seen) =
            self.seen_image(caller, region, &id).await?.ok_or_else(|| ImageError::NotFound(raw.to_owned()))?;
        match seen {
            ImageType::PrivateImage => Ok(image),
            ImageType::SharedImage => Err(ImageError::Shared(raw.to_owned())),
            ImageType::PublicImage | ImageType::MarketImage => Err(ImageError::NotCustom(raw.to_owned())),
        }
    }

    /// A custom image the caller owns in `region`, in a settled state (not being created,
    /// imported or copied, whose job would overwrite a change).
    async fn own_settled_image(&self, caller: AccountId, region: &Region, raw: &str) -> Result<Image, ImageError> {
        let image = self.own_custom_image(caller, region, raw).await?;
        if !image.state.is_deletable() {
            return Err(ImageError::State(raw.to_owned(), image.state));
        }
        Ok(image)
    }

    /// `ModifyImageAttribute`: rename (unique per account and region), describe, set the
    /// family, deprecate.
    pub async fn modify_image(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        changes: ImageChanges,
    ) -> Result<(), ImageError> {
        let mut image = self.own_settled_image(caller, region, id).await?;
        if let Some(name) = changes.name {
            validate_image_name(&name)?;
            image.name = name;
        }
        if let Some(d) = changes.description {
            validate_image_description(&d)?;
            image.description = d;
        }
        if let Some(f) = changes.family {
            if !f.is_empty() {
                check_family(&f).map_err(|_| ImageError::Family(f.clone()))?;
            }
            image.family = f;
        }
        if let Some(d) = changes.deprecated {
            image.deprecated = d;
        }
        match self.store().update_custom_image(&image).await? {
            Ok(()) => Ok(()),
            Err(Refused::DuplicateName) => Err(ImageError::DuplicateName(image.name)),
            Err(other) => Err(AppError::Conflict(format!("{other:?}")).into()),
        }
    }

    /// `DeleteImages`: every image is checked first (own custom image, settled, shared with
    /// nobody), then each is deleted with its manifest; its blocks go to GC once nothing else
    /// references them. Instances already launched keep their disks (their bases stay).
    pub async fn delete_images(
        &self,
        caller: AccountId,
        region: &Region,
        ids: &[String],
        dry_run: bool,
    ) -> Result<(), ImageError> {
        if ids.len() > MAX_DELETE_IDS {
            return Err(ImageError::TooMany(MAX_DELETE_IDS));
        }
        let mut images = Vec::with_capacity(ids.len());
        for raw in ids {
            let image = self.own_custom_image(caller, region, raw).await?;
            if !image.state.is_deletable() && image.state != ImageState::Importing {
                return Err(ImageError::State(raw.clone(), image.state));
            }
            if !self.store().image_shares(&image.id).await?.is_empty() {
                return Err(ImageError::InShared(raw.clone()));
            }
            images.push(image);
        }
        if dry_run {
            return Ok(());
        }
        for image in images {
            match self.store().delete_image(&image.id, self.clock_now()).await? {
                Ok(_) => tracing::info!(image = %image.id, "image deleted"),
                Err(Refused::InShared) => return Err(ImageError::InShared(image.id.to_string())),
                Err(Refused::WrongState) => return Err(ImageError::State(image.id.to_string(), ImageState::Syncing)),
                Err(other) => return Err(AppError::Conflict(format!("{other:?}")).into()),
            }
        }
        Ok(())
    }

    /// `DescribeImageFromFamily`: the newest NORMAL, non-deprecated image of `family` the
    /// caller can see in `region`.
    pub async fn image_from_family(
        &self,
        caller: AccountId,
        region: &Region,
        family: &str,
    ) -> Result<Option<(Image, ImageType)>, AppError> {
        let mut best: Option<(Image, ImageType)> = None;
        for v in self.store().visible_images(caller, &region.region).await? {
            let Some(seen) = rules::seen_as(&v.image, caller, region, v.shared_with_caller) else { continue };
            let i = &v.image;
            if i.family != family || i.state != ImageState::Normal || i.deprecated {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| (i.created_at, &i.id) > (b.created_at, &b.id)) {
                best = Some((v.image, seen));
            }
        }
        Ok(best)
    }
}
