//! VHDX (Microsoft "VHDX Format Specification" 1.00): file identifier, two headers (CRC-32C,
//! highest valid sequence wins), the region table (BAT and metadata regions), and the metadata
//! items that give the virtual size and say whether the disk has a parent.

use crate::crc32c::crc32c;
use crate::{le16, le32, le64, read_exact, Format, Inspection, ReadAt, Reason, Rejection};

const KIB: u64 = 1024;
const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
const HEADER_LEN: usize = 4096;
const REGION_TABLE_OFFSET: u64 = 192 * KIB;
const REGION_TABLE_LEN: usize = 64 * 1024;
const MAX_REGION_ENTRIES: u32 = 2047;
const MAX_METADATA_ENTRIES: u16 = 2047;
/// Region and metadata item GUIDs, in their on-disk byte order.
const BAT_GUID: [u8; 16] = guid(0x2DC2_7766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
const METADATA_GUID: [u8; 16] = guid(0x8B7C_A206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]);
const FILE_PARAMETERS: [u8; 16] = guid(0xCAA1_6737, 0xFA36, 0x4D43, [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B]);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(0x2FA5_4224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8]);
const PARENT_LOCATOR: [u8; 16] = guid(0xA8D3_5F2D, 0xB30B, 0x454D, [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C]);
/// File parameters flag: the disk has a parent.
const HAS_PARENT: u32 = 1 << 1;

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

fn reject(reason: Reason, detail: impl Into<String>) -> Rejection {
    Rejection::new(reason, Some(Format::Vhdx), detail)
}

/// Whether a structure's CRC-32C (stored at `at`, computed with it zeroed) is right.
fn crc_ok(data: &[u8], at: usize) -> bool {
    let mut copy = data.to_vec();
    copy[at..at + 4].fill(0);
    crc32c(&copy) == le32(data, at)
}

pub(crate) fn inspect(src: &dyn ReadAt, size: u64) -> Result<Inspection, Rejection> {
    let ident = read_exact(src, 0, 8, Format::Vhdx, "the file identifier")?;
    if &ident != b"vhdxfile" {
        return Err(reject(Reason::Corrupt, "no file identifier"));
    }
    let mut best: Option<(u64, Vec<u8>)> = None;
    for off in HEADER_OFFSETS {
        let h = read_exact(src, off, HEADER_LEN, Format::Vhdx, "a header")?;
        if &h[..4] == b"head" && crc_ok(&h, 4) {
            let seq = le64(&h, 8);
            if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                best = Some((seq, h));
            }
        }
    }
    let (_, header) = best.ok_or_else(|| reject(Reason::Corrupt, "no valid header"))?;
    if le16(&header, 66) != 1 {
        return Err(reject(Reason::UnknownFormat, format!("VHDX version {}", le16(&header, 66))));
    }
    if header[48..64].iter().any(|b| *b != 0) {
        return Err(reject(Reason::Corrupt, "the log holds entries that were never replayed"));
    }
    let table = read_exact(src, REGION_TABLE_OFFSET, REGION_TABLE_LEN, Format::Vhdx, "the region table")?;
    if &table[..4] != b"regi" || !crc_ok(&table, 4) {
        return Err(reject(Reason::Corrupt, "bad region table"));
    }
    let count = le32(&table, 8);
    if count > MAX_REGION_ENTRIES {
        return Err(reject(Reason::Corrupt, format!("{count} region entries")));
    }
    let mut bat = None;
    let mut metadata = None;
    for i in 0..count as usize {
        let e = &table[16 + i * 32..16 + (i + 1) * 32];
        let (offset, len) = (le64(e, 16), u64::from(le32(e, 24)));
        if offset.checked_add(len).is_none_or(|end| end > size) || offset % (1 << 20) != 0 {
            return Err(reject(Reason::Corrupt, "a region lies outside the file"));
        }
        if e[..16] == BAT_GUID {
            bat = Some((offset, len));
        } else if e[..16] == METADATA_GUID {
            metadata = Some((offset, len));
        } else if le32(e, 28) & 1 != 0 {
            return Err(reject(Reason::UnknownFormat, "an unknown required region"));
        }
    }
    bat.ok_or_else(|| reject(Reason::Corrupt, "no block allocation table"))?;
    let (meta_off, meta_len) = metadata.ok_or_else(|| reject(Reason::Corrupt, "no metadata region"))?;
    let meta =
        read_exact(src, meta_off, usize::try_from(meta_len.min(1 << 20)).unwrap_or(0), Format::Vhdx, "the metadata")?;
    if meta.len() < 32 || &meta[..8] != b"metadata" {
        return Err(reject(Reason::Corrupt, "bad metadata table"));
    }
    let entries = le16(&meta, 10);
    if entries > MAX_METADATA_ENTRIES || 32 + usize::from(entries) * 32 > meta.len() {
        return Err(reject(Reason::Corrupt, format!("{entries} metadata entries")));
    }
    let mut virtual_size = None;
    for i in 0..usize::from(entries) {
        let e = &meta[32 + i * 32..64 + i * 32];
        let (off, len) = (le32(e, 16) as usize, le32(e, 20) as usize);
        let item = meta.get(off..off + len).ok_or_else(|| reject(Reason::Corrupt, "a metadata item lies outside"))?;
        if e[..16] == PARENT_LOCATOR {
            return Err(reject(Reason::BackingFile, "a parent locator is present"));
        }
        if e[..16] == FILE_PARAMETERS && item.len() >= 8 && le32(item, 4) & HAS_PARENT != 0 {
            return Err(reject(Reason::BackingFile, "the disk has a parent"));
        }
        if e[..16] == VIRTUAL_DISK_SIZE && item.len() >= 8 {
            virtual_size = Some(le64(item, 0));
        }
    }
    let virtual_size = virtual_size.ok_or_else(|| reject(Reason::Corrupt, "no virtual disk size"))?;
    Ok(Inspection { format: Format::Vhdx, virtual_size, subformat: None, cluster_size: None })
}
