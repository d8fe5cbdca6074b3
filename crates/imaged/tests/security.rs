//! End to end for what an outside review of the running server tried: import URLs that reach
//! the server's own network (every address form, and through redirects), remote servers that
//! stall or trickle while other tenants work, and downloads of another tenant's exports.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::guest::{sdk, PUBLIC_IMAGE};
use support::hostile::{Behaviour, Remote};
use support::{signed_path_request, Backend, Creds, Server};

/// One MiB that reads as a plain raw disk.
fn disk_bytes() -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

/// Sends one `ImportImage` per URL, then waits for every accepted one to settle; returns, per
/// URL, `{"error", "message"}` when refused, else the settled image.
fn import_all(server: &Server, creds: &Creds, urls: &[String]) -> Vec<Value> {
    let list = serde_json::to_string(urls).expect("json");
    let r = sdk(
        server,
        creds,
        &format!(
            r#"c = client()
out = []
for n, url in enumerate({list}):
    r = call(c, "ImportImage", {{"ImageUrl": url, "ImageName": "probe-%d-%d" % (n, time.time_ns()),
        "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}})
    out.append(r)
result = [r if "error" in r else settle_image(c, r["ok"]["ImageId"], timeout=60) for r in out]"#
        ),
    );
    r.as_array().expect("list").clone()
}

fn closed_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn import_urls_reach_only_public_addresses_unless_the_operator_allows_them() {
    let secret = Remote::start("127.0.0.1", Behaviour::Body(disk_bytes()));
    let p = secret.addr.port();
    let shut = closed_port("127.0.0.1");
    // The operator allows 127.0.0.2 (a redirector lives there); nothing else on loopback.
    let server = Server::start_with(
        Backend::Sqlite,
        "ssrf",
        "[imports]\nallow = [\"127.0.0.2\"]\nconnect_timeout_secs = 2\nidle_timeout_secs = 5\n",
    )
    .expect("sqlite");
    let tenant = server.create_account("tenant");

    // Every literal form of an internal address is refused at the request, open port or not.
    let literal: Vec<String> = [
        format!("http://127.0.0.1:{p}/d.raw"),
        format!("http://127.0.0.1:{shut}/d.raw"),
        format!("http://localhost:{p}/d.raw"),
        format!("http://LOCALHOST.:{p}/d.raw"),
        format!("http://anything.localhost:{p}/d.raw"),
        format!("http://127.1:{p}/d.raw"),
        format!("http://0x7f000001:{p}/d.raw"),
        format!("http://2130706433:{p}/d.raw"),
        format!("http://0177.0.0.1:{p}/d.raw"),
        format!("http://[::1]:{p}/d.raw"),
        format!("http://[::ffff:127.0.0.1]:{p}/d.raw"),
        format!("http://0.0.0.0:{p}/d.raw"),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://10.0.0.1/d.raw".into(),
        "http://172.16.5.4/d.raw".into(),
        "http://192.168.1.1/d.raw".into(),
        "http://100.64.0.1/d.raw".into(),
        "http://[fd00::1]/d.raw".into(),
        "http://[fe80::1]/d.raw".into(),
        "http://224.0.0.1/d.raw".into(),
        format!("https://127.0.0.1:{p}/d.raw"),
        format!("https://[::1]:{p}/d.raw"),
        "http://user:secret@example.com/d.raw".into(),
    ]
    .into();
    let answers = import_all(&server, &tenant, &literal);
    for (url, a) in literal.iter().zip(&answers) {
        assert_eq!(a["error"], "InvalidParameter.InvalidParameterUrlError", "{url}: {a}");
    }
    let strip = |a: &Value, url: &str| a["message"].as_str().unwrap_or("").replace(url, "URL");
    assert_eq!(strip(&answers[0], &literal[0]), strip(&answers[1], &literal[1]), "open and closed ports answer alike");

    // Redirects are decided again, on the address the new host resolves to.
    let targets = [
        format!("http://127.0.0.1:{p}/d.raw"),
        format!("http://localhost:{p}/d.raw"),
        format!("https://127.0.0.1:{p}/d.raw"),
        format!("http://[::1]:{p}/d.raw"),
        format!("http://0x7f000001:{p}/d.raw"),
    ];
    let hops: Vec<Remote> =
        targets.iter().map(|t| Remote::start("127.0.0.2", Behaviour::Redirect(t.clone()))).collect();
    let mut urls: Vec<String> = hops.iter().map(|h| format!("http://{}/d.raw", h.addr)).collect();
    // An allowed address: the tenant learns what failed, not the server's details.
    let refused_port = closed_port("127.0.0.2");
    urls.push(format!("http://127.0.0.2:{refused_port}/d.raw"));
    let allowed = Remote::start("127.0.0.2", Behaviour::Body(disk_bytes()));
    urls.push(format!("http://{}/d.raw", allowed.addr));
    let settled = import_all(&server, &tenant, &urls);
    for (target, img) in targets.iter().zip(&settled) {
        assert_eq!(img["ImageState"], "IMPORTFAILED", "redirect to {target}: {img}");
        assert_eq!(
            img["FailureReason"], "the URL could not be fetched: its host is not one this service may reach",
            "redirect to {target}"
        );
    }
    let refused = &settled[targets.len()];
    assert_eq!(refused["FailureReason"], "the URL could not be fetched: connection refused", "{refused}");
    assert_eq!(settled[targets.len() + 1]["ImageState"], "NORMAL", "the allowed server is reached");
    assert!(hops.iter().all(|h| h.accepted() == 1), "every redirector was asked once");
    assert_eq!(secret.accepted(), 0, "nothing ever reached the internal server");
}

#[test]
fn a_stalled_remote_server_holds_back_no_other_tenants_work_and_imports_can_be_cancelled() {
    let staller = Remote::start("127.0.0.1", Behaviour::Stall);
    let files = Remote::start("127.0.0.1", Behaviour::Body(disk_bytes()));
    // Default pools (4 transfer workers, 2 per account, 2 instance workers); long timeouts,
    // so the stalls last the whole test.
    let server =
        Server::start_with(Backend::Sqlite, "stall", "[imports]\nallow = [\"127.0.0.0/8\"]\n").expect("sqlite");
    let (greedy, other) = (server.create_account("greedy"), server.create_account("other"));
    let stalled_url = format!("http://{}/d.raw", staller.addr);
    let stalled = sdk(
        &server,
        &greedy,
        &format!(
            r#"c = client()
result = [call(c, "ImportImage", {{"ImageUrl": "{stalled_url}", "ImageName": "stalled-%d" % n,
    "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}})["ok"]["ImageId"] for n in range(3)]"#
        ),
    );
    let stalled: Vec<String> =
        stalled.as_array().expect("ids").iter().map(|v| v.as_str().expect("id").to_owned()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while staller.accepted() < 2 {
        assert!(Instant::now() < deadline, "the stalled imports never connected");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Meanwhile another tenant launches, stops and imports.
    let started = Instant::now();
    let r = sdk(
        &server,
        &other,
        &format!(
            r#"c = client()
launched = run(c, "{PUBLIC_IMAGE}")
iid = launched["ids"][0]
t0 = time.time()
call(c, "StopInstances", {{"InstanceIds": [iid]}})
stopped = settle_instances(c, [iid])[iid]
stop_secs = time.time() - t0
r = call(c, "ImportImage", {{"ImageUrl": "http://{}/d.raw", "ImageName": "fine",
    "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}})
result = {{"stopped": stopped, "stop_secs": stop_secs, "import": settle_image(c, r["ok"]["ImageId"], timeout=60)}}"#,
            files.addr
        ),
    );
    let stop_secs = r["stop_secs"].as_f64().expect("seconds");
    eprintln!("another tenant's StopInstances finished in {stop_secs:.3} s while two imports stalled");
    assert_eq!(r["stopped"]["InstanceState"], "STOPPED", "{r}");
    assert!(stop_secs < 10.0, "StopInstances took {stop_secs} s");
    assert_eq!(r["import"]["ImageState"], "NORMAL", "the other tenant's import is not held back: {r}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(staller.accepted(), 2, "the greedy account runs at most two transfers at once");

    // Deleting a stalled import cancels it: the connection is dropped and the third one starts.
    let r = sdk(
        &server,
        &greedy,
        &format!(
            r#"c = client()
d = call(c, "DeleteImages", {{"ImageIds": ["{}"]}})
result = {{"delete": d, "left": call(c, "DescribeImages", {{"ImageIds": ["{}"]}})}}"#,
            stalled[0], stalled[0]
        ),
    );
    assert!(r["delete"]["ok"].is_object(), "an importing image can be deleted: {r}");
    assert!(r["left"]["error"].is_string() || r["left"]["ok"]["TotalCount"] == 0, "{r}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while staller.closed() < 1 || staller.accepted() < 3 {
        assert!(Instant::now() < deadline, "closed {}, accepted {}", staller.closed(), staller.accepted());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_fetch_is_bounded_by_idle_and_total_timeouts() {
    let staller = Remote::start("127.0.0.1", Behaviour::Stall);
    let trickler = Remote::start("127.0.0.1", Behaviour::Trickle);
    let server = Server::start_with(
        Backend::Sqlite,
        "timeouts",
        "[imports]\nallow = [\"127.0.0.0/8\"]\nconnect_timeout_secs = 2\nidle_timeout_secs = 2\nmax_transfer_secs = 4\n",
    )
    .expect("sqlite");
    let urls = [
        format!("http://{}/d.raw", staller.addr),
        format!("https://{}/d.raw", staller.addr),
        format!("http://{}/d.raw", trickler.addr),
    ];
    let started = Instant::now();
    let settled = import_all(&server, &server.admin, &urls);
    let reasons: Vec<&str> = settled.iter().map(|i| i["FailureReason"].as_str().unwrap_or("")).collect();
    assert_eq!(reasons[0], "the URL could not be fetched: the server sent nothing for 2 s", "{settled:?}");
    assert_eq!(reasons[1], "the URL could not be fetched: the transfer timed out", "{settled:?}");
    assert_eq!(reasons[2], "the URL could not be fetched: the transfer took longer than 4 s", "{settled:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

/// Exports one image as RAW with a file-name prefix and waits for the task; returns the
/// `ExportImages` answer and the settled task.
fn export(server: &Server, creds: &Creds, image: &str, prefix: &str) -> Value {
    sdk(
        server,
        creds,
        &format!(
            r#"c = client()
r = call(c, "ExportImages", {{"BucketName": "exports", "ImageIds": ["{image}"], "ExportFormat": "RAW",
    "FileNamePrefixList": ["{prefix}"]}})
task = None
if "ok" in r:
    deadline = time.time() + 60
    while True:
        task = call(c, "DescribeImageTasks", {{"TaskIds": [r["ok"]["TaskId"]]}})["ok"]["TaskSet"][0]
        if task["TaskState"] not in ("QUEUED", "RUNNING") or time.time() > deadline:
            break
        time.sleep(0.1)
result = {{"export": r, "task": task}}"#
        ),
    )
}

fn download(server: &Server, creds: &Creds, name: &str) -> support::RawResponse {
    let query = format!("Bucket=exports&Name={name}");
    let ct = "application/x-www-form-urlencoded";
    signed_path_request(&server.addr, creds, "GET", "/download", &query, ct, "", b"", support::now(), &[])
}

#[test]
fn exported_files_are_downloadable_by_their_exporter_only() {
    let files = Remote::start("127.0.0.1", Behaviour::Body(disk_bytes()));
    let server =
        Server::start_with(Backend::Sqlite, "downloads", "[imports]\nallow = [\"127.0.0.0/8\"]\n").expect("sqlite");
    let (alice, bob) = (server.create_account("alice"), server.create_account("bob"));
    let url = vec![format!("http://{}/d.raw", files.addr)];
    let alices = import_all(&server, &alice, &url)[0]["ImageId"].as_str().expect("alice's image").to_owned();
    let bobs = import_all(&server, &bob, &url)[0]["ImageId"].as_str().expect("bob's image").to_owned();

    // Alice names her export after Bob's image: the name says nothing about who may read it.
    let r = export(&server, &alice, &alices, &bobs);
    assert_eq!(r["task"]["TaskState"], "SUCCEEDED", "{r}");
    let name = r["export"]["ok"]["CosPaths"][0].as_str().expect("path").to_owned();
    assert!(name.contains(&bobs) && name.contains(&alices), "{name}");
    let by_bob = download(&server, &bob, &name);
    by_bob.assert_envelope();
    assert_eq!(by_bob.error_code().as_deref(), Some("ResourceNotFound"), "bob cannot read alice's export");
    let by_alice = download(&server, &alice, &name);
    assert_eq!(by_alice.header("content-type"), Some("application/octet-stream"));
    assert_eq!(by_alice.body, disk_bytes(), "alice downloads her export");

    // Prefixes a file could not be downloaded under, or too long for a file name, are refused
    // at the request, and nothing is left in the bucket.
    for bad in [".hidden".to_owned(), "x".repeat(300), "a/b".to_owned()] {
        let r = export(&server, &alice, &alices, &bad);
        assert_eq!(r["export"]["error"], "InvalidParameterValue.InvalidFileNamePrefixList", "{bad}: {r}");
    }
    let bucket = server.dir.path().join("buckets/exports");
    let left: Vec<String> = std::fs::read_dir(&bucket)
        .expect("bucket")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![name], "only the finished export is in the bucket");
}

/// Opens `n` connections that each send half a request head and then nothing.
fn half_open(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            std::io::Write::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("half a head");
            s
        })
        .collect()
}

/// Whether `/healthz` answers 200 within `limit`.
fn healthz_within(addr: &str, limit: Duration) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr.parse().expect("addr"), limit) else { return false };
    let _ = s.set_read_timeout(Some(limit));
    if std::io::Write::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

/// Whether the server closes `s` within `limit` (a read returns end of file or a reset).
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    let _ = s.set_read_timeout(Some(limit));
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        match std::io::Read::read(s, &mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
        if started.elapsed() > limit {
            return false;
        }
    }
}

#[test]
fn half_open_connections_lock_nobody_out() {
    // Under the common soft limit of 1024 open files: the server raises it to the hard one.
    let server = Server::start_under(
        Backend::Sqlite,
        "halfopen",
        "[http]\nheader_read_timeout_secs = 60\n",
        &["prlimit", "--nofile=1024:4096", "--"],
    )
    .expect("sqlite");
    let held = half_open(&server.addr, 2000);
    assert!(healthz_within(&server.addr, Duration::from_secs(3)), "/healthz answers beside 2,000 half-open requests");
    let r = server.post(&server.admin, "DescribeRegions", b"{}", &[]);
    assert!(r.assert_envelope().json()["Response"]["RegionSet"].is_array(), "the API answers too");
    drop(held);

    // Below the flood's size, the cap makes room by closing the connections idle the longest.
    let capped =
        Server::start_with(Backend::Sqlite, "capped", "[http]\nmax_connections = 200\nheader_read_timeout_secs = 60\n")
            .expect("sqlite");
    let mut held = half_open(&capped.addr, 2000);
    assert!(healthz_within(&capped.addr, Duration::from_secs(3)), "/healthz answers at the connection cap");
    let closed = held.iter_mut().take(100).map(|s| closed_within(s, Duration::from_secs(2))).filter(|c| *c).count();
    assert_eq!(closed, 100, "the oldest half-open connections were closed to make room");
    assert!(!closed_within(held.last_mut().expect("newest"), Duration::from_millis(300)), "the newest is kept");
}

#[test]
fn slow_heads_and_idle_kept_alive_connections_are_closed() {
    let server = Server::start_with(
        Backend::Sqlite,
        "slowheads",
        "[http]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 2\nstall_timeout_secs = 3\n",
    )
    .expect("sqlite");
    let mut slow = half_open(&server.addr, 1).pop().expect("one");
    // A whole head, then a body that never comes: the request is in progress, and stalls.
    let mut stalled = std::net::TcpStream::connect(&server.addr).expect("connect");
    std::io::Write::write_all(
        &mut stalled,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Li",
    )
    .expect("head");
    let mut idle = std::net::TcpStream::connect(&server.addr).expect("connect");
    std::io::Write::write_all(&mut idle, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut idle, &mut answer).expect("answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(6)), "a head not sent within 2 s closes the connection");
    assert!(closed_within(&mut idle, Duration::from_secs(6)), "an idle kept-alive connection is closed");
    assert!(closed_within(&mut stalled, Duration::from_secs(8)), "a request whose body stalls is closed");
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the timeouts: {:?}", started.elapsed());
}

#[test]
fn answers_beyond_the_servers_limits_are_envelopes_too() {
    let server = Server::start(Backend::Sqlite, "limits").expect("sqlite");
    let code = |request: &[u8]| {
        let r = support::raw(&server.addr, request).expect("an answer, not a reset");
        r.assert_envelope();
        r.error_code()
    };
    let long_uri = format!("GET /?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(70_000));
    assert_eq!(code(long_uri.as_bytes()).as_deref(), Some("RequestSizeLimitExceeded"), "URI too long");
    let big_head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "b".repeat(500_000));
    assert_eq!(code(big_head.as_bytes()).as_deref(), Some("RequestSizeLimitExceeded"), "head too large");
    assert_eq!(code(b"NOT HTTP AT ALL\r\n\r\n").as_deref(), Some("InvalidParameter"), "not HTTP");
    // A client that writes a whole over-size body before reading gets the answer, not a reset.
    let body = vec![b' '; 12 << 20];
    let r = server.post(&server.admin, "DescribeImages", &body, &[]);
    assert_eq!(r.assert_envelope().error_code().as_deref(), Some("RequestSizeLimitExceeded"));
}

#[test]
fn the_official_nodejs_sdk_works_on_any_host_and_port() {
    let server = Server::start(Backend::Sqlite, "nodejs").expect("sqlite");
    let tenant = server.create_account("node-user");
    let port = server.addr.rsplit(':').next().expect("port").to_owned();
    let r = support::node::node(
        &server,
        &tenant,
        &format!(
            r#"const out = {{}};
for (const [name, endpoint] of [["ip", process.env.IMAGED_ENDPOINT], ["localhost", "localhost:{port}"]]) {{
  for (const method of ["POST", "GET"]) {{
    const c = client(endpoint, "ap-guangzhou", method);
    out[name + "-" + method] = await call(c, "DescribeImages", {{ ImageIds: ["img-eb30mz89"] }});
  }}
}}
out.malformed = await call(client(), "DescribeImages", {{ ImageIds: ["img-bad"] }});
out.quota = await call(client(), "DescribeImageQuota", {{}});
out.badkey = await call(new cvm.v20170312.Client({{ credential: {{ secretId: process.env.SECRET_ID, secretKey: "wrong" }},
  region: "ap-guangzhou", profile: {{ httpProfile: {{ endpoint: process.env.IMAGED_ENDPOINT, protocol: "http://" }} }} }}),
  "DescribeImages", {{}});
result = out;"#
        ),
    );
    for key in ["ip-POST", "ip-GET", "localhost-POST", "localhost-GET"] {
        assert_eq!(r[key]["ok"]["ImageSet"][0]["ImageId"], "img-eb30mz89", "{key}: {}", r[key]);
    }
    assert_eq!(r["malformed"]["error"], "InvalidImageId.Malformed", "{}", r["malformed"]);
    assert!(r["malformed"]["request_id"].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(r["quota"]["ok"]["ImageNumQuota"], 10, "{}", r["quota"]);
    assert_eq!(r["badkey"]["error"], "AuthFailure.SignatureFailure", "a wrong secret still fails: {}", r["badkey"]);
}

/// A signed API request with a fixed timestamp (the same bytes every time), sent from the
/// local address `from` (distinct loopback addresses are distinct clients).
fn signed_from(server: &Server, from: &str, creds: &Creds, action: &str, body: &str, ts: i64) -> Value {
    let bytes = support::signed_request_bytes(
        &server.addr,
        creds,
        "POST",
        "/",
        "",
        "application/json",
        action,
        body.as_bytes(),
        ts,
        &[],
    );
    let r = support::raw_from(from, &server.addr, &bytes).expect("an answer");
    r.assert_envelope();
    r.json()["Response"].clone()
}

fn signed(server: &Server, creds: &Creds, action: &str, body: &str, ts: i64) -> Value {
    signed_from(server, "127.0.0.1", creds, action, body, ts)
}

#[test]
fn a_signature_changes_something_only_for_its_client_and_cannot_be_moved_to_another_action_or_path() {
    let server = Server::start(Backend::Sqlite, "replay").expect("sqlite");
    let user = server.create_account("replayed");
    let ts = support::now();
    let run = format!(
        r#"{{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{PUBLIC_IMAGE}", "InstanceName": "once"}}"#
    );
    let first = signed(&server, &user, "RunInstances", &run, ts);
    let id = first["InstanceIdSet"][0].as_str().unwrap_or_else(|| panic!("{first}")).to_owned();
    // Another client (another address) replays the captured launch: refused, every time.
    for _ in 0..2 {
        let again = signed_from(&server, "127.0.0.2", &user, "RunInstances", &run, ts);
        assert_eq!(again["Error"]["Code"], "AuthFailure.SignatureFailure", "a replayed launch: {again}");
    }
    // Reads repeat from anywhere; the client's own change with the same body (a describe, then
    // a stop of the same instance, within one second) passes; the same signature swapped to
    // another action by someone else does not.
    let describe = format!(r#"{{"InstanceIds": ["{id}"]}}"#);
    for from in ["127.0.0.1", "127.0.0.3"] {
        let r = signed_from(&server, from, &user, "DescribeInstances", &describe, ts);
        assert_eq!(r["TotalCount"], 1, "{r}");
    }
    let swapped = signed_from(&server, "127.0.0.3", &user, "TerminateInstances", &describe, ts);
    assert_eq!(swapped["Error"]["Code"], "AuthFailure.SignatureFailure", "{swapped}");
    let listed = signed(&server, &user, "DescribeInstances", r#"{"Limit": 100}"#, ts);
    assert_eq!(listed["TotalCount"], 1, "one launch, nothing terminated: {listed}");
    assert_ne!(listed["InstanceSet"][0]["InstanceState"], "TERMINATING");
    // (The launch may still be running: the stop is then refused by the instance, not as a replay.)
    let own = signed(&server, &user, "StopInstances", &describe, ts);
    assert_ne!(own["Error"]["Code"], "AuthFailure.SignatureFailure", "the client's own change passes: {own}");

    // A signature made for `/` does not authorise `/download` (the path is signed).
    let query = "Bucket=exports&Name=x";
    let ct = "application/x-www-form-urlencoded";
    let req = imaged_api::tc3::ClientRequest {
        method: "GET",
        path: "/",
        query,
        content_type: ct,
        host: &server.addr,
        body: b"",
    };
    let auth = imaged_api::tc3::authorization_header(&user.secret_id, &user.secret_key, "cvm", ts, &req);
    let moved = signed_path_request(
        &server.addr,
        &user,
        "GET",
        "/download",
        query,
        ct,
        "",
        b"",
        ts,
        &[("Authorization", &auth)],
    );
    assert_eq!(moved.assert_envelope().error_code().as_deref(), Some("AuthFailure.SignatureFailure"));
}

#[test]
fn a_replay_is_refused_by_another_server_of_the_same_deployment() {
    let Some(first) = Server::start(Backend::Postgres, "replay_pg") else { return };
    let second = first.sibling();
    let user = first.create_account("two-servers");
    let ts = support::now();
    let body = format!(r#"{{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{PUBLIC_IMAGE}"}}"#);
    let r = signed(&first, &user, "RunInstances", &body, ts);
    assert!(r["InstanceIdSet"][0].is_string(), "{r}");
    // The same bytes, Host included, arrive at the other server from another client.
    let ct = "application/json";
    let req = imaged_api::tc3::ClientRequest {
        method: "POST",
        path: "/",
        query: "",
        content_type: ct,
        host: &first.addr,
        body: body.as_bytes(),
    };
    let auth = imaged_api::tc3::authorization_header(&user.secret_id, &user.secret_key, "cvm", ts, &req);
    let extra = [("Host", first.addr.as_str()), ("Authorization", auth.as_str())];
    let bytes = support::signed_request_bytes(
        &second.addr,
        &user,
        "POST",
        "/",
        "",
        ct,
        "RunInstances",
        body.as_bytes(),
        ts,
        &extra,
    );
    let replayed = support::raw_from("127.0.0.2", &second.addr, &bytes).expect("an answer");
    let replayed = replayed.assert_envelope().json()["Response"].clone();
    assert_eq!(replayed["Error"]["Code"], "AuthFailure.SignatureFailure", "{replayed}");
    let quota = signed(&second, &user, "DescribeImageQuota", "{}", ts);
    assert_eq!(quota["ImageNumQuota"], 10, "the second server serves signed requests: {quota}");
}

/// Compresses `input` (a shell pipeline's output) with zstd; returns the compressed bytes.
fn zstd_of(pipeline: &str) -> Vec<u8> {
    let out =
        std::process::Command::new("sh").args(["-c", &format!("{pipeline} | zstd -q -c")]).output().expect("zstd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Disk use (bytes) of a directory tree, as `du` counts it (holes cost nothing).
fn disk_use(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du").args(["-s", "-B1"]).arg(dir).output().expect("du");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn decompression_bombs_are_bounded_and_zero_runs_cost_no_scratch() {
    let zeros = Remote::start("127.0.0.1", Behaviour::Body(zstd_of("head -c 1073741824 /dev/zero")));
    let ones = Remote::start("127.0.0.1", Behaviour::Body(zstd_of("head -c 314572800 /dev/zero | tr '\\0' '\\1'")));
    let server =
        Server::start_with(Backend::Sqlite, "bombs", "[imports]\nallow = [\"127.0.0.0/8\"]\n").expect("sqlite");
    let scratch = server.dir.path().join("scratch");
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (flag, dir) = (std::sync::Arc::clone(&watching), scratch.clone());
    let watcher = std::thread::spawn(move || {
        let mut peak = 0;
        while flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(disk_use(&dir));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let urls = [format!("http://{}/zeros.raw.zst", zeros.addr), format!("http://{}/ones.raw.zst", ones.addr)];
    let settled = import_all(&server, &server.admin, &urls);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = watcher.join().expect("watcher");
    assert_eq!(settled[0]["ImageState"], "NORMAL", "a GiB of zeros is a valid (empty) disk: {}", settled[0]);
    assert_eq!(settled[0]["ImageSize"], 1);
    assert_eq!(
        settled[1]["FailureReason"], "too-large: the compressed file inflates to more than 100 times its size",
        "{}",
        settled[1]
    );
    eprintln!("peak scratch use while inflating: {peak} bytes");
    assert!(peak < 96 << 20, "zero runs are holes and the bomb stops early: {peak} bytes of scratch");
}

#[test]
fn file_urls_answer_alike_for_any_path_outside_the_import_directory() {
    let import_dir = tempfile::tempdir().expect("tempdir");
    let config = format!("import_dir = \"{}\"\n", import_dir.path().display());
    let server = Server::start_with(Backend::Sqlite, "fileoracle", &config).expect("sqlite");
    let urls: Vec<String> = [
        "file:///etc/passwd".to_owned(),
        "file:///no/such/file".to_owned(),
        format!("file://{}/missing.raw", import_dir.path().display()),
        format!("file://{}/../../etc/hostname", import_dir.path().display()),
    ]
    .into();
    let answers = import_all(&server, &server.admin, &urls);
    let messages: Vec<String> = urls
        .iter()
        .zip(&answers)
        .map(|(url, a)| {
            assert_eq!(a["error"], "InvalidParameter.InvalidParameterUrlError", "{url}: {a}");
            a["message"].as_str().unwrap_or("").replace(url.as_str(), "URL")
        })
        .collect();
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "one answer for every refused path: {messages:?}");
    let dir = import_dir.path().to_string_lossy().into_owned();
    assert!(!messages[0].contains(&dir) && !messages[0].contains("/tmp"), "no server path: {}", messages[0]);
}

/// A signed `/upload` request (`UNSIGNED-PAYLOAD`, as the CLI sends them).
fn upload_op(server: &Server, creds: &Creds, query: &str, body: &[u8]) -> Value {
    let ts = support::now();
    let ct = "application/octet-stream";
    let req = imaged_api::tc3::ClientRequest {
        method: "POST",
        path: "/upload",
        query,
        content_type: ct,
        host: &server.addr,
        body: b"",
    };
    let auth = imaged_api::tc3::authorization_header_with(&creds.secret_id, &creds.secret_key, "cvm", ts, &req, true);
    let extra = [("Authorization", auth.as_str()), ("X-TC-Content-SHA256", "UNSIGNED-PAYLOAD")];
    let r = signed_path_request(&server.addr, creds, "POST", "/upload", query, ct, "", body, ts, &extra);
    r.assert_envelope();
    r.json()["Response"].clone()
}

fn input_hygiene_is_the_same_on_every_backend(backend: Backend, test: &str) {
    let Some(server) = Server::start(backend, test) else { return };
    let user = server.create_account("hygiene");
    let post = |action: &str, body: String| signed(&server, &user, action, &body, support::now());
    let import = |name: &str| {
        serde_json::json!({"ImageUrl": "http://8.8.8.8/d.raw", "ImageName": name, "OsType": "CentOS",
            "OsVersion": "7", "Architecture": "x86_64", "DryRun": true})
        .to_string()
    };
    for name in ["nul\u{0}name", "\u{1b}[2Jwiped", "evil\u{202e}gpj.exe", "c1\u{9b}x"] {
        let r = post("ImportImage", import(name));
        assert_eq!(r["Error"]["Code"], "InvalidParameterValue", "{name:?}: {r}");
    }
    let filter = serde_json::json!({"Filters": [{"Name": "image-name", "Values": ["a\u{0}"]}]}).to_string();
    assert_eq!(post("DescribeImages", filter)["Error"]["Code"], "InvalidParameterValue");
    let ids: Vec<u64> = (0..300_000).collect();
    let tasks = post("DescribeImageTasks", serde_json::json!({ "TaskIds": ids }).to_string());
    assert_eq!(tasks["Error"]["Code"], "InvalidParameterValue.LimitExceeded", "lists are capped");
    let big = "A".repeat(16 * 1024 + 4);
    let run = serde_json::json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": PUBLIC_IMAGE, "UserData": big});
    assert_eq!(post("RunInstances", run.to_string())["Error"]["Code"], "InvalidParameterValue.InvalidUserDataFormat");
    // An upload's sizes are added with checked arithmetic: no wrap-around truncates it.
    let created = upload_op(&server, &user, "Op=create", b"");
    let id = created["UploadId"].as_str().unwrap_or_else(|| panic!("{created}")).to_owned();
    let block = vec![7u8; 1 << 20];
    let appended = upload_op(&server, &user, &format!("Op=append&UploadId={id}&Offset=0"), &block);
    assert_eq!(appended["Size"], 1 << 20, "{appended}");
    let huge = u64::MAX - (1 << 20) + 1;
    let zero = upload_op(&server, &user, &format!("Op=zero&UploadId={id}&Offset={}&Length={huge}", 1 << 20), b"");
    assert_eq!(zero["Error"]["Code"], "InvalidParameterValue", "{zero}");
    let status = upload_op(&server, &user, &format!("Op=status&UploadId={id}"), b"");
    assert_eq!(status["Size"], 1 << 20, "the upload is unchanged: {status}");
}

#[test]
fn sqlite_input_hygiene() {
    input_hygiene_is_the_same_on_every_backend(Backend::Sqlite, "hygiene_sqlite");
}

#[test]
fn postgres_input_hygiene() {
    input_hygiene_is_the_same_on_every_backend(Backend::Postgres, "hygiene_pg");
}

#[test]
fn inspect_prints_a_json_verdict_for_every_declared_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("disk.raw");
    std::fs::write(&file, disk_bytes()).expect("write");
    for (declared, verdict, reason) in [
        ("qed", "reject", "unknown-format"),
        ("vdi", "reject", "unknown-format"),
        ("raw", "accept", ""),
        ("qcow2", "reject", "format-mismatch"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
            .args(["inspect", &file.to_string_lossy(), "--declared", declared, "--output", "json"])
            .output()
            .expect("inspect");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{declared}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["verdict"], verdict, "{declared}: {v}");
        assert_eq!(out.status.success(), verdict == "accept", "{declared}");
        if !reason.is_empty() {
            assert_eq!(v["reason"], reason, "{declared}: {v}");
        }
    }
}

/// Starts `imaged serve` with its log going to a file, waits until it listens, stops it, and
/// returns the log.
fn server_log(format: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("IMAGED_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    if let Some(f) = format {
        cmd.env("IMAGED_LOG_FORMAT", f);
    }
    let mut child = cmd.spawn().expect("spawn");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    for line in std::io::BufRead::lines(stdout) {
        if line.expect("line").contains("listening") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log).expect("read log")
}

#[test]
fn logs_are_plain_text_off_a_terminal_or_json_for_collectors() {
    let plain = server_log(None);
    assert!(plain.contains("serving"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "no ANSI escapes in a log file: {plain:?}");
    let json = server_log(Some("json"));
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    }
}

#[test]
fn the_server_speaks_tls_to_the_official_sdk_with_its_own_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = support::self_signed_cert(dir.path());
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("IMAGED_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let addr = std::io::BufRead::lines(stdout)
        .map(|l| l.expect("line"))
        .find_map(|l| {
            l.strip_prefix("imaged listening on https://").map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
        })
        .expect("an https listener");
    let creds: Creds =
        serde_json::from_slice(&std::fs::read(data.join("credentials.json")).expect("credentials")).expect("json");
    let script = format!(
        r#"
import json
from tencentcloud.common import credential
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.cvm.v20170312 import cvm_client
hp = HttpProfile(protocol="https", endpoint="{addr}", certification="{}")
c = cvm_client.CvmClient(credential.Credential("{}", "{}"), "ap-guangzhou", ClientProfile(httpProfile=hp))
print(json.dumps(c.call_json("DescribeImages", {{"ImageIds": ["img-eb30mz89"]}})["Response"]))
"#,
        cert.display(),
        creds.secret_id,
        creds.secret_key
    );
    let out =
        std::process::Command::new(support::venv().join("bin/python")).arg("-c").arg(script).output().expect("python");
    let plain = support::raw(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ImageSet"][0]["ImageId"], "img-eb30mz89", "{v}");
    assert!(plain.map_or(true, |r| r.status != 200), "no plaintext answer on the TLS port");
}

#[test]
fn each_account_has_a_storage_quota_and_uploads_live_until_they_expire() {
    let work = tempfile::tempdir().expect("tempdir");
    let big = work.path().join("big.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&big)
        .arg("2G")
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let remote = Remote::start("127.0.0.1", Behaviour::Body(std::fs::read(&big).expect("read")));
    let server = Server::start_with(
        Backend::Sqlite,
        "storage",
        "[imports]\nallow = [\"127.0.0.0/8\"]\nupload_expiry_secs = 6\n[limits]\nstorage_gib_per_account = 1\n",
    )
    .expect("sqlite");
    let user = server.create_account("storer");

    // The extension action, through the SDK's common client, and the CLI.
    let quota = server.python(
        &user,
        r#"from tencentcloud.common.common_client import CommonClient
hp = HttpProfile(protocol="http", endpoint=os.environ["IMAGED_ENDPOINT"])
cc = CommonClient("imaged", "2026-12-01", credential.Credential(os.environ["SECRET_ID"], os.environ["SECRET_KEY"]),
    "ap-guangzhou", profile=ClientProfile(httpProfile=hp))
result = cc.call_json("DescribeStorageQuota", {})["Response"]"#,
    );
    assert_eq!(quota["QuotaBytes"], 1u64 << 30, "{quota}");
    assert_eq!(quota["UsedBytes"], 0);

    // A 2 GiB disk does not fit in 1 GiB: the import fails with the reason, nothing is kept.
    let img = import_all(&server, &user, &[format!("http://{}/big.qcow2", remote.addr)]).remove(0);
    assert_eq!(img["ImageState"], "IMPORTFAILED", "{img}");
    assert!(img["FailureReason"].as_str().is_some_and(|r| r.starts_with("storage-quota:")), "{img}");
    let files = Remote::start("127.0.0.1", Behaviour::Body(disk_bytes()));
    let small = import_all(&server, &user, &[format!("http://{}/d.raw", files.addr)]);
    assert_eq!(small[0]["ImageState"], "NORMAL", "{}", small[0]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .arg("storage-quota")
        .env("IMAGED_ENDPOINT", format!("http://{}", server.addr))
        .env("TENCENTCLOUD_SECRET_ID", &user.secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", &user.secret_key)
        .output()
        .expect("imaged storage-quota");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["ImageBytes"], 1 << 20, "the imported MiB counts: {shown}");

    // An upload may not outgrow the quota; an operator can lift it.
    let created = upload_op(&server, &user, "Op=create", b"");
    let id = created["UploadId"].as_str().unwrap_or_else(|| panic!("{created}")).to_owned();
    let zero = upload_op(&server, &user, &format!("Op=zero&UploadId={id}&Offset=0&Length={}", 2u64 << 30), b"");
    assert_eq!(zero["Error"]["Code"], "LimitExceeded.StorageQuota", "{zero}");
    let lifted = server.cli(&["account", "set-storage-quota", "--account", &user.account_id, "--gib", "4"]);
    assert!(lifted.status.success(), "{}", String::from_utf8_lossy(&lifted.stderr));
    let block = vec![9u8; 1 << 20];
    let appended = upload_op(&server, &user, &format!("Op=append&UploadId={id}&Offset=0"), &block);
    assert_eq!(appended["Size"], 1 << 20, "{appended}");

    // GC keeps a paused upload's blocks until it expires, then forgets the upload.
    let gc = server.cli(&["gc", "--grace-secs", "0"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let status = upload_op(&server, &user, &format!("Op=status&UploadId={id}"), b"");
    assert_eq!(status["Size"], 1 << 20, "the upload survives GC: {status}");
    assert!(status["ExpiresAt"].is_string(), "{status}");
    std::thread::sleep(Duration::from_secs(7));
    let expired = upload_op(&server, &user, &format!("Op=status&UploadId={id}"), b"");
    assert_eq!(expired["Error"]["Code"], "ResourceNotFound", "{expired}");
    assert!(expired["Error"]["Message"].as_str().is_some_and(|m| m.contains("expired")), "{expired}");
    let gc = server.cli(&["gc", "--grace-secs", "0"]);
    assert!(gc.status.success());
    assert!(!server.dir.path().join(format!("uploads/{id}.owner")).exists(), "GC forgot the expired upload");

    // Uploads in progress are counted too: at most 100 per account (on a server whose uploads
    // do not expire within the test).
    let lasting = Server::start(Backend::Sqlite, "upload_count").expect("sqlite");
    let many = lasting.create_account("many-uploads");
    for n in 0..100 {
        let r = upload_op(&lasting, &many, "Op=create", b"");
        assert!(r["UploadId"].is_string(), "upload {n}: {r}");
    }
    let one_more = upload_op(&lasting, &many, "Op=create", b"");
    assert_eq!(one_more["Error"]["Code"], "LimitExceeded.StorageQuota", "{one_more}");
}
