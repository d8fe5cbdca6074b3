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

use crate::disk::{BlockContent, DiskError, DiskReader};
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

/// Progress of an ingest: blocks done out of the total (both 0 until the size is known), and
/// whether the job was cancelled (blocking work checks it and stops).
#[derive(Debug, Default)]
pub struct Progress {
    /// Blocks done.
    pub done: AtomicU64,
    /// Blocks in all.
    pub total: AtomicU64,
    cancelled: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the work was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

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
    /// An instance's overlay on its base: blocks the guest never wrote are taken from the base's
    /// manifest without being read, when the target store already has them.
    Overlay {
        /// The qcow2 overlay (the service's own).
        top: PathBuf,
        /// The raw base it sits on.
        base: PathBuf,
        /// The base's manifest.
        base_manifest: Arc<Manifest>,
        /// Every block of the base is known to be in the target store (an image with that
        /// manifest is attached there), so none needs looking up.
        base_present: bool,
    },
}

/// A block for the writer: its index, digest, and its encoded parts unless the store has it.
type Produced = (usize, Digest, Option<Vec<Bytes>>);

impl crate::service::Service {
    /// Reads `source` into `region`'s block store (the job's view of [`ingest`]: failures are
    /// worth retrying, the input having been inspected already).
    pub(crate) async fn ingest_into(
        &self,
        source: IngestSource,
        region: &str,
        progress: Arc<Progress>,
    ) -> Result<(Manifest, IngestStats), crate::jobs::JobFailure> {
        let store = self.data().region_blocks(region);
        ingest(source, store, Arc::clone(self.store()), region.to_owned(), progress)
            .await
            .map_err(|e| crate::jobs::JobFailure::retry(e.to_string()))
    }
}

/// Reads `source` into `store`, returning the virtual disk's manifest.
pub async fn ingest(
    source: IngestSource,
    store: BlockStore,
    meta: Arc<dyn MetaStore>,
    region: String,
    progress: Arc<Progress>,
) -> Result<(Manifest, IngestStats), IngestError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Produced>(16);
    let producer_progress = Arc::clone(&progress);
    let (handle, target) = (tokio::runtime::Handle::current(), store.clone());
    let producer = tokio::task::spawn_blocking(move || match source {
        IngestSource::File { path, format } => {
            let file = File::open(&path).map_err(DiskError::from)?;
            produce(&DiskReader::open(&file, format)?, &tx, &producer_progress, &|_| false)
        }
        IngestSource::Qcow2Blocks(reader) => {
            let qcow = imaged_diskfmt::Qcow2Reader::open(&reader).map_err(DiskError::from)?;
            produce(&DiskReader::Qcow2(qcow), &tx, &producer_progress, &|_| false)
        }
        IngestSource::Overlay { top, base, base_manifest, base_present } => {
            let (top, base) = (File::open(&top).map_err(DiskError::from)?, File::open(&base).map_err(DiskError::from)?);
            let top = imaged_diskfmt::Qcow2Reader::open_overlay(&top).map_err(DiskError::from)?;
            let reader = DiskReader::Overlay { top, base: &base, base_manifest: &base_manifest };
            let have = |d: &Digest| base_present || handle.block_on(target.contains(d)).unwrap_or(false);
            produce(&reader, &tx, &producer_progress, &have)
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
        // A block the store has is touched (size 0 keeps its recorded size) but not written.
        let stored_len = encoded.as_ref().map_or(0, |parts| parts.iter().map(|p| p.len() as u64).sum());
        touches.push((digest.to_hex(), stored_len));
        if touches.len() >= TOUCH_BATCH {
            meta.touch_blocks(&region, &std::mem::take(&mut touches), now()).await?;
        }
        entries.push((index, digest));
        let Some(encoded) = encoded else {
            progress.done.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let store = store.clone();
        puts.spawn(async move { store.put_parts(&digest, encoded).await.map(|o| (o, stored_len)) });
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

/// Reads the disk and feeds the hashers; returns the virtual size. A block that is the base's
/// unchanged goes to the writer as its digest alone when `have` says the store holds it.
fn produce(
    reader: &DiskReader<'_>,
    out: &tokio::sync::mpsc::Sender<Produced>,
    progress: &Progress,
    have: &dyn Fn(&Digest) -> bool,
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
                let encoded = block::encode_parts(vec![Bytes::from(data)]);
                if out.blocking_send((index, digest, Some(encoded))).is_err() {
                    return;
                }
            });
        }
        let result = (|| {
            // A buffer no block was sent in is used again (every use writes all of it), so the
            // blocks that are zero or unchanged cost no allocation.
            let mut spare: Option<Vec<u8>> = None;
            for index in 0..blocks {
                let offset = index * BLOCK_SIZE as u64;
                let len = (size - offset).min(BLOCK_SIZE as u64) as usize;
                let mut buf = spare.take().filter(|b| b.len() == len).unwrap_or_else(|| vec![0u8; len]);
                let data = match reader.read_block(offset, &mut buf)? {
                    BlockContent::Zero => false,
                    BlockContent::Same(digest) if have(&digest) => {
                        if out.blocking_send((index as usize, digest, None)).is_err() {
                            return Err(IngestError::Worker("the block writer stopped".into()));
                        }
                        spare = Some(buf);
                        continue;
                    }
                    BlockContent::Same(_) => {
                        reader.read_full(offset, &mut buf)?;
                        true
                    }
                    BlockContent::Data => !is_zero(&buf),
                };
                if !data {
                    progress.done.fetch_add(1, Ordering::Relaxed);
                    spare = Some(buf);
                } else if work_tx.send((index as usize, buf)).is_err() {
                    return Err(IngestError::Worker("the block writer stopped".into()));
                }
            }
            Ok(size)
        })();
        drop(work_tx);
        result
    })
}
