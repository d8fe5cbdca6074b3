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
