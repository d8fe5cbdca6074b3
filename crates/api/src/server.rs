//! The HTTP edge: one handler at `/` that checks method and size, verifies the TC3 signature,
//! routes on (service from the credential scope, `X-TC-Version`, `X-TC-Action`), checks the
//! parameters against the action's schema and answers in Tencent's envelope. `/healthz` answers
//! 200 once the server accepts requests (liveness); `/healthz/ready` says whether the database
//! and the object store answer (503 when one does not). `/metrics` is served only on the
//! operator's address ([`metrics_router`]).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, Request};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use imaged_app::Service;
use imaged_domain::time::Timestamp;

use crate::cvm::{self, Ctx};
use crate::error::{code, ApiError, Language};
use crate::params::{self, Field};
use crate::tc3::{self, Authorization, SignedRequest};
use crate::tke::TkeAction;
use crate::{compute, ext, market, pricing, share, tke};
use imaged_domain::instance::InstanceOp;

/// Largest POST body (TC3): 10 MB.
pub const MAX_POST_BYTES: usize = 10 * 1024 * 1024;
/// The largest request head (header names and values) an action takes. hyper refuses larger
/// heads only when they arrive in pieces; a head that reaches it in one read is parsed whole,
/// so the limit is also checked here.
pub(crate) const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Largest GET query string: 32 KB.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;

/// Services, each with the API versions it serves.
const SERVICES: &[(&str, &[&str])] =
    &[("cvm", &["2017-03-12"]), (tke::SERVICE, &[tke::VERSION, "2022-05-01"]), (ext::SERVICE, &[ext::VERSION])];

/// Whether an action needs `X-TC-Region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegionUse {
    Required,
    Ignored,
}

/// The actions, named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionId {
    DescribeImages,
    DescribeImageQuota,
    DescribeRegions,
    DescribeZones,
    ImportImage,
    ExportImages,
    DescribeImportImageOs,
    DescribeImageTasks,
    RunInstances,
    DescribeInstances,
    DescribeInstancesStatus,
    StartInstances,
    StopInstances,
    RebootInstances,
    ResetInstance,
    TerminateInstances,
    CreateImage,
    ModifyImageAttribute,
    DeleteImages,
    DescribeImageFromFamily,
    ModifyImageSharePermission,
    DescribeImageSharePermission,
    SyncImages,
    DescribeStorageQuota,
    ApplyForBetaImage,
    DescribeBetaImageApplications,
    DescribeMessages,
    DescribeInstanceConsoleOutput,
    MarkMessagesRead,
    Tke(TkeAction),
    InquiryPriceRunInstances,
    InquiryPriceResetInstance,
    DescribePriceBreakdown,
    CreateMarketListing,
    ModifyMarketListing,
    SubmitMarketListing,
    WithdrawMarketListing,
    DescribeMarketListings,
    DescribeUsage,
    DescribeProviderEarnings,
}

#[derive(Clone, Copy)]
struct Action {
    service: &'static str,
    version: &'static str,
    name: &'static str,
    params: &'static [Field],
    region: RegionUse,
    id: ActionId,
}

/// An action of imaged's extension service.
const fn ext_action(name: &'static str, params: &'static [Field], id: ActionId) -> Action {
    Action { service: ext::SERVICE, version: ext::VERSION, name, params, region: RegionUse::Ignored, id }
}

/// A CVM `2017-03-12` action.
const fn cvm_action(name: &'static str, params: &'static [Field], region: RegionUse, id: ActionId) -> Action {
    Action { service: "cvm", version: "2017-03-12", name, params, region, id }
}

