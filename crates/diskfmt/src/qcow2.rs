//! qcow2 (QEMU `docs/interop/qcow2.txt`): header checks, and a native reader that walks the L1
//! and L2 tables, so that only allocated clusters are read and zero clusters never are.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{be32, be64, io_err, read_exact, Format, Inspection, ReadAt, Reason, Rejection};

/// `QFI\xfb`.
const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Length of the v2 header; extensions follow it.
const V2_HEADER_LEN: usize = 72;
/// Minimum length of the v3 header.
const V3_MIN_HEADER_LEN: usize = 104;
/// Incompatible feature bits (v3).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Autoclear bit 1: the external data file is raw.
const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;
/// Header extension types.
const EXT_END: u32 = 0;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Largest L1 table accepted (entries): 32 MiB of table.
const MAX_L1_ENTRIES: u64 = 4 << 20;
/// L2 tables kept in memory by the reader.
const L2_CACHE_ENTRIES: usize = 64;
/// Offset bits of L1/L2 entries (bits 9..=55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

fn corrupt(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::Corrupt, Some(Format::Qcow2), detail)
}

/// How compressed clusters are compressed (v3 header byte 104).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    /// Raw deflate, the default.
    Zlib,
    /// zstd (`compression_type=zstd`).
    Zstd,
}

/// A parsed, validated header.
#[derive(Debug, Clone)]
struct Header {
    version: u32,
    compression: Compression,
    cluster_bits: u32,
    size: u64,
    l1_size: u64,
    l1_offset: u64,
}

/// Whether a header may name a backing file: never for untrusted images; only when the service
/// opens an overlay it made itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backing {
    Refuse,
    Allow,
}

fn parse_header(src: &dyn ReadAt, file_size: u64, backing: Backing) -> Result<Header, Rejection> {
    let want = usize::try_from(file_size.min(112)).unwrap_or(112);
    if want < V2_HEADER_LEN {
        return Err(corrupt("truncated header"));
    }
    let h = read_exact(src, 0, want, Format::Qcow2, "the header")?;
    if &h[..4] != QCOW_MAGIC {
        return Err(corrupt("no qcow2 magic"));
    }
    let version = be32(&h, 4);
    if version != 2 && version != 3 {
        return Err(Rejection::new(Reason::UnknownFormat, Some(Format::Qcow2), format!("qcow2 version {version}")));
    }
    if backing == Backing::Refuse && (be64(&h, 8) != 0 || be32(&h, 16) != 0) {
        return Err(Rejection::new(Reason::BackingFile, Some(Format::Qcow2), "the image names a backing file"));
    }
    let cluster_bits = be32(&h, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(format!("cluster_bits {cluster_bits} out of range")));
    }
    let cluster = 1u64 << cluster_bits;
    let size = be64(&h, 24);
    if be32(&h, 32) != 0 {
        return Err(Rejection::new(Reason::Encrypted, Some(Format::Qcow2), "the image is encrypted"));
    }
    let l1_size = u64::from(be32(&h, 36));
    let l1_offset = be64(&h, 40);
    let refcount_offset = be64(&h, 48);
    let refcount_clusters = u64::from(be32(&h, 56));
    let mut ext_start = V2_HEADER_LEN as u64;
    let mut compression = Compression::Zlib;
    if version == 3 {
        if h.len() < V3_MIN_HEADER_LEN {
            return Err(corrupt("truncated v3 header"));
        }
        let incompat = be64(&h, 72);
        let autoclear = be64(&h, 88);
        let refcount_order = be32(&h, 96);
        let header_len = u64::from(be32(&h, 100));
        if incompat & INCOMPAT_CORRUPT != 0 {
            return Err(corrupt("the image is marked corrupt"));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 || autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 {
            return Err(Rejection::new(
                Reason::DataFile,
                Some(Format::Qcow2),
                "the image keeps its data in an external file",
            ));
        }
        if incompat & INCOMPAT_EXTL2 != 0 {
            return Err(Rejection::new(
                Reason::UnknownFormat,
                Some(Format::Qcow2),
                "extended L2 entries are not supported",
            ));
        }
        let known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
        if incompat & !known != 0 {
            return Err(Rejection::new(
                Reason::UnknownFormat,
                Some(Format::Qcow2),
                format!("unknown incompatible features {:#x}", incompat & !known),
            ));
        }
        if incompat & INCOMPAT_COMPRESSION != 0 {
            compression = match (header_len > 104).then(|| h.get(104).copied()).flatten() {
                Some(0) => Compression::Zlib,
                Some(1) => Compression::Zstd,
                other => {
                    return Err(Rejection::new(
                        Reason::UnknownFormat,
                        Some(Format::Qcow2),
                        format!("unknown compression type {other:?} (zlib and zstd are supported)"),
                    ))
                }
            };
        }
        if refcount_order > 6 {
            return Err(corrupt(format!("refcount_order {refcount_order}")));
        }
        if header_len < V3_MIN_HEADER_LEN as u64 || header_len > cluster || header_len % 8 != 0 {
            return Err(corrupt(format!("header length {header_len}")));
        }
        ext_start = header_len;
    }
    check_extensions(src, ext_start, cluster)?;
    let in_file =
        |off: u64, len: u64| off.is_multiple_of(cluster) && off.checked_add(len).is_some_and(|end| end <= file_size);
    if size > 0 {
        let l2_entries = cluster / 8;
        let needed = size.div_ceil(cluster).div_ceil(l2_entries);
        if l1_size < needed || l1_size > MAX_L1_ENTRIES {
            return Err(corrupt(format!("L1 table of {l1_size} entries for a {size}-byte disk")));
        }
        if !in_file(l1_offset, l1_size * 8) {
            return Err(corrupt("the L1 table lies outside the file"));
        }
    }
    if refcount_clusters == 0 || !in_file(refcount_offset, refcount_clusters.saturating_mul(cluster)) {
        return Err(corrupt("the refcount table lies outside the file"));
    }
    Ok(Header { version, compression, cluster_bits, size, l1_size, l1_offset })
}

