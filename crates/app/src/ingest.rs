//! Ingest: an inspected image file becomes a manifest of blocks in a region's block store.
//!
//! One blocking thread reads the virtual disk block by block (skipping known-zero ranges without
//! reading them); two threads hash and compress the non-zero blocks; the async side writes them
//! put-if-absent, a few at a time, and records them as touched in the metadata store so that GC
//! leaves them alone until the manifest references them. Memory stays bounded by the channels
//! (a few dozen blocks), whatever the image size.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;
use imaged_chunkstore::{block, is_zero, BlockStore, ChunkError, Digest, Manifest, PutOutcome, BLOCK_SIZE};
use imaged_diskfmt::Format;
use imaged_metastore::{MetaStore, MetaStoreError};
use tokio::task::JoinSet;

use crate::disk::{DiskError, DiskReader};
use crate::uploads::ManifestReader;

/// Blocks in flight to the object store at once.
const PUTS_IN_FLIGHT: usize = 8;
/// Blocks touched in the metadata store per statement.
const TOUCH_BATCH: usize = 256;
/// Hashing and compressing threads.
const HASHERS: usize = 2;

/// Why an ingest failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the source.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Writing blocks.
    #[error("block store: {0}")]
    Blocks(#[from] ChunkError),
    /// Recording blocks.
    #[error(transparent)]
    Meta(#[from] MetaStoreError),
    /// A worker died.
    #[error("ingest worker failed: {0}")]
    Worker(String),
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Virtual disk size.
    pub virtual_size: u64,
    /// Blocks holding data.
    pub data_blocks: u64,
    /// Of those, blocks the store did not have yet.
    pub new_blocks: u64,
    /// Bytes written to the store for new blocks (after compression).
    pub new_bytes: u64,
}

/// The outcome and stored size of one block put.
type PutResult = Result<(PutOutcome, u64), ChunkError>;

/// Progress of an ingest: blocks done out of the total (both 0 until the size is known).
#[derive(Debug, Default)]
pub struct Progress {
    /// Blocks done.
    pub done: AtomicU64,
    /// Blocks in all.
    pub total: AtomicU64,
}

impl Progress {
    /// Percent done, 0..=100.
    pub fn percent(&self) -> u8 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 0;
        }
        u8::try_from((self.done.load(Ordering::Relaxed) * 100 / total).min(100)).unwrap_or(100)
    }
}

/// What an ingest reads.
pub enum IngestSource {
    /// A local file, inspected as `format` (raw, iso or qcow2).
    File {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Format,
    },
    /// A qcow2 image held as an upload's blocks.
    Qcow2Blocks(ManifestReader),
}

/// Reads `source` into `store`, returning the virtual disk's manifest.
pub async fn ingest(
    source: IngestSource,
    store: BlockStore,
    meta: Arc<dyn MetaStore>,
    region: String,
    progress: Arc<Progress>,
) -> Result<(Manifest, IngestStats), IngestError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Digest, Bytes)>(16);
    let producer_progress = Arc::clone(&progress);
    let producer = tokio::task::spawn_blocking(move || match source {
        IngestSource::File { path, format } => {
            let file = File::open(&path).map_err(DiskError::from)?;
            produce(&DiskReader::open(&file, format)?, &tx, &producer_progress)
        }
        IngestSource::Qcow2Blocks(reader) => {
            let qcow = imaged_diskfmt::Qcow2Reader::open(&reader).map_err(DiskError::from)?;
            produce(&DiskReader::Qcow2(qcow), &tx, &producer_progress)
        }
    });

    let mut entries: Vec<(usize, Digest)> = Vec::new();
    let mut touches: Vec<(String, u64)> = Vec::new();
    let mut puts: JoinSet<PutResult> = JoinSet::new();
    let mut stats = IngestStats::default();
    let now = crate::service::now;
    let settle =
        |r: Option<Result<PutResult, tokio::task::JoinError>>, stats: &mut IngestStats| -> Result<(), IngestError> {
            if let Some(r) = r {
                let (outcome, len) = r.map_err(|e| IngestError::Worker(e.to_string()))??;
                if outcome == PutOutcome::Stored {
                    stats.new_blocks += 1;
                    stats.new_bytes += len;
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
    while let Some((index, digest, encoded)) = rx.recv().await {
        while puts.len() >= PUTS_IN_FLIGHT {
            settle(puts.join_next().await, &mut stats)?;
        }
        touches.push((digest.to_hex(), encoded.len() as u64));
        if touches.len() >= TOUCH_BATCH {
            meta.touch_blocks(&region, &std::mem::take(&mut touches), now()).await?;
        }
        let store = store.clone();
        puts.spawn(async move {
            let len = encoded.len() as u64;
            store.put_encoded(&digest, encoded).await.map(|o| (o, len))
        });
        entries.push((index, digest));
    }
    while !puts.is_empty() {
        settle(puts.join_next().await, &mut stats)?;
    }
    if !touches.is_empty() {
        meta.touch_blocks(&region, &touches, now()).await?;
    }
    let virtual_size = producer.await.map_err(|e| IngestError::Worker(e.to_string()))??;
    let mut manifest = Manifest::zeroed(BLOCK_SIZE as u32, virtual_size);
    for (index, digest) in entries {
        if let Some(slot) = manifest.blocks.get_mut(index) {
            *slot = Some(digest);
        }
    }
    stats.virtual_size = virtual_size;
    stats.data_blocks = manifest.data_blocks() as u64;
    Ok((manifest, stats))
}

/// Reads the disk and feeds the hashers; returns the virtual size.
fn produce(
    reader: &DiskReader<'_>,
    out: &tokio::sync::mpsc::Sender<(usize, Digest, Bytes)>,
    progress: &Progress,
) -> Result<u64, IngestError> {
    let size = reader.virtual_size();
    let blocks = size.div_ceil(BLOCK_SIZE as u64);
    progress.total.store(blocks, Ordering::Relaxed);
    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(HASHERS * 2);
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|scope| {
        for _ in 0..HASHERS {
            scope.spawn(|| loop {
                let item = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((index, data)) = item else { return };
                let digest = Digest::of(&data);
                let encoded = Bytes::from(block::encode(&data));
                if out.blocking_send((index, digest, encoded)).is_err() {
                    return;
                }
            });
        }
        let result = (|| {
            for index in 0..blocks {
                let offset = index * BLOCK_SIZE as u64;
                let len = (size - offset).min(BLOCK_SIZE as u64) as usize;
                let mut buf = vec![0u8; len];
                if reader.read_block(offset, &mut buf)? && !is_zero(&buf) {
                    if work_tx.send((index as usize, buf)).is_err() {
                        return Err(IngestError::Worker("the block writer stopped".into()));
                    }
                } else {
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(size)
        })();
        drop(work_tx);
        result
    })
}
