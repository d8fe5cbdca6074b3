//! Real bytes for the built-in catalogue: on first start each catalogue image gets a small demo
//! disk, an MBR partition table with one Linux partition holding an ext4 filesystem whose
//! `/etc/os-release` names the OS, stored like any other image (in the catalogue's block store,
//! shared by every region). Operators replace them with real disks (`imaged public-image add`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use imaged_chunkstore::Digest;
use imaged_diskfmt::Format;
use imaged_domain::Image;
use imaged_metastore::ManifestRecord;

use crate::ingest::{ingest, IngestSource, Progress};
use crate::jobs::JobFailure;
use crate::service::Service;

/// The block-store "region" that holds the catalogue's bytes.
pub const CATALOGUE_REGION: &str = "public";
/// Size of a demo disk.
const DEMO_DISK_BYTES: u64 = 32 << 20;
/// Where the partition starts (1 MiB, the usual alignment).
const PARTITION_START: u64 = 1 << 20;

/// Writes a demo disk for `image` at `path`.
pub fn make_demo_disk(image: &Image, path: &Path, staging: &Path) -> Result<(), String> {
    let etc = staging.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
    let id = image.platform.to_ascii_lowercase().replace(' ', "-");
    let os_release = format!(
        "NAME=\"{}\"\nPRETTY_NAME=\"{}\"\nID={id}\nIMAGED_IMAGE_ID={}\nVERSION=\"{}\"\n",
        image.platform, image.os_name, image.id, image.name
    );
    std::fs::write(etc.join("os-release"), os_release).map_err(|e| e.to_string())?;
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    file.set_len(DEMO_DISK_BYTES).map_err(|e| e.to_string())?;
    // MBR: one primary Linux partition from 1 MiB to the end.
    let mut mbr = [0u8; 512];
    let start_lba = u32::try_from(PARTITION_START / 512).unwrap_or(2048);
    let sectors = u32::try_from((DEMO_DISK_BYTES - PARTITION_START) / 512).unwrap_or(0);
    let entry = &mut mbr[446..462];
    entry[0] = 0x80;
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[4] = 0x83;
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&start_lba.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    use std::os::unix::fs::FileExt;
    file.write_all_at(&mbr, 0).map_err(|e| e.to_string())?;
    drop(file);
    let fs_kib = (DEMO_DISK_BYTES - PARTITION_START) / 1024;
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-E"])
        .arg(format!("offset={PARTITION_START}"))
        .arg("-d")
        .arg(staging)
        .arg(path)
        .arg(format!("{fs_kib}k"))
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(|e| format!("running mke2fs: {e}"))?;
    if !out.status.success() {
        return Err(format!("mke2fs: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

impl Service {
    /// Gives `image` (a catalogue image) the bytes in `path`, inspected as `format`.
    pub async fn attach_catalogue_bytes(&self, image: &Image, path: &Path, format: Format) -> Result<(), JobFailure> {
        let store = self.data().region_blocks(CATALOGUE_REGION);
        let (manifest, stats) = ingest(
            IngestSource::File { path: path.to_owned(), format },
            store.clone(),
            Arc::clone(self.store()),
            CATALOGUE_REGION.to_owned(),
            Arc::new(Progress::default()),
        )
        .await
        .map_err(|e| JobFailure::retry(e.to_string()))?;
        let mut image = image.clone();
        image.size_gib = image.size_gib.max(stats.virtual_size.div_ceil(1 << 30));
        image.source_format = Some(format.as_str().to_owned());
        let _ = self.store().detach_manifest(&image.id, None).await;
        let record = ManifestRecord {
            image: image.id.clone(),
            region: CATALOGUE_REGION.to_owned(),
            manifest: manifest.encode(),
            blocks: manifest.distinct().iter().map(Digest::to_hex).collect(),
            source_format: format.as_str().to_owned(),
            virtual_size: stats.virtual_size,
        };
        self.store().attach_manifest(&image, &record).await.map(|_| ()).map_err(JobFailure::retry)
    }

    /// Generates and stores demo disks for catalogue images that have no bytes yet.
    pub async fn ensure_demo_disks(&self, images: &[Image]) -> Result<(), String> {
        let scratch = self.data().scratch_dir().join("demo");
        for image in images {
            if self.store().get_manifest(&image.id).await.map_err(|e| e.to_string())?.is_some() {
                continue;
            }
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
            let disk = scratch.join("disk.raw");
            make_demo_disk(image, &disk, &scratch.join("root"))?;
            self.attach_catalogue_bytes(image, &disk, Format::Raw).await.map_err(|e| e.message)?;
        }
        let _ = std::fs::remove_dir_all(&scratch);
        Ok(())
    }
}

/// What an operator says about a public image being added.
#[derive(Debug, Clone)]
pub struct PublicImageSpec {
    /// Image name.
    pub name: String,
    /// Display OS name.
    pub os_name: String,
    /// OS family (`CentOS`, `Windows`, …).
    pub platform: String,
    /// Architecture (`x86_64`, `arm`, `i386`).
    pub architecture: imaged_domain::Architecture,
    /// Description.
    pub description: String,
    /// The format the file is declared as, checked against its bytes.
    pub declared: Option<Format>,
}

impl Service {
    /// `imaged public-image add`: inspects the file, converts it if needed, stores its bytes in
    /// the catalogue store and lists it as a public image in every region.
    pub async fn add_public_image(&self, path: &Path, spec: PublicImageSpec) -> Result<imaged_domain::ImageId, String> {
        use imaged_diskfmt::{inspect, Policy};
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let policy = Policy { max_virtual_size: self.data().max_virtual_size };
        let inspection =
            inspect(&file, spec.declared, &policy).map_err(|r| format!("{}: {}", r.reason.as_str(), r.detail))?;
        let scratch = self.data().scratch_dir().join(format!("public-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        let (src, read_as) = match inspection.format {
            Format::Raw | Format::Iso | Format::Qcow2 => (path.to_owned(), inspection.format),
            other => {
                let dest = scratch.join("converted.raw");
                crate::disk::convert_to_raw(path, other, inspection.virtual_size, &dest).map_err(|e| e.to_string())?;
                (dest, Format::Raw)
            }
        };
        let mut image = imaged_domain::catalog::public_images().remove(0);
        image.id = imaged_domain::ImageId::from_random(crate::secrets::random_bytes().map_err(|e| e.to_string())?);
        image.name = spec.name;
        image.os_name = spec.os_name;
        image.os_type = spec.platform.clone();
        image.supports_cloudinit = !spec.platform.eq_ignore_ascii_case("Windows");
        image.platform = spec.platform;
        image.architecture = spec.architecture;
        image.description = spec.description;
        image.remarks = Vec::new();
        image.kernel = None;
        image.size_gib = 0;
        image.created_at = crate::service::now();
        let result = self.attach_catalogue_bytes(&image, &src, read_as).await.map_err(|e| e.message);
        let _ = std::fs::remove_dir_all(&scratch);
        result.map(|()| image.id)
    }
}
