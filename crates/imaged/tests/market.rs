//! End to end for prices (seeds `001`–`004`), through the official Python SDK, tccli and the
//! `imaged` CLI: `InquiryPriceRunInstances` and `InquiryPriceResetInstance` in Tencent's
//! `Price` shape, the breakdown behind them, the Windows licence outside mainland China only,
//! marketplace fees on top of the instance's, mainland-only market images, the operator's
//! price table, and bad input in Tencent's codes.

mod support;

use serde_json::Value;
use support::guest::sdk;
use support::{Backend, Server};

const CENTOS: &str = "img-9qabwvbn";
const WINDOWS: &str = "img-9id7emv7";
const WORDPRESS: &str = "img-wpress22";

/// A table of the operator's own: other prices in Tokyo, a type offered only there.
const PRICES: &str = r#"
[prices]
currency = "CNY"
[prices.default]
windows_licence_hourly = 15
windows_licence_monthly = 7000
storage_gb_month = 10
bandwidth_gb = 75
[prices.default.instance_types."S5.MEDIUM2"]
hourly = 40
monthly = 18000
[prices.regions.ap-tokyo]
windows_licence_hourly = 30
windows_licence_monthly = 14000
bandwidth_gb = 90
[prices.regions.ap-tokyo.instance_types."S5.MEDIUM2"]
hourly = 50
monthly = 22000
[prices.regions.ap-tokyo.instance_types."S5.LARGE8"]
hourly = 120
monthly = 55000
"#;

const PY: &str = r#"
from tencentcloud.common.common_client import CommonClient

def ext(region="ap-guangzhou"):
    hp = HttpProfile(protocol="http", endpoint=os.environ["IMAGED_ENDPOINT"], reqMethod="POST")
    return CommonClient("imaged", "2026-12-01", credential.Credential(os.environ["SECRET_ID"], os.environ["SECRET_KEY"]),
                        region, profile=ClientProfile(httpProfile=hp, language="en-US"))

def ask(image, region="ap-guangzhou", zone="ap-guangzhou-3", **kw):
    p = dict({"Placement": {"Zone": zone}, "ImageId": image}, **kw)
    return {"price": call(client(region), "InquiryPriceRunInstances", p), "parts": call(ext(region), "DescribePriceBreakdown", p)}
"#;

fn ask(server: &Server, user: &support::Creds, snippet: &str) -> Value {
    sdk(server, user, &format!("{PY}\n{snippet}"))
}

/// `InstancePrice.UnitPrice` in minor units, checked equal to the breakdown's total.
fn hourly(q: &Value) -> u64 {
    let price = &q["price"]["ok"]["Price"]["InstancePrice"];
    assert_eq!(price["ChargeUnit"], "HOUR", "{q}");
    let unit = (price["UnitPrice"].as_f64().unwrap_or_else(|| panic!("no UnitPrice: {q}")) * 100.0).round() as u64;
    assert_eq!(price["UnitPriceDiscount"], price["UnitPrice"]);
    let parts = &q["parts"]["ok"];
    let sum =
        ["InstancePrice", "ImageFee", "LicenceFee"].iter().map(|k| parts[*k].as_u64().expect("a part")).sum::<u64>();
    assert_eq!((unit, parts["Total"].as_u64()), (sum, Some(sum)), "the price is the sum of its parts: {q}");
    unit
}

