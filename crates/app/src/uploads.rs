//! Uploads straight into the block store. An upload is a manifest of the uploaded file's 1 MiB
//! blocks in the region it was made for: each append is split into blocks that are hashed,
//! compressed and stored put-if-absent as they arrive (all-zero blocks and `zero` ranges are
//! never stored), so an upload writes only the blocks the store lacks, and the bytes are never
//! written twice. A raw upload's manifest becomes the image's manifest as it is.
//!
//! Uploads are resumable: the manifest is saved in the metadata store after each complete append
//! (only if no other append continued the upload meanwhile), so an interrupted client continues
//! from the size it is told, through any server of the deployment. Appends cover whole blocks, except the last one.
//! An upload expires a configured time after its last append (GC then forgets it); until then
//! GC keeps its blocks, however long it is paused. Its bytes count toward its owner's storage
//! quota.
//! Nothing here interprets the bytes: the import job inspects them through [`ManifestReader`].

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imaged_chunkstore::{block, is_zero, possession_proof, BlockStore, Digest, Manifest, BLOCK_SIZE};
use imaged_diskfmt::ReadAt;
use imaged_domain::time::Timestamp;
use imaged_domain::AccountId;
use imaged_metastore::{Refused, UploadRecord};
use tokio::task::JoinSet;

use crate::data::UploadError;
use crate::service::{now, Service};

/// Uploads in progress one account may have at once.
pub const MAX_UPLOADS_PER_ACCOUNT: usize = 100;
/// Blocks hashed and stored at once per append.
const IN_FLIGHT: usize = 16;
/// Decoded blocks a [`ManifestReader`] keeps.
const READER_CACHE_BLOCKS: usize = 8;

/// An upload's owner, region and blocks so far.
#[derive(Debug, Clone)]
pub struct UploadState {
    /// Who made it.
    pub owner: AccountId,
    /// The region whose block store holds its blocks.
    pub region: String,
    /// Its blocks; `virtual_size` is the bytes received.
    pub manifest: Manifest,
    /// The nonce of this upload's possession proofs (see [`possession_proof`]).
    pub nonce: [u8; 32],
    /// When it expires unless appended to.
    pub expires_at: Timestamp,
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn store_err(e: impl std::fmt::Display) -> UploadError {
    UploadError::Store(e.to_string())
}

impl UploadState {
    fn from_record(record: UploadRecord) -> Result<Self, UploadError> {
        let manifest = Manifest::decode(&record.manifest).map_err(store_err)?;
        Ok(Self {
            owner: record.owner,
            region: record.region,
            manifest,
            nonce: record.nonce,
            expires_at: record.expires_at,
        })
    }
}

impl Service {
    /// Starts an upload for `owner` in `region`; returns its id.
    pub async fn create_upload(&self, owner: AccountId, region: &str) -> Result<String, UploadError> {
        if self.storage_room(owner).await.map_err(store_err)? == 0 {
            return Err(UploadError::QuotaExceeded);
        }
        let id = hex::encode(crate::secrets::random_bytes::<16>().map_err(store_err)?);
        let record = UploadRecord {
            id: id.clone(),
            owner,
            region: region.to_owned(),
            nonce: crate::secrets::random_bytes::<32>().map_err(store_err)?,
            size: 0,
            manifest: Manifest::zeroed(BLOCK_SIZE as u32, 0).encode(),
            expires_at: self.upload_expiry_from_now(),
        };
        let max = u32::try_from(MAX_UPLOADS_PER_ACCOUNT).unwrap_or(u32::MAX);
        match self.store().insert_upload(&record, max, now()).await.map_err(store_err)? {
            Ok(()) => Ok(id),
            Err(Refused::QuotaExceeded) => Err(UploadError::TooMany(MAX_UPLOADS_PER_ACCOUNT)),
            Err(other) => Err(UploadError::Store(format!("{other:?}"))),
        }
    }

    /// An upload of `owner`'s that has not expired.
    pub async fn upload_state(&self, owner: AccountId, id: &str) -> Result<UploadState, UploadError> {
        if !valid_id(id) {
            return Err(UploadError::NotFound);
        }
        let record = self.store().get_upload(id).await.map_err(store_err)?.ok_or(UploadError::NotFound)?;
        if record.owner != owner {
            return Err(UploadError::NotFound);
        }
        if record.expires_at < now() {
            return Err(UploadError::Expired);
        }
        UploadState::from_record(record)
    }

