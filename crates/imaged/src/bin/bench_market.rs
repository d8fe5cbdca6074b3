//! `imaged-bench-market`: the marketplace and metering benchmark.
//!
//! 1. Fills a fresh store with LISTINGS (default 10,000) published marketplace images, starts
//!    `imaged serve` over it and measures `DescribeImages` filtered to `MARKET_IMAGE` (a page of
//!    100), p50 and p99 over 200 calls, against the same call filtered to `PUBLIC_IMAGE` in the
//!    same run.
//! 2. Meters a month for ACCOUNTS (default 1,000) accounts, each with an instance of a priced
//!    listing stopped and started every day (instance, image-fee and licence segments), then
//!    times producing every account's bill for the month (`describe_usage`), against reading
//!    the same segments from the store without pricing them.

use std::time::Instant;

use anyhow::Context;
use imaged::benchkit::BenchServer;
use imaged::config::{Config, Overrides};
use imaged_domain::image::MarketListing;
use imaged_domain::market::ListingId;
use imaged_domain::metering::{MeterKind, Segment};
use imaged_domain::pricing::{ImageFee, PriceModel};
use imaged_domain::time::Timestamp;
use imaged_domain::{catalog, ImageId};
use imaged_metastore::Role;
use serde_json::json;

fn arg(n: usize, default: usize) -> anyhow::Result<usize> {
    std::env::args().nth(n).map_or(Ok(default), |s| s.parse().context("a number"))
}

fn id_bytes(seq: u64) -> [u8; 8] {
    let mut id = [0u8; 8];
    for (i, b) in id.iter_mut().enumerate() {
        *b = ((seq >> (i * 5)) & 31) as u8;
    }
    id
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    (ms[n / 2], ms[(n * 99 / 100).min(n - 1)])
}

fn main() -> anyhow::Result<()> {
    let (listings, accounts) = (arg(1, 10_000)?, arg(2, 1_000)?);
    let work = tempfile::tempdir_in(std::env::var("IMAGED_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let data = work.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("imaged.toml"), "")?;
    let cfg = Config::load(&Overrides { data_dir: Some(data.clone()), ..Overrides::default() })?;

    // Part 2's store work and part 1's fill, in-process, before the server starts.
    let (fill_secs, bill_secs, read_secs, lines) = rt.block_on(async {
        let svc = imaged::open_service(&cfg).await?;
        svc.bootstrap(&data).await?;
        let store = svc.store().clone();
        let t = Instant::now();
        let template = catalog::market_images().remove(0);
        let mut batch = Vec::with_capacity(1000);
        for n in 0..listings {
            let mut img = template.clone();
            img.id = ImageId::from_random(id_bytes(n as u64 + 1));
            img.name = format!("stack {n}");
            img.market = Some(MarketListing {
                provider: format!("provider {}", n % 100),
                software: vec!["Nginx".into(), "PHP".into()],
                price_cny_per_hour: "0.25".into(),
                reviewed: true,
                fee: Some(ImageFee { model: PriceModel::Hourly, price: 25 }),
                on_sale: true,
            });
            img.market_mark = Some(ListingId::from_random(id_bytes(n as u64 + 1)));
            batch.push(img);
            if batch.len() == 1000 {
                store.put_images(&batch).await?;
                batch.clear();
            }
        }
        store.put_images(&batch).await?;
        let fill = t.elapsed().as_secs_f64();

        let month = (Timestamp(1_798_761_600), Timestamp(1_798_761_600 + 30 * 86_400)); // 2027-01
        let mut ids = Vec::with_capacity(accounts);
        for a in 0..accounts {
            let account =
                store.create_account(&format!("buyer-{a}"), Role::User, Timestamp(1)).await?.ok().context("dup")?;
            ids.push(account.id);
            let vm = imaged_metastore::testsuite::instance(account.id, "ap-tokyo", &template.id, (a % 251) as u8, 1);
            let vm = imaged_domain::instance::Instance {
                id: imaged_domain::InstanceId::from_random(id_bytes(a as u64 + 7)),
                ..vm
            };
            for day in 0..30 {
                let at = Timestamp(month.0 .0 + day * 86_400);
                let seg = |kind, rate| Segment {
                    account: account.id,
                    region: "ap-tokyo".into(),
                    resource: vm.id.to_string(),
                    kind,
                    rate,
                    quantity: 1,
                    listing: (kind == MeterKind::ImageFee).then(|| ListingId::from_random([9; 8])),
                    provider: None,
                    started_at: at,
                    ended_at: None,
                };
                let open = [seg(MeterKind::Instance, 35), seg(MeterKind::ImageFee, 25), seg(MeterKind::Licence, 12)];
                store.put_instances_metered(std::slice::from_ref(&vm), &open, at, None).await?;
                // Stopped for the last hour of each day.
                store.put_instances_metered(std::slice::from_ref(&vm), &[], Timestamp(at.0 + 82_800), None).await?;
            }
        }
        let t = Instant::now();
        let mut read = 0usize;
        for id in &ids {
            read += store.account_segments(*id, month.0, month.1).await?.len();
        }
        let read_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut lines = 0usize;
        for id in &ids {
            lines += svc.describe_usage(*id, month.0, month.1, None).await?.len();
        }
        let bill_secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(read == accounts * 90, "every segment read: {read}");
        anyhow::Ok((fill, bill_secs, read_secs, lines))
    })?;
    println!(
        "metering a month for {accounts} accounts (90 segments each): every bill in {bill_secs:.2} s ({:.2} ms a bill, {lines} lines) = {:.2}x reading the same segments unpriced ({read_secs:.2} s)",
        bill_secs * 1000.0 / accounts as f64,
        bill_secs / read_secs
    );

    let server = BenchServer::start(&data, "")?;
    let c = &server.client;
    let query = |kind: &str| json!({"Filters": [{"Name": "image-type", "Values": [kind]}], "Limit": 100});
    let (market, public) = (query("MARKET_IMAGE"), query("PUBLIC_IMAGE"));
    let (m, p) = rt.block_on(async {
        let total = c.call("DescribeImages", &market).await?["TotalCount"].as_u64().unwrap_or(0);
        anyhow::ensure!(total as usize >= listings, "every listing is on sale: {total}");
        let (mut m, mut p) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let t = Instant::now();
            c.call("DescribeImages", &market).await?;
            m.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            c.call("DescribeImages", &public).await?;
            p.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::Ok((percentiles(m), percentiles(p)))
    })?;
    println!(
        "DescribeImages image-type MARKET_IMAGE over {listings} listings (filled in {fill_secs:.1} s): p50 {:.2} ms, p99 {:.2} ms = {:.1}x / {:.1}x the PUBLIC_IMAGE page of the same catalogue (p50 {:.2} ms, p99 {:.2} ms)",
        m.0,
        m.1,
        m.0 / p.0,
        m.1 / p.1,
        p.0,
        p.1
    );
    println!("server peak RSS {:.1} MiB", imaged::benchkit::peak_rss_mib(server.child.id()));
    Ok(())
}
