//! TKE (`2018-05-25`) actions: the OS catalogue (`DescribeOSImages`, TKE's `DescribeImages`)
//! here, clusters and their nodes in [`clusters`], node pools in [`pools`]. Request and
//! response shapes are the official SDK's models; errors are TKE's codes.

mod clusters;
mod pools;

use imaged_app::tke::TkeError;
use imaged_domain::query::Page;
use imaged_domain::tke::{NodeRole, ResolvedOs, TkeRuleError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cvm::{parse, to_json, Ctx, FilterIn};
use crate::error::{code, ApiError};
use crate::params::{opt, Field, Ty, FILTER};

/// TKE's service name and the version served.
pub(crate) const SERVICE: &str = "tke";
/// The API version.
pub(crate) const VERSION: &str = "2018-05-25";

/// The TKE actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TkeAction {
    DescribeOsImages,
    DescribeImages,
    CreateCluster,
    DescribeClusters,
    ModifyClusterImage,
    DeleteCluster,
    CreateClusterNodePool,
    DescribeClusterNodePools,
    DescribeClusterNodePoolDetail,
    ModifyClusterNodePool,
    ModifyNodePoolDesiredCapacityAboutAsg,
    DeleteClusterNodePool,
    CreateClusterInstances,
    AddExistedInstances,
    DescribeClusterInstances,
    DeleteClusterInstances,
    UpgradeClusterInstances,
}

/// Each action's wire name and parameters.
pub(crate) const ACTIONS: &[(&str, &[Field], TkeAction)] = &[
    ("DescribeOSImages", DESCRIBE_OS_IMAGES, TkeAction::DescribeOsImages),
    ("DescribeImages", &[], TkeAction::DescribeImages),
    ("CreateCluster", clusters::CREATE_CLUSTER, TkeAction::CreateCluster),
    ("DescribeClusters", clusters::DESCRIBE_CLUSTERS, TkeAction::DescribeClusters),
    ("ModifyClusterImage", clusters::MODIFY_CLUSTER_IMAGE, TkeAction::ModifyClusterImage),
    ("DeleteCluster", clusters::DELETE_CLUSTER, TkeAction::DeleteCluster),
    ("CreateClusterNodePool", pools::CREATE_CLUSTER_NODE_POOL, TkeAction::CreateClusterNodePool),
    ("DescribeClusterNodePools", pools::DESCRIBE_CLUSTER_NODE_POOLS, TkeAction::DescribeClusterNodePools),
    ("DescribeClusterNodePoolDetail", pools::DESCRIBE_NODE_POOL_DETAIL, TkeAction::DescribeClusterNodePoolDetail),
    ("ModifyClusterNodePool", pools::MODIFY_CLUSTER_NODE_POOL, TkeAction::ModifyClusterNodePool),
    (
        "ModifyNodePoolDesiredCapacityAboutAsg",
        pools::MODIFY_DESIRED_CAPACITY,
        TkeAction::ModifyNodePoolDesiredCapacityAboutAsg,
    ),
    ("DeleteClusterNodePool", pools::DELETE_CLUSTER_NODE_POOL, TkeAction::DeleteClusterNodePool),
    ("CreateClusterInstances", clusters::CREATE_CLUSTER_INSTANCES, TkeAction::CreateClusterInstances),
    ("AddExistedInstances", clusters::ADD_EXISTED_INSTANCES, TkeAction::AddExistedInstances),
    ("DescribeClusterInstances", clusters::DESCRIBE_CLUSTER_INSTANCES, TkeAction::DescribeClusterInstances),
    ("DeleteClusterInstances", clusters::DELETE_CLUSTER_INSTANCES, TkeAction::DeleteClusterInstances),
    ("UpgradeClusterInstances", clusters::UPGRADE_CLUSTER_INSTANCES, TkeAction::UpgradeClusterInstances),
];

/// Whether an action needs `X-TC-Region` (everything but the OS catalogue).
pub(crate) fn needs_region(action: TkeAction) -> bool {
    !matches!(action, TkeAction::DescribeOsImages | TkeAction::DescribeImages)
}