    /// Every upload (expired ones included), with its id; one whose record cannot be read is
    /// left out.
    pub async fn uploads(&self) -> Result<Vec<(String, UploadState)>, UploadError> {
        let records = self.store().list_uploads().await.map_err(store_err)?;
        Ok(records.into_iter().filter_map(|r| Some((r.id.clone(), UploadState::from_record(r).ok()?))).collect())
    }

    /// When an upload appended to now expires.
    fn upload_expiry_from_now(&self) -> Timestamp {
        Timestamp(now().0.saturating_add(i64::try_from(self.data().upload_expiry_secs).unwrap_or(i64::MAX)))
    }

    /// Bytes `owner`'s live uploads hold (their sizes so far).
    pub async fn upload_bytes(&self, owner: AccountId) -> Result<u64, UploadError> {
        let sizes = self.store().live_upload_sizes(owner, now()).await.map_err(store_err)?;
        Ok(sizes.into_iter().fold(0u64, u64::saturating_add))
    }

    /// Forgets an upload (its blocks stay until GC finds them unreferenced).
    pub async fn remove_upload(&self, id: &str) -> Result<(), UploadError> {
        self.store().delete_upload(id).await.map(|_| ()).map_err(store_err)
    }

    /// Moves uploads an earlier version kept as files in `DATA_DIR/uploads` into the store
    /// (then removes the files), so that an upload in progress survives the upgrade.
    pub(crate) async fn adopt_local_uploads(&self) -> Result<usize, UploadError> {
        let dir = self.data().uploads_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
        let mut adopted = 0;
        for id in entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".owner").map(str::to_owned)) {
            let (owner_path, manifest_path) = (dir.join(format!("{id}.owner")), dir.join(format!("{id}.manifest")));
            if let Some(record) = local_upload(&id, &owner_path, &manifest_path, self.upload_expiry_from_now()) {
                if self.store().insert_upload(&record, u32::MAX, now()).await.map_err(store_err)?.is_ok() {
                    adopted += 1;
                }
            }
            let _ = std::fs::remove_file(&manifest_path);
            let _ = std::fs::remove_file(&owner_path);
        }
        Ok(adopted)
    }
    /// Starts an append at `offset`, which must be the upload's size and a block boundary.
    /// The append may add at most what the owner's storage quota has room for.
    pub async fn upload_writer(&self, owner: AccountId, id: &str, offset: u64) -> Result<UploadWriter, UploadError> {
        let state = self.upload_state(owner, id).await?;
        let room = self.storage_room(owner).await.map_err(store_err)?;
        if offset != state.manifest.virtual_size {
            return Err(UploadError::WrongOffset { expected: state.manifest.virtual_size });
        }
        if !offset.is_multiple_of(BLOCK_SIZE as u64) {
            return Err(UploadError::Misaligned);
        }
        Ok(UploadWriter {
            service: self.clone(),
            id: id.to_owned(),
            store: self.data().region_blocks(&state.region),
            start: offset,
            state,
            pending: Vec::new(),
            pending_len: 0,
            next_index: usize::try_from(offset / BLOCK_SIZE as u64).unwrap_or(0),
            puts: JoinSet::new(),
            done: Vec::new(),
            received: 0,
            room,
        })
    }
}

/// An upload an earlier version kept as two files: `ID.owner` (owner, region, nonce in hex,
/// expiry, one a line) and `ID.manifest`.
fn local_upload(id: &str, owner_path: &Path, manifest_path: &Path, default_expiry: Timestamp) -> Option<UploadRecord> {
    if !valid_id(id) {
        return None;
    }
    let meta = std::fs::read_to_string(owner_path).ok()?;
    let mut lines = meta.lines();
    let owner = AccountId::parse(lines.next()?).ok()?;
    let region = lines.next()?.to_owned();
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(lines.next()?, &mut nonce).ok()?;
    let expires_at = lines.next().and_then(|e| e.parse().ok()).map_or(default_expiry, Timestamp);
    let manifest = std::fs::read(manifest_path).ok()?;
    let size = Manifest::decode(&manifest).ok()?.virtual_size;
    Some(UploadRecord { id: id.to_owned(), owner, region, nonce, size, manifest, expires_at })
}

type BlockOutcome = Result<(usize, Option<(Digest, u64)>), String>;

/// One append in progress.
pub struct UploadWriter {
    service: Service,
    id: String,
    store: BlockStore,
    /// The upload's size when this append began.
    start: u64,
    state: UploadState,
    /// The bytes of the block being filled, as received.
    pending: Vec<Bytes>,
    pending_len: usize,
    next_index: usize,
    puts: JoinSet<BlockOutcome>,
    done: Vec<(usize, Option<(Digest, u64)>)>,
    received: u64,
    /// Bytes the owner's storage quota has room for.
    room: u64,
}