const ACTIONS: &[Action] = &[
    cvm_action("DescribeImages", cvm::DESCRIBE_IMAGES, RegionUse::Required, ActionId::DescribeImages),
    cvm_action("DescribeImageQuota", cvm::NONE, RegionUse::Required, ActionId::DescribeImageQuota),
    cvm_action("DescribeRegions", cvm::NONE, RegionUse::Ignored, ActionId::DescribeRegions),
    cvm_action("DescribeZones", cvm::NONE, RegionUse::Required, ActionId::DescribeZones),
    cvm_action("ImportImage", cvm::IMPORT_IMAGE, RegionUse::Required, ActionId::ImportImage),
    cvm_action("ExportImages", cvm::EXPORT_IMAGES, RegionUse::Required, ActionId::ExportImages),
    cvm_action("DescribeImportImageOs", cvm::NONE, RegionUse::Required, ActionId::DescribeImportImageOs),
    cvm_action("DescribeImageTasks", cvm::DESCRIBE_IMAGE_TASKS, RegionUse::Ignored, ActionId::DescribeImageTasks),
    cvm_action("RunInstances", compute::RUN_INSTANCES, RegionUse::Required, ActionId::RunInstances),
    cvm_action("DescribeInstances", compute::DESCRIBE_INSTANCES, RegionUse::Required, ActionId::DescribeInstances),
    cvm_action(
        "DescribeInstancesStatus",
        compute::DESCRIBE_INSTANCES_STATUS,
        RegionUse::Required,
        ActionId::DescribeInstancesStatus,
    ),
    cvm_action("StartInstances", compute::START_INSTANCES, RegionUse::Required, ActionId::StartInstances),
    cvm_action("StopInstances", compute::STOP_INSTANCES, RegionUse::Required, ActionId::StopInstances),
    cvm_action("RebootInstances", compute::REBOOT_INSTANCES, RegionUse::Required, ActionId::RebootInstances),
    cvm_action("ResetInstance", compute::RESET_INSTANCE, RegionUse::Required, ActionId::ResetInstance),
    cvm_action("TerminateInstances", compute::TERMINATE_INSTANCES, RegionUse::Required, ActionId::TerminateInstances),
    cvm_action("CreateImage", compute::CREATE_IMAGE, RegionUse::Required, ActionId::CreateImage),
    cvm_action(
        "ModifyImageAttribute",
        compute::MODIFY_IMAGE_ATTRIBUTE,
        RegionUse::Required,
        ActionId::ModifyImageAttribute,
    ),
    cvm_action("DeleteImages", compute::DELETE_IMAGES, RegionUse::Required, ActionId::DeleteImages),
    cvm_action(
        "DescribeImageFromFamily",
        compute::DESCRIBE_IMAGE_FROM_FAMILY,
        RegionUse::Required,
        ActionId::DescribeImageFromFamily,
    ),
    cvm_action(
        "ModifyImageSharePermission",
        share::MODIFY_IMAGE_SHARE_PERMISSION,
        RegionUse::Required,
        ActionId::ModifyImageSharePermission,
    ),
    cvm_action(
        "DescribeImageSharePermission",
        share::DESCRIBE_IMAGE_SHARE_PERMISSION,
        RegionUse::Required,
        ActionId::DescribeImageSharePermission,
    ),
    cvm_action("SyncImages", share::SYNC_IMAGES, RegionUse::Required, ActionId::SyncImages),
    cvm_action(
        "InquiryPriceRunInstances",
        pricing::INQUIRY_PRICE_RUN_INSTANCES,
        RegionUse::Required,
        ActionId::InquiryPriceRunInstances,
    ),
    cvm_action(
        "InquiryPriceResetInstance",
        pricing::INQUIRY_PRICE_RESET_INSTANCE,
        RegionUse::Required,
        ActionId::InquiryPriceResetInstance,
    ),
    ext_action("DescribeStorageQuota", cvm::NONE, ActionId::DescribeStorageQuota),
    ext_action("ApplyForBetaImage", ext::APPLY_FOR_BETA_IMAGE, ActionId::ApplyForBetaImage),
    ext_action(
        "DescribeBetaImageApplications",
        ext::DESCRIBE_BETA_IMAGE_APPLICATIONS,
        ActionId::DescribeBetaImageApplications,
    ),
    ext_action("DescribeMessages", ext::DESCRIBE_MESSAGES, ActionId::DescribeMessages),
    Action {
        service: ext::SERVICE,
        version: ext::VERSION,
        name: "DescribeInstanceConsoleOutput",
        params: compute::DESCRIBE_INSTANCE_CONSOLE_OUTPUT,
        region: RegionUse::Required,
        id: ActionId::DescribeInstanceConsoleOutput,
    },
    ext_action("MarkMessagesRead", ext::MARK_MESSAGES_READ, ActionId::MarkMessagesRead),
    ext_action("CreateMarketListing", market::CREATE_MARKET_LISTING, ActionId::CreateMarketListing),
    ext_action("ModifyMarketListing", market::MODIFY_MARKET_LISTING, ActionId::ModifyMarketListing),
    ext_action("SubmitMarketListing", market::LISTING_ID, ActionId::SubmitMarketListing),
    ext_action("WithdrawMarketListing", market::LISTING_ID, ActionId::WithdrawMarketListing),
    ext_action("DescribeMarketListings", cvm::NONE, ActionId::DescribeMarketListings),
    ext_action("DescribeUsage", market::DESCRIBE_USAGE, ActionId::DescribeUsage),
    ext_action("DescribeProviderEarnings", market::DESCRIBE_PROVIDER_EARNINGS, ActionId::DescribeProviderEarnings),
    Action {
        service: ext::SERVICE,
        version: ext::VERSION,
        name: "DescribePriceBreakdown",
        params: pricing::INQUIRY_PRICE_RUN_INSTANCES,
        region: RegionUse::Required,
        id: ActionId::DescribePriceBreakdown,
    },
];