fn check_extensions(src: &dyn ReadAt, start: u64, cluster: u64) -> Result<(), Rejection> {
    let mut off = start;
    while off + 8 <= cluster {
        let mut h = [0u8; 8];
        if src.read_at(off, &mut h).map_err(|e| io_err(Some(Format::Qcow2), &e))? < 8 {
            return Err(corrupt("truncated header extension"));
        }
        let (kind, len) = (be32(&h, 0), u64::from(be32(&h, 4)));
        match kind {
            EXT_END => return Ok(()),
            EXT_CRYPTO => {
                return Err(Rejection::new(Reason::Encrypted, Some(Format::Qcow2), "a crypto header extension"))
            }
            EXT_DATA_FILE => {
                return Err(Rejection::new(
                    Reason::DataFile,
                    Some(Format::Qcow2),
                    "an external data file name extension",
                ))
            }
            _ => {}
        }
        off = off + 8 + len.div_ceil(8) * 8;
    }
    Err(corrupt("header extensions run past the first cluster"))
}

/// Inflates one zstd frame (what qemu writes; the sector padding after it is ignored) into
/// `out`, never past its end; returns the bytes written.
fn inflate_zstd(input: &[u8], out: &mut [u8]) -> Result<u64, Rejection> {
    use std::io::Read;
    let bad = |e: std::io::Error| corrupt(format!("a zstd cluster does not inflate: {e}"));
    let mut d = zstd::stream::read::Decoder::with_buffer(input).map_err(bad)?.single_frame();
    let mut done = 0;
    while done < out.len() {
        match d.read(&mut out[done..]).map_err(bad)? {
            0 => break,
            n => done += n,
        }
    }
    // One more byte would mean the frame holds more than a cluster.
    if done == out.len() && d.read(&mut [0u8; 1]).map_err(bad)? != 0 {
        return Err(corrupt("a zstd cluster inflates past the cluster size"));
    }
    Ok(done as u64)
}

pub(crate) fn inspect(src: &dyn ReadAt, file_size: u64) -> Result<Inspection, Rejection> {
    let h = parse_header(src, file_size, Backing::Refuse)?;
    Ok(Inspection {
        format: Format::Qcow2,
        virtual_size: h.size,
        subformat: Some(format!("v{}", h.version)),
        cluster_size: Some(1 << h.cluster_bits),
    })
}