/// Runs a TKE action.
pub(crate) async fn dispatch(ctx: &Ctx<'_>, action: TkeAction, params: Value) -> Result<Vec<u8>, ApiError> {
    use TkeAction as A;
    match action {
        A::DescribeOsImages => describe_os_images(ctx, params).await,
        A::DescribeImages => describe_images(ctx).await,
        A::CreateCluster => clusters::create_cluster(ctx, params).await,
        A::DescribeClusters => clusters::describe_clusters(ctx, params).await,
        A::ModifyClusterImage => clusters::modify_cluster_image(ctx, params).await,
        A::DeleteCluster => clusters::delete_cluster(ctx, params).await,
        A::CreateClusterNodePool => pools::create_node_pool(ctx, params).await,
        A::DescribeClusterNodePools => pools::describe_node_pools(ctx, params).await,
        A::DescribeClusterNodePoolDetail => pools::node_pool_detail(ctx, params).await,
        A::ModifyClusterNodePool => pools::modify_node_pool(ctx, params).await,
        A::ModifyNodePoolDesiredCapacityAboutAsg => pools::set_desired_capacity(ctx, params).await,
        A::DeleteClusterNodePool => pools::delete_node_pools(ctx, params).await,
        A::CreateClusterInstances => clusters::create_cluster_instances(ctx, params).await,
        A::AddExistedInstances => clusters::add_existed_instances(ctx, params).await,
        A::DescribeClusterInstances => clusters::describe_cluster_instances(ctx, params).await,
        A::DeleteClusterInstances => clusters::delete_cluster_instances(ctx, params).await,
        A::UpgradeClusterInstances => clusters::upgrade_cluster_instances(ctx, params).await,
    }
}

/// Where an action's "not found" errors point: TKE spells them differently per action.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codes {
    /// No such cluster.
    pub(crate) cluster: &'static str,
    /// No usable image for the OS reference.
    pub(crate) image: &'static str,
}

/// The codes most actions use.
pub(crate) const CODES: Codes = Codes { cluster: code::RESOURCE_CLUSTER_NOT_FOUND, image: code::IMAGE_ID_NOT_FOUND };

/// A TKE refusal in TKE's codes.
pub(crate) fn tke_error(e: TkeError, codes: Codes) -> ApiError {
    use TkeError as E;
    let c = match &e {
        E::Rule(TkeRuleError::UnknownOs(_) | TkeRuleError::Retired(..)) => code::OS_NOT_SUPPORT,
        E::Rule(TkeRuleError::MalformedImage(_)) | E::ImageNotFound(_) => codes.image,
        E::Rule(TkeRuleError::NoticeTooShort(..)) | E::Param(_) | E::ClusterMalformed(_) | E::PoolMalformed(_) => {
            code::TKE_PARAM
        }
        E::Beta(_) | E::Denied(_) => code::OPERATION_DENIED,
        E::ClusterNotFound(_) => codes.cluster,
        E::PoolNotFound(_) => code::RESOURCE_NOT_FOUND,
        E::Instance(_) => {
            let E::Instance(inner) = e else { return ApiError::internal(&"unreachable") };
            return crate::compute::instance_error(inner);
        }
        E::App(inner) => return ApiError::internal(inner),
    };
    ApiError::invalid_value(c, format!("{e}."))
}

/// A parameter TKE refuses, as `InvalidParameter.Param`.
pub(crate) fn param(what: impl Into<String>) -> ApiError {
    ApiError::invalid_value(code::TKE_PARAM, what.into())
}

/// A role as the wire spells it.
pub(crate) fn role(s: Option<&str>) -> Result<NodeRole, ApiError> {
    match s {
        None => Ok(NodeRole::Worker),
        Some(r) => NodeRole::parse(r).ok_or_else(|| param(format!("`{r}` is not a node role (WORKER, MASTER_ETCD…)."))),
    }
}

