//! TKE cluster and node actions: `CreateCluster`, `DescribeClusters`, `ModifyClusterImage`,
//! `DeleteCluster`, `CreateClusterInstances`, `AddExistedInstances`,
//! `DescribeClusterInstances`, `DeleteClusterInstances`, `UpgradeClusterInstances`.

use imaged_app::instances::RunRequest;
use imaged_app::tke::clusters::{ClusterView, NewCluster, NodeOutcome, NodeQuery};
use imaged_domain::tke::{ClusterType, NodeSource, OsCustomizeType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{count, page, param, role, tke_error, Codes, CODES};
use crate::compute::{disk_gib, PlacementIn, SystemDiskIn};
use crate::cvm::{parse, to_json, Ctx, FilterIn};
use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty, FILTER};

const CIDR_SETTINGS: &[Field] = &[
    opt("ClusterCIDR", Ty::Str),
    opt("IgnoreClusterCIDRConflict", Ty::Bool),
    opt("MaxNodePodNum", Ty::UInt),
    opt("MaxClusterServiceNum", Ty::UInt),
    opt("ServiceCIDR", Ty::Str),
    opt("EniSubnetIds", Ty::List(&Ty::Str)),
    opt("ClaimExpiredSeconds", Ty::Int),
    opt("IgnoreServiceCIDRConflict", Ty::Bool),
];
const BASIC_SETTINGS: &[Field] = &[
    opt("ClusterOs", Ty::Str),
    opt("ClusterVersion", Ty::Str),
    opt("ClusterName", Ty::Str),
    opt("ClusterDescription", Ty::Str),
    opt("VpcId", Ty::Str),
    opt("ProjectId", Ty::Int),
    opt("TagSpecification", Ty::Any),
    opt("OsCustomizeType", Ty::Str),
    opt("NeedWorkSecurityGroup", Ty::Bool),
    opt("SubnetId", Ty::Str),
    opt("ClusterLevel", Ty::Str),
    opt("AutoUpgradeClusterLevel", Ty::Any),
];
const RUN_FOR_NODE: &[Field] = &[
    req("NodeRole", Ty::Str),
    req("RunInstancesPara", Ty::List(&Ty::Str)),
    opt("InstanceAdvancedSettingsOverrides", Ty::Any),
];
const EXISTED_PARA: &[Field] = &[
    req("InstanceIds", Ty::List(&Ty::Str)),
    opt("InstanceAdvancedSettings", Ty::Any),
    opt("EnhancedService", Ty::Any),
    opt("LoginSettings", Ty::Any),
    opt("SecurityGroupIds", Ty::List(&Ty::Str)),
    opt("HostName", Ty::Str),
];
const EXISTED_FOR_NODE: &[Field] = &[
    req("NodeRole", Ty::Str),
    req("ExistedInstancesPara", Ty::Obj(EXISTED_PARA)),
    opt("InstanceAdvancedSettingsOverride", Ty::Any),
    opt("DesiredPodNumbers", Ty::List(&Ty::Int)),
];

/// `CreateCluster` parameters.
pub(super) const CREATE_CLUSTER: &[Field] = &[
    req("ClusterType", Ty::Str),
    req("ClusterCIDRSettings", Ty::Obj(CIDR_SETTINGS)),
    opt("RunInstancesForNode", Ty::List(&Ty::Obj(RUN_FOR_NODE))),
    opt("ClusterBasicSettings", Ty::Obj(BASIC_SETTINGS)),
    opt("ClusterAdvancedSettings", Ty::Any),
    opt("InstanceAdvancedSettings", Ty::Any),
    opt("ExistedInstancesForNode", Ty::List(&Ty::Obj(EXISTED_FOR_NODE))),
    opt("InstanceDataDiskMountSettings", Ty::Any),
    opt("ExtensionAddons", Ty::Any),
    opt("CdcId", Ty::Str),
    opt("DisableAddons", Ty::List(&Ty::Str)),
];
/// `DescribeClusters` parameters.
pub(super) const DESCRIBE_CLUSTERS: &[Field] = &[
    opt("ClusterIds", Ty::List(&Ty::Str)),
    opt("Offset", Ty::Int),
    opt("Limit", Ty::Int),
    opt("Filters", Ty::List(&Ty::Obj(FILTER))),
    opt("ClusterType", Ty::Str),
];
/// `ModifyClusterImage` parameters.
pub(super) const MODIFY_CLUSTER_IMAGE: &[Field] = &[req("ClusterId", Ty::Str), req("ImageId", Ty::Str)];
/// `DeleteCluster` parameters.
pub(super) const DELETE_CLUSTER: &[Field] =
    &[req("ClusterId", Ty::Str), req("InstanceDeleteMode", Ty::Str), opt("ResourceDeleteOptions", Ty::Any)];