/// The TKE actions, as routing sees them.
fn tke_actions() -> impl Iterator<Item = Action> {
    tke::ACTIONS.iter().map(|&(name, params, id)| Action {
        service: tke::SERVICE,
        version: tke::VERSION,
        name,
        params,
        region: if tke::needs_region(id) { RegionUse::Required } else { RegionUse::Ignored },
        id: ActionId::Tke(id),
    })
}

/// Builds the router over `service`.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/ready", get(ready))
        .route("/upload", axum::routing::any(crate::transfer::upload))
        .route("/download", axum::routing::any(crate::transfer::download))
        .fallback(api)
        .with_state(service)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 when the database and the object store answer, else 503; JSON either way.
async fn ready(State(service): State<Service>) -> Response {
    let r = service.readiness().await;
    let word = |e: &Option<String>| e.clone().unwrap_or_else(|| "ok".to_owned());
    let body = serde_json::json!({"ready": r.ready(), "database": word(&r.database), "objects": word(&r.objects)});
    let mut resp = json_response(serde_json::to_vec(&body).unwrap_or_default());
    if !r.ready() {
        *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    resp
}

/// Serves `/metrics` (OpenMetrics text) on `listener`, an address only operators reach.
pub async fn serve_metrics(listener: tokio::net::TcpListener, service: Service) {
    let router = Router::new().route("/metrics", get(metrics)).with_state(service);
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!("the metrics listener stopped: {e}");
    }
}

