//! The TKE OS catalogue: the seed's table in its order, then the market images for special
//! uses, each backed by a CVM image.

/// One row of the TKE OS catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsRow {
    /// The key `ClusterOs`, `NodePoolOs` and `OsName` take.
    pub os_name: &'static str,
    /// The series (`SeriesName`).
    pub series: &'static str,
    /// The name the console shows (`Alias`).
    pub alias: &'static str,
    /// The seed's "OS type" column.
    pub os_type: &'static str,
    /// The backing CVM image (before any change).
    pub image_id: &'static str,
    /// TKE's architecture vocabulary (`x86`, `amd64`, `arm64`).
    pub arch: &'static str,
    /// In beta test: usable only after an approved application.
    pub beta: bool,
    /// The one the seed recommends.
    pub recommended: bool,
    /// A market image for a special use (qGPU sharing).
    pub market: bool,
    /// Kernel version, when the seed names one.
    pub kernel: Option<&'static str>,
    /// The seed's remarks.
    pub remarks: &'static [&'static str],
}

/// The catalogue: the seed's table in its order, then the market images for special uses.
pub const OS_CATALOGUE: &[OsRow] = &[
    OsRow {
        os_name: "tlinux3.1x86_64",
        series: "TencentOS Server 3.1 (TK4)",
        alias: "TencentOS Server 3.1 (TK4)",
        os_type: "TencentOS Server",
        image_id: "img-eb30mz89",
        arch: "amd64",
        beta: false,
        recommended: true,
        market: false,
        kernel: Some("5.4.119"),
        remarks: &[
            "We recommend you use the latest release of TencentOS Server.",
            "Kernel version: 5.4.119.",
            "Automatic installation of the GPU driver is not supported; install it yourself.",
        ],
    },
    OsRow {
        os_name: "tlinux2.4x86_64",
        series: "TencentOS Server 2.4",
        alias: "TencentOS Server 2.4 (former name: Tencent Linux release 2.4 (Final))",
        os_type: "Tlinux",
        image_id: "img-hdt9xxkt",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: false,
        kernel: Some("4.14.105"),
        remarks: &["Kernel version: 4.14.105."],
    },
    OsRow {
        os_name: "ubuntu20.04x86_64",
        series: "Ubuntu Server 20.04.1 LTS",
        alias: "Ubuntu Server 20.04.1 LTS 64-bit",
        os_type: "Ubuntu",
        image_id: "img-22trbn9x",
        arch: "amd64",
        beta: true,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["Ubuntu 20.04.1 public kernel.", "In beta test: apply before use."],
    },
    OsRow {
        os_name: "ubuntu18.04.1x86_64",
        series: "Ubuntu 18.04 LTS",
        alias: "Ubuntu 18.04 LTS 64-bit",
        os_type: "Ubuntu",
        image_id: "img-pi0ii46r",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["Ubuntu 18.04.1 public kernel."],
    },
    OsRow {
        os_name: "centos8.0x86_64",
        series: "CentOS 8.0",
        alias: "CentOS 8.0",
        os_type: "CentOS",
        image_id: "img-25szkc8t",
        arch: "amd64",
        beta: true,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["CentOS 8.0 public kernel.", "In beta test: apply before use."],
    },
    OsRow {
        os_name: "centos7.6.0_x64",
        series: "CentOS 7.6",
        alias: "CentOS 7.6",
        os_type: "CentOS",
        image_id: "img-9qabwvbn",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: false,
        kernel: None,
        remarks: &["CentOS 7.6 public kernel."],
    },
    OsRow {
        os_name: "tlinux3.1x86_64_qgpu",
        series: "TencentOS Server 3.1 (TK4) qGPU",
        alias: "TencentOS Server 3.1 with qGPU (market image)",
        os_type: "TencentOS Server",
        image_id: "img-qgpu0a1b",
        arch: "amd64",
        beta: false,
        recommended: false,
        market: true,
        kernel: Some("5.4.119"),
        remarks: &["Market image for qGPU sharing: GPU driver and qGPU runtime preinstalled."],
    },
];

/// The catalogue row of an OS name.
pub fn os_row(os_name: &str) -> Option<&'static OsRow> {
    OS_CATALOGUE.iter().find(|r| r.os_name == os_name)
}
