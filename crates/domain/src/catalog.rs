//! The built-in catalogue: the public images of the seeds' TKE table, the other public
//! images a user expects (more Linux distributions, Windows Server), and marketplace images.
//!
//! The operator can add more; these are what a fresh installation offers.

use crate::ids::ImageId;
use crate::image::{
    Architecture, BootMode, Image, ImageKind, ImageSource, ImageState, LicenseType, MarketListing, ReleaseStatus,
};
use crate::time::Timestamp;

/// One catalogue row, in the shape of the seeds' table.
struct Row {
    id: &'static str,
    name: &'static str,
    os_name: &'static str,
    platform: &'static str,
    os_type: &'static str,
    arch: Architecture,
    size_gib: u64,
    release: ReleaseStatus,
    kernel: Option<&'static str>,
    remarks: &'static [&'static str],
    created: i64,
}

fn image(row: &Row, kind: ImageKind) -> Image {
    let id = ImageId::parse(row.id).unwrap_or_else(|_| ImageId::from_random([0; 8]));
    // The description carries the seeds' columns too, for clients that show only the
    // documented fields (tccli, the typed SDK models).
    let status = match row.release {
        ReleaseStatus::Official => "official launch",
        ReleaseStatus::Beta => "in beta test, apply before use",
    };
    let description = format!("{} OS type: {}. Release status: {status}.", row.remarks.join(" "), row.os_type);
    Image {
        id,
        region: None,
        owner: None,
        kind,
        source: ImageSource::Official,
        state: ImageState::Normal,
        name: row.name.to_owned(),
        description,
        os_name: row.os_name.to_owned(),
        platform: row.platform.to_owned(),
        os_type: row.os_type.to_owned(),
        architecture: row.arch,
        size_gib: row.size_gib,
        created_at: Timestamp(row.created),
        boot_mode: BootMode::LegacyBios,
        license_type: LicenseType::TencentCloud,
        family: String::new(),
        deprecated: false,
        supports_cloudinit: row.platform != "Windows",
        tags: Vec::new(),
        release_status: row.release,
        kernel: row.kernel.map(str::to_owned),
        remarks: row.remarks.iter().map(|s| (*s).to_owned()).collect(),
        sync_percent: None,
        failure_reason: None,
        market: None,
        source_format: None,
        progress: None,
        market_mark: None,
    }
}

use Architecture::{Arm, I386, X86_64};
use ReleaseStatus::{Beta, Official};