async fn metrics(State(service): State<Service>) -> Response {
    match service.render_metrics().await {
        Ok(text) => {
            let mut resp = Response::new(Body::from(text));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        Err(e) => {
            let mut resp = Response::new(Body::from(format!("metrics unavailable: {e}\n")));
            *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            resp
        }
    }
}

/// The action label of a request's metrics: its name only once the request was authenticated
/// and routed (else anyone could grow the label set), and only if it looks like an action.
fn action_label(action: Option<&str>, result: &Result<Vec<u8>, ApiError>) -> String {
    let unrouted = result.as_ref().err().is_some_and(|e| {
        e.code.starts_with("AuthFailure")
            || e.code.starts_with("NoSuch")
            || matches!(e.code, "InvalidAction" | "UnsupportedProtocol" | "RequestSizeLimitExceeded")
    });
    match action {
        Some(a) if !unrouted && a.len() <= 64 && a.bytes().all(|b| b.is_ascii_alphanumeric()) => a.to_owned(),
        _ => imaged_app::metrics::UNNAMED_ACTION.to_owned(),
    }
}

pub(crate) fn request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Unique enough for correlation even without system randomness.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Wraps an action's response object (or an error) in `{"Response": {…, "RequestId": …}}`.
pub(crate) fn envelope(request_id: &str, result: Result<Vec<u8>, ApiError>, lang: Language) -> Vec<u8> {
    match result {
        Ok(mut obj) => {
            // `obj` is a serialised JSON object: splice RequestId in before its closing brace.
            obj.pop();
            let mut out = Vec::with_capacity(obj.len() + 80);
            out.extend_from_slice(b"{\"Response\":");
            out.extend_from_slice(&obj);
            if obj.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(b"\"RequestId\":\"");
            out.extend_from_slice(request_id.as_bytes());
            out.extend_from_slice(b"\"}}");
            out
        }
        Err(e) => serde_json::to_vec(&serde_json::json!({
            "Response": {"Error": {"Code": e.code, "Message": e.message(lang)}, "RequestId": request_id}
        }))
        .unwrap_or_default(),
    }
}

pub(crate) fn json_response(body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn api(State(service): State<Service>, req: Request<Body>) -> Response {
    let lang = Language::from_header(req.headers().get("x-tc-language").and_then(|v| v.to_str().ok()));
    let id = request_id();
    let started = std::time::Instant::now();
    let action = header(req.headers(), "x-tc-action").map(str::to_owned);
    let metrics = std::sync::Arc::clone(service.metrics());
    // Run the request in its own task: a panic anywhere becomes an InternalError envelope.
    let result = match tokio::spawn(handle(service, req, id.clone())).await {
        Ok(result) => result,
        Err(e) => Err(ApiError::internal(&format!("request task failed: {e}"))),
    };
    let code = result.as_ref().map_or_else(|e| e.code, |_| "Success");
    metrics.record_request(&action_label(action.as_deref(), &result), code, started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        tracing::debug!(request_id = %id, code = e.code, "request refused");
    }
    json_response(envelope(&id, result, lang))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn size_exceeded(what: &str, limit: usize) -> ApiError {
    ApiError::new(
        code::REQUEST_SIZE_LIMIT_EXCEEDED,
        format!("The {what} exceeds the limit of {limit} bytes."),
        format!("请求{what}超过 {limit} 字节的限制。"),
    )
}

async fn read_body(mut body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(ApiError::invalid_parameter("body", "the body was interrupted")) };
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > MAX_POST_BYTES {
            drain(body, (buf.len() + data.len()) as u64).await;
            return Err(size_exceeded("body", MAX_POST_BYTES));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Bytes of an over-size body read and discarded before answering, so that a client that
/// writes its whole body before reading gets the answer rather than a reset.
pub(crate) const DRAIN_BYTES: u64 = 64 << 20;
/// Time spent discarding at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and discards what is left of `body`, up to [`DRAIN_BYTES`] in all (`seen` already
/// read) and [`DRAIN_TIME`].
pub(crate) async fn drain(mut body: Body, seen: u64) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut total = seen;
        while total < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
    })
    .await;
}

fn now() -> i64 {
    imaged_app::service::now().0
}

async fn handle(service: Service, req: Request<Body>, request_id: String) -> Result<Vec<u8>, ApiError> {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str();
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(ApiError::new(
            code::UNSUPPORTED_PROTOCOL,
            format!("HTTP method {method} is not supported: use GET or POST."),
            format!("不支持 HTTP 方法 {method}，请使用 GET 或 POST。"),
        ));
    }
    let headers = &parts.headers;
    let head: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if head > MAX_HEAD_BYTES {
        return Err(size_exceeded("request head", MAX_HEAD_BYTES));
    }
    let query = parts.uri.query().unwrap_or("");
    let body = if parts.method == Method::POST {
        read_body(body).await?
    } else {
        if query.len() > MAX_QUERY_BYTES {
            return Err(size_exceeded("query string", MAX_QUERY_BYTES));
        }
        Bytes::new()
    };

    // Authentication.
    let signed_query = if parts.method == Method::GET { query } else { "" };
    let auth = authenticate(&service, headers, (method, parts.uri.path(), signed_query), &body).await?;

    // Routing on (service from the scope, version, action).
    let action_name =
        header(headers, "x-tc-action").filter(|s| !s.is_empty()).ok_or_else(|| ApiError::missing("X-TC-Action"))?;
    let version =
        header(headers, "x-tc-version").filter(|s| !s.is_empty()).ok_or_else(|| ApiError::missing("X-TC-Version"))?;
    let host = header(headers, "host").unwrap_or("");
    let action = route(routing_service(&auth.service, host, version), version, action_name)?;

    // Parameters.
    let raw = if parts.method == Method::GET {
        params::from_query(query)?
    } else {
        let ct = header(headers, CONTENT_TYPE.as_str()).unwrap_or("");
        if !ct.trim_start().to_ascii_lowercase().starts_with("application/json") {
            return Err(ApiError::invalid_parameter("Content-Type", "a POST body must be application/json"));
        }
        params::from_json(&body)?
    };
    let params = params::coerce(raw, action.params)?;

    // Region.
    let region = match action.region {
        RegionUse::Ignored => None,
        RegionUse::Required => {
            let name =
                header(headers, "x-tc-region").filter(|s| !s.is_empty()).ok_or_else(|| ApiError::missing("Region"))?;
            let region = service.regions().get(name).ok_or_else(|| {
                ApiError::invalid_value(code::INVALID_REGION_NOT_FOUND, format!("The region `{name}` does not exist."))
            })?;
            if !region.available {
                return Err(ApiError::invalid_value(
                    code::INVALID_REGION_UNAVAILABLE,
                    format!("The region `{name}` is not available."),
                ));
            }
            Some(region.clone())
        }
    };

    // The replay check, once the request is known to be well formed: only what runs is counted.
    let usage = SignatureUse { read_only: is_read_only(action.name), client: client_of(&parts.extensions) };
    admit(&service, &auth, &usage).await?;

    let ctx = Ctx { service: &service, caller: auth.account, region: region.as_ref(), request_id: &request_id };
    match action.id {
        ActionId::DescribeImages => cvm::describe_images(&ctx, params).await,
        ActionId::DescribeImageQuota => cvm::describe_image_quota(&ctx).await,
        ActionId::DescribeRegions => cvm::describe_regions(&ctx),
        ActionId::DescribeZones => cvm::describe_zones(&ctx),
        ActionId::ImportImage => cvm::import_image(&ctx, params).await,
        ActionId::ExportImages => cvm::export_images(&ctx, params).await,
        ActionId::DescribeImportImageOs => cvm::describe_import_image_os(),
        ActionId::DescribeImageTasks => cvm::describe_image_tasks(&ctx, params).await,
        ActionId::RunInstances => compute::run_instances(&ctx, params).await,
        ActionId::DescribeInstances => compute::describe_instances(&ctx, params).await,
        ActionId::DescribeInstancesStatus => compute::describe_instances_status(&ctx, params).await,
        ActionId::StartInstances => compute::operate(&ctx, params, InstanceOp::Start).await,
        ActionId::StopInstances => compute::operate(&ctx, params, InstanceOp::Stop).await,
        ActionId::RebootInstances => compute::operate(&ctx, params, InstanceOp::Reboot).await,
        ActionId::TerminateInstances => compute::operate(&ctx, params, InstanceOp::Terminate).await,
        ActionId::ResetInstance => compute::reset_instance(&ctx, params).await,
        ActionId::CreateImage => compute::create_image(&ctx, params).await,
        ActionId::ModifyImageAttribute => compute::modify_image_attribute(&ctx, params).await,
        ActionId::DeleteImages => compute::delete_images(&ctx, params).await,
        ActionId::DescribeImageFromFamily => compute::describe_image_from_family(&ctx, params).await,
        ActionId::ModifyImageSharePermission => share::modify_image_share_permission(&ctx, params).await,
        ActionId::DescribeImageSharePermission => share::describe_image_share_permission(&ctx, params).await,
        ActionId::SyncImages => share::sync_images(&ctx, params).await,
        ActionId::DescribeStorageQuota => ext::describe_storage_quota(&ctx).await,
        ActionId::ApplyForBetaImage => ext::apply_for_beta_image(&ctx, params).await,
        ActionId::DescribeBetaImageApplications => ext::describe_beta_image_applications(&ctx).await,
        ActionId::DescribeMessages => ext::describe_messages(&ctx, params).await,
        ActionId::DescribeInstanceConsoleOutput => compute::describe_instance_console_output(&ctx, params).await,
        ActionId::MarkMessagesRead => ext::mark_messages_read(&ctx, params).await,
        ActionId::Tke(a) => tke::dispatch(&ctx, a, params).await,
        ActionId::InquiryPriceRunInstances => pricing::inquiry_price_run_instances(&ctx, params).await,
        ActionId::InquiryPriceResetInstance => pricing::inquiry_price_reset_instance(&ctx, params).await,
        ActionId::DescribePriceBreakdown => pricing::describe_price_breakdown(&ctx, params).await,
        ActionId::CreateMarketListing => market::create_market_listing(&ctx, params).await,
        ActionId::ModifyMarketListing => market::modify_market_listing(&ctx, params).await,
        ActionId::SubmitMarketListing => market::submit_market_listing(&ctx, params).await,
        ActionId::WithdrawMarketListing => market::withdraw_market_listing(&ctx, params).await,
        ActionId::DescribeMarketListings => market::describe_market_listings(&ctx).await,
        ActionId::DescribeUsage => market::describe_usage(&ctx, params).await,
        ActionId::DescribeProviderEarnings => market::describe_provider_earnings(&ctx, params).await,
    }
}