/// `CreateClusterInstances` parameters.
pub(super) const CREATE_CLUSTER_INSTANCES: &[Field] = &[
    req("ClusterId", Ty::Str),
    req("RunInstancePara", Ty::Str),
    opt("InstanceAdvancedSettings", Ty::Any),
    opt("SkipValidateOptions", Ty::List(&Ty::Str)),
];
const NODE_POOL_OPTION: &[Field] =
    &[opt("AddToNodePool", Ty::Bool), opt("NodePoolId", Ty::Str), opt("InheritConfigurationFromNodePool", Ty::Bool)];
/// `AddExistedInstances` parameters.
pub(super) const ADD_EXISTED_INSTANCES: &[Field] = &[
    req("ClusterId", Ty::Str),
    req("InstanceIds", Ty::List(&Ty::Str)),
    opt("InstanceAdvancedSettings", Ty::Any),
    opt("EnhancedService", Ty::Any),
    opt("LoginSettings", Ty::Any),
    opt("HostName", Ty::Str),
    opt("SecurityGroupIds", Ty::List(&Ty::Str)),
    opt("NodePool", Ty::Obj(NODE_POOL_OPTION)),
    opt("SkipValidateOptions", Ty::List(&Ty::Str)),
    opt("InstanceAdvancedSettingsOverrides", Ty::Any),
    opt("ImageId", Ty::Str),
    opt("NodeType", Ty::Str),
    opt("Tags", Ty::Any),
    opt("RenewFlag", Ty::Str),
];
/// `DescribeClusterInstances` parameters.
pub(super) const DESCRIBE_CLUSTER_INSTANCES: &[Field] = &[
    req("ClusterId", Ty::Str),
    opt("Offset", Ty::Int),
    opt("Limit", Ty::Int),
    opt("InstanceIds", Ty::List(&Ty::Str)),
    opt("InstanceRole", Ty::Str),
    opt("Filters", Ty::List(&Ty::Obj(FILTER))),
];
/// `DeleteClusterInstances` parameters.
pub(super) const DELETE_CLUSTER_INSTANCES: &[Field] = &[
    req("ClusterId", Ty::Str),
    req("InstanceIds", Ty::List(&Ty::Str)),
    opt("InstanceDeleteMode", Ty::Str),
    opt("ForceDelete", Ty::Bool),
    opt("ResourceDeleteOptions", Ty::Any),
];
/// `UpgradeClusterInstances` parameters.
pub(super) const UPGRADE_CLUSTER_INSTANCES: &[Field] = &[
    req("ClusterId", Ty::Str),
    req("Operation", Ty::Str),
    opt("UpgradeType", Ty::Str),
    opt("InstanceIds", Ty::List(&Ty::Str)),
    opt("ResetParam", Ty::Any),
    opt("SkipPreCheck", Ty::Bool),
    opt("MaxNotReadyPercent", Ty::Any),
    opt("UpgradeRunTime", Ty::Any),
    opt("Concurrent", Ty::Any),
];

/// The CVM `RunInstances` parameters of a `RunInstancesPara` string that a node launch uses
/// (its `ImageId` is replaced by the OS level's image; the others are accepted and ignored).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunPara {
    placement: Option<PlacementIn>,
    instance_type: Option<String>,
    instance_count: Option<i64>,
    instance_name: Option<String>,
    host_name: Option<String>,
    system_disk: Option<SystemDiskIn>,
}

