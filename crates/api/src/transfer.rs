//! Byte transfer next to the API: resumable uploads (`POST /upload?Op=…`) whose result is an
//! `upload://ID` URL that `ImportImage` accepts, and downloads of exported files
//! (`GET /download?Bucket=…&Name=…`). Both are signed with TC3 like the API (the query string is
//! part of the signature; upload bodies are sent as `UNSIGNED-PAYLOAD`) and answer errors in
//! the same envelope.
//!
//! Uploads are contiguous: `Op=append&Offset=N` must continue at the upload's current size
//! (`Op=status` tells it), so an interrupted client resumes where the server stopped. A client
//! may skip all-zero ranges with `Op=zero&Offset=N&Length=M`, which extends the file with a hole,
//! and may send whole blocks the region already stores as references: `Op=refs&Offset=N` with a
//! body of (32-byte BLAKE3 digest, 32-byte proof) pairs, the proof being BLAKE3 keyed with the
//! upload's `ProofNonce` over the block's bytes, so that knowing a digest is not enough to
//! reference someone else's bytes. The server adds the longest prefix it holds and can verify
//! and answers the new `Size`; the client sends the rest as data.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, Request};
use axum::response::Response;
use http_body_util::BodyExt;
use imaged_app::data::UploadError;
use imaged_app::Service;

use crate::error::{code, ApiError, Language};
use crate::server::{admit, authenticate, client_of, envelope, json_response, request_id, SignatureUse};

/// Largest append in one request.
pub(crate) const MAX_APPEND_BYTES: u64 = 256 << 20;
/// Block references in one `Op=refs` request.
const MAX_REFS: usize = 256;
/// One reference: a block's digest, then the caller's possession proof of its bytes.
const REF_BYTES: usize = 64;

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn upload_error(e: UploadError) -> ApiError {
    match &e {
        UploadError::NotFound => {
            ApiError::invalid_value(code::RESOURCE_NOT_FOUND, "The upload does not exist or is not yours.".into())
        }
        &UploadError::WrongOffset { expected } => ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE,
            format!("Offset must be the upload's current size, {expected}."),
        ),
        UploadError::Misaligned | UploadError::TooLarge => {
            ApiError::invalid_value(code::INVALID_PARAMETER_VALUE, format!("{e}."))
        }
        UploadError::TooMany(_) => ApiError::invalid_value(code::STORAGE_QUOTA_EXCEEDED, format!("{e}.")),
        UploadError::QuotaExceeded => ApiError::invalid_value(
            code::STORAGE_QUOTA_EXCEEDED,
            "The upload would exceed the account's storage quota (see DescribeStorageQuota).".into(),
        ),
        UploadError::Expired => ApiError::invalid_value(
            code::RESOURCE_NOT_FOUND,
            "The upload expired: it was not appended to within its expiry; start a new one.".into(),
        ),
        UploadError::Io(io) => ApiError::internal(io),
        UploadError::Store(s) => ApiError::internal(s),
    }
}

fn number(query: &str, name: &str) -> Result<u64, ApiError> {
    query_param(query, name)
        .ok_or_else(|| ApiError::missing(name))?
        .parse()
        .map_err(|_| ApiError::invalid_parameter(name, "expected a non-negative integer"))
}

pub(crate) async fn upload(State(service): State<Service>, req: Request<Body>) -> Response {
    let lang = Language::from_header(req.headers().get("x-tc-language").and_then(|v| v.to_str().ok()));
    let id = request_id();
    let result = match tokio::spawn(handle_upload(service, req)).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::internal(&format!("upload task failed: {e}"))),
    };
    json_response(envelope(&id, result, lang))
}

