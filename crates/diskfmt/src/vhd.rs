//! VHD (Microsoft "Virtual Hard Disk Image Format Specification"): a 512-byte footer at the end
//! (and a copy at 0 for dynamic disks), a dynamic header and a block allocation table. Fixed and
//! dynamic disks are accepted; differencing disks have a parent and are refused.

use crate::{be32, be64, read_exact, Format, Inspection, ReadAt, Reason, Rejection};

const FOOTER_LEN: usize = 512;
const DYNAMIC_HEADER_LEN: usize = 1024;
const TYPE_FIXED: u32 = 2;
const TYPE_DYNAMIC: u32 = 3;
const TYPE_DIFFERENCING: u32 = 4;

fn reject(reason: Reason, detail: impl Into<String>) -> Rejection {
    Rejection::new(reason, Some(Format::Vhd), detail)
}

/// One's complement of the byte sum, skipping the 4-byte checksum field at `skip`.
fn checksum(data: &[u8], skip: usize) -> u32 {
    let sum = data
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(u32::from(*b)));
    !sum
}

pub(crate) fn inspect(src: &dyn ReadAt, size: u64) -> Result<Inspection, Rejection> {
    if size < FOOTER_LEN as u64 {
        return Err(reject(Reason::Corrupt, "shorter than a footer"));
    }
    let mut footer = read_exact(src, size - FOOTER_LEN as u64, FOOTER_LEN, Format::Vhd, "the footer")?;
    if &footer[..8] != b"conectix" {
        // A dynamic disk whose trailing footer is damaged still has its copy at 0.
        footer = read_exact(src, 0, FOOTER_LEN, Format::Vhd, "the footer copy")?;
    }
    if checksum(&footer, 64) != be32(&footer, 64) {
        return Err(reject(Reason::Corrupt, "footer checksum mismatch"));
    }
    let current_size = be64(&footer, 48);
    let disk_type = be32(&footer, 60);
    match disk_type {
        TYPE_FIXED => {
            if current_size > size - FOOTER_LEN as u64 {
                return Err(reject(Reason::Corrupt, "a fixed disk shorter than its size"));
            }
            Ok(Inspection {
                format: Format::Vhd,
                virtual_size: current_size,
                subformat: Some("fixed".into()),
                cluster_size: None,
            })
        }
        TYPE_DYNAMIC => {
            let offset = be64(&footer, 16);
            let dh = read_exact(src, offset, DYNAMIC_HEADER_LEN, Format::Vhd, "the dynamic header")?;
            if &dh[..8] != b"cxsparse" {
                return Err(reject(Reason::Corrupt, "no dynamic disk header"));
            }
            if checksum(&dh, 36) != be32(&dh, 36) {
                return Err(reject(Reason::Corrupt, "dynamic header checksum mismatch"));
            }
            let bat_offset = be64(&dh, 16);
            let entries = u64::from(be32(&dh, 28));
            let block_size = u64::from(be32(&dh, 32));
            if !block_size.is_power_of_two() || block_size < 512 {
                return Err(reject(Reason::Corrupt, format!("block size {block_size}")));
            }
            if entries.saturating_mul(block_size) < current_size {
                return Err(reject(Reason::Corrupt, "the allocation table does not cover the disk"));
            }
            if bat_offset.checked_add(entries * 4).is_none_or(|end| end > size) {
                return Err(reject(Reason::Corrupt, "the allocation table lies outside the file"));
            }
            if dh[576..576 + 8 * 24].chunks_exact(24).any(|l| be32(l, 0) != 0) {
                return Err(reject(Reason::BackingFile, "parent locators are present"));
            }
            Ok(Inspection {
                format: Format::Vhd,
                virtual_size: current_size,
                subformat: Some("dynamic".into()),
                cluster_size: Some(block_size),
            })
        }
        TYPE_DIFFERENCING => Err(reject(Reason::BackingFile, "a differencing disk depends on a parent")),
        other => Err(reject(Reason::UnknownFormat, format!("disk type {other}"))),
    }
}

#[cfg(test)]
pub(crate) fn footer(disk_type: u32, current_size: u64, data_offset: u64) -> Vec<u8> {
    let mut f = vec![0u8; FOOTER_LEN];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    f[40..48].copy_from_slice(&current_size.to_be_bytes());
    f[48..56].copy_from_slice(&current_size.to_be_bytes());
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    let c = checksum(&f, 64);
    f[64..68].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(size: u64) -> Vec<u8> {
        let mut img = vec![0u8; usize::try_from(size).expect("size")];
        img.extend(footer(TYPE_FIXED, size, u64::MAX));
        img
    }

    #[test]
    fn a_fixed_disk_with_its_footer_only_at_the_end_is_accepted() {
        let i = inspect(&fixed(4096), 4096 + 512).expect("accepted");
        assert_eq!((i.virtual_size, i.subformat.as_deref()), (4096, Some("fixed")));
    }

    #[test]
    fn bad_checksums_and_differencing_disks_are_refused() {
        let mut img = fixed(4096);
        let last = img.len() - 1;
        img[last - 100] ^= 1;
        assert_eq!(inspect(&img, img.len() as u64).map_err(|r| r.reason), Err(Reason::Corrupt));
        let mut diff = vec![0u8; 4096];
        diff.extend(footer(TYPE_DIFFERENCING, 4096, 512));
        assert_eq!(inspect(&diff, diff.len() as u64).map_err(|r| r.reason), Err(Reason::BackingFile));
    }
}