#[test]
fn a_launch_costs_the_instance_plus_the_image_plus_the_licence_outside_mainland() {
    let Some(server) = Server::start_with(Backend::Sqlite, "market_prices", PRICES) else { return };
    let user = server.create_account("buyer");
    let r = ask(
        &server,
        &user,
        &format!(
            r#"result = {{
  "linux": ask("{CENTOS}", InstanceType="S5.MEDIUM2", InstanceCount=2),
  "windows_gz": ask("{WINDOWS}", InstanceType="S5.MEDIUM2"),
  "windows_tokyo": ask("{WINDOWS}", "ap-tokyo", "ap-tokyo-1", InstanceType="S5.MEDIUM2"),
  "linux_tokyo": ask("{CENTOS}", "ap-tokyo", "ap-tokyo-1", InstanceType="S5.LARGE8",
                     InternetAccessible={{"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR", "InternetMaxBandwidthOut": 10}}),
  "market": ask("{WORDPRESS}", InstanceType="S5.MEDIUM2", InstanceCount=3),
  "market_tokyo": ask("{WORDPRESS}", "ap-tokyo", "ap-tokyo-1"),
  "prepaid": ask("{WINDOWS}", "ap-tokyo", "ap-tokyo-1", InstanceChargeType="PREPAID",
                 InstanceChargePrepaid={{"Period": 3}}),
}}"#
        ),
    );
    assert_eq!(hourly(&r["linux"]), 80, "two instances at 0.40/h");
    assert_eq!(hourly(&r["windows_gz"]), 40, "no licence fee in mainland China");
    assert_eq!(r["windows_gz"]["parts"]["ok"]["LicenceFee"], 0);
    assert_eq!(hourly(&r["windows_tokyo"]), 80, "Tokyo's instance price 0.50 plus its licence 0.30");
    assert_eq!(r["windows_tokyo"]["parts"]["ok"]["LicenceFee"], 30);
    assert_eq!(hourly(&r["linux_tokyo"]), 120);
    let bandwidth = &r["linux_tokyo"]["price"]["ok"]["Price"]["BandwidthPrice"];
    assert_eq!((bandwidth["UnitPrice"].as_f64(), bandwidth["ChargeUnit"].as_str()), (Some(0.9), Some("GB")));
    assert_eq!(hourly(&r["market"]), 180, "three instances at 0.40/h plus the image's 0.20/h each");
    let parts = &r["market"]["parts"]["ok"];
    assert_eq!((parts["ImageFee"].as_u64(), parts["ImagePriceModel"].as_str()), (Some(60), Some("HOURLY")));
    assert_eq!(r["market_tokyo"]["price"]["error"], "InvalidImageId.NotFound", "market images are mainland only");
    let prepaid = &r["prepaid"]["price"]["ok"]["Price"]["InstancePrice"];
    assert_eq!(prepaid["OriginalPrice"].as_f64(), Some(1080.0), "3 x (220 + 140 licence)");
    assert_eq!(prepaid["DiscountPrice"], prepaid["OriginalPrice"]);
    assert_eq!(r["prepaid"]["parts"]["ok"]["Total"], 108_000);

    // A reinstall is quoted at the instance's type with the new image.
    let r = ask(
        &server,
        &user,
        &format!(
            r#"c = client()
ids = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{CENTOS}", "InstanceType": "S5.MEDIUM2"}})["ok"]["InstanceIdSet"]
result = {{
  "same": call(c, "InquiryPriceResetInstance", {{"InstanceId": ids[0]}}),
  "market": call(c, "InquiryPriceResetInstance", {{"InstanceId": ids[0], "ImageId": "{WORDPRESS}"}}),
  "nobody": call(c, "InquiryPriceResetInstance", {{"InstanceId": "ins-00000000"}}),
}}"#
        ),
    );
    let unit = |v: &Value| v["ok"]["Price"]["InstancePrice"]["UnitPrice"].as_f64();
    assert_eq!((unit(&r["same"]), unit(&r["market"])), (Some(0.4), Some(0.6)), "{r}");
    assert_eq!(r["nobody"]["error"], "InvalidInstanceId.NotFound");

    // tccli reaches it; the operator reads the table in force.
    let out = server.tccli(
        &user,
        &[
            "cvm",
            "InquiryPriceRunInstances",
            "--region",
            "ap-guangzhou",
            "--Placement",
            r#"{"Zone":"ap-guangzhou-3"}"#,
            "--ImageId",
            CENTOS,
            "--InstanceType",
            "S5.MEDIUM2",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("tccli json");
    assert_eq!(v["Price"]["InstancePrice"]["UnitPrice"].as_f64(), Some(0.4));
    let out = server.cli(&["price", "show"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table: Value = serde_json::from_slice(&out.stdout).expect("price json");
    assert_eq!(table["regions"]["ap-tokyo"]["instance_types"]["S5.LARGE8"]["hourly"], 120);
    assert_eq!(table["currency"], "CNY");

    // Bad input: Tencent's codes.
    let r = ask(
        &server,
        &user,
        &format!(
            r#"result = {{
  "unpriced": ask("{CENTOS}", InstanceType="S5.LARGE8"),
  "malformed": ask("{CENTOS}", InstanceType="huge"),
  "arch": ask("{CENTOS}", InstanceType="SR1.MEDIUM4"),
  "period": ask("{CENTOS}", InstanceType="S5.MEDIUM2", InstanceChargeType="PREPAID", InstanceChargePrepaid={{"Period": 0}}),
  "spot": ask("{CENTOS}", InstanceChargeType="SPOTPAID"),
  "count": ask("{CENTOS}", InstanceCount=0),
  "zone": ask("{CENTOS}", zone="ap-tokyo-1"),
  "image": ask("img-00000000"),
}}"#
        ),
    );
    let expect = [
        ("unpriced", "InvalidParameterValue.InstanceTypeNotFound"),
        ("malformed", "InvalidInstanceType.Malformed"),
        ("arch", "InvalidParameterValue.InvalidImageForGivenInstanceType"),
        ("period", "InvalidParameterValue.Range"),
        ("spot", "InvalidParameterValue"),
        ("count", "InvalidParameterValue.Range"),
        ("zone", "InvalidZone.MismatchRegion"),
        ("image", "InvalidImageId.NotFound"),
    ];
    for (case, code) in expect {
        assert_eq!(r[case]["price"]["error"], code, "{case}: {}", r[case]);
        assert_eq!(r[case]["parts"]["error"], code, "{case}: the breakdown refuses alike");
    }
}

#[test]
fn an_absurd_price_table_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("imaged.toml"), "[prices.default]\nbandwidth_gb = 99999999999\n").expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["price", "show", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("imaged");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("over"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A NORMAL custom image of `who`'s holding `/etc/stack.conf`, captured from a CentOS instance.
fn stack_image(server: &Server, who: &support::Creds, name: &str, content: &str) -> String {
    let r = sdk(server, who, &format!(r#"result = run(client(), "{CENTOS}", name="{name}")"#));
    let vm = r["ids"][0].as_str().expect("instance").to_owned();
    let work = tempfile::tempdir().expect("tempdir");
    support::guest::write_file(&support::guest::disk_of(server, &vm), "/etc/stack.conf", content, work.path());
    let r = sdk(
        server,
        who,
        &format!(
            r#"c = client()
r = call(c, "CreateImage", {{"InstanceId": "{vm}", "ImageName": "{name}"}})
result = settle_image(c, r["ok"]["ImageId"])"#
        ),
    );
    assert_eq!(r["ImageState"], "NORMAL", "{r}");
    r["ImageId"].as_str().expect("image id").to_owned()
}

fn stack_of(server: &Server, instance: &str) -> Option<String> {
    let work = tempfile::tempdir().expect("tempdir");
    support::guest::read_file(&support::guest::disk_of(server, instance), "/etc/stack.conf", work.path())
}

#[test]
fn a_listing_goes_through_review_and_its_mark_follows_the_bytes() {
    let Some(server) = Server::start(Backend::Sqlite, "market_listings") else { return };
    let (acme, buyer) = (server.create_account("acme"), server.create_account("buyer"));
    let source = stack_image(&server, &acme, "lamp-src", "php = 8.2\n");
    let theirs = stack_image(&server, &buyer, "buyer-own", "mine\n");
    let create = |image: &str, price: &str| {
        format!(
            r#"call(ext(), "CreateMarketListing", {{"ImageId": "{image}", "ListingName": "LAMP stack",
    "SoftwareStack": ["PHP 8.2", "MariaDB 10.11", "Nginx 1.24"], "Description": "A web stack.", "Category": "web",
    "PriceModel": "HOURLY", "Price": {price}}})"#
        )
    };
    let r = ask(&server, &acme, &format!("result = {}", create(&source, "30")));
    assert_eq!(r["error"], "AuthFailure.UnauthorizedOperation", "not a provider yet: {r}");
    server.cli_json(&["market", "provider", "add", &acme.account_id]);

    let r = ask(
        &server,
        &acme,
        &format!(
            r#"result = {{
  "draft": {},
  "negative": {},
  "absurd": {},
  "free_priced": call(ext(), "CreateMarketListing", {{"ImageId": "{source}", "ListingName": "x", "Category": "web",
                         "PriceModel": "FREE", "Price": 5}}),
  "model": call(ext(), "CreateMarketListing", {{"ImageId": "{source}", "ListingName": "x", "Category": "web", "PriceModel": "WEEKLY"}}),
  "category": call(ext(), "CreateMarketListing", {{"ImageId": "{source}", "ListingName": "x", "Category": "games", "PriceModel": "FREE"}}),
  "someone_elses": {},
  "public": {},
  "unknown": call(ext(), "SubmitMarketListing", {{"ListingId": "lst-00000000"}}),
  "malformed": call(ext(), "SubmitMarketListing", {{"ListingId": "listing-1"}}),
}}"#,
            create(&source, "30"),
            create(&source, "-1"),
            create(&source, "99999999999"),
            create(&theirs, "30"),
            create(CENTOS, "30"),
        ),
    );
    let listing = r["draft"]["ok"]["ListingId"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    assert_eq!(r["draft"]["ok"]["State"], "DRAFT");
    for (case, code) in [
        ("negative", "InvalidParameterValue"),
        ("absurd", "InvalidParameterValue"),
        ("free_priced", "InvalidParameterValue"),
        ("model", "InvalidParameterValue"),
        ("category", "InvalidParameterValue"),
        ("someone_elses", "UnsupportedOperation"),
        ("public", "UnsupportedOperation"),
        ("unknown", "ResourceNotFound"),
        ("malformed", "ResourceNotFound"),
    ] {
        assert_eq!(r[case]["error"], code, "{case}: {}", r[case]);
    }

    // Submitting freezes the image: deleting the provider's image changes nothing reviewed.
    let r = ask(
        &server,
        &acme,
        &format!(
            r#"s = call(ext(), "SubmitMarketListing", {{"ListingId": "{listing}"}})
d = call(client(), "DeleteImages", {{"ImageIds": ["{source}"]}})
result = {{"s": s, "d": d}}"#
        ),
    );
    assert_eq!(r["s"]["ok"]["State"], "PENDING_REVIEW", "{r}");
    assert!(r["d"]["ok"].is_object(), "{r}");
    let v1 = r["s"]["ok"]["PendingVersion"]["ImageId"].as_str().expect("snapshot").to_owned();
    let market_ids = |who: &support::Creds, region: &str| {
        let r = ask(
            &server,
            who,
            &format!(
                r#"r = call(client("{region}"), "DescribeImages", {{"Filters": [{{"Name": "image-type", "Values": ["MARKET_IMAGE"]}}], "Limit": 100}})
result = [i["ImageId"] for i in r["ok"]["ImageSet"]]"#
            ),
        );
        r.as_array().expect("ids").iter().map(|v| v.as_str().unwrap_or("").to_owned()).collect::<Vec<_>>()
    };
    assert!(!market_ids(&buyer, "ap-guangzhou").contains(&v1), "nothing is on sale before review");
    let seen = server.cli_json(&["market", "inspect", &listing]);
    assert_eq!(seen["image"], v1.as_str());
    assert!(
        seen["blocks"].as_u64().is_some_and(|b| b > 0) && seen["virtual_size"].as_u64().is_some_and(|s| s > 0),
        "{seen}"
    );
    assert_eq!(seen["platform"], "CentOS");
    assert!(
        seen["os_release"].to_string().contains("IMAGED_IMAGE_ID=img-9qabwvbn"),
        "the reviewer sees the filesystem: {seen}"
    );

    // Rejected with a reason; fixed; approved.
    let rejected =
        server.cli_json(&["market", "review", &listing, "--reject", "--reason", "describe the ports it opens"]);
    assert_eq!(rejected["State"], "REJECTED");
    let r = ask(
        &server,
        &acme,
        &format!(
            r#"mine = call(ext(), "DescribeMarketListings")["ok"]
m = call(ext(), "ModifyMarketListing", {{"ListingId": "{listing}", "Description": "A web stack on ports 80 and 443.",
    "PriceModel": "HOURLY", "Price": 25}})
s = call(ext(), "SubmitMarketListing", {{"ListingId": "{listing}"}})
result = {{"mine": mine, "m": m, "s": s}}"#
        ),
    );
    assert_eq!(r["mine"]["ListingSet"][0]["RejectReason"], "describe the ports it opens");
    // The source image is gone: the fix keeps the frozen bytes' new version from the old image id.
    assert_eq!(r["s"]["error"], "InvalidImageId.NotFound", "a new version needs an image: {r}");
    let source2 = stack_image(&server, &acme, "lamp-src-2", "php = 8.3\n");
    let r = ask(
        &server,
        &acme,
        &format!(
            r#"m = call(ext(), "ModifyMarketListing", {{"ListingId": "{listing}", "ImageId": "{source2}"}})
result = call(ext(), "SubmitMarketListing", {{"ListingId": "{listing}"}})"#
        ),
    );
    assert_eq!(r["ok"]["PendingVersion"]["Version"], 2, "{r}");
    let v2 = r["ok"]["PendingVersion"]["ImageId"].as_str().expect("snapshot").to_owned();
    let approved = server.cli_json(&["market", "review", &listing, "--approve"]);
    assert_eq!(
        (approved["State"].as_str(), approved["PublishedImageId"].as_str()),
        (Some("PUBLISHED"), Some(v2.as_str()))
    );

    // Buyers see it in mainland regions only, launch and reinstall from it, and pay its fee.
    assert!(market_ids(&buyer, "ap-guangzhou").contains(&v2));
    assert!(market_ids(&buyer, "ap-beijing").contains(&v2));
    assert!(!market_ids(&buyer, "ap-tokyo").contains(&v2), "mainland China only");
    let r = ask(
        &server,
        &buyer,
        &format!(
            r#"c = client()
img = call(c, "DescribeImages", {{"ImageIds": ["{v2}"]}})["ok"]["ImageSet"][0]
tokyo = call(client("ap-tokyo"), "RunInstances", {{"Placement": {{"Zone": "ap-tokyo-1"}}, "ImageId": "{v2}"}})
launched = run(c, "{v2}", name="shop")
quote = ask("{v2}", InstanceType="S5.MEDIUM2")
result = {{"img": img, "tokyo": tokyo, "launched": launched, "quote": quote}}"#
        ),
    );
    let img = &r["img"];
    assert_eq!(img["ImageType"], "MARKET_IMAGE");
    assert_eq!(img["MarketListing"]["Provider"], "acme");
    assert_eq!(
        (img["MarketListing"]["PriceModel"].as_str(), img["MarketListing"]["Price"].as_u64()),
        (Some("HOURLY"), Some(25))
    );
    assert_eq!(img["MarketListing"]["Software"][0], "PHP 8.2");
    assert_eq!(img["MarketMark"], listing.as_str());
    assert_eq!(r["tokyo"]["error"], "InvalidImageId.NotFound");
    let shop = r["launched"]["ids"][0].as_str().expect("instance").to_owned();
    assert_eq!(stack_of(&server, &shop).as_deref(), Some("php = 8.3\n"), "the reviewed bytes");
    assert_eq!(hourly(&r["quote"]), 35 + 25, "the instance's price plus the image's fee");

    // A capture of the buyer's instance keeps the mark: no export, the fee on its launches, no
    // listing by anyone else.
    server.cli_json(&["market", "provider", "add", &buyer.account_id]);
    let r = ask(
        &server,
        &buyer,
        &format!(
            r#"c = client()
cap = call(c, "CreateImage", {{"InstanceId": "{shop}", "ImageName": "my-shop"}})
img = settle_image(c, cap["ok"]["ImageId"])
result = {{"img": img,
  "export": call(c, "ExportImages", {{"BucketName": "exports", "ImageIds": [img["ImageId"]], "ExportFormat": "RAW"}}),
  "quote": ask(img["ImageId"], InstanceType="S5.MEDIUM2"),
  "relist": {}}}"#,
            create_for("img[\"ImageId\"]")
        ),
    );
    assert_eq!(r["img"]["MarketMark"], listing.as_str(), "{}", r["img"]);
    assert_eq!(r["export"]["error"], "UnsupportedOperation.MarketImageExportUnsupported", "{}", r["export"]);
    assert_eq!(hourly(&r["quote"]), 35 + 25, "launching the capture pays the listing's fee again");
    assert_eq!(r["relist"]["error"], "UnsupportedOperation", "{}", r["relist"]);

    // Withdrawn: no new launches; the running instance keeps running.
    let r =
        ask(&server, &acme, &format!(r#"result = call(ext(), "WithdrawMarketListing", {{"ListingId": "{listing}"}})"#));
    assert_eq!(r["ok"]["State"], "WITHDRAWN");
    assert!(!market_ids(&buyer, "ap-guangzhou").contains(&v2));
    let r = ask(
        &server,
        &buyer,
        &format!(
            r#"c = client()
result = {{"run": call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{v2}"}}),
          "shop": call(c, "DescribeInstances", {{"InstanceIds": ["{shop}"]}})["ok"]["InstanceSet"][0]["InstanceState"],
          "listings": call(ext(), "DescribeMarketListings")["ok"]}}"#
        ),
    );
    assert_eq!(r["run"]["error"], "InvalidImageId.NotFound");
    assert_eq!(r["shop"], "RUNNING");
    assert_eq!(r["listings"]["TotalCount"], 0, "a provider sees its own listings only");

    // The built-in rows are published listings, and their bytes carry the mark too.
    let all = server.cli_json(&["market", "listings"]);
    let wordpress = all.as_array().expect("listings").iter().find(|l| l["published"]["image"] == WORDPRESS);
    assert_eq!(wordpress.map(|l| l["state"].as_str()), Some(Some("PUBLISHED")), "{all}");
    let r = ask(
        &server,
        &buyer,
        &format!(
            r#"c = client()
vm = run(c, "{WORDPRESS}", name="wp")["ids"][0]
cap = call(c, "CreateImage", {{"InstanceId": vm, "ImageName": "my-wordpress"}})
img = settle_image(c, cap["ok"]["ImageId"])
result = call(c, "ExportImages", {{"BucketName": "exports", "ImageIds": [img["ImageId"]], "ExportFormat": "RAW"}})"#
        ),
    );
    assert_eq!(r["error"], "UnsupportedOperation.MarketImageExportUnsupported", "the licensed disk stays: {r}");
}

/// `CreateMarketListing` of the Python expression `image`.
fn create_for(image: &str) -> String {
    format!(
        r#"call(ext(), "CreateMarketListing", {{"ImageId": {image}, "ListingName": "resold", "Category": "web", "PriceModel": "FREE"}})"#
    )
}

/// A published listing of `provider`'s at `price` fen an hour; returns (listing, image).
fn published(server: &Server, provider: &support::Creds, price: u64) -> (String, String) {
    server.cli_json(&["market", "provider", "add", &provider.account_id]);
    let source = stack_image(server, provider, "metered-src", "app = 1\n");
    let r = ask(
        server,
        provider,
        &format!(
            r#"l = call(ext(), "CreateMarketListing", {{"ImageId": "{source}", "ListingName": "Metered", "Category": "web",
    "PriceModel": "HOURLY", "Price": {price}}})["ok"]["ListingId"]
result = call(ext(), "SubmitMarketListing", {{"ListingId": l}})"#
        ),
    );
    let listing = r["ok"]["ListingId"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    let approved = server.cli_json(&["market", "review", &listing, "--approve"]);
    (listing, approved["PublishedImageId"].as_str().expect("image").to_owned())
}

