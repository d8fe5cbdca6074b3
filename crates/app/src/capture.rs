//! `CreateImage` from an instance: a custom image captured incrementally from the instance's
//! system disk. Only the clusters the overlay holds are read; every 1 MiB block the guest never
//! wrote is the base's block, reused by digest (and copied into the region's store only when
//! the store lacks it, as for a public base). Time and new storage grow with what changed.
//!
//! The instance is busy with `CreateImage` while the capture runs, so nothing resets or
//! terminates it underneath; the capture only reads its disk.

use std::sync::Arc;

use imaged_chunkstore::Digest;
use imaged_domain::import::check_family;
use imaged_domain::instance::{check_operation, final_state, InstanceOp, InstanceRuleError, InstanceState};
use imaged_domain::rules::{validate_image_description, validate_image_name, NameError};
use imaged_domain::{AccountId, Image, ImageId, ImageKind, ImageSource, ImageState, Region, Tag};
use imaged_metastore::{JobRecord, Refused};
use serde::{Deserialize, Serialize};

use crate::ingest::{IngestSource, Progress};
use crate::instances::InstanceError;
use crate::jobs::JobFailure;
use crate::service::{now, AppError, Service};

/// What `CreateImage` asks for.
#[derive(Debug, Clone, Default)]
pub struct CaptureRequest {
    /// `ImageName`.
    pub name: String,
    /// `InstanceId`.
    pub instance_id: String,
    /// `ImageDescription`.
    pub description: Option<String>,
    /// `ForcePoweroff`: stop the instance before capturing it.
    pub force_poweroff: bool,
    /// `ImageFamily`.
    pub family: Option<String>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Validate only.
    pub dry_run: bool,
}

/// Why `CreateImage` is refused.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Name or description.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A malformed family.
    #[error("malformed image family `{0}`")]
    Family(String),
    /// The instance cannot be captured.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// Quota.
    #[error("the custom image quota of this region is used up")]
    Quota,
    /// Name taken.
    #[error("an image named `{0}` already exists")]
    DuplicateName(String),
}

