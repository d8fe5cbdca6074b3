//! Block digests (BLAKE3, 32 bytes) and zero detection.

use std::fmt;

/// The content address of a block: BLAKE3 of its uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Digest of the concatenation of `parts`.
    pub fn of_parts(parts: &[bytes::Bytes]) -> Self {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        Self(*h.finalize().as_bytes())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Proof that the caller holds a block's bytes, not just its digest: BLAKE3 keyed with a nonce
/// the service chose for one upload. Referencing a stored block by digest requires it, so that
/// a digest learnt elsewhere does not give access to another tenant's bytes.
pub fn possession_proof(nonce: &[u8; 32], data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(nonce, data).as_bytes()
}

/// Whether every byte is zero (16 bytes at a time; the compiler vectorises the comparison).
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(16);
    chunks.all(|c| c == [0u8; 16]) && chunks.remainder().iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_possession_proof_depends_on_the_nonce_and_the_bytes() {
        let data = vec![7u8; 4096];
        let p = possession_proof(&[1; 32], &data);
        assert_eq!(p, possession_proof(&[1; 32], &data));
        assert_ne!(p, possession_proof(&[2; 32], &data));
        assert_ne!(p, possession_proof(&[1; 32], &data[1..]));
        assert_ne!(p, Digest::of(&data).0, "the proof is not the public digest");
    }

    #[test]
    fn the_digest_of_parts_is_the_digest_of_their_concatenation() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let parts: Vec<bytes::Bytes> = data.chunks(3333).map(bytes::Bytes::copy_from_slice).collect();
        assert_eq!(Digest::of_parts(&parts), Digest::of(&data));
    }

    #[test]
    fn digests_round_trip_through_hex_and_differ_by_content() {
        let a = Digest::of(b"a");
        assert_eq!(Digest::from_hex(&a.to_hex()), Some(a));
        assert_ne!(a, Digest::of(b"b"));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"ab".repeat(31)), None);
    }

    #[test]
    fn zero_detection_sees_a_single_set_byte_anywhere() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        assert!(is_zero(&[]));
        for i in [0, 15, 16, 4095, 4096, 4098] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "byte {i}");
            buf[i] = 0;
        }
    }
}