/// How a verified signature is used, for the replay check. The official SDKs sign only
/// `content-type;host` and the body, not the action or the region, so the same signature
/// could be resent with another action (a captured read resent as `TerminateInstances`) or
/// as is (a launch replayed). A signature is therefore bound to the client address that first
/// used it: a later change from another address, at any server of the deployment, is refused.
/// The client's own sequence (`DescribeImages` then `DeleteImages` of the same image within
/// one second: the same body, hence the same signature; a repeated read while polling) comes
/// from its own address and passes. Reads pass from anywhere.
pub(crate) struct SignatureUse {
    /// Whether the request changes nothing.
    pub(crate) read_only: bool,
    /// The client's address.
    pub(crate) client: String,
}

/// The address a request came from (set by the listener), or a key of its own when there is
/// none (a request served without the listener never matches another).
pub(crate) fn client_of(extensions: &axum::http::Extensions) -> String {
    match extensions.get::<crate::listener::ClientAddr>() {
        Some(addr) => addr.0.to_string(),
        None => request_id(),
    }
}

/// A verified request: who sent it, for which service, and its signature.
pub(crate) struct Authenticated {
    /// The calling account.
    pub(crate) account: imaged_domain::AccountId,
    /// The credential scope's service.
    pub(crate) service: String,
    signature: String,
    signed_at: Timestamp,
}

