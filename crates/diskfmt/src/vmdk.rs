//! VMDK (VMware "Virtual Disk Format 5.0"): only single-file sparse images with a `KDMV` header
//! and an embedded descriptor, `monolithicSparse` or `streamOptimized`, one extent naming the
//! file itself, and no parent.

use crate::{le32, le64, read_exact, Format, Inspection, ReadAt, Reason, Rejection};

/// Header size.
const HEADER_LEN: usize = 512;
/// `gdOffset` of a streamOptimized image whose grain directory is in the footer.
const GD_AT_END: u64 = u64::MAX;
/// Largest embedded descriptor accepted, in sectors (64 KiB).
const MAX_DESCRIPTOR_SECTORS: u64 = 128;

fn reject(reason: Reason, detail: impl Into<String>) -> Rejection {
    Rejection::new(reason, Some(Format::Vmdk), detail)
}

struct SparseHeader {
    version: u32,
    capacity: u64,
    grain_size: u64,
    descriptor_offset: u64,
    descriptor_size: u64,
    gd_offset: u64,
}

fn parse(h: &[u8]) -> Result<SparseHeader, Rejection> {
    if &h[..4] != b"KDMV" {
        return Err(reject(Reason::Corrupt, "no VMDK sparse header"));
    }
    Ok(SparseHeader {
        version: le32(h, 4),
        capacity: le64(h, 12),
        grain_size: le64(h, 20),
        descriptor_offset: le64(h, 28),
        descriptor_size: le64(h, 36),
        gd_offset: le64(h, 56),
    })
}