const PUBLIC: &[Row] = &[
    // The seeds' table (TKE public images), in its order.
    Row { id: "img-eb30mz89", name: "TencentOS Server 3.1 (TK4)", os_name: "TencentOS Server 3.1 (TK4)", platform: "TencentOS", os_type: "TencentOS Server", arch: X86_64, size_gib: 20, release: Official, kernel: Some("5.4.119"),
          remarks: &["We recommend you use the latest release of TencentOS Server.", "Kernel version: 5.4.119.", "Automatic installation of the GPU driver is not supported; install it yourself."], created: 1_630_454_400 },
    Row { id: "img-hdt9xxkt", name: "TencentOS Server 2.4", os_name: "TencentOS Server 2.4 (Tencent Linux release 2.4 (Final))", platform: "TencentOS", os_type: "Tlinux", arch: X86_64, size_gib: 20, release: Official, kernel: Some("4.14.105"),
          remarks: &["Former name: Tencent Linux release 2.4 (Final).", "Kernel version: 4.14.105."], created: 1_577_836_800 },
    Row { id: "img-22trbn9x", name: "Ubuntu Server 20.04.1 LTS 64-bit", os_name: "Ubuntu Server 20.04.1 LTS 64bit", platform: "Ubuntu", os_type: "Ubuntu", arch: X86_64, size_gib: 20, release: Beta, kernel: None,
          remarks: &["Ubuntu 20.04.1 public kernel."], created: 1_598_918_400 },
    Row { id: "img-pi0ii46r", name: "Ubuntu 18.04 LTS 64-bit", os_name: "Ubuntu Server 18.04.1 LTS 64bit", platform: "Ubuntu", os_type: "Ubuntu", arch: X86_64, size_gib: 20, release: Official, kernel: None,
          remarks: &["Ubuntu 18.04.1 public kernel."], created: 1_535_760_000 },
    Row { id: "img-25szkc8t", name: "CentOS 8.0", os_name: "CentOS 8.0 64bit", platform: "CentOS", os_type: "CentOS", arch: X86_64, size_gib: 20, release: Beta, kernel: None,
          remarks: &["CentOS 8.0 public kernel."], created: 1_569_888_000 },
    Row { id: "img-9qabwvbn", name: "CentOS 7.6", os_name: "CentOS 7.6 64bit", platform: "CentOS", os_type: "CentOS", arch: X86_64, size_gib: 20, release: Official, kernel: None,
          remarks: &["CentOS 7.6 public kernel."], created: 1_546_300_800 },
    // Other public images a user expects.
    Row { id: "img-l8og963d", name: "TencentOS Server 3.1 (TK4) ARM", os_name: "TencentOS Server 3.1 (TK4) for ARM64", platform: "TencentOS", os_type: "TencentOS Server", arch: Arm, size_gib: 20, release: Official, kernel: Some("5.4.119"),
          remarks: &["TencentOS Server for ARM64 instances."], created: 1_633_046_400 },
    Row { id: "img-mmytdhbn", name: "Ubuntu Server 22.04 LTS 64-bit", os_name: "Ubuntu Server 22.04 LTS 64bit", platform: "Ubuntu", os_type: "Ubuntu", arch: X86_64, size_gib: 20, release: Official, kernel: Some("5.15"),
          remarks: &["Ubuntu 22.04 public kernel."], created: 1_650_931_200 },
    Row { id: "img-487zeit5", name: "Ubuntu Server 24.04 LTS 64-bit", os_name: "Ubuntu Server 24.04 LTS 64bit", platform: "Ubuntu", os_type: "Ubuntu", arch: X86_64, size_gib: 20, release: Official, kernel: Some("6.8"),
          remarks: &["Ubuntu 24.04 public kernel."], created: 1_714_003_200 },
    Row { id: "img-2wgyxc0a", name: "Debian 12.0 64-bit", os_name: "Debian 12.0 64bit", platform: "Debian", os_type: "Debian", arch: X86_64, size_gib: 20, release: Official, kernel: Some("6.1"),
          remarks: &["Debian 12 (bookworm) public kernel."], created: 1_686_441_600 },
    Row { id: "img-5bn3ctqd", name: "Debian 11.1 64-bit", os_name: "Debian 11.1 64bit", platform: "Debian", os_type: "Debian", arch: X86_64, size_gib: 20, release: Official, kernel: Some("5.10"),
          remarks: &["Debian 11 (bullseye) public kernel."], created: 1_633_910_400 },
    Row { id: "img-1u6l2i9l", name: "Rocky Linux 9.2 64-bit", os_name: "Rocky Linux 9.2 64bit", platform: "Rocky Linux", os_type: "Rocky Linux", arch: X86_64, size_gib: 20, release: Official, kernel: Some("5.14"),
          remarks: &["Rocky Linux 9 public kernel."], created: 1_684_195_200 },
    Row { id: "img-4cmp1f33", name: "AlmaLinux 9.2 64-bit", os_name: "AlmaLinux 9.2 64bit", platform: "AlmaLinux", os_type: "AlmaLinux", arch: X86_64, size_gib: 20, release: Official, kernel: Some("5.14"),
          remarks: &["AlmaLinux 9 public kernel."], created: 1_684_713_600 },
    Row { id: "img-6bhj7zz2", name: "OpenCloudOS 9", os_name: "OpenCloudOS 9 64bit", platform: "OpenCloudOS", os_type: "OpenCloudOS", arch: X86_64, size_gib: 20, release: Official, kernel: Some("6.6"),
          remarks: &["OpenCloudOS 9 community kernel."], created: 1_694_736_000 },
    Row { id: "img-3la7wgnt", name: "Fedora 39 64-bit", os_name: "Fedora 39 64bit", platform: "Fedora", os_type: "Fedora", arch: X86_64, size_gib: 20, release: Official, kernel: Some("6.5"),
          remarks: &["Fedora 39 public kernel."], created: 1_699_920_000 },
    Row { id: "img-9rs6pk3e", name: "openSUSE Leap 15.5 64-bit", os_name: "openSUSE Leap 15.5 64bit", platform: "OpenSUSE", os_type: "OpenSUSE", arch: X86_64, size_gib: 20, release: Official, kernel: Some("5.14"),
          remarks: &["openSUSE Leap 15.5 public kernel."], created: 1_686_009_600 },
    Row { id: "img-oikl1tzv", name: "CentOS 6.8 32-bit", os_name: "CentOS 6.8 32bit", platform: "CentOS", os_type: "CentOS", arch: I386, size_gib: 20, release: Official, kernel: Some("2.6.32"),
          remarks: &["32-bit image for legacy software.", "CentOS 6 is past its end of life."], created: 1_464_739_200 },
    Row { id: "img-9id7emv7", name: "Windows Server 2022 DataCenter 64-bit English", os_name: "Windows Server 2022 DataCenter 64bit English", platform: "Windows", os_type: "Windows", arch: X86_64, size_gib: 50, release: Official, kernel: None,
          remarks: &["Licence included: free in mainland-China regions; a licence fee applies in regions outside the Chinese mainland."], created: 1_640_995_200 },
    Row { id: "img-2tddq003", name: "Windows Server 2019 DataCenter 64-bit Chinese", os_name: "Windows Server 2019 数据中心版 64位中文版", platform: "Windows", os_type: "Windows", arch: X86_64, size_gib: 50, release: Official, kernel: None,
          remarks: &["Licence included: free in mainland-China regions; a licence fee applies in regions outside the Chinese mainland."], created: 1_559_347_200 },
];

