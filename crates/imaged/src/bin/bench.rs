//! `imaged-bench`: the DescribeImages benchmark.
//!
//! Fills a fresh store with IMAGES custom images over ACCOUNTS accounts (spread over ten regions,
//! ten per region per account as the quota allows, some shared), starts the real `imaged serve`
//! next to this binary, and drives it from CLIENTS keep-alive connections with signed
//! `DescribeImages` calls (a filter and a page of 100) for SECONDS. Prints requests/s, p50 and
//! p99 latency and the server's peak memory, next to the same client's rate against `/healthz`
//! measured in the same run (the HTTP stack's ceiling on this machine). With `--servers N`
//! (PostgreSQL only) N servers share the store, each with its own data directory, and the
//! clients are spread over them; the run with one server is measured first, in the same run.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imaged::benchkit::peak_rss_mib;
use imaged::config::{Config, Overrides};
use imaged_api::tc3::{authorization_header, ClientRequest};
use imaged_domain::time::Timestamp;
use imaged_domain::{catalog, ImageId, ImageKind, ImageSource, Tag};
use imaged_metastore::Role;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Opts {
    backend: String,
    images: usize,
    accounts: usize,
    clients: usize,
    seconds: u64,
    servers: usize,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o =
        Opts { backend: "sqlite".into(), images: 100_000, accounts: 1_000, clients: 8, seconds: 20, servers: 1 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--backend" => o.backend = value,
            "--images" => o.images = value.parse()?,
            "--accounts" => o.accounts = value.parse()?,
            "--clients" => o.clients = value.parse()?,
            "--seconds" => o.seconds = value.parse()?,
            "--servers" => o.servers = value.parse::<usize>()?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(o)
}

const REGIONS: &[&str] = &[
    "ap-guangzhou",
    "ap-shanghai",
    "ap-nanjing",
    "ap-beijing",
    "ap-chengdu",
    "ap-chongqing",
    "ap-hongkong",
    "ap-singapore",
    "ap-tokyo",
    "eu-frankfurt",
];

async fn fill(cfg: &Config, o: &Opts) -> anyhow::Result<Vec<(String, String)>> {
    let svc = imaged::open_service(cfg).await?;
    svc.bootstrap(&cfg.data_dir).await?;
    let store = svc.store().clone();
    let mut accounts = Vec::with_capacity(o.accounts);
    for n in 0..o.accounts {
        let a = store.create_account(&format!("bench-{n}"), Role::User, Timestamp(1)).await?.ok().context("dup")?;
        accounts.push(a.id);
    }
    let template = catalog::public_images().remove(0);
    let per_account = o.images / o.accounts.max(1);
    let mut batch = Vec::with_capacity(1000);
    let mut seq: u64 = 0;
    for (ai, owner) in accounts.iter().enumerate() {
        for k in 0..per_account {
            seq += 1;
            let mut img = template.clone();
            let mut id = [0u8; 8];
            for (i, b) in id.iter_mut().enumerate() {
                *b = ((seq >> (i * 5)) & 31) as u8;
            }
            img.id = ImageId::from_random(id);
            img.kind = ImageKind::Private;
            img.source = ImageSource::CreateImage;
            img.owner = Some(*owner);
            img.region = Some(REGIONS[k % REGIONS.len()].to_owned());
            img.name = format!("app-{ai}-{k}");
            img.description = "web tier, nightly build".into();
            img.created_at = Timestamp(1_700_000_000 + seq as i64);
            img.tags = vec![Tag { key: "env".into(), value: if k % 2 == 0 { "prod" } else { "dev" }.into() }];
            batch.push(img);
            if batch.len() == 1000 {
                store.put_images(&batch).await?;
                batch.clear();
            }
        }
    }
    store.put_images(&batch).await?;
    // Each account shares its first Guangzhou image with the next five accounts.
    for ai in 0..accounts.len() {
        let first = (ai as u64) * per_account as u64 + 1;
        let mut id = [0u8; 8];
        for (i, b) in id.iter_mut().enumerate() {
            *b = ((first >> (i * 5)) & 31) as u8;
        }
        let image = ImageId::from_random(id);
        for d in 1..=5 {
            store.add_share(&image, accounts[(ai + d) % accounts.len()], Timestamp(2)).await?;
        }
    }
    let mut keys = Vec::new();
    for c in 0..o.clients {
        let creds = svc.create_key(accounts[(c * 97) % accounts.len()]).await?;
        keys.push((creds.secret_id, creds.secret_key));
    }
    Ok(keys)
}

struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self { reader: BufReader::new(s) })
    }

    /// Sends one request and reads the whole response; returns (status, body).
    async fn round_trip(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.reader.get_mut().write_all(request).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status: u16 = line.split_whitespace().nth(1).context("status")?.parse()?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

fn describe_request(addr: &str, key: &(String, String), body: &[u8]) -> Vec<u8> {
    let ts = imaged_app::service::now().0;
    let req =
        ClientRequest { method: "POST", path: "/", query: "", content_type: "application/json", host: addr, body };
    let auth = authorization_header(&key.0, &key.1, "cvm", ts, &req);
    let mut out = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: {auth}\r\n\
         X-TC-Action: DescribeImages\r\nX-TC-Version: 2017-03-12\r\nX-TC-Timestamp: {ts}\r\n\
         X-TC-Region: ap-guangzhou\r\nX-TC-Language: en-US\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

struct Run {
    requests: usize,
    errors: usize,
    latencies_us: Vec<u32>,
    elapsed: Duration,
    last_body: Vec<u8>,
}

async fn drive(
    addrs: &[String],
    keys: &[(String, String)],
    clients: usize,
    secs: u64,
    healthz: bool,
) -> anyhow::Result<Run> {
    let body =
        br#"{"Filters":[{"Name":"image-type","Values":["PRIVATE_IMAGE","SHARED_IMAGE","PUBLIC_IMAGE"]}],"Limit":100}"#;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = addrs[c % addrs.len()].clone();
        let key = keys[c % keys.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let (mut lat, mut errors, mut last) = (Vec::with_capacity(200_000), 0usize, Vec::new());
            while Instant::now() < deadline {
                let req = if healthz {
                    format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
                } else {
                    describe_request(&addr, &key, body)
                };
                let t = Instant::now();
                let (status, resp) = conn.round_trip(&req).await?;
                lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if status != 200 || (!healthz && !resp.windows(12).any(|w| w == b"\"TotalCount\"")) {
                    errors += 1;
                }
                last = resp;
            }
            anyhow::Ok((lat, errors, last))
        }));
    }
    let mut run =
        Run { requests: 0, errors: 0, latencies_us: Vec::new(), elapsed: Duration::ZERO, last_body: Vec::new() };
    for t in tasks {
        let (lat, errors, last) = t.await??;
        run.requests += lat.len();
        run.errors += errors;
        run.latencies_us.extend(lat);
        run.last_body = last;
    }
    run.elapsed = start.elapsed();
    run.latencies_us.sort_unstable();
    Ok(run)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn main() -> anyhow::Result<()> {
    let o = parse_opts()?;
    let dir = tempfile::tempdir()?;
    let mut env: Vec<(String, String)> = vec![("IMAGED_LOG".into(), "warn".into())];
    let pg = match o.backend.as_str() {
        "sqlite" => None,
        "postgres" => {
            let url = std::env::var("IMAGED_TEST_PG_URL").context("--backend postgres needs IMAGED_TEST_PG_URL")?;
            let schema = format!("bench_{}", std::process::id());
            env.push(("IMAGED_DATABASE_URL".into(), url.clone()));
            env.push(("IMAGED_DATABASE_SCHEMA".into(), schema.clone()));
            Some((url, schema))
        }
        _ => bail!("--backend is sqlite or postgres"),
    };
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    if o.servers > 1 && pg.is_none() {
        bail!("--servers N needs --backend postgres (servers share the database)");
    }
    let cfg = Config::load(&Overrides { data_dir: Some(dir.path().to_owned()), ..Overrides::default() })?;

    let fill_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let t = Instant::now();
    let keys = fill_rt.block_on(fill(&cfg, &o))?;
    drop(fill_rt);
    eprintln!("filled {} images over {} accounts in {:.1} s", o.images, o.accounts, t.elapsed().as_secs_f64());

    // The load generator gets one thread; the server has the machine's cores.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if o.servers > 1 {
        let result = scale_out(&rt, dir.path(), &env, &keys, &o);
        if let Some((url, schema)) = &pg {
            rt.block_on(imaged_metastore::postgres::drop_schema(url, schema))?;
        }
        return result;
    }
    // The same store served twice: with the replay check (the default), and without it.
    let with_check = measure(&rt, dir.path(), &env, &keys, &o, true);
    let without_check = measure(&rt, dir.path(), &env, &keys, &o, false);
    if let Some((url, schema)) = &pg {
        rt.block_on(imaged_metastore::postgres::drop_schema(url, schema))?;
    }
    let (floor, run, peak) = with_check?;
    let (_, plain, _) = without_check?;

    let rps = run.requests as f64 / run.elapsed.as_secs_f64();
    let floor_rps = floor.requests as f64 / floor.elapsed.as_secs_f64();
    let listed: serde_json::Value = serde_json::from_slice(&run.last_body).unwrap_or_default();
    let page = listed["Response"]["ImageSet"].as_array().map_or(0, Vec::len);
    println!("backend            {}", o.backend);
    println!(
        "store              {} images, {} accounts; page of {} images ({} bytes)",
        o.images,
        o.accounts,
        page,
        run.last_body.len()
    );
    println!("clients            {} keep-alive connections, {} s", o.clients, o.seconds);
    println!(
        "DescribeImages     {rps:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
        pct(&run.latencies_us, 0.5),
        pct(&run.latencies_us, 0.99),
        run.errors
    );
    println!(
        "/healthz baseline  {floor_rps:.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
        pct(&floor.latencies_us, 0.5),
        pct(&floor.latencies_us, 0.99)
    );
    println!("ratio              {:.2} of the /healthz rate", rps / floor_rps);
    let plain_rps = plain.requests as f64 / plain.elapsed.as_secs_f64();
    println!(
        "without replay check {plain_rps:.0} req/s  p50 {:.2} ms  p99 {:.2} ms; the check costs {:.1} % of it",
        pct(&plain.latencies_us, 0.5),
        pct(&plain.latencies_us, 0.99),
        (1.0 - rps / plain_rps) * 100.0
    );
    println!("server peak RSS    {peak:.1} MiB");
    if run.errors + plain.errors > 0 {
        bail!("{} requests failed", run.errors + plain.errors);
    }
    Ok(())
}

