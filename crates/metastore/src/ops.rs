//! What operating a deployment reads from the metadata store: whether it answers, the jobs by
//! kind and state, and the last GC and fsck results per region (the operator's commands write
//! them; every server's `/metrics` reads them): [`OpsStore`].

use async_trait::async_trait;
use imaged_domain::time::Timestamp;

use crate::{JobState, Result};

/// The jobs of one kind in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    /// The kind (`import`, `launch`, …).
    pub kind: String,
    /// The state.
    pub state: JobState,
    /// How many.
    pub count: u64,
    /// When the oldest of them was created.
    pub oldest: Timestamp,
}

/// The last run of a maintenance pass in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// `gc` or `fsck`.
    pub kind: String,
    /// The region (`public` is the catalogue's store).
    pub region: String,
    /// When it ended.
    pub at: Timestamp,
    /// Blocks it looked at (fsck: re-hashed; gc: deleted).
    pub blocks: u64,
    /// Problems it found (fsck: damaged or missing blocks).
    pub problems: u64,
}

/// Operations' reads and the maintenance record.
#[async_trait]
pub trait OpsStore: Send + Sync {
    /// One round trip to the database (readiness).
    async fn ping(&self) -> Result<()>;
    /// Jobs counted by kind and state.
    async fn job_counts(&self) -> Result<Vec<JobCount>>;
    /// Records (replacing the previous one) a maintenance pass's result.
    async fn record_maintenance(&self, report: &MaintenanceReport) -> Result<()>;
    /// The last result of every pass in every region.
    async fn maintenance_reports(&self) -> Result<Vec<MaintenanceReport>>;
}