impl UploadWriter {
    async fn settle_one(&mut self) -> Result<(), UploadError> {
        if let Some(r) = self.puts.join_next().await {
            let outcome = r.map_err(|e| UploadError::Store(e.to_string()))?.map_err(UploadError::Store)?;
            self.done.push(outcome);
        }
        Ok(())
    }

    async fn submit(&mut self, parts: Vec<Bytes>) -> Result<(), UploadError> {
        while self.puts.len() >= IN_FLIGHT {
            self.settle_one().await?;
        }
        let index = self.next_index;
        self.next_index += 1;
        let store = self.store.clone();
        self.puts.spawn(async move {
            let (digest, parts) = tokio::task::spawn_blocking(move || {
                let zero = parts.iter().all(|p| is_zero(p));
                ((!zero).then(|| Digest::of_parts(&parts)), parts)
            })
            .await
            .map_err(|e| e.to_string())?;
            let Some(digest) = digest else { return Ok((index, None)) };
            // A block the store has needs no compression and no write.
            if store.contains(&digest).await.map_err(|e| e.to_string())? {
                return Ok((index, Some((digest, 0))));
            }
            let parts =
                tokio::task::spawn_blocking(move || block::encode_parts(parts)).await.map_err(|e| e.to_string())?;
            let len = parts.iter().map(|p| p.len() as u64).sum();
            store.put_parts(&digest, parts).await.map_err(|e| e.to_string())?;
            Ok((index, Some((digest, len))))
        });
        Ok(())
    }

    fn check_limit(&self, more: u64) -> Result<(), UploadError> {
        let total = self.state.manifest.virtual_size.checked_add(self.received).and_then(|t| t.checked_add(more));
        match total {
            Some(t) if t > self.service.data().max_virtual_size => Err(UploadError::TooLarge),
            None => Err(UploadError::TooLarge),
            Some(_) if self.received.saturating_add(more) > self.room => Err(UploadError::QuotaExceeded),
            Some(_) => Ok(()),
        }
    }

    /// Adds bytes. They are kept as they arrived (no copy) until they fill a block.
    pub async fn write(&mut self, mut chunk: Bytes) -> Result<(), UploadError> {
        self.check_limit(chunk.len() as u64)?;
        self.received += chunk.len() as u64;
        while !chunk.is_empty() {
            let take = (BLOCK_SIZE - self.pending_len).min(chunk.len());
            self.pending.push(chunk.split_to(take));
            self.pending_len += take;
            if self.pending_len == BLOCK_SIZE {
                self.pending_len = 0;
                let full = std::mem::take(&mut self.pending);
                self.submit(full).await?;
            }
        }
        Ok(())
    }

    /// Adds whole blocks the store already holds, by digest, each with the caller's proof that
    /// it has the bytes ([`possession_proof`] under this upload's nonce). Blocks are read back
    /// (and so verified) to check the proofs, several at a time; the longest accepted prefix is
    /// added. Returns how many were.
    pub async fn reference(&mut self, refs: &[([u8; 32], [u8; 32])]) -> Result<usize, UploadError> {
        if self.pending_len != 0 {
            return Err(UploadError::Misaligned);
        }
        self.check_limit((refs.len() * BLOCK_SIZE) as u64)?;
        let nonce = self.state.nonce;
        let mut verdicts = vec![false; refs.len()];
        let mut checks = JoinSet::new();
        let mut settle = |r: Option<Result<(usize, bool), tokio::task::JoinError>>| {
            if let Some(Ok((i, ok))) = r {
                verdicts[i] = ok;
            }
        };
        for (i, (digest, proof)) in refs.iter().copied().enumerate() {
            let digest = Digest(digest);
            if checks.len() >= IN_FLIGHT {
                settle(checks.join_next().await);
            }
            let store = self.store.clone();
            checks.spawn(async move {
                let Ok(data) = store.get_bytes(&digest).await else { return (i, false) };
                let ok = tokio::task::spawn_blocking(move || possession_proof(&nonce, &data) == proof)
                    .await
                    .unwrap_or(false);
                (i, ok)
            });
        }
        while !checks.is_empty() {
            settle(checks.join_next().await);
        }
        let accepted = verdicts.iter().take_while(|ok| **ok).count();
        for (digest, _) in &refs[..accepted] {
            self.done.push((self.next_index, Some((Digest(*digest), 0))));
            self.next_index += 1;
        }
        self.received += (accepted * BLOCK_SIZE) as u64;
        Ok(accepted)
    }