/// What backs a guest range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Unallocated or a zero cluster: reads as zeros and need not be read.
    Zero,
    /// An allocated normal cluster.
    Data,
    /// A compressed cluster.
    Compressed,
    /// Unallocated in an overlay opened with [`Qcow2Reader::open_overlay`]: the bytes are the
    /// backing file's, which this reader does not open.
    Backing,
}

/// A guest range and what backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Kind.
    pub kind: ExtentKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    Zero,
    Backing,
    Data(u64),
    Compressed { host: u64, len: u64 },
}

/// Reads the guest disk of a qcow2 image.
pub struct Qcow2Reader<'a> {
    src: &'a dyn ReadAt,
    file_size: u64,
    cluster_bits: u32,
    compression: Compression,
    size: u64,
    l1: Vec<u64>,
    /// Unallocated clusters fall through to a backing file (overlays the service made).
    overlay: bool,
    l2_cache: Mutex<HashMap<u64, std::sync::Arc<Vec<u64>>>>,
    last_compressed: Mutex<Option<(u64, std::sync::Arc<Vec<u8>>)>>,
}

impl<'a> Qcow2Reader<'a> {
    /// Opens an image (re-validating its header) and loads its L1 table. An image that names
    /// a backing file is refused.
    pub fn open(src: &'a dyn ReadAt) -> Result<Self, Rejection> {
        Self::open_with(src, Backing::Refuse)
    }

    /// Opens a copy-on-write overlay the service made itself (an instance's system disk): its
    /// backing file is allowed but never opened, and unallocated clusters map to
    /// [`ExtentKind::Backing`] instead of zeros. Never use this on an image from a user.
    pub fn open_overlay(src: &'a dyn ReadAt) -> Result<Self, Rejection> {
        Self::open_with(src, Backing::Allow)
    }

    fn open_with(src: &'a dyn ReadAt, backing: Backing) -> Result<Self, Rejection> {
        let file_size = src.size().map_err(|e| io_err(Some(Format::Qcow2), &e))?;
        let h = parse_header(src, file_size, backing)?;
        let raw = if h.size == 0 {
            Vec::new()
        } else {
            read_exact(src, h.l1_offset, usize::try_from(h.l1_size * 8).unwrap_or(0), Format::Qcow2, "the L1 table")?
        };
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        Ok(Self {
            src,
            file_size,
            cluster_bits: h.cluster_bits,
            compression: h.compression,
            size: h.size,
            l1,
            overlay: backing == Backing::Allow,
            l2_cache: Mutex::new(HashMap::new()),
            last_compressed: Mutex::new(None),
        })
    }

    /// Virtual size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.size
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn l2_table(&self, offset: u64) -> Result<std::sync::Arc<Vec<u64>>, Rejection> {
        if let Some(t) = self.l2_cache.lock().ok().and_then(|c| c.get(&offset).cloned()) {
            return Ok(t);
        }
        let cluster = self.cluster_size();
        if !offset.is_multiple_of(cluster) || offset + cluster > self.file_size {
            return Err(corrupt("an L2 table lies outside the file"));
        }
        let raw = read_exact(self.src, offset, usize::try_from(cluster).unwrap_or(0), Format::Qcow2, "an L2 table")?;
        let table = std::sync::Arc::new(raw.chunks_exact(8).map(|c| be64(c, 0)).collect::<Vec<_>>());
        if let Ok(mut cache) = self.l2_cache.lock() {
            if cache.len() >= L2_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(offset, std::sync::Arc::clone(&table));
        }
        Ok(table)
    }

