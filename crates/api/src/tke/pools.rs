//! TKE node pool actions: `CreateClusterNodePool`, `DescribeClusterNodePools`,
//! `DescribeClusterNodePoolDetail`, `ModifyClusterNodePool`,
//! `ModifyNodePoolDesiredCapacityAboutAsg`, `DeleteClusterNodePool`.

use imaged_app::tke::pools::{NewPool, NodeCounts, PoolChanges, PoolView};
use imaged_domain::tke::LaunchTemplate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clusters::parse_os_customize;
use super::{count, param, tke_error, Codes, CODES};
use crate::compute::{disk_gib, PlacementIn, SystemDiskIn};
use crate::cvm::{parse, to_json, Ctx, FilterIn};
use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty, FILTER};

const LABEL: &[Field] = &[req("Name", Ty::Str), req("Value", Ty::Str)];

/// `CreateClusterNodePool` parameters.
pub(super) const CREATE_CLUSTER_NODE_POOL: &[Field] = &[
    req("ClusterId", Ty::Str),
    req("AutoScalingGroupPara", Ty::Str),
    req("LaunchConfigurePara", Ty::Str),
    opt("InstanceAdvancedSettings", Ty::Any),
    req("EnableAutoscale", Ty::Bool),
    opt("Name", Ty::Str),
    opt("Labels", Ty::List(&Ty::Obj(LABEL))),
    opt("Taints", Ty::Any),
    opt("Annotations", Ty::Any),
    opt("ContainerRuntime", Ty::Str),
    opt("RuntimeVersion", Ty::Str),
    opt("NodePoolOs", Ty::Str),
    opt("OsCustomizeType", Ty::Str),
    opt("Tags", Ty::Any),
    opt("DeletionProtection", Ty::Bool),
    opt("SkipValidateOptions", Ty::List(&Ty::Str)),
];
/// `DescribeClusterNodePools` parameters.
pub(super) const DESCRIBE_CLUSTER_NODE_POOLS: &[Field] =
    &[req("ClusterId", Ty::Str), opt("Filters", Ty::List(&Ty::Obj(FILTER)))];
/// `DescribeClusterNodePoolDetail` parameters.
pub(super) const DESCRIBE_NODE_POOL_DETAIL: &[Field] = &[req("ClusterId", Ty::Str), req("NodePoolId", Ty::Str)];
/// `ModifyClusterNodePool` parameters.
pub(super) const MODIFY_CLUSTER_NODE_POOL: &[Field] = &[
    req("ClusterId", Ty::Str),
    req("NodePoolId", Ty::Str),
    opt("Name", Ty::Str),
    opt("MaxNodesNum", Ty::Int),
    opt("MinNodesNum", Ty::Int),
    opt("Labels", Ty::List(&Ty::Obj(LABEL))),
    opt("Taints", Ty::Any),
    opt("Annotations", Ty::Any),
    opt("EnableAutoscale", Ty::Bool),
    opt("OsName", Ty::Str),
    opt("OsCustomizeType", Ty::Str),
    opt("GPUArgs", Ty::Any),
    opt("UserScript", Ty::Str),
    opt("IgnoreExistedNode", Ty::Bool),
    opt("ExtraArgs", Ty::Any),
    opt("Tags", Ty::Any),
    opt("Unschedulable", Ty::Int),
    opt("DeletionProtection", Ty::Bool),
    opt("DockerGraphPath", Ty::Str),
    opt("PreStartUserScript", Ty::Str),
];
/// `ModifyNodePoolDesiredCapacityAboutAsg` parameters.
pub(super) const MODIFY_DESIRED_CAPACITY: &[Field] =
    &[req("ClusterId", Ty::Str), req("NodePoolId", Ty::Str), req("DesiredCapacity", Ty::Int)];
/// `DeleteClusterNodePool` parameters.
pub(super) const DELETE_CLUSTER_NODE_POOL: &[Field] =
    &[req("ClusterId", Ty::Str), req("NodePoolIds", Ty::List(&Ty::Str)), req("KeepInstance", Ty::Bool)];

/// The Auto Scaling group parameters a pool uses.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupPara {
    max_size: Option<i64>,
    min_size: Option<i64>,
    desired_capacity: Option<i64>,
    zones: Option<Vec<String>>,
}