/// A page with TKE's bounds (`Limit` ≤ 100).
pub(crate) fn page(offset: Option<i64>, limit: Option<i64>) -> Result<Page, ApiError> {
    let non_negative = |v: Option<i64>, name: &str| {
        v.map(|n| u64::try_from(n).map_err(|_| param(format!("{name} must not be negative.")))).transpose()
    };
    Page::new(non_negative(offset, "Offset")?, non_negative(limit, "Limit")?)
        .map_err(|_| param("Limit must be at most 100."))
}

/// A count that must not be negative.
pub(crate) fn count(v: Option<i64>, name: &str) -> Result<Option<u64>, ApiError> {
    v.map(|n| u64::try_from(n).map_err(|_| param(format!("{name} must not be negative.")))).transpose()
}

const DESCRIBE_OS_IMAGES: &[Field] = &[opt("Filters", Ty::List(&Ty::Obj(FILTER)))];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FiltersIn {
    filters: Option<Vec<FilterIn>>,
}

/// `OSImage`, with the seed's columns a client can read beyond it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OsImageOut<'a> {
    series_name: &'a str,
    alias: &'a str,
    os_name: &'a str,
    os_customize_type: &'static str,
    status: &'static str,
    image_id: String,
    arch: &'a str,
    os_type: &'a str,
    release_status: &'static str,
    application_required: bool,
    recommended: bool,
    market_image: bool,
    kernel_version: Option<&'a str>,
    remarks: &'a [&'a str],
}

fn os_image_out(r: &ResolvedOs) -> OsImageOut<'_> {
    OsImageOut {
        series_name: r.row.series,
        alias: r.row.alias,
        os_name: r.row.os_name,
        os_customize_type: "GENERAL",
        status: r.status(),
        image_id: r.image_id.to_string(),
        arch: r.row.arch,
        os_type: r.row.os_type,
        release_status: if r.row.beta { "BETA" } else { "OFFICIAL" },
        application_required: r.row.beta,
        recommended: r.row.recommended,
        market_image: r.row.market,
        kernel_version: r.row.kernel,
        remarks: r.row.remarks,
    }
}

/// `DescribeOSImages`. Filters (undocumented by Tencent) on `OsName`, `SeriesName`, `Status`
/// and `ImageId` keep the rows with one of the values.
async fn describe_os_images(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: FiltersIn = parse(params)?;
    let rows = ctx.service.tke_os_images().await?;
    let mut kept = Vec::new();
    'rows: for r in &rows {
        for f in req.filters.iter().flatten() {
            let value = match f.name.as_str() {
                "OsName" => r.row.os_name.to_owned(),
                "SeriesName" => r.row.series.to_owned(),
                "Status" => r.status().to_owned(),
                "ImageId" => r.image_id.to_string(),
                other => return Err(param(format!("`{other}` is not a filter of DescribeOSImages."))),
            };
            if !f.values.contains(&value) {
                continue 'rows;
            }
        }
        kept.push(os_image_out(r));
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: usize,
        #[serde(rename = "OSImageSeriesSet")]
        set: Vec<OsImageOut<'a>>,
    }
    to_json(&Out { total_count: kept.len(), set: kept })
}

/// TKE's `DescribeImages`: the OS images new nodes can use now.
async fn describe_images(ctx: &Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct ImageInstance<'a> {
        alias: &'a str,
        os_name: &'a str,
        image_id: String,
        os_customize_type: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: usize,
        image_instance_set: Vec<ImageInstance<'a>>,
    }
    let rows = ctx.service.tke_os_images().await?;
    let set: Vec<ImageInstance<'_>> = rows
        .iter()
        .filter(|r| r.retired_at.is_none())
        .map(|r| ImageInstance {
            alias: r.row.alias,
            os_name: r.row.os_name,
            image_id: r.image_id.to_string(),
            os_customize_type: "GENERAL",
        })
        .collect();
    to_json(&Out { total_count: set.len(), image_instance_set: set })
}