async fn handle_upload(service: Service, req: Request<Body>) -> Result<Vec<u8>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(code::UNSUPPORTED_PROTOCOL, "Uploads use POST.", "上传请使用 POST。"));
    }
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let unsigned = parts.headers.get("x-tc-content-sha256").is_some_and(|v| v == crate::tc3::UNSIGNED_PAYLOAD);
    if !unsigned {
        return Err(ApiError::invalid_parameter("X-TC-Content-SHA256", "uploads must be sent as UNSIGNED-PAYLOAD"));
    }
    let op = query_param(&query, "Op").ok_or_else(|| ApiError::missing("Op"))?;
    let auth = authenticate(&service, &parts.headers, ("POST", "/upload", &query), b"").await?;
    let caller = auth.account;
    let usage = SignatureUse { read_only: op == "status", client: client_of(&parts.extensions) };
    admit(&service, &auth, &usage).await?;
    let upload_id = || query_param(&query, "UploadId").ok_or_else(|| ApiError::missing("UploadId"));
    let out = match op.as_str() {
        "create" => {
            let region = parts
                .headers
                .get("x-tc-region")
                .and_then(|v| v.to_str().ok())
                .filter(|r| !r.is_empty())
                .ok_or_else(|| ApiError::missing("Region"))?;
            if service.regions().get(region).is_none() {
                return Err(ApiError::invalid_value(
                    code::INVALID_REGION_NOT_FOUND,
                    format!("The region `{region}` does not exist."),
                ));
            }
            let id = service.create_upload(caller, region).await.map_err(upload_error)?;
            let state = service.upload_state(caller, &id).await.map_err(upload_error)?;
            serde_json::json!({"UploadId": id, "ImageUrl": format!("upload://{id}"), "Size": 0,
                "ProofNonce": hex::encode(state.nonce)})
        }
        "status" => {
            let id = upload_id()?;
            let state = service.upload_state(caller, &id).await.map_err(upload_error)?;
            serde_json::json!({"UploadId": id, "ImageUrl": format!("upload://{id}"), "Size": state.manifest.virtual_size,
                "ProofNonce": hex::encode(state.nonce), "ExpiresAt": state.expires_at.iso8601()})
        }
        "refs" => {
            let id = upload_id()?;
            let offset = number(&query, "Offset")?;
            let body =
                body.collect().await.map_err(|e| ApiError::invalid_parameter("body", &format!("interrupted: {e}")))?;
            let bytes = body.to_bytes();
            if bytes.len() % REF_BYTES != 0 || bytes.len() > MAX_REFS * REF_BYTES {
                return Err(ApiError::invalid_parameter(
                    "body",
                    &format!("expected up to {MAX_REFS} references of {REF_BYTES} bytes (digest, proof)"),
                ));
            }
            let refs: Vec<_> = bytes
                .chunks_exact(REF_BYTES)
                .map(|r| {
                    let (mut d, mut p) = ([0u8; 32], [0u8; 32]);
                    d.copy_from_slice(&r[..32]);
                    p.copy_from_slice(&r[32..]);
                    (d, p)
                })
                .collect();
            let mut writer = service.upload_writer(caller, &id, offset).await.map_err(upload_error)?;
            let accepted = writer.reference(&refs).await.map_err(upload_error)?;
            let size = writer.finish().await.map_err(upload_error)?;
            serde_json::json!({"UploadId": id, "Size": size, "Accepted": accepted})
        }
        "zero" => {
            let id = upload_id()?;
            let (offset, length) = (number(&query, "Offset")?, number(&query, "Length")?);
            let mut writer = service.upload_writer(caller, &id, offset).await.map_err(upload_error)?;
            writer.zero(length).map_err(upload_error)?;
            let size = writer.finish().await.map_err(upload_error)?;
            serde_json::json!({"UploadId": id, "Size": size})
        }
        "append" => {
            let id = upload_id()?;
            let offset = number(&query, "Offset")?;
            let mut writer = service.upload_writer(caller, &id, offset).await.map_err(upload_error)?;
            let mut body = body;
            let mut received = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ApiError::invalid_parameter("body", &format!("interrupted: {e}")))?;
                if let Ok(chunk) = frame.into_data() {
                    received += chunk.len() as u64;
                    if received > MAX_APPEND_BYTES {
                        crate::server::drain(body, received).await;
                        return Err(ApiError::new(
                            code::REQUEST_SIZE_LIMIT_EXCEEDED,
                            format!("An append may carry at most {MAX_APPEND_BYTES} bytes."),
                            format!("单次追加最多 {MAX_APPEND_BYTES} 字节。"),
                        ));
                    }
                    writer.write(chunk).await.map_err(upload_error)?;
                }
            }
            let size = writer.finish().await.map_err(upload_error)?;
            serde_json::json!({"UploadId": id, "Size": size})
        }
        other => {
            return Err(ApiError::invalid_parameter(
                "Op",
                &format!("`{other}` is not create, status, append, refs or zero"),
            ))
        }
    };
    serde_json::to_vec(&out).map_err(|e| ApiError::internal(&e))
}

pub(crate) async fn download(State(service): State<Service>, req: Request<Body>) -> Response {
    let lang = Language::from_header(req.headers().get("x-tc-language").and_then(|v| v.to_str().ok()));
    let (parts, _) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let found = async {
        let auth = authenticate(&service, &parts.headers, ("GET", "/download", &query), b"").await?;
        let caller = auth.account;
        admit(&service, &auth, &SignatureUse { read_only: true, client: client_of(&parts.extensions) }).await?;
        let bucket = query_param(&query, "Bucket").ok_or_else(|| ApiError::missing("Bucket"))?;
        let name = query_param(&query, "Name").ok_or_else(|| ApiError::missing("Name"))?;
        let found = service.exported_file(caller, &bucket, &name).await?.ok_or_else(|| {
            ApiError::invalid_value(
                code::RESOURCE_NOT_FOUND,
                format!("No exported file `{name}` of yours in `{bucket}`."),
            )
        })?;
        let (len, stream) = found.open().await.map_err(|e| ApiError::internal(&e))?;
        Ok((Body::from_stream(stream), len))
    }
    .await;
    match found {
        Ok((body, len)) => {
            let mut resp = Response::new(body);
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
                resp.headers_mut().insert(axum::http::header::CONTENT_LENGTH, v);
            }
            resp
        }
        Err(e) => json_response(envelope(&request_id(), Err(e), lang)),
    }
}
