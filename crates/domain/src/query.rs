//! `DescribeImages` as a pure query: validated ids or filters, a matcher, ordering and paging.
//!
//! The store fetches the images a caller can see in a region (a small set, bounded by the
//! quota, the shares it received and the catalogue); this module filters and pages them.

use crate::ids::ImageId;
use crate::image::{Architecture, Image, ImageType};

/// At most this many filters per request.
pub const MAX_FILTERS: usize = 10;
/// At most this many values per filter.
pub const MAX_FILTER_VALUES: usize = 5;
/// At most this many ids in `ImageIds`.
pub const MAX_IMAGE_IDS: usize = 100;
/// Default page size.
pub const DEFAULT_LIMIT: u64 = 20;
/// Largest page size.
pub const MAX_LIMIT: u64 = 100;

/// A filter as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Filter {
    /// Filter name, e.g. `image-type`.
    pub name: String,
    /// Values, ORed.
    pub values: Vec<String>,
}

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `ImageIds` together with `Filters`.
    #[error("ImageIds and Filters cannot be specified at the same time")]
    IdsAndFilters,
    /// Unknown filter name.
    #[error("unknown filter name `{0}`")]
    UnknownFilter(String),
    /// More than [`MAX_FILTERS`] filters.
    #[error("at most {MAX_FILTERS} filters are allowed")]
    TooManyFilters,
    /// More than [`MAX_FILTER_VALUES`] values in one filter.
    #[error("filter `{0}` has more than {MAX_FILTER_VALUES} values")]
    TooManyValues(String),
    /// A filter with no values.
    #[error("filter `{0}` has no values")]
    NoValues(String),
    /// More than [`MAX_IMAGE_IDS`] ids.
    #[error("at most {MAX_IMAGE_IDS} image ids are allowed")]
    TooManyIds,
    /// An id in `ImageIds` or an `image-id` filter value is malformed.
    #[error("malformed image id `{0}`")]
    MalformedImageId(String),
    /// An `image-type` value that is not an image type.
    #[error("`{0}` is not an image type (PUBLIC_IMAGE, PRIVATE_IMAGE, SHARED_IMAGE, MARKET_IMAGE)")]
    BadImageType(String),
    /// An id in `InstanceIds` or an `instance-id` filter value is malformed.
    #[error("malformed instance id `{0}`")]
    MalformedInstanceId(String),
    /// `Limit` above [`MAX_LIMIT`].
    #[error("Limit must be at most {MAX_LIMIT}")]
    LimitTooLarge,
}

/// One validated filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Criterion {
    ImageId(Vec<String>),
    ImageType(Vec<ImageType>),
    NameContains(Vec<String>),
    PlatformContains(Vec<String>),
    TagKey(Vec<String>),
    TagValue(Vec<String>),
    Tag {
        key: String,
        values: Vec<String>,
    },
    /// No image lives on a dedicated cluster (CDC) in this deployment: matches nothing.
    Dedicated,
}

/// A validated `DescribeImages` query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageQuery {
    ids: Option<Vec<ImageId>>,
    criteria: Vec<Criterion>,
    architectures: Option<Vec<Architecture>>,
}

fn lower(values: &[String]) -> Vec<String> {
    values.iter().map(|v| v.to_lowercase()).collect()
}

impl ImageQuery {
    /// Validates `ImageIds` xor `Filters`.
    pub fn new(ids: Option<&[String]>, filters: Option<&[Filter]>) -> Result<Self, QueryError> {
        if ids.is_some() && filters.is_some() {
            return Err(QueryError::IdsAndFilters);
        }
        let ids = match ids {
            None => None,
            Some(ids) if ids.len() > MAX_IMAGE_IDS => return Err(QueryError::TooManyIds),
            Some(ids) => Some(
                ids.iter()
                    .map(|s| ImageId::parse(s).map_err(|_| QueryError::MalformedImageId(s.clone())))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let filters = filters.unwrap_or_default();
        if filters.len() > MAX_FILTERS {
            return Err(QueryError::TooManyFilters);
        }
        let criteria = filters.iter().map(Self::criterion).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ids, criteria, architectures: None })
    }

    /// Restricts the query to images of these architectures (`DescribeImages.InstanceType`).
    pub fn restrict_architectures(mut self, architectures: &[Architecture]) -> Self {
        self.architectures = Some(architectures.to_vec());
        self
    }