/// Parses a `RunInstancesPara` JSON string into a launch.
pub(super) fn run_para(text: &str, field: &str) -> Result<RunRequest, ApiError> {
    let para: RunPara = serde_json::from_str(text)
        .map_err(|e| param(format!("{field} must be a JSON object of CVM RunInstances parameters: {e}.")))?;
    let count = count(para.instance_count, "InstanceCount")?;
    Ok(RunRequest {
        zone: para.placement.map(|p| p.zone).unwrap_or_default(),
        instance_type: para.instance_type,
        count: Some(count.unwrap_or(1)),
        name: para.instance_name,
        host_name: para.host_name,
        system_disk_gib: disk_gib(para.system_disk)?,
        ..RunRequest::default()
    })
}

pub(super) fn parse_os_customize(s: Option<&str>) -> Result<OsCustomizeType, ApiError> {
    s.map_or(Ok(OsCustomizeType::General), |t| {
        OsCustomizeType::parse(t)
            .ok_or_else(|| param(format!("OsCustomizeType must be GENERAL or DOCKER_CUSTOMIZE, not `{t}`.")))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CidrIn {
    #[serde(rename = "ClusterCIDR")]
    cluster_cidr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BasicIn {
    cluster_os: Option<String>,
    cluster_version: Option<String>,
    cluster_name: Option<String>,
    cluster_description: Option<String>,
    vpc_id: Option<String>,
    os_customize_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunForNodeIn {
    node_role: String,
    run_instances_para: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExistedParaIn {
    instance_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExistedForNodeIn {
    node_role: String,
    existed_instances_para: ExistedParaIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateClusterIn {
    cluster_type: String,
    #[serde(rename = "ClusterCIDRSettings")]
    cidr: CidrIn,
    run_instances_for_node: Option<Vec<RunForNodeIn>>,
    cluster_basic_settings: Option<BasicIn>,
    existed_instances_for_node: Option<Vec<ExistedForNodeIn>>,
}

pub(super) async fn create_cluster(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: CreateClusterIn = parse(params)?;
    let region = ctx.region()?;
    let cluster_type = ClusterType::parse(&r.cluster_type).ok_or_else(|| {
        param(format!("ClusterType must be MANAGED_CLUSTER or INDEPENDENT_CLUSTER, not `{}`.", r.cluster_type))
    })?;
    let basic = r.cluster_basic_settings.unwrap_or(BasicIn {
        cluster_os: None,
        cluster_version: None,
        cluster_name: None,
        cluster_description: None,
        vpc_id: None,
        os_customize_type: None,
    });
    let mut run_nodes = Vec::new();
    for (i, group) in r.run_instances_for_node.unwrap_or_default().into_iter().enumerate() {
        let role = role(Some(&group.node_role))?;
        for (j, text) in group.run_instances_para.iter().enumerate() {
            run_nodes.push((role, run_para(text, &format!("RunInstancesForNode.{i}.RunInstancesPara.{j}"))?));
        }
    }
    let mut existing = Vec::new();
    for group in r.existed_instances_for_node.unwrap_or_default() {
        existing.push((role(Some(&group.node_role))?, group.existed_instances_para.instance_ids));
    }
    let req = NewCluster {
        cluster_type,
        name: basic.cluster_name.unwrap_or_default(),
        description: basic.cluster_description.unwrap_or_default(),
        version: basic.cluster_version,
        os: basic.cluster_os,
        os_customize: parse_os_customize(basic.os_customize_type.as_deref())?,
        vpc_id: basic.vpc_id.unwrap_or_default(),
        cidr: r.cidr.cluster_cidr.unwrap_or_default(),
        run_nodes,
        existing,
    };
    let id =
        ctx.service.create_cluster(ctx.caller, region, req, ctx.request_id).await.map_err(|e| tke_error(e, CODES))?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        cluster_id: String,
    }
    to_json(&Out { cluster_id: id.to_string() })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkOut<'a> {
    #[serde(rename = "ClusterCIDR")]
    cluster_cidr: &'a str,
    vpc_id: &'a str,
    ignore_cluster_cidr_conflict: bool,
    max_node_pod_num: u64,
    max_cluster_service_num: u64,
}

/// `Cluster`, as the SDK's model has it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ClusterOut<'a> {
    cluster_id: &'a str,
    cluster_name: &'a str,
    cluster_description: &'a str,
    cluster_version: &'a str,
    cluster_os: &'a str,
    cluster_type: &'static str,
    cluster_network_settings: NetworkOut<'a>,
    cluster_node_num: u64,
    project_id: u64,
    tag_specification: [(); 0],
    cluster_status: &'static str,
    property: &'static str,
    cluster_mater_node_num: u64,
    image_id: Option<String>,
    os_customize_type: &'static str,
    container_runtime: &'static str,
    created_time: String,
    deletion_protection: bool,
    enable_external_node: bool,
    cluster_level: &'static str,
    auto_upgrade_cluster_level: bool,
    #[serde(rename = "QGPUShareEnable")]
    qgpu_share_enable: bool,
    runtime_version: &'static str,
    cluster_etcd_node_num: u64,
}

fn cluster_out(v: &ClusterView) -> ClusterOut<'_> {
    let c = &v.cluster;
    ClusterOut {
        cluster_id: c.id.as_str(),
        cluster_name: &c.name,
        cluster_description: &c.description,
        cluster_version: &c.version,
        cluster_os: &c.os,
        cluster_type: c.cluster_type.as_str(),
        cluster_network_settings: NetworkOut {
            cluster_cidr: &c.cidr,
            vpc_id: &c.vpc_id,
            ignore_cluster_cidr_conflict: false,
            max_node_pod_num: 64,
            max_cluster_service_num: 256,
        },
        cluster_node_num: v.workers,
        project_id: 0,
        tag_specification: [],
        cluster_status: v.status,
        property: "{\"NodeNameType\":\"lan-ip\"}",
        cluster_mater_node_num: v.masters,
        image_id: v.image_id.as_ref().map(ToString::to_string),
        os_customize_type: c.os_customize.as_str(),
        container_runtime: "containerd",
        created_time: c.created_at.iso8601(),
        deletion_protection: false,
        enable_external_node: false,
        cluster_level: "L5",
        auto_upgrade_cluster_level: false,
        qgpu_share_enable: false,
        runtime_version: "1.6.9",
        cluster_etcd_node_num: v.etcd,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeClustersIn {
    cluster_ids: Option<Vec<String>>,
    offset: Option<i64>,
    limit: Option<i64>,
    filters: Option<Vec<FilterIn>>,
    cluster_type: Option<String>,
}

pub(super) async fn describe_clusters(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: DescribeClustersIn = parse(params)?;
    let region = ctx.region()?;
    let page = page(r.offset, r.limit)?;
    let mut names: Option<Vec<String>> = None;
    let mut types: Option<Vec<String>> = r.cluster_type.map(|t| vec![t]);
    let mut statuses: Option<Vec<String>> = None;
    for f in r.filters.unwrap_or_default() {
        match f.name.as_str() {
            "ClusterName" => names = Some(f.values),
            "ClusterType" => types = Some(f.values),
            "ClusterStatus" => statuses = Some(f.values),
            other => return Err(param(format!("`{other}` is not a filter of DescribeClusters."))),
        }
    }
    let all = ctx
        .service
        .describe_clusters(ctx.caller, region, r.cluster_ids.as_deref(), names.as_deref())
        .await
        .map_err(|e| tke_error(e, CODES))?;
    let matched: Vec<&ClusterView> = all
        .iter()
        .filter(|v| types.as_ref().is_none_or(|t| t.iter().any(|t| t == v.cluster.cluster_type.as_str())))
        .filter(|v| statuses.as_ref().is_none_or(|s| s.iter().any(|s| s == v.status)))
        .collect();
    let shown: Vec<ClusterOut<'_>> = page.slice(&matched).iter().map(|v| cluster_out(v)).collect();
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: usize,
        clusters: Vec<ClusterOut<'a>>,
    }
    to_json(&Out { total_count: matched.len(), clusters: shown })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyClusterImageIn {
    cluster_id: String,
    image_id: String,
}

pub(super) async fn modify_cluster_image(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: ModifyClusterImageIn = parse(params)?;
    let region = ctx.region()?;
    ctx.service
        .modify_cluster_image(ctx.caller, region, &r.cluster_id, &r.image_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    Ok(b"{}".to_vec())
}

fn delete_mode(mode: Option<&str>) -> Result<bool, ApiError> {
    match mode.unwrap_or("terminate") {
        "terminate" => Ok(true),
        "retain" => Ok(false),
        other => Err(param(format!("InstanceDeleteMode must be terminate or retain, not `{other}`."))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteClusterIn {
    cluster_id: String,
    instance_delete_mode: String,
}

pub(super) async fn delete_cluster(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: DeleteClusterIn = parse(params)?;
    let region = ctx.region()?;
    let terminate = delete_mode(Some(&r.instance_delete_mode))?;
    ctx.service
        .delete_cluster(ctx.caller, region, &r.cluster_id, terminate, ctx.request_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateClusterInstancesIn {
    cluster_id: String,
    run_instance_para: String,
}

pub(super) async fn create_cluster_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: CreateClusterInstancesIn = parse(params)?;
    let region = ctx.region()?;
    let run = run_para(&r.run_instance_para, "RunInstancePara")?;
    let ids = ctx
        .service
        .create_cluster_instances(ctx.caller, region, &r.cluster_id, &run, ctx.request_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        instance_id_set: Vec<String>,
    }
    to_json(&Out { instance_id_set: ids.iter().map(ToString::to_string).collect() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodePoolOptionIn {
    add_to_node_pool: Option<bool>,
    node_pool_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddExistedIn {
    cluster_id: String,
    instance_ids: Vec<String>,
    node_pool: Option<NodePoolOptionIn>,
    image_id: Option<String>,
}

pub(super) async fn add_existed_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: AddExistedIn = parse(params)?;
    let region = ctx.region()?;
    let pool = match r.node_pool {
        Some(NodePoolOptionIn { add_to_node_pool: Some(true), node_pool_id: Some(id) }) => Some(id),
        Some(NodePoolOptionIn { add_to_node_pool: Some(true), node_pool_id: None }) => {
            return Err(param("NodePool.NodePoolId is required with NodePool.AddToNodePool."))
        }
        _ => None,
    };
    let codes = Codes { cluster: code::FAILED_CLUSTER_NOT_FOUND, ..CODES };
    let outcome = ctx
        .service
        .add_existed_instances(
            ctx.caller,
            region,
            &r.cluster_id,
            &r.instance_ids,
            (pool.as_deref(), r.image_id.as_deref()),
            ctx.request_id,
        )
        .await
        .map_err(|e| tke_error(e, codes))?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        failed_instance_ids: Vec<String>,
        succ_instance_ids: Vec<String>,
        timeout_instance_ids: Vec<String>,
        failed_reasons: Vec<String>,
    }
    let NodeOutcome { succeeded, failed, .. } = outcome;
    to_json(&Out {
        failed_instance_ids: failed.iter().map(|(id, _)| id.clone()).collect(),
        succ_instance_ids: succeeded,
        timeout_instance_ids: Vec::new(),
        failed_reasons: failed.into_iter().map(|(_, why)| why).collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeClusterInstancesIn {
    cluster_id: String,
    offset: Option<i64>,
    limit: Option<i64>,
    instance_ids: Option<Vec<String>>,
    instance_role: Option<String>,
    filters: Option<Vec<FilterIn>>,
}

/// `Instance` of `DescribeClusterInstances` (TKE carries no OS here: CVM `DescribeInstances`
/// does).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeOut {
    instance_id: String,
    instance_role: &'static str,
    failed_reason: String,
    instance_state: &'static str,
    drain_status: &'static str,
    instance_advanced_settings: Option<()>,
    created_time: String,
    #[serde(rename = "LanIP")]
    lan_ip: &'static str,
    node_pool_id: String,
    autoscaling_group_id: String,
}

pub(super) async fn describe_cluster_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: DescribeClusterInstancesIn = parse(params)?;
    let region = ctx.region()?;
    let page = page(r.offset, r.limit)?;
    let mut query =
        NodeQuery { ids: r.instance_ids, role: Some(role(r.instance_role.as_deref())?), ..NodeQuery::default() };
    for f in r.filters.unwrap_or_default() {
        let value = f.values.first().cloned().unwrap_or_default();
        match f.name.as_str() {
            "nodepool-id" => query.pool = Some(value),
            "nodepool-instance-type" => {
                query.source = match value.as_str() {
                    "ALL" => None,
                    v => Some(NodeSource::parse(v).ok_or_else(|| {
                        param(format!(
                            "nodepool-instance-type must be MANUALLY_ADDED, AUTOSCALING_ADDED or ALL, not `{v}`."
                        ))
                    })?),
                }
            }
            other => return Err(param(format!("`{other}` is not a filter of DescribeClusterInstances."))),
        }
    }
    let codes = Codes { cluster: code::PARAM_CLUSTER_NOT_FOUND, ..CODES };
    let (total, nodes) = ctx
        .service
        .describe_cluster_instances(ctx.caller, region, &r.cluster_id, &query, page)
        .await
        .map_err(|e| tke_error(e, codes))?;
    let set: Vec<NodeOut> = nodes
        .iter()
        .map(|n| {
            let pool = n.node.pool.as_ref().map(ToString::to_string).unwrap_or_default();
            NodeOut {
                instance_id: n.instance.id.to_string(),
                instance_role: n.node.role.as_str(),
                failed_reason: n.instance.latest_operation_error.clone().unwrap_or_default(),
                instance_state: n.state.as_str(),
                drain_status: "",
                instance_advanced_settings: None,
                created_time: n.node.joined_at.iso8601(),
                lan_ip: "",
                autoscaling_group_id: pool.strip_prefix("np-").map(|s| format!("asg-{s}")).unwrap_or_default(),
                node_pool_id: pool,
            }
        })
        .collect();
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        total_count: u64,
        instance_set: Vec<NodeOut>,
    }
    to_json(&Out { total_count: total, instance_set: set })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteClusterInstancesIn {
    cluster_id: String,
    instance_ids: Vec<String>,
    instance_delete_mode: Option<String>,
}

pub(super) async fn delete_cluster_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: DeleteClusterInstancesIn = parse(params)?;
    let region = ctx.region()?;
    let terminate = delete_mode(r.instance_delete_mode.as_deref())?;
    let outcome = ctx
        .service
        .delete_cluster_instances(ctx.caller, region, &r.cluster_id, &r.instance_ids, terminate, ctx.request_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        succ_instance_ids: Vec<String>,
        failed_instance_ids: Vec<String>,
        not_found_instance_ids: Vec<String>,
    }
    to_json(&Out {
        succ_instance_ids: outcome.succeeded,
        failed_instance_ids: outcome.failed.into_iter().map(|(id, _)| id).collect(),
        not_found_instance_ids: outcome.not_found,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpgradeIn {
    cluster_id: String,
    operation: String,
    instance_ids: Option<Vec<String>>,
}

pub(super) async fn upgrade_cluster_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: UpgradeIn = parse(params)?;
    let region = ctx.region()?;
    if r.operation != "create" {
        return Err(param(format!(
            "Operation `{}` is not supported: an upgrade (Operation=create) reinstalls each node at once, so there is nothing to pause, resume or abort.",
            r.operation
        )));
    }
    let ids = r.instance_ids.unwrap_or_default();
    if ids.is_empty() {
        return Err(param("InstanceIds must name the nodes to upgrade."));
    }
    ctx.service
        .upgrade_cluster_instances(ctx.caller, region, &r.cluster_id, &ids, ctx.request_id)
        .await
        .map_err(|e| tke_error(e, CODES))?;
    Ok(b"{}".to_vec())
}