/// The launch configuration parameters a pool uses.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LaunchPara {
    instance_type: Option<String>,
    system_disk: Option<SystemDiskIn>,
    placement: Option<PlacementIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LabelIn {
    name: String,
    value: String,
}

fn labels(l: Option<Vec<LabelIn>>) -> Option<Vec<(String, String)>> {
    l.map(|l| l.into_iter().map(|l| (l.name, l.value)).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreatePoolIn {
    cluster_id: String,
    auto_scaling_group_para: String,
    launch_configure_para: String,
    enable_autoscale: bool,
    name: Option<String>,
    labels: Option<Vec<LabelIn>>,
    node_pool_os: Option<String>,
    os_customize_type: Option<String>,
    deletion_protection: Option<bool>,
}

pub(super) async fn create_node_pool(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: CreatePoolIn = parse(params)?;
    let region = ctx.region()?;
    let group: GroupPara = serde_json::from_str(&r.auto_scaling_group_para).map_err(|e| {
        param(format!("AutoScalingGroupPara must be a JSON object of Auto Scaling group parameters: {e}."))
    })?;
    let launch: LaunchPara = serde_json::from_str(&r.launch_configure_para).map_err(|e| {
        param(format!("LaunchConfigurePara must be a JSON object of launch configuration parameters: {e}."))
    })?;
    let min = count(group.min_size, "MinSize")?.unwrap_or(0);
    let max = count(group.max_size, "MaxSize")?.unwrap_or(0);
    let desired = count(group.desired_capacity, "DesiredCapacity")?.unwrap_or(min);
    let zone =
        group.zones.and_then(|z| z.into_iter().next()).or_else(|| launch.placement.map(|p| p.zone)).unwrap_or_default();
    let req = NewPool {
        name: r.name.unwrap_or_else(|| "nodepool".into()),
        os: r.node_pool_os,
        os_customize: r.os_customize_type.as_deref().map(|t| parse_os_customize(Some(t))).transpose()?,
        min,
        max,
        desired,
        autoscale: r.enable_autoscale,
        launch: LaunchTemplate {
            zone,
            instance_type: launch.instance_type,
            system_disk_gib: disk_gib(launch.system_disk)?,
        },
        labels: labels(r.labels).unwrap_or_default(),
        deletion_protection: r.deletion_protection.unwrap_or(false),
    };
    let id = ctx
        .service
        .create_node_pool(ctx.caller, region, &r.cluster_id, req, ctx.request_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        node_pool_id: String,
    }
    to_json(&Out { node_pool_id: id.to_string() })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CountsOut {
    joining: u64,
    initializing: u64,
    normal: u64,
    total: u64,
}

fn counts(c: NodeCounts) -> CountsOut {
    CountsOut { joining: 0, initializing: c.initializing, normal: c.normal, total: c.total }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SummaryOut {
    manually_added: CountsOut,
    autoscaling_added: CountsOut,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LabelOut<'a> {
    name: &'a str,
    value: &'a str,
}

/// `NodePool`, as the SDK's model has it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PoolOut<'a> {
    node_pool_id: &'a str,
    name: &'a str,
    cluster_instance_id: &'a str,
    life_state: &'static str,
    launch_configuration_id: String,
    autoscaling_group_id: String,
    labels: Vec<LabelOut<'a>>,
    taints: [(); 0],
    annotations: [(); 0],
    node_count_summary: SummaryOut,
    autoscaling_group_status: &'static str,
    max_nodes_num: u64,
    min_nodes_num: u64,
    desired_nodes_num: u64,
    node_pool_os: &'a str,
    os_customize_type: &'static str,
    image_id: Option<String>,
    desired_pod_num: u64,
    user_script: &'static str,
    tags: [(); 0],
    deletion_protection: bool,
    docker_graph_path: &'static str,
    data_disks: [(); 0],
    unschedulable: u64,
}

fn pool_out(v: &PoolView) -> PoolOut<'_> {
    let p = &v.pool;
    let suffix = p.id.as_str().trim_start_matches("np-");
    PoolOut {
        node_pool_id: p.id.as_str(),
        name: &p.name,
        cluster_instance_id: p.cluster.as_str(),
        life_state: v.life_state,
        launch_configuration_id: format!("asc-{suffix}"),
        autoscaling_group_id: format!("asg-{suffix}"),
        labels: p.labels.iter().map(|(name, value)| LabelOut { name, value }).collect(),
        taints: [],
        annotations: [],
        node_count_summary: SummaryOut { manually_added: counts(v.manual), autoscaling_added: counts(v.autoscaled) },
        autoscaling_group_status: if p.autoscale { "enabled" } else { "disabled" },
        max_nodes_num: p.max_nodes,
        min_nodes_num: p.min_nodes,
        desired_nodes_num: p.desired_nodes,
        node_pool_os: &p.os,
        os_customize_type: p.os_customize.as_str(),
        image_id: v.image_id.as_ref().map(ToString::to_string),
        desired_pod_num: 0,
        user_script: "",
        tags: [],
        deletion_protection: p.deletion_protection,
        docker_graph_path: "/var/lib/containerd",
        data_disks: [],
        unschedulable: 0,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribePoolsIn {
    cluster_id: String,
    filters: Option<Vec<FilterIn>>,
}

pub(super) async fn describe_node_pools(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: DescribePoolsIn = parse(params)?;
    let region = ctx.region()?;
    let views =
        ctx.service.describe_node_pools(ctx.caller, region, &r.cluster_id).await.map_err(|e| tke_error(e, CODES))?;
    let mut kept: Vec<&PoolView> = views.iter().collect();
    for f in r.filters.unwrap_or_default() {
        match f.name.as_str() {
            "NodePoolsName" => kept.retain(|v| f.values.contains(&v.pool.name)),
            "NodePoolsId" => kept.retain(|v| f.values.iter().any(|id| id == v.pool.id.as_str())),
            other => return Err(param(format!("`{other}` is not a filter of DescribeClusterNodePools."))),
        }
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        node_pool_set: Vec<PoolOut<'a>>,
        total_count: usize,
    }
    to_json(&Out { total_count: kept.len(), node_pool_set: kept.into_iter().map(pool_out).collect() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolRef {
    cluster_id: String,
    node_pool_id: String,
}

pub(super) async fn node_pool_detail(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: PoolRef = parse(params)?;
    let region = ctx.region()?;
    let view = ctx
        .service
        .node_pool_detail(ctx.caller, region, &r.cluster_id, &r.node_pool_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        node_pool: PoolOut<'a>,
    }
    to_json(&Out { node_pool: pool_out(&view) })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyPoolIn {
    cluster_id: String,
    node_pool_id: String,
    name: Option<String>,
    max_nodes_num: Option<i64>,
    min_nodes_num: Option<i64>,
    labels: Option<Vec<LabelIn>>,
    enable_autoscale: Option<bool>,
    os_name: Option<String>,
    os_customize_type: Option<String>,
    deletion_protection: Option<bool>,
}

pub(super) async fn modify_node_pool(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: ModifyPoolIn = parse(params)?;
    let region = ctx.region()?;
    let changes = PoolChanges {
        name: r.name,
        min: count(r.min_nodes_num, "MinNodesNum")?,
        max: count(r.max_nodes_num, "MaxNodesNum")?,
        os: r.os_name,
        os_customize: r.os_customize_type.as_deref().map(|t| parse_os_customize(Some(t))).transpose()?,
        autoscale: r.enable_autoscale,
        deletion_protection: r.deletion_protection,
        labels: labels(r.labels),
    };
    let codes = Codes { image: code::IMAGE_NOT_FOUND_VALUE, ..CODES };
    ctx.service
        .modify_node_pool(ctx.caller, region, &r.cluster_id, &r.node_pool_id, changes)
        .await
        .map_err(|e| tke_error(e, codes))?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DesiredIn {
    cluster_id: String,
    node_pool_id: String,
    desired_capacity: i64,
}

pub(super) async fn set_desired_capacity(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: DesiredIn = parse(params)?;
    let region = ctx.region()?;
    let desired = count(Some(r.desired_capacity), "DesiredCapacity")?.unwrap_or(0);
    ctx.service
        .set_desired_capacity(ctx.caller, region, &r.cluster_id, &r.node_pool_id, desired, ctx.request_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeletePoolsIn {
    cluster_id: String,
    node_pool_ids: Vec<String>,
    keep_instance: bool,
}

pub(super) async fn delete_node_pools(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: DeletePoolsIn = parse(params)?;
    let region = ctx.region()?;
    ctx.service
        .delete_node_pools(ctx.caller, region, &r.cluster_id, &r.node_pool_ids, r.keep_instance, ctx.request_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    Ok(b"{}".to_vec())
}
