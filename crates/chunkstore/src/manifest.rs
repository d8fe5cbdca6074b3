//! An image's manifest: its virtual size and the ordered digests of its fixed-size blocks, with
//! `None` for all-zero blocks (never stored). The last block may be shorter than the block size.
//!
//! Encoding (version 1): `IMF1`, block size (u32 LE), virtual size (u64 LE), block count (u32 LE),
//! then per block a tag byte (`0` zero, `1` data) and, for data, the 32-byte digest.

use std::collections::BTreeSet;

use crate::digest::Digest;

const MAGIC: &[u8; 4] = b"IMF1";
const HEADER_LEN: usize = 4 + 4 + 8 + 4;
/// Largest virtual size a manifest describes (64 TiB), a sanity cap on decoding.
const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// Why bytes are not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed manifest: {0}")]
pub struct ManifestError(pub &'static str);

/// The blocks of one virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Block size in bytes.
    pub block_size: u32,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// One entry per block, `None` for an all-zero block.
    pub blocks: Vec<Option<Digest>>,
}

impl Manifest {
    /// An all-zero disk of `virtual_size` bytes.
    pub fn zeroed(block_size: u32, virtual_size: u64) -> Self {
        let count = virtual_size.div_ceil(u64::from(block_size.max(1)));
        Self { block_size, virtual_size, blocks: vec![None; usize::try_from(count).unwrap_or(0)] }
    }

    /// Length in bytes of block `index` (the last one may be short).
    pub fn block_len(&self, index: usize) -> usize {
        let bs = u64::from(self.block_size);
        let start = index as u64 * bs;
        usize::try_from(self.virtual_size.saturating_sub(start).min(bs)).unwrap_or(0)
    }

    /// The distinct digests the manifest names.
    pub fn distinct(&self) -> BTreeSet<Digest> {
        self.blocks.iter().flatten().copied().collect()
    }

    /// Number of non-zero blocks.
    pub fn data_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.is_some()).count()
    }

    /// Serialises the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.blocks.len() * 33);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.block_size.to_le_bytes());
        out.extend_from_slice(&self.virtual_size.to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.blocks.len()).unwrap_or(u32::MAX).to_le_bytes());
        for b in &self.blocks {
            match b {
                None => out.push(0),
                Some(d) => {
                    out.push(1);
                    out.extend_from_slice(&d.0);
                }
            }
        }
        out
    }

    /// Parses and validates a serialised manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(ManifestError("bad magic or short header"));
        }
        let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let block_size = u32_at(4);
        let mut vs = [0u8; 8];
        vs.copy_from_slice(&bytes[8..16]);
        let virtual_size = u64::from_le_bytes(vs);
        let count = u32_at(16) as usize;
        if block_size == 0 || !block_size.is_power_of_two() || virtual_size > MAX_VIRTUAL_SIZE {
            return Err(ManifestError("bad block size or virtual size"));
        }
        if virtual_size.div_ceil(u64::from(block_size)) != count as u64 {
            return Err(ManifestError("block count does not match the virtual size"));
        }
        let mut blocks = Vec::with_capacity(count.min(bytes.len()));
        let mut rest = &bytes[HEADER_LEN..];
        for _ in 0..count {
            match rest.split_first() {
                Some((0, r)) => {
                    blocks.push(None);
                    rest = r;
                }
                Some((1, r)) if r.len() >= 32 => {
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&r[..32]);
                    blocks.push(Some(Digest(d)));
                    rest = &r[32..];
                }
                _ => return Err(ManifestError("truncated or bad block entry")),
            }
        }
        if !rest.is_empty() {
            return Err(ManifestError("trailing bytes"));
        }
        Ok(Self { block_size, virtual_size, blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_know_their_short_last_block() {
        let mut m = Manifest::zeroed(1 << 20, (3 << 20) + 512);
        assert_eq!(m.blocks.len(), 4);
        assert_eq!(m.block_len(0), 1 << 20);
        assert_eq!(m.block_len(3), 512);
        m.blocks[1] = Some(Digest::of(b"x"));
        m.blocks[3] = Some(Digest::of(b"x"));
        assert_eq!(Manifest::decode(&m.encode()), Ok(m.clone()));
        assert_eq!(m.distinct().len(), 1);
        assert_eq!(m.data_blocks(), 2);
    }

    #[test]
    fn damaged_manifests_are_refused() {
        let m = Manifest::zeroed(1 << 20, 5 << 20);
        let good = m.encode();
        assert!(Manifest::decode(&good[..good.len() - 1]).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(Manifest::decode(&extra).is_err());
        let mut bad_count = good.clone();
        bad_count[16] = 9;
        assert!(Manifest::decode(&bad_count).is_err());
        let mut bad_tag = good;
        bad_tag[HEADER_LEN] = 7;
        assert!(Manifest::decode(&bad_tag).is_err());
        assert!(Manifest::decode(b"nope").is_err());
    }
}
