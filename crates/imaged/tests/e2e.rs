//! End to end: the real `imaged` binary on port 0, driven by the official Python SDK and tccli
//! (from a venv the tests create) and by a raw signed HTTP client for inputs no client sends.

mod support;

use serde_json::{json, Value};
use support::{signed_request, Backend, Creds, Server};

const SEED_IMAGES: &[(&str, &str)] = &[
    ("img-eb30mz89", "TencentOS Server 3.1 (TK4)"),
    ("img-hdt9xxkt", "TencentOS Server 2.4"),
    ("img-22trbn9x", "Ubuntu Server 20.04.1 LTS 64-bit"),
    ("img-pi0ii46r", "Ubuntu 18.04 LTS 64-bit"),
    ("img-25szkc8t", "CentOS 8.0"),
    ("img-9qabwvbn", "CentOS 7.6"),
];

fn image<'a>(set: &'a Value, id: &str) -> &'a Value {
    set.as_array().and_then(|a| a.iter().find(|i| i["ImageId"] == id)).unwrap_or_else(|| panic!("{id} not listed"))
}

/// The seed catalogue through the typed SDK and raw JSON, with the seeds' per-region rules.
fn sdk_lists_the_seed_catalogue(backend: Backend) {
    let Some(server) = Server::start(backend, "catalogue") else { return };
    let r = server.python(
        &server.admin,
        r#"
c = client()
req = models.DescribeImagesRequest()
req.Limit = 100
typed = c.DescribeImages(req)
result = {
    "total": typed.TotalCount,
    "typed": [{"id": i.ImageId, "name": i.ImageName, "type": i.ImageType, "state": i.ImageState, "description": i.ImageDescription} for i in typed.ImageSet],
    "gz": call(c, "DescribeImages", {"Limit": 100}),
    "hk": call(client("ap-hongkong"), "DescribeImages", {"Limit": 100}),
    "sg_market": call(client("ap-singapore"), "DescribeImages", {"Filters": [{"Name": "image-type", "Values": ["MARKET_IMAGE"]}]}),
    "quota": call(c, "DescribeImageQuota"),
    "regions": call(client(region=""), "DescribeRegions"),
}
"#,
    );
    let typed = r["typed"].as_array().expect("typed list");
    assert_eq!(r["total"].as_u64(), Some(typed.len() as u64));
    for (id, name) in SEED_IMAGES {
        let row = typed.iter().find(|i| i["id"] == *id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(row["name"], *name);
        assert_eq!(row["type"], "PUBLIC_IMAGE");
        assert_eq!(row["state"], "NORMAL");
    }
    let gz = &r["gz"]["ok"]["ImageSet"];
    assert_eq!(image(gz, "img-eb30mz89")["OsType"], "TencentOS Server");
    assert_eq!(image(gz, "img-eb30mz89")["KernelVersion"], "5.4.119");
    assert_eq!(image(gz, "img-hdt9xxkt")["OsType"], "Tlinux");
    for beta in ["img-22trbn9x", "img-25szkc8t"] {
        assert_eq!(image(gz, beta)["ReleaseStatus"], "BETA");
        assert_eq!(image(gz, beta)["ApplicationRequired"], true);
    }
    assert_eq!(image(gz, "img-9qabwvbn")["ReleaseStatus"], "OFFICIAL");
    assert_eq!(image(gz, "img-9qabwvbn")["Remarks"], json!(["CentOS 7.6 public kernel."]));
    let windows: Vec<&Value> = gz.as_array().expect("set").iter().filter(|i| i["Platform"] == "Windows").collect();
    assert!(!windows.is_empty(), "the catalogue offers Windows Server");
    assert!(windows.iter().all(|w| w["LicenseFeeApplies"] == false), "no licence fee in mainland China");
    let hk_windows = image(&r["hk"]["ok"]["ImageSet"], windows[0]["ImageId"].as_str().expect("id"));
    assert_eq!(hk_windows["LicenseFeeApplies"], true, "licence fee outside mainland China");
    let markets: Vec<&Value> =
        gz.as_array().expect("set").iter().filter(|i| i["ImageType"] == "MARKET_IMAGE").collect();
    assert!(!markets.is_empty(), "marketplace images in a mainland region");
    assert!(markets.iter().all(|m| m["MarketListing"]["Provider"].is_string() && m["Reviewed"] == true));
    assert_eq!(r["sg_market"]["ok"]["TotalCount"], 0, "no marketplace outside mainland China");
    assert_eq!(r["quota"]["ok"]["ImageNumQuota"], 10, "the seeds' quota of 10");
    let regions = r["regions"]["ok"]["RegionSet"].as_array().expect("regions");
    assert!(regions.iter().any(|r| r["Region"] == "ap-guangzhou" && r["IsChinaMainland"] == true));
    assert!(regions.iter().any(|r| r["Region"] == "ap-singapore" && r["IsChinaMainland"] == false));
    let beta = typed.iter().find(|i| i["id"] == "img-22trbn9x").expect("beta image");
    assert!(beta["description"].as_str().is_some_and(|d| d.contains("beta") && d.contains("OS type: Ubuntu")));
}

#[test]
fn sqlite_sdk_lists_the_seed_catalogue() {
    sdk_lists_the_seed_catalogue(Backend::Sqlite);
}

#[test]
fn postgres_sdk_lists_the_seed_catalogue() {
    sdk_lists_the_seed_catalogue(Backend::Postgres);
}

/// Operator commands work against a running server: accounts, keys, quota overrides.
fn operator_manages_accounts_and_keys_while_serving(backend: Backend) {
    let Some(server) = Server::start(backend, "operator") else { return };
    let alice = server.create_account("alice");
    assert_ne!(alice.account_id, server.admin.account_id);
    let quota = |creds: &Creds| server.python(creds, r#"result = call(client(), "DescribeImageQuota")"#);
    assert_eq!(quota(&alice)["ok"]["ImageNumQuota"], 10);
    let out = server.cli(&["account", "set-quota", "--account", &alice.account_id, "--quota", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(quota(&alice)["ok"]["ImageNumQuota"], 3);

    let dup = server.cli(&["account", "create", "--name", "alice"]);
    assert!(!dup.status.success(), "account names are unique");

    let out = server.cli(&["key", "create", "--account", &alice.account_id]);
    assert!(out.status.success());
    let second: Creds = serde_json::from_slice(&out.stdout).expect("creds");
    assert_eq!(quota(&second)["ok"]["ImageNumQuota"], 3, "a second key of the same account");

    let out = server.cli(&["key", "list", "--account", &alice.account_id]);
    let keys: Value = serde_json::from_slice(&out.stdout).expect("key list");
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&alice.secret_key), "secrets are never listed");

    assert!(server.cli(&["key", "disable", &alice.secret_id]).status.success());
    assert_eq!(quota(&alice)["error"], "AuthFailure.SecretIdNotFound");
    assert!(server.cli(&["key", "enable", &alice.secret_id]).status.success());
    assert_eq!(quota(&alice)["ok"]["ImageNumQuota"], 3);
    assert!(server.cli(&["key", "delete", &alice.secret_id]).status.success());
    assert_eq!(quota(&alice)["error"], "AuthFailure.SecretIdNotFound");
    assert!(!server.cli(&["key", "delete", &alice.secret_id]).status.success(), "deleting twice fails");

    let accounts: Value = serde_json::from_slice(&server.cli(&["account", "list"]).stdout).expect("account list");
    let roles: Vec<&str> = accounts.as_array().expect("list").iter().filter_map(|a| a["role"].as_str()).collect();
    assert_eq!(roles, ["admin", "user"]);
}

#[test]
fn sqlite_operator_manages_accounts_and_keys_while_serving() {
    operator_manages_accounts_and_keys_while_serving(Backend::Sqlite);
}

#[test]
fn postgres_operator_manages_accounts_and_keys_while_serving() {
    operator_manages_accounts_and_keys_while_serving(Backend::Postgres);
}

#[test]
fn first_start_writes_private_credentials_and_restart_creates_no_second_admin() {
    let mut server = Server::start(Backend::Sqlite, "bootstrap").expect("sqlite");
    let before = std::fs::read(server.dir.path().join("credentials.json")).expect("read");
    let banner = server.restart();
    assert!(banner.iter().all(|l| !l.contains("secretKey")), "a restart prints no key: {banner:?}");
    assert_eq!(std::fs::read(server.dir.path().join("credentials.json")).expect("read"), before);
    let works = server.python(&server.admin, r#"result = call(client(), "DescribeImageQuota")"#);
    assert_eq!(works["ok"]["ImageNumQuota"], 10, "the admin key survives the restart");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.dir.path().join("credentials.json")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = server.cli(&["account", "list"]);
    let accounts: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(accounts.as_array().map(Vec::len), Some(1));
    assert_eq!(accounts[0]["accountId"], server.admin.account_id.as_str());
    let health =
        support::raw(&server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("health");
    assert_eq!(health.status, 200);
}

#[test]
fn filters_paging_and_list_errors_through_sdk_get_and_post() {
    let server = Server::start(Backend::Sqlite, "filters").expect("sqlite");
    let r = server.python(
        &server.admin,
        r#"
result = {}
for method in ["POST", "GET"]:
    c = client(method=method)
    pages, offset = [], 0
    while True:
        p = call(c, "DescribeImages", {"Offset": offset, "Limit": 7})["ok"]
        pages.append(p)
        offset += 7
        if offset >= p["TotalCount"]:
            break
    result[method] = {
        "pages": [[i["ImageId"] for i in p["ImageSet"]] for p in pages],
        "totals": [p["TotalCount"] for p in pages],
        "default": call(c, "DescribeImages"),
        "ubuntu": call(c, "DescribeImages", {"Filters": [{"Name": "platform", "Values": ["ubuntu"]}], "Limit": 100}),
        "two_filters": call(c, "DescribeImages", {"Filters": [
            {"Name": "platform", "Values": ["CentOS", "Ubuntu"]},
            {"Name": "image-name", "Values": ["18.04", "7.6"]}], "Limit": 100}),
        "ids": call(c, "DescribeImages", {"ImageIds": ["img-eb30mz89", "img-zzzzzzzz"]}),
        "arm": call(c, "DescribeImages", {"InstanceType": "SR1.MEDIUM2", "Limit": 100}),
        "tag": call(c, "DescribeImages", {"Filters": [{"Name": "tag:env", "Values": ["prod"]}]}),
        "both": call(c, "DescribeImages", {"ImageIds": ["img-eb30mz89"], "Filters": [{"Name": "platform", "Values": ["x"]}]}),
        "six_values": call(c, "DescribeImages", {"Filters": [{"Name": "platform", "Values": ["a", "b", "c", "d", "e", "f"]}]}),
        "eleven_filters": call(c, "DescribeImages", {"Filters": [{"Name": "platform", "Values": ["a"]}] * 11}),
        "unknown_filter": call(c, "DescribeImages", {"Filters": [{"Name": "colour", "Values": ["red"]}]}),
        "bad_type": call(c, "DescribeImages", {"Filters": [{"Name": "image-type", "Values": ["ALL"]}]}),
        "limit": call(c, "DescribeImages", {"Limit": 101}),
        "malformed": call(c, "DescribeImages", {"ImageIds": ["img-BAD"]}),
        "instance_type": call(c, "DescribeImages", {"InstanceType": "large"}),
        "no_region": call(client(region=""), "DescribeImages"),
        "bad_region": call(client(region="ap-mars"), "DescribeImages"),
    }
"#,
    );
    for method in ["POST", "GET"] {
        let m = &r[method];
        let pages: Vec<Vec<String>> = serde_json::from_value(m["pages"].clone()).expect("pages");
        let total = m["totals"][0].as_u64().expect("total");
        assert!(m["totals"].as_array().expect("totals").iter().all(|t| t.as_u64() == Some(total)), "{method}");
        let all: Vec<&String> = pages.iter().flatten().collect();
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(all.len() as u64, total, "{method}: pages cover every match once");
        assert_eq!(unique.len(), all.len(), "{method}: no image on two pages");
        assert!(pages[..pages.len() - 1].iter().all(|p| p.len() == 7));
        assert_eq!(
            m["default"]["ok"]["ImageSet"].as_array().map(Vec::len),
            Some(20.min(total as usize)),
            "default Limit 20"
        );
        let ubuntu = m["ubuntu"]["ok"]["ImageSet"].as_array().expect("ubuntu");
        assert!(ubuntu.len() >= 4 && ubuntu.iter().all(|i| i["Platform"] == "Ubuntu"), "{method}: {ubuntu:?}");
        let two: Vec<&str> = m["two_filters"]["ok"]["ImageSet"]
            .as_array()
            .expect("two")
            .iter()
            .filter_map(|i| i["ImageId"].as_str())
            .collect();
        assert!(two.contains(&"img-pi0ii46r") && two.contains(&"img-9qabwvbn"), "{method}: {two:?}");
        assert!(two.iter().all(|id| *id != "img-eb30mz89"));
        let ids = m["ids"]["ok"]["ImageSet"].as_array().expect("ids");
        assert_eq!(ids.len(), 1, "an unknown id is simply absent");
        let arm = m["arm"]["ok"]["ImageSet"].as_array().expect("arm");
        assert!(!arm.is_empty() && arm.iter().all(|i| i["Architecture"] == "arm"));
        assert_eq!(m["tag"]["ok"]["TotalCount"], 0);
        for (case, code) in [
            ("both", "InvalidParameter.InvalidParameterCoexistImageIdsFilters"),
            ("six_values", "InvalidFilterValue.LimitExceeded"),
            ("eleven_filters", "InvalidParameterValue.LimitExceeded"),
            ("unknown_filter", "InvalidFilter"),
            ("bad_type", "InvalidParameterValue"),
            ("limit", "InvalidParameterValue.InvalidParameterValueLimit"),
            ("malformed", "InvalidImageId.Malformed"),
            ("instance_type", "InvalidInstanceType.Malformed"),
            ("no_region", "MissingParameter"),
            ("bad_region", "InvalidRegion.NotFound"),
        ] {
            assert_eq!(m[case]["error"], code, "{method} {case}: {}", m[case]);
            assert!(m[case]["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        }
    }
}

#[test]
fn tccli_lists_filters_and_reports_errors() {
    let server = Server::start(Backend::Sqlite, "tccli").expect("sqlite");
    let run = |args: &[&str]| {
        let out = server.tccli(&server.admin, args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["cvm", "DescribeImages", "--region", "ap-guangzhou", "--Limit", "100"]);
    assert_eq!(code, Some(0), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).expect("json");
    for (id, _) in SEED_IMAGES {
        image(&listed["ImageSet"], id);
    }
    let (code, stdout, stderr) = run(&[
        "cvm",
        "DescribeImages",
        "--region",
        "ap-guangzhou",
        "--Filters",
        r#"[{"Name":"image-type","Values":["PUBLIC_IMAGE"]},{"Name":"platform","Values":["CentOS"]}]"#,
        "--Limit",
        "2",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let page: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(page["ImageSet"].as_array().map(Vec::len), Some(2));
    assert!(page["TotalCount"].as_u64().is_some_and(|t| t >= 3));
    let (code, stdout, _) = run(&[
        "cvm",
        "DescribeImages",
        "--region",
        "ap-guangzhou",
        "--cli-unfold-argument",
        "--Filters.0.Name",
        "image-type",
        "--Filters.0.Values",
        "PUBLIC_IMAGE",
        "MARKET_IMAGE",
        "--Limit",
        "100",
    ]);
    assert_eq!(code, Some(0));
    let both: Value = serde_json::from_str(&stdout).expect("json");
    assert!(both["ImageSet"].as_array().expect("set").iter().any(|i| i["ImageType"] == "MARKET_IMAGE"));

    let (code, stdout, _) = run(&["cvm", "DescribeRegions", "--region", "ap-guangzhou"]);
    assert_eq!(code, Some(0));
    let regions: Value = serde_json::from_str(&stdout).expect("json");
    let set = regions["RegionSet"].as_array().expect("regions");
    assert!(set.iter().any(|r| r["Region"] == "ap-guangzhou" && r["RegionState"] == "AVAILABLE"));
    assert!(set.iter().any(|r| r["Region"] == "ap-singapore"));
    let (code, stdout, _) = run(&["cvm", "DescribeZones", "--region", "ap-shanghai"]);
    assert_eq!(code, Some(0));
    let zones: Value = serde_json::from_str(&stdout).expect("json");
    assert!(zones["ZoneSet"]
        .as_array()
        .expect("zones")
        .iter()
        .all(|z| z["Zone"].as_str().is_some_and(|s| s.starts_with("ap-shanghai-"))));

    let (code, _, stderr) = run(&["cvm", "DescribeImages", "--region", "ap-guangzhou", "--Limit", "500"]);
    assert_eq!(code, Some(255));
    assert!(stderr.contains("code:InvalidParameterValue.InvalidParameterValueLimit"), "{stderr}");
}

#[test]
fn every_authentication_failure_mode_through_the_sdk() {
    let server = Server::start(Backend::Sqlite, "auth").expect("sqlite");
    let bob = server.create_account("bob");
    let r = server.python(
        &bob,
        r#"
def expired():
    real = time.time
    time.time = lambda: real() - 3600
    try:
        return call(client(), "DescribeImageQuota")
    finally:
        time.time = real

def wrong_service():
    c = client()
    c._service = "tke"
    return call(c, "DescribeImageQuota")

result = {
    "ok": call(client(), "DescribeImageQuota"),
    "bad_signature": call(client(skey="x" * 40), "DescribeImageQuota"),
    "unknown_key": call(client(sid="AKID" + "0" * 32), "DescribeImageQuota"),
    "expired": expired(),
    "wrong_service": wrong_service(),
    "zh": call(client(skey="x" * 40, language="zh-CN"), "DescribeImageQuota"),
}
"#,
    );
    assert_eq!(r["ok"]["ok"]["ImageNumQuota"], 10);
    assert_eq!(r["bad_signature"]["error"], "AuthFailure.SignatureFailure");
    assert_eq!(r["unknown_key"]["error"], "AuthFailure.SecretIdNotFound");
    assert_eq!(r["expired"]["error"], "AuthFailure.SignatureExpire");
    assert_eq!(r["wrong_service"]["error"], "AuthFailure.SignatureFailure");
    assert!(r["bad_signature"]["message"].as_str().is_some_and(|m| m.contains("signature")));
    assert!(r["zh"]["message"].as_str().is_some_and(|m| m.contains("签名")), "Chinese message: {}", r["zh"]);

    assert!(server.cli(&["key", "disable", &bob.secret_id]).status.success());
    let disabled = server.python(&bob, r#"result = call(client(), "DescribeImageQuota")"#);
    assert_eq!(disabled["error"], "AuthFailure.SecretIdNotFound");
}

#[test]
fn bad_input_gets_the_proper_common_error_and_never_a_500() {
    let server = Server::start(Backend::Sqlite, "badinput").expect("sqlite");
    let admin = &server.admin;
    let code = |resp: support::RawResponse| resp.assert_envelope().error_code();
    let post = |body: &[u8]| code(server.post(admin, "DescribeImages", body, &[]));

    assert_eq!(post(br#"{"Limit": 1}"#), None);
    assert_eq!(post(br#"{"Limit": 1"#).as_deref(), Some("InvalidParameter"), "malformed JSON");
    assert_eq!(post(br#"[1, 2]"#).as_deref(), Some("InvalidParameter"), "not an object");
    assert_eq!(post(br#"{"Limit": "ten"}"#).as_deref(), Some("InvalidParameter"), "wrong type");
    assert_eq!(post(br#"{"ImageIds": "img-eb30mz89"}"#).as_deref(), Some("InvalidParameter"), "not a list");
    assert_eq!(post(br#"{"Colour": "red"}"#).as_deref(), Some("UnknownParameter"));
    assert_eq!(post(br#"{"Filters": [{"Values": ["x"]}]}"#).as_deref(), Some("MissingParameter"));
    let big = vec![b' '; imaged_api::MAX_POST_BYTES + 1];
    assert_eq!(post(&big).as_deref(), Some("RequestSizeLimitExceeded"));
    let long_query = format!("ImageIds.0={}", "a".repeat(imaged_api::MAX_QUERY_BYTES));
    assert_eq!(code(server.get(admin, "DescribeImages", &long_query)).as_deref(), Some("RequestSizeLimitExceeded"));
    assert_eq!(code(server.get(admin, "DescribeImages", "ImageIds.0=img-eb30mz89&Limit=1")), None);
    assert_eq!(code(server.get(admin, "DescribeImages", "Limit=1&Limit=2")).as_deref(), Some("InvalidParameter"));
    assert_eq!(code(server.post(admin, "Nope", b"{}", &[])).as_deref(), Some("InvalidAction"));
    assert_eq!(
        code(server.post(admin, "DescribeImages", b"{}", &[("X-TC-Version", "2001-01-01")])).as_deref(),
        Some("NoSuchVersion")
    );
    assert_eq!(
        code(server.post(admin, "DescribeImages", b"{}", &[("X-TC-Action", "")])).as_deref(),
        Some("MissingParameter")
    );
    assert_eq!(
        code(server.post(admin, "DescribeImages", b"{}", &[("X-TC-Region", "")])).as_deref(),
        Some("MissingParameter")
    );
    assert_eq!(
        code(server.post(admin, "DescribeImages", b"{}", &[("X-TC-Region", "ap-mars")])).as_deref(),
        Some("InvalidRegion.NotFound")
    );
    assert_eq!(
        code(server.post(admin, "DescribeImages", b"{}", &[("Authorization", "")])).as_deref(),
        Some("AuthFailure.InvalidAuthorization")
    );
    assert_eq!(
        code(server.post(admin, "DescribeImages", b"{}", &[("Authorization", "HmacSHA256 x")])).as_deref(),
        Some("AuthFailure.InvalidAuthorization")
    );
    assert_eq!(
        code(server.post(admin, "DescribeImages", b"{}", &[("X-TC-Token", "tok")])).as_deref(),
        Some("AuthFailure.TokenFailure")
    );
    let stale = signed_request(
        &server.addr,
        admin,
        "POST",
        "",
        "application/json",
        "DescribeImages",
        b"{}",
        support::now() - 301,
        &[],
    );
    assert_eq!(code(stale).as_deref(), Some("AuthFailure.SignatureExpire"));
    let ahead = signed_request(
        &server.addr,
        admin,
        "POST",
        "",
        "application/json",
        "DescribeImages",
        b"{}",
        support::now() + 301,
        &[],
    );
    assert_eq!(code(ahead).as_deref(), Some("AuthFailure.SignatureExpire"));
    let put =
        support::raw(&server.addr, b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("put");
    assert_eq!(code(put).as_deref(), Some("UnsupportedProtocol"));
    // A body changed after signing fails the signature.
    let tampered = {
        let ts = support::now();
        let req = imaged_api::tc3::ClientRequest {
            method: "POST",
            path: "/",
            query: "",
            content_type: "application/json",
            host: &server.addr,
            body: b"{}",
        };
        let auth = imaged_api::tc3::authorization_header(&admin.secret_id, &admin.secret_key, "cvm", ts, &req);
        server.post(
            admin,
            "DescribeImages",
            br#"{"Limit":1}"#,
            &[("Authorization", &auth), ("X-TC-Timestamp", &ts.to_string())],
        )
    };
    assert_eq!(code(tampered).as_deref(), Some("AuthFailure.SignatureFailure"));
    let zh = server.post(admin, "Nope", b"{}", &[("X-TC-Language", "zh-CN")]);
    assert!(zh.json()["Response"]["Error"]["Message"].as_str().is_some_and(|m| m.contains("接口")));
}

/// Deterministic garbage, signed correctly: every answer is an envelope, never a crash or a 500.
#[test]
fn random_bodies_and_queries_always_get_an_envelope() {
    let server = Server::start(Backend::Sqlite, "garbage").expect("sqlite");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = br#"{}[]":,0123456789.-eE truefalsnul\ImageIdsFltrNamVuOfLcT"#;
    for round in 0..300 {
        let len = (next() % 80) as usize;
        let junk: Vec<u8> = (0..len)
            .map(|_| if round % 3 == 0 { (next() & 0xff) as u8 } else { alphabet[(next() as usize) % alphabet.len()] })
            .collect();
        let resp = if round % 2 == 0 {
            server.post(&server.admin, "DescribeImages", &junk, &[])
        } else {
            let query: String =
                junk.iter().map(|b| format!("%{b:02X}")).collect::<String>().replace("%3D", "=").replace("%26", "&");
            server.get(&server.admin, "DescribeImages", &query)
        };
        resp.assert_envelope();
    }
    let health =
        support::raw(&server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("health");
    assert_eq!(health.status, 200, "the server survived");
}
