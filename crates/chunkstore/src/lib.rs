//! The chunk store: an image's virtual disk as a manifest of fixed-size, aligned,
//! content-addressed blocks in an `object_store` location (one per region).
//!
//! Layout:
//! - [`digest`]: BLAKE3 block digests and zero detection.
//! - [`block`]: the stored form of a block (a one-byte header, then raw or zstd bytes), and its
//!   verification on read.
//! - [`manifest`]: the ordered list of an image's blocks (zero blocks implicit), versioned.
//! - [`store`]: [`BlockStore`], put-if-absent writes and verified reads over `object_store`.
//!
//! Why 1 MiB blocks: disks do not shift content, so aligned fixed blocks find every unchanged
//! region of a derived image (capture and copy move only what changed); 1 MiB is a multiple of
//! every common cluster and grain size (qcow2 64 KiB, VMDK 64 KiB, VHD 2 MiB is two blocks), and
//! it keeps per-block overhead (a digest, an object, a manifest entry of 33 bytes) at 4,096
//! entries for a 4 GiB disk while a one-byte change costs one MiB.
//!
//! This crate knows nothing of images' metadata or of reference counts: those live in the
//! metadata store.

pub mod block;
pub mod digest;
pub mod manifest;
pub mod store;

pub use digest::{is_zero, possession_proof, Digest};
pub use manifest::Manifest;
pub use store::{BlockStore, ChunkError, PutOutcome};

/// Size of a block in bytes (1 MiB; see the crate docs for why).
pub const BLOCK_SIZE: usize = 1 << 20;
