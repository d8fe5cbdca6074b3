//! Scratch space for jobs' work files (downloads, decompressed streams), bounded per job and per
//! host, written sparsely.
//!
//! A [`SparseFile`] never writes an all-zero run: it leaves a hole, so a stream of zeros costs
//! nothing however long it is. What it does write is charged to its job's [`ScratchBudget`]
//! before it reaches the disk: at most `per_job` bytes per job, and all jobs of the host
//! together at most `share_percent` of the free space the scratch file system would have
//! without them (measured again every [`RECHECK_BYTES`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A job re-reads the file system's free space each time it has written this much more.
pub const RECHECK_BYTES: u64 = 64 << 20;

/// Why scratch space was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScratchError {
    /// The job's own cap.
    #[error("too-large: the image needs more than {0} bytes of work space")]
    Job(u64),
    /// The host's share is used up (by all jobs together); waiting can help.
    #[error("the service's work space is full; the import will be retried")]
    Host,
    /// Writing failed.
    #[error("the service's work space failed")]
    Io(String),
}

impl ScratchError {
    /// Whether waiting can help: a full host or a failed write, not the job's own cap.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Job(_))
    }
}

/// The host's scratch directory and its limits, shared by every job.
#[derive(Debug)]
pub struct ScratchSpace {
    dir: PathBuf,
    per_job: u64,
    share_percent: u64,
    in_use: AtomicU64,
}

impl ScratchSpace {
    /// Scratch in `dir`: at most `per_job` bytes a job, all jobs at most `share_percent` of the
    /// free space.
    pub fn new(dir: PathBuf, per_job: u64, share_percent: u8) -> Arc<Self> {
        Arc::new(Self { dir, per_job, share_percent: u64::from(share_percent.min(100)), in_use: AtomicU64::new(0) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes all jobs hold now.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// A new, empty budget for one job; what it holds is given back when it is dropped.
    pub fn budget(self: &Arc<Self>) -> Arc<ScratchBudget> {
        Arc::new(ScratchBudget { space: Arc::clone(self), used: AtomicU64::new(0), checked_at: AtomicU64::new(0) })
    }

    fn free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// One job's share of the scratch space.
#[derive(Debug)]
pub struct ScratchBudget {
    space: Arc<ScratchSpace>,
    used: AtomicU64,
    checked_at: AtomicU64,
}

impl ScratchBudget {
    /// Takes `n` more bytes, or refuses without taking any.
    pub fn charge(&self, n: u64) -> Result<(), ScratchError> {
        let space = &self.space;
        let used = self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if used > space.per_job {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return Err(ScratchError::Job(space.per_job));
        }
        let in_use = space.in_use.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if used >= self.checked_at.load(Ordering::Relaxed) {
            self.checked_at.store(used.saturating_add(RECHECK_BYTES), Ordering::Relaxed);
            if let Some(free) = space.free_bytes() {
                // What the file system would have free without scratch, times the share.
                let limit = u128::from(free.saturating_add(in_use)) * u128::from(space.share_percent) / 100;
                if u128::from(in_use) > limit {
                    self.release(n);
                    self.checked_at.store(0, Ordering::Relaxed);
                    return Err(ScratchError::Host);
                }
            }
        }
        Ok(())
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: u64) {
        let n = n.min(self.used.load(Ordering::Relaxed));
        self.used.fetch_sub(n, Ordering::Relaxed);
        self.space.in_use.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes this job holds.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

impl Drop for ScratchBudget {
    fn drop(&mut self) {
        self.space.in_use.fetch_sub(self.used.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// A file written front to back in which all-zero runs become holes; the data it writes is
/// charged to a budget first.
#[derive(Debug)]
pub struct SparseFile {
    file: std::fs::File,
    path: PathBuf,
    len: u64,
    data: u64,
    budget: Arc<ScratchBudget>,
}

impl SparseFile {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path, budget: Arc<ScratchBudget>) -> Result<Self, ScratchError> {
        let file = std::fs::File::create(path).map_err(|e| ScratchError::Io(e.to_string()))?;
        Ok(Self { file, path: path.to_owned(), len: 0, data: 0, budget })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of data (not holes) written.
    pub fn data_bytes(&self) -> u64 {
        self.data
    }

    /// Appends `chunk`: a hole if it is all zeros, else data charged to the budget.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ScratchError> {
        let n = chunk.len() as u64;
        if !chunk.iter().all(|&b| b == 0) {
            self.budget.charge(n)?;
            self.data += n;
            self.file.write_all_at(chunk, self.len).map_err(|e| ScratchError::Io(e.to_string()))?;
        }
        self.len = self.len.checked_add(n).ok_or(ScratchError::Job(u64::MAX))?;
        Ok(())
    }

    /// Sets the file's length to what was appended (a trailing hole included).
    pub fn finish(&mut self) -> Result<(), ScratchError> {
        self.file.set_len(self.len).map_err(|e| ScratchError::Io(e.to_string()))
    }

    /// Empties the file and gives its data back to the budget.
    pub fn rewind(&mut self) -> Result<(), ScratchError> {
        self.file.set_len(0).map_err(|e| ScratchError::Io(e.to_string()))?;
        self.budget.release(self.data);
        (self.len, self.data) = (0, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_become_holes_and_only_data_is_charged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = ScratchSpace::new(dir.path().to_owned(), 1 << 30, 100);
        let budget = space.budget();
        let mut f = SparseFile::create(&dir.path().join("f"), Arc::clone(&budget)).expect("create");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            f.write(&zeros).expect("zeros");
        }
        f.write(b"end").expect("data");
        f.finish().expect("finish");
        let meta = std::fs::metadata(dir.path().join("f")).expect("meta");
        assert_eq!(meta.len(), (64 << 20) + 3);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "64 MiB of zeros take no space: {} blocks", meta.blocks());
        assert_eq!(budget.used(), 3);
        assert_eq!(space.in_use(), 3);
        let bytes = std::fs::read(dir.path().join("f")).expect("read");
        assert!(bytes[..64 << 20].iter().all(|&b| b == 0) && bytes.ends_with(b"end"));
        drop(f);
        drop(budget);
        assert_eq!(space.in_use(), 0, "a finished job gives its scratch back");
    }

    #[test]
    fn a_job_over_its_cap_is_refused_without_taking_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = ScratchSpace::new(dir.path().to_owned(), 10, 100);
        let budget = space.budget();
        budget.charge(8).expect("within the cap");
        assert_eq!(budget.charge(3), Err(ScratchError::Job(10)));
        assert_eq!((budget.used(), space.in_use()), (8, 8));
    }

    #[test]
    fn all_jobs_together_stay_within_the_hosts_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = ScratchSpace::new(dir.path().to_owned(), u64::MAX, 0);
        let budget = space.budget();
        assert_eq!(budget.charge(1), Err(ScratchError::Host), "a 0 % share admits nothing");
        assert_eq!(space.in_use(), 0);
        let roomy = ScratchSpace::new(dir.path().to_owned(), u64::MAX, 50);
        let (a, b) = (roomy.budget(), roomy.budget());
        a.charge(1 << 20).expect("a little");
        let free = roomy.free_bytes().expect("statvfs");
        assert_eq!(b.charge(free), Err(ScratchError::Host), "more than half the free space is refused");
        assert_eq!(roomy.in_use(), 1 << 20);
    }
}