    fn criterion(f: &Filter) -> Result<Criterion, QueryError> {
        if f.values.len() > MAX_FILTER_VALUES {
            return Err(QueryError::TooManyValues(f.name.clone()));
        }
        if f.values.is_empty() {
            return Err(QueryError::NoValues(f.name.clone()));
        }
        let v = &f.values;
        Ok(match f.name.as_str() {
            "image-id" => {
                for s in v {
                    ImageId::parse(s).map_err(|_| QueryError::MalformedImageId(s.clone()))?;
                }
                Criterion::ImageId(v.clone())
            }
            "image-type" => Criterion::ImageType(
                v.iter()
                    .map(|s| ImageType::parse(s).ok_or_else(|| QueryError::BadImageType(s.clone())))
                    .collect::<Result<_, _>>()?,
            ),
            "image-name" => Criterion::NameContains(lower(v)),
            "platform" => Criterion::PlatformContains(lower(v)),
            "tag-key" => Criterion::TagKey(v.clone()),
            "tag-value" => Criterion::TagValue(v.clone()),
            "dedicated-cluster-id" | "cdc-cache-status" => Criterion::Dedicated,
            name => match name.strip_prefix("tag:") {
                Some(key) if !key.is_empty() => Criterion::Tag { key: key.to_owned(), values: v.clone() },
                _ => return Err(QueryError::UnknownFilter(name.to_owned())),
            },
        })
    }

    /// Whether `image`, seen by the caller as `seen_as`, matches every filter.
    pub fn matches(&self, image: &Image, seen_as: ImageType) -> bool {
        if let Some(ids) = &self.ids {
            if !ids.contains(&image.id) {
                return false;
            }
        }
        if let Some(archs) = &self.architectures {
            if !archs.contains(&image.architecture) {
                return false;
            }
        }
        self.criteria.iter().all(|c| match c {
            Criterion::ImageId(ids) => ids.iter().any(|i| i == image.id.as_str()),
            Criterion::ImageType(types) => types.contains(&seen_as),
            Criterion::NameContains(subs) => {
                let name = image.name.to_lowercase();
                subs.iter().any(|s| name.contains(s.as_str()))
            }
            Criterion::PlatformContains(subs) => {
                let platform = image.platform.to_lowercase();
                subs.iter().any(|s| platform.contains(s.as_str()))
            }
            Criterion::TagKey(keys) => image.tags.iter().any(|t| keys.contains(&t.key)),
            Criterion::TagValue(values) => image.tags.iter().any(|t| values.contains(&t.value)),
            Criterion::Tag { key, values } => image.tags.iter().any(|t| &t.key == key && values.contains(&t.value)),
            Criterion::Dedicated => false,
        })
    }

    /// The ids asked for, when the query is by `ImageIds`.
    pub fn ids(&self) -> Option<&[ImageId]> {
        self.ids.as_deref()
    }
}

/// A page request, validated: `Offset` default 0, `Limit` default 20, at most 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Items to skip.
    pub offset: u64,
    /// Items to return.
    pub limit: u64,
}

impl Page {
    /// Validates `Offset` and `Limit`.
    pub fn new(offset: Option<u64>, limit: Option<u64>) -> Result<Self, QueryError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit > MAX_LIMIT {
            return Err(QueryError::LimitTooLarge);
        }
        Ok(Self { offset: offset.unwrap_or(0), limit })
    }

    /// The slice of `items` this page covers.
    pub fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let len = items.len();
        let start = usize::try_from(self.offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(usize::try_from(self.limit).unwrap_or(usize::MAX)).min(len);
        &items[start..end]
    }
}