/// The replay check of an authenticated request, just before it runs.
pub(crate) async fn admit(service: &Service, auth: &Authenticated, usage: &SignatureUse) -> Result<(), ApiError> {
    if service.admit_signature(&auth.signature, &usage.client, usage.read_only, auth.signed_at).await? {
        return Ok(());
    }
    Err(ApiError::signature_failure(
        "this signature was already used from another address; a signed request that changes something is \
         accepted only from the client that first sent it",
    ))
}

/// Whether an action only reads (`Describe…`, `Inquiry…`).
fn is_read_only(action: &str) -> bool {
    action.starts_with("Describe") || action.starts_with("Inquiry")
}

/// Verifies the request's TC3 signature over (method, path, query) and body.
pub(crate) async fn authenticate(
    service: &Service,
    headers: &HeaderMap,
    (method, path, query): (&str, &str, &str),
    body: &[u8],
) -> Result<Authenticated, ApiError> {
    let invalid_auth = |why: &str| {
        ApiError::new(
            code::INVALID_AUTHORIZATION,
            format!("The Authorization header is invalid: {why}. Only TC3-HMAC-SHA256 is supported."),
            format!("Authorization 头部无效：{why}。仅支持 TC3-HMAC-SHA256 签名。"),
        )
    };
    let header_value = header(headers, "authorization").ok_or_else(|| invalid_auth("missing"))?;
    let auth = Authorization::parse(header_value).ok_or_else(|| invalid_auth("malformed"))?;
    if !auth.signed_headers.iter().any(|h| h == "content-type") || !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(invalid_auth("SignedHeaders must include content-type and host"));
    }
    if header(headers, "x-tc-token").is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::new(
            code::TOKEN_FAILURE,
            "Temporary credentials are not issued by this service; the token is invalid.",
            "本服务不签发临时凭证，令牌无效。",
        ));
    }
    let ts_text = header(headers, "x-tc-timestamp").ok_or_else(|| ApiError::missing("X-TC-Timestamp"))?;
    let ts: i64 =
        ts_text.trim().parse().map_err(|_| ApiError::invalid_parameter("X-TC-Timestamp", "expected Unix seconds"))?;
    let skew = now().saturating_sub(ts).saturating_abs();
    if skew > tc3::MAX_CLOCK_SKEW_SECS {
        return Err(ApiError::new(
            code::SIGNATURE_EXPIRE,
            format!("The signature expired: the timestamp {ts} is {skew} s away from the server time (limit 300 s)."),
            format!("签名过期：时间戳 {ts} 与服务器时间相差 {skew} 秒（上限 300 秒）。"),
        ));
    }
    let principal = service.principal(&auth.secret_id).await?.ok_or_else(|| {
        ApiError::new(
            code::SECRET_ID_NOT_FOUND,
            "The SecretId is not found or is disabled.",
            "密钥不存在或已被禁用，请检查 SecretId。",
        )
    })?;
    if auth.date != Timestamp(ts).utc_date() {
        return Err(ApiError::signature_failure("the credential scope date is not the UTC date of X-TC-Timestamp"));
    }
    // A Host such as `cvm.example.com` names its service: it must agree with the scope.
    let host = header(headers, "host").unwrap_or("");
    let host_label = host.split_once("://").map_or(host, |(_, rest)| rest).split('.').next().unwrap_or("");
    if SERVICES.iter().any(|(s, _)| *s == host_label) && host_label != auth.service {
        return Err(ApiError::signature_failure("the credential scope service does not match the host"));
    }
    let mut values: Vec<Option<&str>> = auth.signed_headers.iter().map(|h| header(headers, h)).collect();
    let unsigned_payload = header(headers, "x-tc-content-sha256").is_some_and(|v| v == tc3::UNSIGNED_PAYLOAD);
    let verified = tc3::verify(
        &auth,
        &SignedRequest { method, path, query, header_values: &values, body, unsigned_payload },
        ts_text,
        &principal.secret_key,
    );
    // The Node.js SDK signs the host name without the port its Host header carries.
    let verified = verified || {
        let host_at = auth.signed_headers.iter().position(|h| h == "host");
        match (host_at, host_without_port(host)) {
            (Some(i), Some(bare)) => {
                values[i] = Some(bare);
                let req = SignedRequest { method, path, query, header_values: &values, body, unsigned_payload };
                tc3::verify(&auth, &req, ts_text, &principal.secret_key)
            }
            _ => false,
        }
    };
    if !verified {
        return Err(ApiError::signature_failure("signature mismatch"));
    }
    Ok(Authenticated {
        account: principal.account,
        service: auth.service,
        signature: auth.signature,
        signed_at: Timestamp(ts),
    })
}

