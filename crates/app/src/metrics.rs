//! What an operator watches: requests by action and error code with their latency (counted by
//! this server), and, read from the shared stores at each scrape, jobs by kind and state, the
//! age of the oldest queued job, every region's stored blocks and bytes, and the last GC and
//! fsck results; rendered in the OpenMetrics text format Prometheus scrapes. Readiness: whether
//! the database and the object store answer.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::service::{now, AppError, Service};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabel {
    region: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The label of an action whose name cannot be trusted to be one (unauthenticated or unknown
/// requests), so that nobody can make the label set grow without bound.
pub const UNNAMED_ACTION: &str = "-";

/// The metrics of one server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<ActionLabel, Histogram, fn() -> Histogram>,
    jobs: Family<JobLabels, Gauge>,
    queue_age: Family<KindLabel, Gauge>,
    block_objects: Family<RegionLabel, Gauge>,
    block_bytes: Family<RegionLabel, Gauge>,
    gc_deleted: Family<RegionLabel, Gauge>,
    gc_at: Family<RegionLabel, Gauge>,
    fsck_checked: Family<RegionLabel, Gauge>,
    fsck_bad: Family<RegionLabel, Gauge>,
    fsck_at: Family<RegionLabel, Gauge>,
    /// Scrapes refill the gauges: one at a time.
    scrape: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("imaged");
        let m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            jobs: Family::default(),
            queue_age: Family::default(),
            block_objects: Family::default(),
            block_bytes: Family::default(),
            gc_deleted: Family::default(),
            gc_at: Family::default(),
            fsck_checked: Family::default(),
            fsck_bad: Family::default(),
            fsck_at: Family::default(),
            scrape: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register("requests", "API requests answered, by action and error code", m.requests.clone());
        registry.register("request_duration_seconds", "Time to answer an API request", m.latency.clone());
        registry.register("jobs", "Durable jobs by kind and state (every server's)", m.jobs.clone());
        registry.register("job_queue_age_seconds", "Age of the oldest queued job, by kind", m.queue_age.clone());
        registry.register("block_store_objects", "Blocks stored, by region", m.block_objects.clone());
        registry.register("block_store_bytes", "Bytes of blocks stored, by region", m.block_bytes.clone());
        registry.register("gc_deleted_blocks", "Blocks the last GC deleted, by region", m.gc_deleted.clone());
        registry.register("gc_last_run_timestamp_seconds", "When the last GC ended", m.gc_at.clone());
        registry.register("fsck_checked_blocks", "Blocks the last fsck re-hashed", m.fsck_checked.clone());
        registry.register("fsck_bad_blocks", "Damaged or missing blocks the last fsck found", m.fsck_bad.clone());
        registry.register("fsck_last_run_timestamp_seconds", "When the last fsck ended", m.fsck_at.clone());
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Counts one answered request (`code` is `Success` or the error code).
    pub fn record_request(&self, action: &str, code: &str, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { action: action.to_owned(), code: code.to_owned() }).inc();
        self.latency.get_or_create(&ActionLabel { action: action.to_owned() }).observe(seconds);
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether a server's dependencies answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The metadata database: `None` when it answers, else why not.
    pub database: Option<String>,
    /// The object store (the block stores' root): `None` when it answers, else why not.
    pub objects: Option<String>,
}

impl Readiness {
    /// Both answer.
    pub fn ready(&self) -> bool {
        self.database.is_none() && self.objects.is_none()
    }
}

impl Service {
    /// This server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The metrics in the OpenMetrics text format, the shared ones read now.
    pub async fn render_metrics(&self) -> Result<String, AppError> {
        let m = self.metrics();
        let _one = m.scrape.lock().await;
        m.jobs.clear();
        m.queue_age.clear();
        let t = now().0;
        for c in self.store().job_counts().await? {
            let state = c.state.as_str().to_ascii_lowercase();
            m.jobs.get_or_create(&JobLabels { kind: c.kind.clone(), state: state.clone() }).set(gauge_value(c.count));
            if state == "queued" {
                m.queue_age.get_or_create(&KindLabel { kind: c.kind }).set((t - c.oldest.0).max(0));
            }
        }
        for region in self.byte_regions() {
            let (objects, bytes) = self.store().block_totals(&region).await?;
            let label = RegionLabel { region };
            m.block_objects.get_or_create(&label).set(gauge_value(objects));
            m.block_bytes.get_or_create(&label).set(gauge_value(bytes));
        }
        for r in self.store().maintenance_reports().await? {
            let label = RegionLabel { region: r.region };
            let (count, problems, at) = match r.kind.as_str() {
                "gc" => (&m.gc_deleted, None, &m.gc_at),
                _ => (&m.fsck_checked, Some(&m.fsck_bad), &m.fsck_at),
            };
            count.get_or_create(&label).set(gauge_value(r.blocks));
            if let Some(p) = problems {
                p.get_or_create(&label).set(gauge_value(r.problems));
            }
            at.get_or_create(&label).set(r.at.0);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry)
            .map_err(|e| AppError::Conflict(format!("encoding the metrics: {e}")))?;
        Ok(out)
    }

    /// Whether the database and the object store answer (each asked once, with a deadline).
    pub async fn readiness(&self) -> Readiness {
        let deadline = std::time::Duration::from_secs(5);
        let database = match tokio::time::timeout(deadline, self.store().ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 5 s".to_owned()),
        };
        let probe = object_store::path::Path::from("readiness-probe");
        let objects = match tokio::time::timeout(deadline, self.data().objects.head(&probe)).await {
            Ok(Ok(_) | Err(object_store::Error::NotFound { .. })) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 5 s".to_owned()),
        };
        Readiness { database, objects }
    }
}