    /// Adds `len` zero bytes without storing anything (whole blocks, or the final short one).
    pub fn zero(&mut self, len: u64) -> Result<(), UploadError> {
        if self.pending_len != 0 || self.received != 0 {
            return Err(UploadError::Misaligned);
        }
        self.check_limit(len)?;
        self.received = len;
        Ok(())
    }

    /// Completes the append: waits for its blocks, records them, saves the upload. Returns the
    /// upload's new size.
    pub async fn finish(mut self) -> Result<u64, UploadError> {
        if self.pending_len != 0 {
            self.pending_len = 0;
            let last = std::mem::take(&mut self.pending);
            self.submit(last).await?;
        }
        while !self.puts.is_empty() {
            self.settle_one().await?;
        }
        let m = &mut self.state.manifest;
        // Bounded by check_limit: every byte received was checked against the size cap.
        let new_size = m.virtual_size.saturating_add(self.received);
        let blocks = usize::try_from(new_size.div_ceil(BLOCK_SIZE as u64)).unwrap_or(0);
        m.blocks.resize(blocks, None);
        m.virtual_size = new_size;
        let mut touches = Vec::new();
        for (index, entry) in std::mem::take(&mut self.done) {
            if let Some(slot) = m.blocks.get_mut(index) {
                *slot = entry.map(|(d, _)| d);
            }
            if let Some((d, len)) = entry {
                touches.push((d.to_hex(), len));
            }
        }
        if !touches.is_empty() {
            self.service
                .store()
                .touch_blocks(&self.state.region, &touches, now())
                .await
                .map_err(|e| UploadError::Store(e.to_string()))?;
        }
        // Each append pushes the expiry back; it lands only if no other append (on this
        // server or another) continued the upload meanwhile.
        let saved = self
            .service
            .store()
            .save_upload(&self.id, self.start, &m.encode(), new_size, self.service.upload_expiry_from_now())
            .await
            .map_err(store_err)?;
        if !saved {
            let now_size = self.service.store().get_upload(&self.id).await.map_err(store_err)?.map(|r| r.size);
            return Err(now_size.map_or(UploadError::NotFound, |expected| UploadError::WrongOffset { expected }));
        }
        Ok(new_size)
    }
}

/// Random access to the bytes a manifest describes, reading (and verifying) blocks from the
/// store on demand; for use on a blocking thread inside the runtime.
pub struct ManifestReader {
    store: BlockStore,
    manifest: Arc<Manifest>,
    handle: tokio::runtime::Handle,
    cache: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
}

impl ManifestReader {
    /// A reader of `manifest`'s bytes in `store`; `handle` runs the store's async reads.
    pub fn new(store: BlockStore, manifest: Arc<Manifest>, handle: tokio::runtime::Handle) -> Self {
        Self { store, manifest, handle, cache: Mutex::new(VecDeque::new()) }
    }

    fn block(&self, index: usize) -> std::io::Result<Option<Arc<Vec<u8>>>> {
        let Some(Some(digest)) = self.manifest.blocks.get(index) else { return Ok(None) };
        if let Ok(cache) = self.cache.lock() {
            if let Some((_, data)) = cache.iter().find(|(i, _)| *i == index) {
                return Ok(Some(Arc::clone(data)));
            }
        }
        let data = self.handle.block_on(self.store.get(digest)).map_err(|e| std::io::Error::other(e.to_string()))?;
        let data = Arc::new(data);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= READER_CACHE_BLOCKS {
                cache.pop_front();
            }
            cache.push_back((index, Arc::clone(&data)));
        }
        Ok(Some(data))
    }
}

impl ReadAt for ManifestReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.manifest.virtual_size;
        if offset >= size {
            return Ok(0);
        }
        let n = usize::try_from((size - offset).min(buf.len() as u64)).unwrap_or(0);
        let bs = u64::from(self.manifest.block_size);
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let index = usize::try_from(pos / bs).unwrap_or(usize::MAX);
            let within = usize::try_from(pos % bs).unwrap_or(0);
            let take = (usize::try_from(bs).unwrap_or(0) - within).min(n - done);
            match self.block(index)? {
                None => buf[done..done + take].fill(0),
                Some(data) => {
                    let avail = data.len().saturating_sub(within).min(take);
                    buf[done..done + avail].copy_from_slice(&data[within..within + avail]);
                    buf[done + avail..done + take].fill(0);
                }
            }
            done += take;
        }
        Ok(n)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.manifest.virtual_size)
    }
}
