//! The job runner: workers claim durable jobs with a lease, renew it while they work (recording
//! progress), and finish them. A worker that dies loses its lease and another takes the job
//! over from the start; every job is written to be re-run safely. Leases are kept by the
//! database's clock, and every write a job makes (its progress, its image's state, its
//! instances, its end) is fenced by its lease ([`JobFence`]): a worker that lost the job
//! writes nothing more, and one that could not confirm a renewal within its lease stops. A
//! failed run is retried after a back-off; a job that keeps failing is given up after
//! [`MAX_ATTEMPTS`], and what it was filling is marked failed. Jobs pinned to a host (an
//! instance's) are claimed only by that host's workers.

use std::sync::Arc;
use std::time::Duration;

use imaged_domain::ImageState;
use imaged_metastore::{JobFence, JobRecord, JobState};

use crate::ingest::Progress;
use crate::service::{now, Service};

/// Claims of one job before it is given up.
pub const MAX_ATTEMPTS: u32 = 3;
/// The wait before the first retry of a failed run; it doubles with every attempt.
const RETRY_BASE_MS: u64 = 500;
/// The longest wait before a retry.
const RETRY_MAX_MS: u64 = 60_000;

/// How long a job that failed its `attempts`-th run waits before it may be claimed again.
pub fn retry_delay_ms(attempts: u32) -> u64 {
    RETRY_BASE_MS.saturating_mul(1u64 << attempts.saturating_sub(1).min(20)).min(RETRY_MAX_MS)
}

/// Jobs that move an image's bytes and may take long: imports, exports, captures, copies.
pub const TRANSFER_KINDS: &[&str] = &["import", "export", "capture", "sync"];
/// Short jobs: instance launches and start/stop/reboot/reset/terminate, and message
/// deliveries.
pub const INSTANCE_KINDS: &[&str] = &["launch", "instance", "notify"];

/// The job workers of one server: a pool per kind of work, so that long transfers never hold
/// the workers short instance operations need, and a cap on the transfers one account may run
/// at once, so that one tenant cannot hold every transfer worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerPools {
    /// Workers for [`TRANSFER_KINDS`].
    pub transfer: usize,
    /// Workers for [`INSTANCE_KINDS`].
    pub instance: usize,
    /// Jobs of one account one pool runs at once (at most).
    pub per_account: u32,
}

impl Default for WorkerPools {
    fn default() -> Self {
        Self { transfer: 4, instance: 2, per_account: 2 }
    }
}

/// How a run of a job ended early.
enum Interrupted {
    /// Another worker holds the job now.
    LeaseLost,
    /// What the job fills was deleted: the job is over.
    Cancelled,
}

/// Why a job run failed, and whether trying again could help.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// What went wrong, for the user.
    pub message: String,
    /// True when a retry cannot help (bad input).
    pub permanent: bool,
}

impl JobFailure {
    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: true }
    }

    /// A failure worth retrying (I/O, database).
    pub fn retry(cause: impl std::fmt::Display) -> Self {
        Self { message: cause.to_string(), permanent: false }
    }
}

impl Service {
    /// Starts the job workers of `pools` on the current runtime.
    pub fn spawn_job_workers(&self, pools: WorkerPools) {
        // Jobs queued by other servers wake these workers too.
        self.store().watch_jobs(Arc::clone(self.wake_handle()));
        let classes = [(TRANSFER_KINDS, pools.transfer, "t"), (INSTANCE_KINDS, pools.instance, "i")];
        for (kinds, count, tag) in classes {
            for n in 0..count {
                let svc = self.clone();
                let name = format!("{}-{tag}{n}", self.worker_id());
                let per_account = pools.per_account.max(1);
                tokio::spawn(async move { svc.worker_loop(name, kinds, per_account).await });
            }
        }
    }