    fn cluster(&self, index: u64) -> Result<Cluster, Rejection> {
        let cluster = self.cluster_size();
        let l2_entries = cluster / 8;
        let l1_index = usize::try_from(index / l2_entries).unwrap_or(usize::MAX);
        let l1_entry = *self.l1.get(l1_index).ok_or_else(|| corrupt("guest offset past the L1 table"))?;
        let unallocated = if self.overlay { Cluster::Backing } else { Cluster::Zero };
        let l2_offset = l1_entry & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(unallocated);
        }
        let table = self.l2_table(l2_offset)?;
        let entry = table[usize::try_from(index % l2_entries).unwrap_or(0)];
        if entry & L2_COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let host = entry & ((1u64 << x) - 1);
            let sectors = ((entry >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            let len = (sectors * 512).saturating_sub(host & 511);
            if host >= self.file_size {
                return Err(corrupt("a compressed cluster lies outside the file"));
            }
            return Ok(Cluster::Compressed { host, len: len.min(self.file_size - host) });
        }
        if entry & L2_ZERO != 0 {
            return Ok(Cluster::Zero);
        }
        let host = entry & OFFSET_MASK;
        if host == 0 {
            return Ok(unallocated);
        }
        if !host.is_multiple_of(cluster) || host + cluster > self.file_size {
            return Err(corrupt("a data cluster lies outside the file"));
        }
        Ok(Cluster::Data(host))
    }

    /// What backs guest range `[offset, offset + len)`, coalesced, in order.
    pub fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>, Rejection> {
        let end = offset.saturating_add(len).min(self.size);
        let cluster = self.cluster_size();
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let next = ((pos / cluster) + 1) * cluster;
            let piece = next.min(end) - pos;
            let kind = match self.cluster(pos / cluster)? {
                Cluster::Zero => ExtentKind::Zero,
                Cluster::Backing => ExtentKind::Backing,
                Cluster::Data(_) => ExtentKind::Data,
                Cluster::Compressed { .. } => ExtentKind::Compressed,
            };
            match out.last_mut() {
                Some(last) if last.kind == kind && last.offset + last.len == pos => last.len += piece,
                _ => out.push(Extent { offset: pos, len: piece, kind }),
            }
            pos += piece;
        }
        Ok(out)
    }

    fn decompress(&self, host: u64, len: u64) -> Result<std::sync::Arc<Vec<u8>>, Rejection> {
        if let Some((h, data)) = self.last_compressed.lock().ok().and_then(|c| c.clone()) {
            if h == host {
                return Ok(data);
            }
        }
        let input =
            read_exact(self.src, host, usize::try_from(len).unwrap_or(0), Format::Qcow2, "a compressed cluster")?;
        let cluster = usize::try_from(self.cluster_size()).unwrap_or(0);
        let mut out = vec![0u8; cluster];
        let inflated = match self.compression {
            Compression::Zlib => {
                let mut d = flate2::Decompress::new(false);
                d.decompress(&input, &mut out, flate2::FlushDecompress::Finish)
                    .map_err(|e| corrupt(format!("a compressed cluster does not inflate: {e}")))?;
                d.total_out()
            }
            Compression::Zstd => inflate_zstd(&input, &mut out)?,
        };
        if inflated != cluster as u64 {
            return Err(corrupt("a compressed cluster inflates to the wrong size"));
        }
        let data = std::sync::Arc::new(out);
        if let Ok(mut c) = self.last_compressed.lock() {
            *c = Some((host, std::sync::Arc::clone(&data)));
        }
        Ok(data)
    }

    /// Reads guest bytes at `offset` into `buf` (zeros where nothing is allocated). In an
    /// overlay, a range that falls through to the backing file is an error: read it there.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Rejection> {
        let cluster = self.cluster_size();
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(corrupt("read past the end of the virtual disk"));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = pos % cluster;
            let n = usize::try_from((cluster - within).min((buf.len() - done) as u64)).unwrap_or(0);
            let dst = &mut buf[done..done + n];
            match self.cluster(pos / cluster)? {
                Cluster::Zero => dst.fill(0),
                Cluster::Backing => return Err(corrupt("the range lies in the backing file")),
                Cluster::Data(host) => {
                    let got = self.src.read_at(host + within, dst).map_err(|e| io_err(Some(Format::Qcow2), &e))?;
                    if got < n {
                        return Err(corrupt("a data cluster is truncated"));
                    }
                }
                Cluster::Compressed { host, len } => {
                    let data = self.decompress(host, len)?;
                    let w = usize::try_from(within).unwrap_or(0);
                    dst.copy_from_slice(&data[w..w + n]);
                }
            }
            done += n;
        }
        Ok(())
    }
}