/// Sorts images for listing: newest first, ties broken by id, so pages are stable.
pub fn sort_for_listing<T>(items: &mut [T], image: impl Fn(&T) -> &Image) {
    items.sort_by(|a, b| {
        let (a, b) = (image(a), image(b));
        b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::public_images;
    use crate::image::Tag;

    fn filter(name: &str, values: &[&str]) -> Filter {
        Filter { name: name.into(), values: values.iter().map(|s| (*s).to_owned()).collect() }
    }

    fn tagged() -> Image {
        let mut img = public_images().remove(0);
        img.tags = vec![Tag { key: "env".into(), value: "prod".into() }];
        img
    }

    #[test]
    fn ids_and_filters_are_mutually_exclusive() {
        let ids = vec!["img-eb30mz89".to_owned()];
        assert_eq!(ImageQuery::new(Some(&ids), Some(&[])), Err(QueryError::IdsAndFilters));
    }

    #[test]
    fn limits_on_filters_values_and_ids() {
        let eleven: Vec<_> = (0..11).map(|_| filter("platform", &["x"])).collect();
        assert_eq!(ImageQuery::new(None, Some(&eleven)), Err(QueryError::TooManyFilters));
        let six = [filter("platform", &["a", "b", "c", "d", "e", "f"])];
        assert_eq!(ImageQuery::new(None, Some(&six)), Err(QueryError::TooManyValues("platform".into())));
        let ids: Vec<_> = (0..101).map(|_| "img-eb30mz89".to_owned()).collect();
        assert_eq!(ImageQuery::new(Some(&ids), None), Err(QueryError::TooManyIds));
        assert_eq!(
            ImageQuery::new(Some(&["img-BAD".to_owned()]), None),
            Err(QueryError::MalformedImageId("img-BAD".into()))
        );
    }

    #[test]
    fn unknown_filters_and_image_types_are_refused() {
        assert_eq!(
            ImageQuery::new(None, Some(&[filter("colour", &["red"])])),
            Err(QueryError::UnknownFilter("colour".into()))
        );
        assert_eq!(
            ImageQuery::new(None, Some(&[filter("tag:", &["x"])])),
            Err(QueryError::UnknownFilter("tag:".into()))
        );
        assert_eq!(
            ImageQuery::new(None, Some(&[filter("image-type", &["ALL"])])),
            Err(QueryError::BadImageType("ALL".into()))
        );
    }

    #[test]
    fn filters_and_across_names_and_or_within_values() {
        let img = tagged();
        let q = |fs: &[Filter]| ImageQuery::new(None, Some(fs)).expect("valid");
        assert!(q(&[filter("platform", &["tencent"])]).matches(&img, ImageType::PublicImage));
        assert!(q(&[filter("image-name", &["TK4", "nothing"])]).matches(&img, ImageType::PublicImage));
        assert!(q(&[filter("tag:env", &["dev", "prod"])]).matches(&img, ImageType::PublicImage));
        assert!(q(&[filter("tag-key", &["env"]), filter("tag-value", &["prod"])]).matches(&img, ImageType::PublicImage));
        assert!(!q(&[filter("tag:env", &["dev"])]).matches(&img, ImageType::PublicImage));
        assert!(!q(&[filter("platform", &["tencent"]), filter("image-type", &["PRIVATE_IMAGE"])])
            .matches(&img, ImageType::PublicImage));
        assert!(q(&[filter("image-type", &["PRIVATE_IMAGE", "PUBLIC_IMAGE"])]).matches(&img, ImageType::PublicImage));
        assert!(q(&[filter("image-id", &["img-eb30mz89"])]).matches(&img, ImageType::PublicImage));
        assert!(!q(&[filter("dedicated-cluster-id", &["cluster-1"])]).matches(&img, ImageType::PublicImage));
        assert!(!q(&[]).restrict_architectures(&[Architecture::Arm]).matches(&img, ImageType::PublicImage));
        assert!(q(&[]).restrict_architectures(&[Architecture::X86_64]).matches(&img, ImageType::PublicImage));
    }

    #[test]
    fn paging_defaults_caps_and_slices() {
        assert_eq!(Page::new(None, None), Ok(Page { offset: 0, limit: 20 }));
        assert_eq!(Page::new(None, Some(101)), Err(QueryError::LimitTooLarge));
        let items: Vec<u32> = (0..25).collect();
        assert_eq!(Page::new(Some(20), Some(10)).expect("page").slice(&items), &[20, 21, 22, 23, 24]);
        assert!(Page::new(Some(u64::MAX), Some(100)).expect("page").slice(&items).is_empty());
        assert!(Page::new(None, Some(0)).expect("page").slice(&items).is_empty());
    }

    #[test]
    fn listing_order_is_newest_first_then_by_id() {
        let mut imgs = public_images();
        sort_for_listing(&mut imgs, |i| i);
        assert!(imgs.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    }
}
