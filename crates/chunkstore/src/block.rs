//! The stored form of a block: one header byte (`0` raw, `1` zstd), then the payload.
//! Compression is kept only when it saves at least an eighth; the digest is always of the
//! uncompressed bytes, and every read recomputes it. A large block is first tried on a 64 KiB
//! sample: when even that does not shrink by a sixteenth (random or already compressed data),
//! the block is stored raw without compressing the rest, which saves most of zstd's time on
//! incompressible disks.

use crate::digest::Digest;

const RAW: u8 = 0;
const ZSTD: u8 = 1;
/// zstd level: 1 is fast and gives up quickly on incompressible data.
const ZSTD_LEVEL: i32 = 1;

/// Why a stored block cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Unknown header byte or undecodable payload.
    #[error("block {0} is undecodable")]
    Undecodable(String),
    /// The bytes do not hash to the block's address.
    #[error("block {0} does not match its digest")]
    DigestMismatch(String),
    /// Decompressed to more than a block.
    #[error("block {0} inflates past the block size")]
    TooLarge(String),
}

/// Bytes of the compressibility sample of a large block.
const SAMPLE_BYTES: usize = 64 << 10;

/// Encodes `data` for storage.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let worth_trying = data.len() < 4 * SAMPLE_BYTES
        || zstd::bulk::compress(&data[..SAMPLE_BYTES], ZSTD_LEVEL).is_ok_and(|c| c.len() + c.len() / 15 < SAMPLE_BYTES);
    if worth_trying {
        if let Ok(compressed) = zstd::bulk::compress(data, ZSTD_LEVEL) {
            if compressed.len() + compressed.len() / 7 < data.len() {
                let mut out = Vec::with_capacity(compressed.len() + 1);
                out.push(ZSTD);
                out.extend_from_slice(&compressed);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(RAW);
    out.extend_from_slice(data);
    out
}

/// Encodes a block given as consecutive parts for storage, as parts to write one after the
/// other: a raw block is its header byte followed by the parts themselves, never copied.
pub fn encode_parts(parts: Vec<bytes::Bytes>) -> Vec<bytes::Bytes> {
    let len: usize = parts.iter().map(bytes::Bytes::len).sum();
    let worth_trying = len < 4 * SAMPLE_BYTES || {
        let sample: std::borrow::Cow<'_, [u8]> = match parts.first() {
            Some(first) if first.len() >= SAMPLE_BYTES => std::borrow::Cow::Borrowed(&first[..SAMPLE_BYTES]),
            _ => std::borrow::Cow::Owned(parts.concat()[..SAMPLE_BYTES].to_vec()),
        };
        zstd::bulk::compress(&sample, ZSTD_LEVEL).is_ok_and(|c| c.len() + c.len() / 15 < SAMPLE_BYTES)
    };
    if worth_trying {
        return vec![bytes::Bytes::from(encode(&parts.concat()))];
    }
    let mut out = Vec::with_capacity(parts.len() + 1);
    out.push(bytes::Bytes::from_static(&[RAW]));
    out.extend(parts);
    out
}

/// Decodes a stored block and verifies it hashes to `expected`, without copying a raw one.
pub fn decode_bytes(stored: bytes::Bytes, expected: &Digest, max_len: usize) -> Result<bytes::Bytes, BlockError> {
    if stored.first() != Some(&RAW) {
        return decode(&stored, expected, max_len).map(bytes::Bytes::from);
    }
    let data = stored.slice(1..);
    if data.len() > max_len {
        return Err(BlockError::TooLarge(expected.to_hex()));
    }
    if Digest::of(&data) != *expected {
        return Err(BlockError::DigestMismatch(expected.to_hex()));
    }
    Ok(data)
}

/// Decodes a stored block and verifies it hashes to `expected`.
pub fn decode(stored: &[u8], expected: &Digest, max_len: usize) -> Result<Vec<u8>, BlockError> {
    let name = || expected.to_hex();
    let data = match stored.split_first() {
        Some((&RAW, rest)) => rest.to_vec(),
        Some((&ZSTD, rest)) => {
            let data = zstd::bulk::decompress(rest, max_len).map_err(|_| BlockError::Undecodable(name()))?;
            if data.len() > max_len {
                return Err(BlockError::TooLarge(name()));
            }
            data
        }
        _ => return Err(BlockError::Undecodable(name())),
    };
    if Digest::of(&data) != *expected {
        return Err(BlockError::DigestMismatch(name()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn compressible_blocks_are_stored_compressed_and_random_ones_raw() {
        let text = b"os-release NAME=TencentOS ".repeat(4000);
        let enc = encode(&text);
        assert_eq!(enc[0], ZSTD);
        assert!(enc.len() < text.len() / 4);
        assert_eq!(decode(&enc, &Digest::of(&text), 1 << 20).expect("decode"), text);
        let random = pseudo_random(1 << 16, 7);
        let enc = encode(&random);
        assert_eq!(enc[0], RAW);
        assert_eq!(decode(&enc, &Digest::of(&random), 1 << 20).expect("decode"), random);
    }

    #[test]
    fn a_block_whose_sample_does_not_compress_is_stored_raw_without_compressing_the_rest() {
        let mut mixed = pseudo_random(1 << 20, 11);
        mixed[SAMPLE_BYTES..].fill(0);
        assert_eq!(encode(&mixed)[0], RAW, "the sample decides for a large block");
        let mut text_first = b"kernel: eth0 link up\n".repeat(50_000);
        text_first.truncate(1 << 20);
        let enc = encode(&text_first);
        assert_eq!(enc[0], ZSTD);
        assert_eq!(decode(&enc, &Digest::of(&text_first), 1 << 20).expect("decode"), text_first);
    }

    #[test]
    fn parts_concatenate_to_the_encoding() {
        let random = pseudo_random(1 << 20, 5);
        let text = b"os-release NAME=TencentOS ".repeat(40_000);
        for data in [random, text] {
            assert_eq!(encode_parts(vec![bytes::Bytes::from(data.clone())]).concat(), encode(&data));
            let split: Vec<bytes::Bytes> = data.chunks(1000).map(bytes::Bytes::copy_from_slice).collect();
            assert_eq!(encode_parts(split).concat(), encode(&data), "small parts encode alike");
        }
    }

    #[test]
    fn a_flipped_bit_or_a_wrong_address_is_detected() {
        let data = pseudo_random(4096, 3);
        let mut enc = encode(&data);
        let digest = Digest::of(&data);
        enc[100] ^= 1;
        assert_eq!(decode(&enc, &digest, 1 << 20), Err(BlockError::DigestMismatch(digest.to_hex())));
        assert!(decode(&[9, 1, 2], &digest, 1 << 20).is_err());
        assert!(decode(&[], &digest, 1 << 20).is_err());
    }

    #[test]
    fn decoding_without_a_copy_verifies_alike() {
        let random = pseudo_random(1 << 20, 9);
        let enc = bytes::Bytes::from(encode(&random));
        let digest = Digest::of(&random);
        assert_eq!(decode_bytes(enc.clone(), &digest, 1 << 20).expect("decode")[..], random[..]);
        assert!(decode_bytes(enc.clone(), &Digest::of(b"other"), 1 << 20).is_err());
        assert!(decode_bytes(enc, &digest, 1000).is_err(), "capped");
        let text = b"compressible ".repeat(10_000);
        let enc = bytes::Bytes::from(encode(&text));
        assert_eq!(decode_bytes(enc, &Digest::of(&text), 1 << 20).expect("decode")[..], text[..]);
    }

    #[test]
    fn decompression_is_capped() {
        let zeros = vec![0u8; 1 << 20];
        let enc = encode(&zeros);
        assert!(decode(&enc, &Digest::of(&zeros), 1024).is_err());
    }
}