/// Checks the embedded descriptor; returns the create type.
fn check_descriptor(text: &str) -> Result<String, Rejection> {
    let mut create_type = None;
    let mut extents = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = ["RW ", "RDONLY ", "NOACCESS "].iter().find_map(|p| line.strip_prefix(p)) {
            extents += 1;
            let mut parts = rest.split_whitespace();
            let _sectors = parts.next();
            let kind = parts.next().unwrap_or("");
            if kind != "SPARSE" {
                return Err(reject(
                    Reason::ExternalExtent,
                    format!("extent of type {kind}: its data is in another file"),
                ));
            }
            let name = rest.split('"').nth(1).unwrap_or("");
            if name.contains('/') || name.contains('\\') {
                return Err(reject(Reason::ExternalExtent, format!("extent names a path: {name}")));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(reject(Reason::Corrupt, format!("unexpected descriptor line `{line}`")));
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        match key {
            "createType" => create_type = Some(value.to_owned()),
            "parentFileNameHint" => return Err(reject(Reason::BackingFile, format!("parentFileNameHint {value}"))),
            "parentCID" if !value.eq_ignore_ascii_case("ffffffff") => {
                return Err(reject(Reason::BackingFile, format!("parentCID {value}")))
            }
            _ => {}
        }
    }
    let create_type = create_type.ok_or_else(|| reject(Reason::Corrupt, "the descriptor has no createType"))?;
    match create_type.as_str() {
        "monolithicSparse" | "streamOptimized" => {}
        other => {
            return Err(reject(Reason::ExternalExtent, format!("createType {other} keeps data outside this file")))
        }
    }
    if extents != 1 {
        return Err(reject(Reason::ExternalExtent, format!("{extents} extents; exactly one is accepted")));
    }
    Ok(create_type)
}

pub(crate) fn inspect(src: &dyn ReadAt, size: u64) -> Result<Inspection, Rejection> {
    let raw = read_exact(src, 0, HEADER_LEN, Format::Vmdk, "the header")?;
    let mut h = parse(&raw)?;
    if !(1..=3).contains(&h.version) {
        return Err(reject(Reason::UnknownFormat, format!("VMDK version {}", h.version)));
    }
    if h.descriptor_offset == 0 || h.descriptor_size == 0 || h.descriptor_size > MAX_DESCRIPTOR_SECTORS {
        return Err(reject(Reason::Corrupt, "no embedded descriptor of a sane size"));
    }
    let text = read_exact(
        src,
        h.descriptor_offset.saturating_mul(512),
        usize::try_from(h.descriptor_size * 512).unwrap_or(0),
        Format::Vmdk,
        "the descriptor",
    )?;
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    if !text[..end].is_ascii() {
        return Err(reject(Reason::Corrupt, "the descriptor is not ASCII"));
    }
    let create_type = check_descriptor(&String::from_utf8_lossy(&text[..end]))?;
    if h.gd_offset == GD_AT_END {
        if create_type != "streamOptimized" || size < 1536 {
            return Err(reject(Reason::Corrupt, "grain directory at the end outside a streamOptimized image"));
        }
        let footer = read_exact(src, size - 1024, HEADER_LEN, Format::Vmdk, "the footer")?;
        let f = parse(&footer).map_err(|_| reject(Reason::Corrupt, "the streamOptimized footer is missing"))?;
        if f.capacity != h.capacity || f.grain_size != h.grain_size || f.gd_offset == GD_AT_END {
            return Err(reject(Reason::Corrupt, "the footer does not match the header"));
        }
        let eos = read_exact(src, size - 512, 16, Format::Vmdk, "the end-of-stream marker")?;
        if eos.iter().any(|b| *b != 0) {
            return Err(reject(Reason::Corrupt, "no end-of-stream marker"));
        }
        h.gd_offset = f.gd_offset;
    }
    if !h.grain_size.is_power_of_two() || !(8..=2048).contains(&h.grain_size) {
        return Err(reject(Reason::Corrupt, format!("grain size of {} sectors", h.grain_size)));
    }
    if h.gd_offset == 0 || h.gd_offset.saturating_mul(512) >= size {
        return Err(reject(Reason::Corrupt, "the grain directory lies outside the file"));
    }
    let virtual_size = h.capacity.checked_mul(512).ok_or_else(|| reject(Reason::TooLarge, "capacity overflows"))?;
    Ok(Inspection {
        format: Format::Vmdk,
        virtual_size,
        subformat: Some(create_type),
        cluster_size: Some(h.grain_size * 512),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n# Extent description\nRW 2048 SPARSE \"disk.vmdk\"\n\nddb.adapterType = \"ide\"\n";

    #[test]
    fn a_plain_single_extent_descriptor_passes() {
        assert_eq!(check_descriptor(GOOD).map_err(|r| r.reason), Ok("monolithicSparse".to_owned()));
    }

    #[test]
    fn descriptors_that_reach_other_files_are_refused() {
        let cases = [
            (GOOD.replace("parentCID=ffffffff", "parentCID=1234abcd"), Reason::BackingFile),
            (GOOD.replace("CID=12345678", "CID=12345678\nparentFileNameHint=\"base.vmdk\""), Reason::BackingFile),
            (GOOD.replace("monolithicSparse", "monolithicFlat").replace("SPARSE", "FLAT"), Reason::ExternalExtent),
            (GOOD.replace("RW 2048 SPARSE \"disk.vmdk\"", "RW 2048 FLAT \"/etc/passwd\" 0"), Reason::ExternalExtent),
            (GOOD.replace("\"disk.vmdk\"", "\"../other/disk.vmdk\""), Reason::ExternalExtent),
            (
                GOOD.replace("RW 2048 SPARSE \"disk.vmdk\"", "RW 1024 SPARSE \"a.vmdk\"\nRW 1024 SPARSE \"b.vmdk\""),
                Reason::ExternalExtent,
            ),
            (GOOD.replace("createType=\"monolithicSparse\"\n", ""), Reason::Corrupt),
            (GOOD.replace("version=1", "version 1"), Reason::Corrupt),
        ];
        for (text, reason) in cases {
            assert_eq!(check_descriptor(&text).map_err(|r| r.reason), Err(reason), "{text}");
        }
    }
}