/// `host:port` without `:port` (`[::1]:80` gives `[::1]`); `None` when there is no port.
fn host_without_port(host: &str) -> Option<&str> {
    let (name, port) = host.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() && !name.ends_with(':'))
        .then_some(name)
}

/// The service a request is for. Clients sign for the service they mean (`cvm`), except the
/// official Node.js SDK, which signs for its endpoint's first dot-separated label (`127` for
/// `127.0.0.1:9180`, `localhost:9180` for `localhost:9180`): a scope that names no service
/// here and equals the Host header's first label means the service that owns `X-TC-Version`.
/// The signature still commits to that scope; only the routing reads the version.
fn routing_service<'a>(scope: &'a str, host: &str, version: &str) -> &'a str {
    let known = SERVICES.iter().any(|(s, _)| *s == scope);
    if !known && host.split('.').next() == Some(scope) {
        if let Some(owner) = owner_of(version) {
            return owner;
        }
    }
    scope
}

/// The service that serves API `version` (each version belongs to one service here).
fn owner_of(version: &str) -> Option<&'static str> {
    SERVICES.iter().find(|(_, versions)| versions.contains(&version)).map(|(s, _)| *s)
}

/// Finds the action. A scope naming a service that does not serve this version, while another
/// service does, is a signature failure (the client signed for the wrong service).
fn route(scope_service: &str, version: &str, action: &str) -> Result<Action, ApiError> {
    let owner = owner_of(version);
    match SERVICES.iter().find(|(s, _)| *s == scope_service) {
        _ if owner.is_some_and(|o| o != scope_service) => {
            return Err(ApiError::signature_failure(&format!(
                "the credential scope names service `{scope_service}`, but version {version} belongs to `{}`",
                owner.unwrap_or_default()
            )))
        }
        None => {
            return Err(ApiError::new(
                code::NO_SUCH_PRODUCT,
                format!("The product `{scope_service}` does not exist."),
                format!("产品 `{scope_service}` 不存在。"),
            ))
        }
        Some(_) if owner.is_none() => {
            return Err(ApiError::new(
                code::NO_SUCH_VERSION,
                format!("The API version `{version}` does not exist for `{scope_service}`."),
                format!("`{scope_service}` 不存在 API 版本 `{version}`。"),
            ))
        }
        Some(_) => {}
    }
    let mut all = ACTIONS.iter().copied().chain(tke_actions());
    all.find(|a| a.service == scope_service && a.version == version && a.name == action).ok_or_else(|| {
        ApiError::new(
            code::INVALID_ACTION,
            format!("The action `{action}` does not exist in {scope_service} {version}."),
            format!("接口 `{action}` 在 {scope_service} {version} 中不存在。"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_distinguishes_product_version_action_and_scope_mismatch() {
        assert_eq!(route("cvm", "2017-03-12", "DescribeImages").map(|a| a.id).ok(), Some(ActionId::DescribeImages));
        let code_of = |s, v, a| route(s, v, a).err().map(|e| e.code);
        assert_eq!(code_of("cvm", "2017-03-12", "Nope"), Some(code::INVALID_ACTION));
        assert_eq!(code_of("cvm", "1999-01-01", "DescribeImages"), Some(code::NO_SUCH_VERSION));
        assert_eq!(code_of("cbs", "1999-01-01", "DescribeImages"), Some(code::NO_SUCH_PRODUCT));
        assert_eq!(code_of("tke", "2017-03-12", "DescribeImages"), Some(code::SIGNATURE_FAILURE));
        assert_eq!(code_of("cbs", "2017-03-12", "DescribeImages"), Some(code::SIGNATURE_FAILURE));
        assert_eq!(code_of("tke", "2018-05-25", "Nope"), Some(code::INVALID_ACTION));
        assert_eq!(
            route("tke", "2018-05-25", "DescribeImages").map(|a| a.id).ok(),
            Some(ActionId::Tke(TkeAction::DescribeImages)),
            "TKE's DescribeImages is its own action"
        );
        assert_eq!(code_of("tke", "2022-05-01", "DescribeOSImages"), Some(code::INVALID_ACTION));
    }

    #[test]
    fn the_node_sdks_scope_of_the_endpoints_first_label_routes_by_version() {
        assert_eq!(routing_service("127", "127.0.0.1:9180", "2017-03-12"), "cvm");
        assert_eq!(routing_service("localhost:9180", "localhost:9180", "2018-05-25"), "tke");
        assert_eq!(routing_service("cvm", "127.0.0.1:9180", "2017-03-12"), "cvm");
        assert_eq!(routing_service("cbs", "127.0.0.1:9180", "2017-03-12"), "cbs", "another product's scope stays");
        assert_eq!(routing_service("127", "10.0.0.1:9180", "2017-03-12"), "127", "only the Host's own label");
        assert_eq!(routing_service("127", "127.0.0.1:9180", "1999-01-01"), "127");
        assert_eq!(host_without_port("127.0.0.1:9180"), Some("127.0.0.1"));
        assert_eq!(host_without_port("[::1]:9180"), Some("[::1]"));
        assert_eq!(host_without_port("example.com"), None);
        assert_eq!(host_without_port("[::1]"), None);
    }

    #[test]
    fn envelopes_carry_the_request_id_on_success_and_error() {
        let ok = envelope("rid", Ok(br#"{"TotalCount":1}"#.to_vec()), Language::English);
        assert_eq!(ok, br#"{"Response":{"TotalCount":1,"RequestId":"rid"}}"#);
        let empty = envelope("rid", Ok(b"{}".to_vec()), Language::English);
        assert_eq!(empty, br#"{"Response":{"RequestId":"rid"}}"#);
        let err = envelope("rid", Err(ApiError::missing("X")), Language::English);
        let v: serde_json::Value = serde_json::from_slice(&err).expect("json");
        assert_eq!(v["Response"]["Error"]["Code"], "MissingParameter");
        assert_eq!(v["Response"]["RequestId"], "rid");
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, request_id());
    }
}
