//! ISO 9660 / UDF: a volume descriptor at 32 KiB (sector 16 of 2048-byte sectors).

use crate::{io_err, le16, le32, read_exact, Format, Inspection, ReadAt, Reason, Rejection};

/// Offset of the first volume descriptor.
const DESCRIPTOR_OFFSET: u64 = 32 * 1024;

/// Whether an ISO 9660 (`CD001`) or UDF (`BEA01`/`NSR0x`) descriptor sits at 32 KiB.
pub(crate) fn has_descriptor(src: &dyn ReadAt, size: u64) -> Result<bool, Rejection> {
    if size < DESCRIPTOR_OFFSET + 2048 {
        return Ok(false);
    }
    let mut id = [0u8; 6];
    src.read_at(DESCRIPTOR_OFFSET, &mut id).map_err(|e| io_err(None, &e))?;
    Ok(&id[1..6] == b"CD001" || &id[1..6] == b"BEA01" || &id[1..5] == b"NSR0")
}

pub(crate) fn inspect(src: &dyn ReadAt, size: u64) -> Result<Inspection, Rejection> {
    let pvd = read_exact(src, DESCRIPTOR_OFFSET, 2048, Format::Iso, "the volume descriptor")?;
    if &pvd[1..6] == b"CD001" && pvd[0] == 1 {
        let blocks = u64::from(le32(&pvd, 80));
        let block_size = u64::from(le16(&pvd, 128));
        if !(512..=4096).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(Rejection::new(Reason::Corrupt, Some(Format::Iso), "bad logical block size"));
        }
        if blocks * block_size > size {
            return Err(Rejection::new(Reason::Corrupt, Some(Format::Iso), "the volume is larger than the file"));
        }
    }
    Ok(Inspection { format: Format::Iso, virtual_size: size, subformat: None, cluster_size: None })
}
