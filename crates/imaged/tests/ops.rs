//! Operating a server: `/healthz` (liveness) and `/healthz/ready` (the database and the object
//! store answer) on the API port, `/metrics` only on the operator's address: requests by action
//! and error code with latency, jobs by kind and state, stored blocks per region, the last fsck.

mod support;

use support::{raw, Backend, Server};

fn get(addr: &str, path: &str) -> support::RawResponse {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).expect("request")
}

/// The value of the first sample line starting with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn readiness_and_metrics_tell_an_operator_how_the_server_is() {
    let server =
        Server::start_env(Backend::Sqlite, "ops", &[("IMAGED_METRICS_LISTEN", "127.0.0.1:0")]).expect("sqlite");
    let metrics_addr = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("imaged metrics on http://")?.strip_suffix("/metrics").map(str::to_owned))
        .unwrap_or_else(|| panic!("the metrics address is announced: {:?}", server.banner));

    let live = get(&server.addr, "/healthz");
    assert_eq!(live.status, 200);
    let ready = get(&server.addr, "/healthz/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), serde_json::json!({"ready": true, "database": "ok", "objects": "ok"}));
    let public = get(&server.addr, "/metrics");
    assert!(public.error_code().is_some(), "the API port answers /metrics as an unsigned API call");
    assert!(!String::from_utf8_lossy(&public.body).contains("imaged_requests"), "and shows no metrics");

    let r = server.python(&server.admin, r#"result = [call(client(), "DescribeImages", {}) for _ in range(3)]"#);
    assert!(r[0]["ok"].is_object(), "{r}");
    let bad = support::Creds { secret_key: "wrong".into(), ..server.admin.clone() };
    assert_eq!(
        server.post(&bad, "DescribeImages", b"{}", &[]).error_code().as_deref(),
        Some("AuthFailure.SignatureFailure")
    );
    // A job, so that the jobs gauge has something to count.
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("one.raw");
    std::fs::write(&file, vec![0x42u8; 1 << 20]).expect("disk");
    let upload = support::imaged_client(&server, &server.admin, &["upload", &file.to_string_lossy()]);
    assert!(upload.status.success(), "{}", String::from_utf8_lossy(&upload.stderr));
    let url: serde_json::Value = serde_json::from_slice(&upload.stdout).expect("upload json");
    let r = server.python(
        &server.admin,
        &format!(
            r#"result = call(client(), "ImportImage", {{"ImageUrl": "{}", "ImageName": "counted", "OsType": "CentOS",
                "OsVersion": "7", "Architecture": "x86_64"}})"#,
            url["ImageUrl"].as_str().expect("url")
        ),
    );
    assert!(r["ok"]["ImageId"].is_string(), "{r}");
    let fsck = server.cli_json(&["fsck", "--region", "public"]);
    let checked = fsck[0]["checked_blocks"].as_u64().expect("checked");

    let resp = get(&metrics_addr, "/metrics");
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")));
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    assert_eq!(sample(&text, r#"imaged_requests_total{action="DescribeImages",code="Success"}"#), Some(3.0), "{text}");
    assert_eq!(sample(&text, r#"imaged_requests_total{action="-",code="AuthFailure.SignatureFailure"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"imaged_request_duration_seconds_count{action="DescribeImages"}"#), Some(3.0));
    assert!(sample(&text, r#"imaged_block_store_objects{region="public"}"#).is_some_and(|n| n > 0.0), "{text}");
    assert!(sample(&text, r#"imaged_block_store_bytes{region="public"}"#).is_some_and(|n| n > 0.0));
    assert_eq!(sample(&text, r#"imaged_fsck_checked_blocks{region="public"}"#), Some(checked as f64));
    assert_eq!(sample(&text, r#"imaged_fsck_bad_blocks{region="public"}"#), Some(0.0));
    let import_jobs: f64 = text
        .lines()
        .filter(|l| l.starts_with(r#"imaged_jobs{kind="import","#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(import_jobs, 1.0, "the import is counted in its state: {text}");
    assert_eq!(sample(&text, r#"imaged_requests_total{action="ImportImage",code="Success"}"#), Some(1.0));
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
}