#[test]
fn usage_adds_up_exactly_across_stop_start_reset_and_terminate_and_equals_the_quote() {
    let clock = tempfile::tempdir().expect("clock dir");
    let file = clock.path().join("clock");
    let t0: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z
    let set = |t: i64| std::fs::write(&file, format!("@{t}")).expect("clock");
    set(t0);
    let file_text = file.to_string_lossy().into_owned();
    let Some(server) =
        Server::start_env(Backend::Postgres, "market_metering", &[("IMAGED_CLOCK_OFFSET_FILE", &file_text)])
    else {
        return;
    };
    let (acme, buyer) = (server.create_account("acme"), server.create_account("buyer"));
    let (listing, image) = published(&server, &acme, 25);
    let op = |action: &str, id: &str| {
        let r = ask(
            &server,
            &buyer,
            &format!(
                r#"c = client()
r = call(c, "{action}", {{"InstanceIds": ["{id}"]}} if "{action}" != "ResetInstance" else {{"InstanceId": "{id}"}})
result = {{"r": r, "after": settle_instances(c, ["{id}"]) if "{action}" != "TerminateInstances" else settle_gone(c, ["{id}"])}}"#
            ),
        );
        assert!(r["r"]["ok"].is_object(), "{action}: {r}");
    };
    // Launched at t0 from the market image; a Windows instance in Tokyo and one in Guangzhou.
    let r = ask(
        &server,
        &buyer,
        &format!(
            r#"c = client()
shop = run(c, "{image}", name="shop")["ids"][0]
win_tokyo = run(client("ap-tokyo"), "{WINDOWS}", name="win", zone="ap-tokyo-1")["ids"][0]
win_gz = run(c, "{WINDOWS}", name="win")["ids"][0]
result = {{"shop": shop, "win_tokyo": win_tokyo, "win_gz": win_gz, "quote": ask("{image}", InstanceType="S5.MEDIUM2")}}"#
        ),
    );
    let shop = r["shop"].as_str().expect("shop").to_owned();
    let quote = hourly(&r["quote"]);
    assert_eq!(quote, 35 + 25);
    set(t0 + 7200);
    op("StopInstances", &shop);
    set(t0 + 10_800);
    op("StartInstances", &shop);
    set(t0 + 14_400);
    op("ResetInstance", &shop);
    set(t0 + 18_000);
    op("TerminateInstances", &shop);
    set(t0 + 25_200);

    let iso = |t: i64| imaged_domain::time::Timestamp(t).iso8601();
    let usage = |from: i64, to: i64| {
        ask(
            &server,
            &buyer,
            &format!(
                r#"result = call(ext(), "DescribeUsage", {{"StartTime": "{}", "EndTime": "{}"}})["ok"]"#,
                iso(from),
                iso(to)
            ),
        )
    };
    let all = usage(t0, t0 + 25_200);
    let lines = all["UsageSet"].as_array().expect("lines");
    let line = |category: &str, instance: &str| {
        lines.iter().filter(|l| l["Category"] == category && l["ResourceId"] == instance).collect::<Vec<_>>()
    };
    let run_time: u64 = line("INSTANCE", &shop).iter().map(|l| l["Seconds"].as_u64().unwrap_or(0)).sum();
    assert_eq!(run_time, 4 * 3600, "0-2 h and 3-5 h: the stopped hour and the reset count nothing twice: {all}");
    let shop_amount: u64 =
        lines.iter().filter(|l| l["ResourceId"] == shop.as_str()).map(|l| l["Amount"].as_u64().unwrap_or(0)).sum();
    assert_eq!(shop_amount, 4 * quote, "four metered hours are four times the quoted hourly price");
    assert_eq!(line("IMAGE_FEE", &shop)[0]["ListingId"], listing.as_str());
    let win_tokyo = r["win_tokyo"].as_str().expect("id");
    let licence: u64 = line("LICENCE", win_tokyo).iter().map(|l| l["Amount"].as_u64().unwrap_or(0)).sum();
    assert_eq!(licence, 7 * 12, "the licence outside mainland, 7 hours at 0.12");
    assert!(line("LICENCE", r["win_gz"].as_str().expect("id")).is_empty(), "no licence in mainland China");
    let totals: u64 = all["Totals"].as_array().expect("totals").iter().map(|t| t["Amount"].as_u64().unwrap_or(0)).sum();
    assert_eq!(totals, all["TotalAmount"].as_u64().expect("total"));

    // Any cut of the range adds up to the whole.
    let (a, b) = (usage(t0, t0 + 9000), usage(t0 + 9000, t0 + 25_200));
    let secs = |v: &Value| -> u64 {
        v["UsageSet"].as_array().expect("lines").iter().map(|l| l["Seconds"].as_u64().unwrap_or(0)).sum()
    };
    assert_eq!(secs(&a) + secs(&b), secs(&all));

    // The provider earns the fee of those four hours; the CLI says the same.
    let r = ask(
        &server,
        &acme,
        &format!(
            r#"result = call(ext(), "DescribeProviderEarnings", {{"StartTime": "{}", "EndTime": "{}"}})["ok"]"#,
            iso(t0),
            iso(t0 + 25_200)
        ),
    );
    assert_eq!(r["EarningSet"][0]["ListingId"], listing.as_str());
    assert_eq!(
        (r["EarningSet"][0]["Seconds"].as_u64(), r["TotalAmount"].as_u64()),
        (Some(4 * 3600), Some(4 * 25)),
        "{r}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["market", "earnings", "--start", &iso(t0), "--end", &iso(t0 + 25_200)])
        .args(["--endpoint", &format!("http://{}", server.addr)])
        .env("TENCENTCLOUD_SECRET_ID", &acme.secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", &acme.secret_key)
        .output()
        .expect("imaged market earnings");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["TotalAmount"], 100);
    // The provider's custom image is stored GB-months: NORMAL at t0, 50 GB at 0.12 per GB-month.
    let r = ask(
        &server,
        &acme,
        &format!(
            r#"result = call(ext(), "DescribeUsage", {{"StartTime": "{}", "EndTime": "{}", "Category": "STORAGE"}})["ok"]"#,
            iso(t0),
            iso(t0 + 25_200)
        ),
    );
    let storage = &r["UsageSet"][0];
    assert_eq!((storage["Quantity"].as_u64(), storage["Seconds"].as_u64()), (Some(50), Some(25_200)), "{r}");
    assert_eq!(storage["Amount"], 12 * 50 * 25_200 / (720 * 3600));
    let r = ask(
        &server,
        &buyer,
        r#"result = call(ext(), "DescribeUsage", {"StartTime": "2027-01-02T00:00:00Z", "EndTime": "2027-01-01T00:00:00Z"})"#,
    );
    assert_eq!(r["error"], "InvalidParameterValue.Range");
}