/// Starts `imaged serve` on `dir` with `env`; returns the child and its address.
fn start_server(dir: &std::path::Path, env: &[(String, String)]) -> anyhow::Result<(std::process::Child, String)> {
    let exe = std::env::current_exe()?.with_file_name("imaged");
    let mut child = Command::new(&exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut addr = None;
    for line in std::io::BufReader::new(stdout).lines() {
        if let Some(rest) = line?.strip_prefix("imaged listening on http://") {
            addr = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    Ok((child, addr.context("server address")?))
}

/// `DescribeImages` with 1, then 2, … `o.servers` servers on the one PostgreSQL store, the
/// clients spread over them; prints each rate and its ratio to the one-server rate.
fn scale_out(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    env: &[(String, String)],
    keys: &[(String, String)],
    o: &Opts,
) -> anyhow::Result<()> {
    let mut env = env.to_vec();
    env.push(("IMAGED_MASTER_KEY_FILE".into(), dir.join("master.key").to_string_lossy().into_owned()));
    let mut dirs = vec![dir.to_owned()];
    let mut extra = Vec::new();
    for _ in 1..o.servers {
        let d = tempfile::tempdir()?;
        dirs.push(d.path().to_owned());
        extra.push(d);
    }
    let mut one = 0.0;
    for n in 1..=o.servers {
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for (k, d) in dirs.iter().take(n).enumerate() {
            let mut env = env.clone();
            env.push(("IMAGED_HOST_ID".into(), format!("bench-{k}")));
            let (child, addr) = start_server(d, &env)?;
            children.push(child);
            addrs.push(addr);
        }
        let run = rt.block_on(drive(&addrs, keys, o.clients, o.seconds, false));
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let run = run?;
        let rps = run.requests as f64 / run.elapsed.as_secs_f64();
        if n == 1 {
            one = rps;
        }
        println!(
            "{n} server(s)        {rps:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  {:.2}x one server",
            pct(&run.latencies_us, 0.5),
            pct(&run.latencies_us, 0.99),
            run.errors,
            rps / one
        );
        if run.errors > 0 {
            bail!("{} requests failed", run.errors);
        }
    }
    Ok(())
}

/// Starts `imaged serve` on the filled data directory (with or without the replay check),
/// measures the `/healthz` floor and then `DescribeImages`; returns both runs and the server's
/// peak memory.
fn measure(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    env: &[(String, String)],
    keys: &[(String, String)],
    o: &Opts,
    replay_check: bool,
) -> anyhow::Result<(Run, Run, f64)> {
    std::fs::write(dir.join("imaged.toml"), format!("[http]\nreplay_check = {replay_check}\n"))?;
    let (mut child, addr) = start_server(dir, env)?;
    let pid = child.id();
    let addrs = [addr];
    let result = rt.block_on(async {
        let floor = drive(&addrs, keys, o.clients, (o.seconds / 4).max(2), true).await?;
        let run = drive(&addrs, keys, o.clients, o.seconds, false).await?;
        anyhow::Ok((floor, run))
    });
    let peak = peak_rss_mib(pid);
    let _ = child.kill();
    let _ = child.wait();
    let (floor, run) = result?;
    Ok((floor, run, peak))
}