impl From<AppError> for CaptureError {
    fn from(e: AppError) -> Self {
        Self::Instance(InstanceError::App(e))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CaptureParams {
    instance: imaged_domain::InstanceId,
    force_poweroff: bool,
    /// The instance's state when the capture began (it returns to it, or to STOPPED).
    started_in: InstanceState,
}

impl CaptureParams {
    /// The state the instance is left in when the capture ends, done or given up: stopped
    /// after a forced power-off, else as it was.
    fn end_state(&self) -> InstanceState {
        if self.force_poweroff {
            InstanceState::Stopped
        } else {
            final_state(InstanceOp::CreateImage, self.started_in)
        }
    }
}

impl Service {
    /// `CreateImage` from an instance: validates, then inserts the CREATING image, begins the
    /// instance's `CreateImage` operation and queues the capture, in one transaction (quota,
    /// name and the instance's idleness checked there).
    pub async fn create_image(
        &self,
        caller: AccountId,
        region: &Region,
        req: CaptureRequest,
        request_id: &str,
    ) -> Result<Option<ImageId>, CaptureError> {
        validate_image_name(&req.name)?;
        if let Some(d) = &req.description {
            validate_image_description(d)?;
        }
        if let Some(f) = &req.family {
            check_family(f).map_err(|_| CaptureError::Family(f.clone()))?;
        }
        let mut instance = self.own_instance(caller, region, &req.instance_id).await?;
        check_operation(&instance, InstanceOp::CreateImage).map_err(InstanceError::from)?;
        let source = self
            .store()
            .get_image(&instance.image_id)
            .await
            .map_err(AppError::from)?
            .ok_or_else(|| InstanceError::ImageNotFound(instance.image_id.to_string()))?;
        let quota = self.image_quota(caller).await?;
        if req.dry_run {
            let used = self.store().count_custom_images(caller, &region.region).await.map_err(AppError::from)?;
            return if used >= u64::from(quota) { Err(CaptureError::Quota) } else { Ok(None) };
        }
        let id = ImageId::from_random(crate::secrets::random_bytes().map_err(AppError::from)?);
        let created = now();
        let image = Image {
            id: id.clone(),
            region: Some(region.region.clone()),
            owner: Some(caller),
            kind: ImageKind::Private,
            source: ImageSource::CreateImage,
            state: ImageState::Creating,
            name: req.name.clone(),
            description: req.description.clone().unwrap_or_default(),
            size_gib: instance.system_disk_gib,
            created_at: created,
            family: req.family.clone().unwrap_or_default(),
            deprecated: false,
            tags: req.tags.clone(),
            release_status: imaged_domain::ReleaseStatus::Official,
            remarks: Vec::new(),
            sync_percent: None,
            failure_reason: None,
            market: None,
            source_format: Some("qcow2".into()),
            progress: Some(0),
            ..source
        };
        let started_in = instance.state;
        instance.begin(InstanceOp::CreateImage, request_id);
        if req.force_poweroff && started_in == InstanceState::Running {
            instance.state = InstanceState::Stopping;
        }
        let params = CaptureParams { instance: instance.id.clone(), force_poweroff: req.force_poweroff, started_in };
        let job = JobRecord::queued(
            "capture",
            &region.region,
            caller,
            Some(id.clone()),
            serde_json::to_string(&params).map_err(|e| AppError::Conflict(e.to_string()))?,
            created,
        )
        // The capture reads the instance's disk: only its host can.
        .on_host(self.host_of(&instance));
        match self.store().begin_capture(&image, quota, &instance, &job).await.map_err(AppError::from)? {
            Ok(_) => {
                self.wake_workers();
                Ok(Some(id))
            }
            Err(Refused::QuotaExceeded) => Err(CaptureError::Quota),
            Err(Refused::DuplicateName) => Err(CaptureError::DuplicateName(req.name)),
            Err(Refused::Busy) => Err(InstanceError::Rule(InstanceRuleError::Busy).into()),
            Err(other) => Err(AppError::Conflict(format!("{other:?}")).into()),
        }
    }

    /// The capture job: the overlay's changed blocks and the base's unchanged ones become the
    /// image's manifest; then the image is NORMAL and the instance's operation ends.
    pub(crate) async fn run_capture(&self, job: &JobRecord, progress: Arc<Progress>) -> Result<String, JobFailure> {
        let params: CaptureParams =
            serde_json::from_str(&job.params).map_err(|e| JobFailure::permanent(format!("bad job parameters: {e}")))?;
        let image_id = job.image.clone().ok_or_else(|| JobFailure::permanent("capture job without an image"))?;
        let mut image = self
            .store()
            .get_image(&image_id)
            .await
            .map_err(JobFailure::retry)?
            .ok_or_else(|| JobFailure::permanent("the image was deleted"))?;
        let mut instance = self
            .store()
            .get_instance(&params.instance)
            .await
            .map_err(JobFailure::retry)?
            .ok_or_else(|| JobFailure::permanent("the instance was terminated"))?;
        if image.state != ImageState::Normal {
            // A previous attempt may have attached its manifest before it died.
            self.store().detach_manifest(&image_id, Some(&job.fence())).await.map_err(JobFailure::retry)?;
            let key = instance.disk_base.clone().ok_or_else(|| JobFailure::permanent("the instance has no disk"))?;
            let base = self.load_base(&key)?;
            let region = image.region.clone().unwrap_or_default();
            let store = self.data().region_blocks(&region);
            // While the instance's image holds this very manifest in this region, its blocks are
            // referenced there, so present; otherwise (a public base, a deleted image) each
            // unchanged block is looked up, and copied from the base when missing.
            let base_present = self
                .store()
                .get_manifest(&instance.image_id)
                .await
                .map_err(JobFailure::retry)?
                .is_some_and(|m| m.region == region && Digest::of(&m.manifest).to_hex() == key);
            let source = IngestSource::Overlay {
                top: self.instance_disk_path(&instance.id),
                base: base.path.clone(),
                base_manifest: Arc::clone(&base.manifest),
                base_present,
            };
            // The capture never reads a disk a running guest is writing: with ForcePoweroff the
            // guest is powered off first (ACPI, then off after the deadline); without it, it is
            // asked to flush (SysRq `s`) and paused, QEMU completing its writes, until the read
            // is done.
            let paused = if params.force_poweroff {
                self.halt_guest(&instance.id, true).await.map_err(JobFailure::retry)?;
                false
            } else {
                let hv = self.hypervisor();
                if let Err(e) = hv.flush(&instance.id).await {
                    tracing::warn!(instance = %instance.id, "asking the guest to flush: {e}");
                }
                hv.pause(&instance.id).await.map_err(JobFailure::retry)?
            };
            let ingested = self.ingest_into(source, &region, progress).await;
            if paused {
                if let Err(e) = self.hypervisor().resume(&instance.id).await {
                    tracing::warn!(instance = %instance.id, "resuming the guest after its capture: {e}");
                }
            }
            let (manifest, stats) = ingested?;
            image.size_gib = manifest.virtual_size.div_ceil(1 << 30);
            let format = imaged_diskfmt::Format::Qcow2;
            self.finish_import(&mut image, manifest, format, &store, &job.fence()).await?;
            tracing::info!(image = %image.id, new_blocks = stats.new_blocks, new_bytes = stats.new_bytes, "captured");
        }
        if instance.busy() && instance.latest_operation == Some(InstanceOp::CreateImage) {
            instance.end(params.end_state(), None);
            self.put_instance_metered(&instance, Some(&job.fence())).await.map_err(JobFailure::retry)?;
        }
        Ok(serde_json::json!({ "ImageId": image.id.to_string() }).to_string())
    }

    /// Ends the instance's `CreateImage` operation of a capture that was given up.
    pub(crate) async fn fail_capture(&self, job: &JobRecord, message: &str) {
        let Ok(params) = serde_json::from_str::<CaptureParams>(&job.params) else { return };
        let Ok(Some(mut instance)) = self.store().get_instance(&params.instance).await else { return };
        if instance.busy() && instance.latest_operation == Some(InstanceOp::CreateImage) {
            instance.end(params.end_state(), Some(message.to_owned()));
            let _ = self.put_instance_metered(&instance, Some(&job.fence())).await;
        }
    }
}