    async fn worker_loop(self, name: String, kinds: &'static [&'static str], per_account: u32) {
        loop {
            let lease_ms = self.lease_ms();
            match self.store().claim_job(&name, self.host_name(), kinds, per_account, lease_ms, now()).await {
                Ok(Some(job)) => self.run_job(job).await,
                Ok(None) => {
                    tokio::select! {
                        () = self.wakeup().notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("claiming a job failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn lease_ms(&self) -> u64 {
        self.data().job_lease_secs.saturating_mul(1000).max(1000)
    }

    async fn run_job(&self, job: JobRecord) {
        let fence = job.fence();
        tracing::info!(job = job.id, kind = %job.kind, attempt = job.attempts, "job started");
        let outcome = if job.attempts > MAX_ATTEMPTS {
            Err(JobFailure::permanent(format!("gave up after {MAX_ATTEMPTS} attempts")))
        } else {
            let progress = Arc::new(Progress::default());
            let work = self.execute(&job, Arc::clone(&progress));
            let renew = self.keep_lease(&fence, &job, &progress);
            tokio::select! {
                r = work => r,
                why = renew => {
                    progress.cancel();
                    match why {
                        Interrupted::LeaseLost => {
                            tracing::warn!(job = job.id, "lost the lease; another worker has the job");
                            return;
                        }
                        Interrupted::Cancelled => {
                            tracing::info!(job = job.id, "job cancelled: its image was deleted");
                            let error = "cancelled: the image was deleted";
                            let ended = self.store().finish_job(&fence, JobState::Failed, None, Some(error), 0, now()).await;
                            if let Err(e) = ended {
                                tracing::warn!(job = job.id, "recording the job's end failed: {e}");
                            }
                            return;
                        }
                    }
                }
            }
        };
        // What tenants read (FailureReason, ErrorMsg, task errors) never names the server's files.
        let outcome = outcome.map_err(|f| JobFailure { message: self.redact_paths(&f.message), ..f });
        let finished = match &outcome {
            Ok(result) => self.store().finish_job(&fence, JobState::Succeeded, Some(result), None, 0, now()).await,
            Err(f) if f.permanent || job.attempts >= MAX_ATTEMPTS => {
                self.fail_job_target(&job, &f.message).await;
                self.store().finish_job(&fence, JobState::Failed, None, Some(&f.message), 0, now()).await
            }
            Err(f) => {
                let delay = retry_delay_ms(job.attempts);
                tracing::warn!(job = job.id, delay_ms = delay, "job failed, will retry: {}", f.message);
                self.store().finish_job(&fence, JobState::Queued, None, Some(&f.message), delay, now()).await
            }
        };
        if let Err(e) = finished {
            tracing::warn!(job = job.id, "recording the job's end failed: {e}");
        }
        match outcome {
            Ok(_) => tracing::info!(job = job.id, "job succeeded"),
            Err(f) => tracing::info!(job = job.id, "job failed: {}", f.message),
        }
    }

    async fn execute(&self, job: &JobRecord, progress: Arc<Progress>) -> Result<String, JobFailure> {
        match job.kind.as_str() {
            "import" => self.run_import(job, progress).await,
            "export" => self.run_export(job, progress).await,
            "capture" => self.run_capture(job, progress).await,
            "launch" => self.run_launch(job).await,
            "instance" => self.run_instance_op(job).await,
            "sync" => self.run_sync(job, progress).await,
            "notify" => self.run_notify(job).await,
            other => Err(JobFailure::permanent(format!("unknown job kind `{other}`"))),
        }
    }

    /// Renews the lease every third of its length (at least once a second, so progress stays
    /// fresh), recording progress on the job and on the image it fills or copies; returns only
    /// when the lease is lost (another worker holds it, or no renewal was confirmed within the
    /// lease, so another may), or when the image an import fills was deleted (cancelled).
    async fn keep_lease(&self, fence: &JobFence, job: &JobRecord, progress: &Progress) -> Interrupted {
        let lease = Duration::from_millis(self.lease_ms());
        let period = (lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(1));
        let mut confirmed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(period).await;
            let pct = progress.percent();
            let asked = tokio::time::Instant::now();
            match self.store().renew_job(fence, pct, self.lease_ms(), now()).await {
                Ok(true) => confirmed = asked,
                Ok(false) => return Interrupted::LeaseLost,
                Err(e) => tracing::warn!(job = job.id, "renewing the lease failed: {e}"),
            }
            // Stop before the lease could have lapsed: a margin of one period for the clocks.
            if confirmed.elapsed() + period >= lease {
                tracing::warn!(job = job.id, "no renewal confirmed within the lease: stopping");
                return Interrupted::LeaseLost;
            }
            if let Some(id) = &job.image {
                let found = self.store().get_image(id).await;
                if job.kind == "import" && matches!(found, Ok(None)) {
                    return Interrupted::Cancelled;
                }
                if let Ok(Some(mut image)) = found {
                    let state = image.state;
                    let field = match state {
                        ImageState::Importing | ImageState::Creating => &mut image.progress,
                        ImageState::Syncing => &mut image.sync_percent,
                        _ => continue,
                    };
                    if *field != Some(pct) {
                        *field = Some(pct);
                        // Only while the job has not moved the image on meanwhile.
                        let _ = self.store().update_image_if_state(&image, state, Some(fence)).await;
                    }
                }
            }
        }
    }

    /// `message` with the server's own directories (data, import, buckets) replaced by a
    /// placeholder: a failure's text may quote a tool that names files.
    fn redact_paths(&self, message: &str) -> String {
        let data = self.data();
        let bucket_dirs: Vec<&std::path::Path> = data.buckets.values().filter_map(|b| b.dir()).collect();
        let mut dirs: Vec<String> = std::iter::once(data.data_dir.as_path())
            .chain(data.import_dir.as_deref())
            .chain(bucket_dirs)
            .flat_map(|d| [d.canonicalize().ok(), Some(d.to_path_buf())])
            .flatten()
            .map(|d| d.to_string_lossy().into_owned())
            .filter(|d| d.len() > 1)
            .collect();
        // Longest first, so that a directory inside another is replaced whole.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        dirs.iter().fold(message.to_owned(), |text, dir| text.replace(dir.as_str(), "<server>"))
    }

    /// Marks what a failed job was filling or operating on as failed, with the reason: the
    /// image (CREATEFAILED, IMPORTFAILED) and the instances whose operation it carried.
    async fn fail_job_target(&self, job: &JobRecord, message: &str) {
        match job.kind.as_str() {
            "launch" | "instance" => self.fail_instances(job, message).await,
            "capture" => self.fail_capture(job, message).await,
            // The job's image is the copy's source, which stays usable.
            "sync" => return self.fail_sync(job, message).await,
            _ => {}
        }
        if let Some(id) = &job.image {
            self.fail_image(id, message, Some(&job.fence())).await;
        }
    }

    /// Marks an image that was being imported or created as failed, with the reason, and
    /// releases what its manifest held.
    pub(crate) async fn fail_image(&self, id: &imaged_domain::ImageId, message: &str, fence: Option<&JobFence>) {
        let Ok(Some(mut image)) = self.store().get_image(id).await else { return };
        let failed = match image.state {
            ImageState::Importing => ImageState::ImportFailed,
            ImageState::Creating => ImageState::CreateFailed,
            _ => return,
        };
        let was = image.state;
        if self.store().detach_manifest(id, fence).await.is_err() {
            return; // the lease is lost: the new owner decides
        }
        image.state = failed;
        image.failure_reason = Some(message.to_owned());
        image.progress = None;
        // Only if it is still in progress (a deleted image stays deleted).
        if let Err(e) = self.store().update_image_if_state(&image, was, fence).await {
            tracing::warn!(image = %id, "marking the image failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataConfig;
    use crate::MasterKey;
    use imaged_domain::rules::Limits;
    use imaged_domain::RegionCatalog;
    use imaged_metastore::sqlite::SqliteStore;

    #[tokio::test]
    async fn failure_texts_never_name_the_servers_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("meta.db")).await.expect("open");
        let mut data = DataConfig::local(dir.path()).expect("data");
        let imports = tempfile::tempdir().expect("imports");
        data.import_dir = Some(imports.path().to_owned());
        let svc = Service::new(
            Arc::new(store),
            RegionCatalog::default(),
            Limits::default(),
            MasterKey::from_bytes([1; 32]),
            data,
        );
        let scratch = dir.path().join("scratch/job-7/download");
        let text = format!(
            "qemu-img: Could not open '{}': Invalid argument; see {}/x.vmdk",
            scratch.display(),
            imports.path().display()
        );
        let redacted = svc.redact_paths(&text);
        assert_eq!(
            redacted,
            "qemu-img: Could not open '<server>/scratch/job-7/download': Invalid argument; see <server>/x.vmdk"
        );
        assert_eq!(svc.redact_paths("HTTP 404"), "HTTP 404");
    }
}