const MARKET: &[(Row, &str, &[&str], &str)] = &[
    (
        Row {
            id: "img-qgpu0a1b",
            name: "TencentOS Server 3.1 with qGPU",
            os_name: "TencentOS Server 3.1 (TK4)",
            platform: "TencentOS",
            os_type: "TencentOS Server",
            arch: X86_64,
            size_gib: 50,
            release: Official,
            kernel: Some("5.4.119"),
            remarks: &["For qGPU sharing on TKE: GPU driver and qGPU runtime preinstalled."],
            created: 1_646_092_800,
        },
        "GPU Stack Provider",
        &["NVIDIA driver", "qGPU runtime"],
        "0.00",
    ),
    (
        Row {
            id: "img-lnmp7c6x",
            name: "LNMP on CentOS 7.6",
            os_name: "CentOS 7.6 64bit",
            platform: "CentOS",
            os_type: "CentOS",
            arch: X86_64,
            size_gib: 20,
            release: Official,
            kernel: None,
            remarks: &["Nginx, MySQL and PHP preinstalled."],
            created: 1_609_459_200,
        },
        "Web Stack Provider",
        &["Nginx 1.24", "MySQL 8.0", "PHP 8.2"],
        "0.10",
    ),
    (
        Row {
            id: "img-wpress22",
            name: "WordPress on Ubuntu 22.04",
            os_name: "Ubuntu Server 22.04 LTS 64bit",
            platform: "Ubuntu",
            os_type: "Ubuntu",
            arch: X86_64,
            size_gib: 20,
            release: Official,
            kernel: Some("5.15"),
            remarks: &["WordPress 6 with Nginx and MariaDB."],
            created: 1_672_531_200,
        },
        "Web Stack Provider",
        &["WordPress 6", "Nginx 1.24", "MariaDB 10.11"],
        "0.20",
    ),
];

/// The public images of a fresh installation.
pub fn public_images() -> Vec<Image> {
    PUBLIC.iter().map(|r| image(r, ImageKind::Public)).collect()
}

/// The marketplace images of a fresh installation (reviewed, priced by their provider).
pub fn market_images() -> Vec<Image> {
    MARKET
        .iter()
        .map(|(row, provider, software, price)| {
            let mut img = image(row, ImageKind::Market);
            img.market = Some(MarketListing {
                provider: (*provider).to_owned(),
                software: software.iter().map(|s| (*s).to_owned()).collect(),
                price_cny_per_hour: (*price).to_owned(),
                reviewed: true,
                fee: None,
                on_sale: true,
            });
            img
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_id_is_well_formed_and_unique() {
        let all: Vec<_> = PUBLIC.iter().chain(MARKET.iter().map(|m| &m.0)).collect();
        let mut seen = std::collections::HashSet::new();
        for row in all {
            assert!(ImageId::parse(row.id).is_ok(), "{} is malformed", row.id);
            assert!(seen.insert(row.id), "{} twice", row.id);
        }
    }

    #[test]
    fn the_seed_table_is_present_with_status_and_remarks() {
        let imgs = public_images();
        let by_id = |id: &str| imgs.iter().find(|i| i.id.as_str() == id).expect(id);
        let tk4 = by_id("img-eb30mz89");
        assert_eq!(tk4.name, "TencentOS Server 3.1 (TK4)");
        assert_eq!(tk4.os_type, "TencentOS Server");
        assert_eq!(tk4.kernel.as_deref(), Some("5.4.119"));
        assert_eq!(by_id("img-hdt9xxkt").os_type, "Tlinux");
        assert_eq!(by_id("img-22trbn9x").release_status, ReleaseStatus::Beta);
        assert_eq!(by_id("img-25szkc8t").release_status, ReleaseStatus::Beta);
        assert_eq!(by_id("img-pi0ii46r").release_status, ReleaseStatus::Official);
        assert_eq!(by_id("img-9qabwvbn").remarks, ["CentOS 7.6 public kernel."]);
        assert_eq!(
            by_id("img-25szkc8t").description,
            "CentOS 8.0 public kernel. OS type: CentOS. Release status: in beta test, apply before use."
        );
        assert!(imgs.iter().any(|i| i.platform == "Windows"));
        assert!(imgs.iter().any(|i| i.architecture == Architecture::I386));
    }

    #[test]
    fn marketplace_images_are_reviewed_and_priced() {
        for img in market_images() {
            let listing = img.market.as_ref().expect("listing");
            assert!(listing.reviewed);
            assert!(listing.price_cny_per_hour.parse::<f64>().is_ok());
            assert_eq!(img.kind, ImageKind::Market);
        }
    }
}
