//! What `ImportImage` accepts: OS types and versions (`DescribeImportImageOs`), architectures,
//! licence types, boot modes, family names, and the source URL schemes.

use crate::image::{Architecture, BootMode, LicenseType};

/// One importable OS: its type, its versions and the architectures (ImportImage vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOs {
    /// `OsType`, e.g. `CentOS`.
    pub os_type: &'static str,
    /// Whether it is a Windows type.
    pub windows: bool,
    /// Accepted `OsVersion` values.
    pub versions: &'static [&'static str],
    /// Accepted `Architecture` values.
    pub architectures: &'static [&'static str],
}

const X86: &[&str] = &["x86_64", "i386"];
const X86_ARM: &[&str] = &["x86_64", "i386", "arm_64"];
const X64: &[&str] = &["x86_64"];

/// Every importable OS.
pub const IMPORT_OS: &[ImportOs] = &[
    ImportOs { os_type: "CentOS", windows: false, versions: &["6", "7", "8", "-"], architectures: X86_ARM },
    ImportOs {
        os_type: "Ubuntu",
        windows: false,
        versions: &["16", "18", "20", "22", "24", "-"],
        architectures: X86_ARM,
    },
    ImportOs { os_type: "Debian", windows: false, versions: &["9", "10", "11", "12", "-"], architectures: X86_ARM },
    ImportOs { os_type: "TencentOS", windows: false, versions: &["2", "3", "4", "-"], architectures: X86_ARM },
    ImportOs { os_type: "Rocky Linux", windows: false, versions: &["8", "9", "-"], architectures: X86_ARM },
    ImportOs { os_type: "AlmaLinux", windows: false, versions: &["8", "9", "-"], architectures: X86_ARM },
    ImportOs { os_type: "OpenSUSE", windows: false, versions: &["15", "-"], architectures: X86 },
    ImportOs { os_type: "SUSE", windows: false, versions: &["12", "15", "-"], architectures: X86 },
    ImportOs { os_type: "CoreOS", windows: false, versions: &["-"], architectures: X64 },
    ImportOs { os_type: "FreeBSD", windows: false, versions: &["12", "13", "14", "-"], architectures: X86 },
    ImportOs { os_type: "Other Linux", windows: false, versions: &["-"], architectures: X86_ARM },
    ImportOs { os_type: "Windows Server 2016", windows: true, versions: &["-"], architectures: X64 },
    ImportOs { os_type: "Windows Server 2019", windows: true, versions: &["-"], architectures: X64 },
    ImportOs { os_type: "Windows Server 2022", windows: true, versions: &["-"], architectures: X64 },
];

/// Why an import request is refused before any byte is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportRuleError {
    /// Unknown OS type.
    #[error("OsType `{0}` cannot be imported")]
    OsType(String),
    /// Unknown version for the OS type.
    #[error("OsVersion `{0}` is not supported for this OsType")]
    OsVersion(String),
    /// Unknown or unsupported architecture.
    #[error("Architecture `{0}` is not supported for this OsType")]
    Architecture(String),
    /// Unknown licence type.
    #[error("LicenseType `{0}` is not TencentCloud or BYOL")]
    LicenseType(String),
    /// Unknown boot mode.
    #[error("BootMode `{0}` is not `Legacy BIOS` or `UEFI`")]
    BootMode(String),
    /// Malformed family name.
    #[error("ImageFamily `{0}` must be 1-60 letters, digits, `-`, `_` or `.`")]
    Family(String),
}

/// The checked OS, architecture, licence and boot mode of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportTarget {
    /// The OS entry.
    pub os: ImportOs,
    /// Architecture in the image's vocabulary.
    pub architecture: Architecture,
    /// Licence.
    pub license_type: LicenseType,
    /// Boot mode.
    pub boot_mode: BootMode,
}

/// Validates OsType, OsVersion, Architecture, LicenseType and BootMode.
pub fn check_import_target(
    os_type: &str,
    os_version: &str,
    architecture: &str,
    license_type: Option<&str>,
    boot_mode: Option<&str>,
) -> Result<ImportTarget, ImportRuleError> {
    let os = IMPORT_OS.iter().find(|o| o.os_type == os_type).ok_or_else(|| ImportRuleError::OsType(os_type.into()))?;
    if !os.versions.contains(&os_version) {
        return Err(ImportRuleError::OsVersion(os_version.into()));
    }
    let arch = Architecture::from_import(architecture)
        .filter(|_| os.architectures.contains(&architecture))
        .ok_or_else(|| ImportRuleError::Architecture(architecture.into()))?;
    let license_type = match license_type {
        None => LicenseType::TencentCloud,
        Some(l) => LicenseType::parse(l).ok_or_else(|| ImportRuleError::LicenseType(l.into()))?,
    };
    let boot_mode = match boot_mode {
        None => BootMode::LegacyBios,
        Some(b) => BootMode::parse(b).ok_or_else(|| ImportRuleError::BootMode(b.into()))?,
    };
    Ok(ImportTarget { os: *os, architecture: arch, license_type, boot_mode })
}

/// Checks an image family name: 1-60 of letters, digits, `-`, `_`, `.`, starting with a letter.
pub fn check_family(family: &str) -> Result<(), ImportRuleError> {
    let ok = !family.is_empty()
        && family.len() <= 60
        && family.starts_with(|c: char| c.is_ascii_alphabetic())
        && family.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ImportRuleError::Family(family.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_targets_are_checked_against_the_os_list() {
        let t = check_import_target("CentOS", "7", "arm_64", None, Some("UEFI")).expect("valid");
        assert_eq!(
            (t.architecture, t.boot_mode, t.license_type),
            (Architecture::Arm, BootMode::Uefi, LicenseType::TencentCloud)
        );
        assert_eq!(
            check_import_target("Plan9", "4", "x86_64", None, None),
            Err(ImportRuleError::OsType("Plan9".into()))
        );
        assert_eq!(
            check_import_target("CentOS", "5", "x86_64", None, None),
            Err(ImportRuleError::OsVersion("5".into()))
        );
        assert_eq!(
            check_import_target("CentOS", "7", "arm", None, None),
            Err(ImportRuleError::Architecture("arm".into()))
        );
        assert!(check_import_target("Windows Server 2019", "-", "arm_64", None, None).is_err());
        assert!(check_import_target("CentOS", "7", "x86_64", Some("GPL"), None).is_err());
        assert!(check_import_target("CentOS", "7", "x86_64", None, Some("legacy bios")).is_err());
    }

    #[test]
    fn family_names_are_short_and_plain() {
        assert!(check_family("business-daily-update").is_ok());
        for bad in ["", "9lives", "has space", &"a".repeat(61), "slash/name"] {
            assert!(check_family(bad).is_err(), "{bad}");
        }
    }
}
