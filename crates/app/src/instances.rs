//! Instances on this deployment's own hosts: `RunInstances`, `DescribeInstances`, start, stop,
//! reboot, `ResetInstance` and terminate, each asynchronous through a durable job, and the
//! system disks behind them.
//!
//! An image's virtual disk is materialised once per host as a read-only sparse raw *base* in
//! `DATA_DIR/bases/<key>.raw`, keyed by the digest of its manifest (images with the same bytes
//! share one base), with the manifest beside it (`<key>.manifest`) so that a capture knows
//! which blocks the base holds even after the image is deleted. Each instance's system disk is a
//! qcow2 overlay on its base (`DATA_DIR/instances/<id>/system.qcow2`, backing path relative), so
//! launching 100 instances costs one base and 100 small overlays. A base is never written once
//! made; `imaged gc` removes the bases no instance's disk sits on once they are older than the
//! grace period (reusing a base makes it young again).

use std::path::PathBuf;
use std::sync::Arc;

use imaged_chunkstore::{Digest, Manifest};
use imaged_domain::instance::{
    batch_names, check_client_token, check_instance_count, check_operation, check_system_disk, final_state, Guest,
    Instance, InstanceOp, InstanceQuery, InstanceRuleError, InstanceState, DEFAULT_INSTANCE_TYPE, MAX_BATCH_IDS,
};
use imaged_domain::query::Page;
use imaged_domain::{AccountId, Image, ImageId, ImageState, InstanceId, Region, Tag};
use imaged_metastore::{JobRecord, Refused};
use serde::{Deserialize, Serialize};

use crate::disk::create_overlay;
use crate::exports::materialise;
use crate::ingest::Progress;
use crate::jobs::JobFailure;
use crate::service::{now, AppError, Service};

/// Why an instance request is refused.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The domain's rules (state, busy, count, name, disk size).
    #[error(transparent)]
    Rule(#[from] InstanceRuleError),
    /// The zone is not in the region.
    #[error("the zone `{0}` is not in this region")]
    Zone(String),
    /// A malformed image id.
    #[error("malformed image id `{0}`")]
    ImageMalformed(String),
    /// No image the caller may use has that id here.
    #[error("the image `{0}` does not exist")]
    ImageNotFound(String),
    /// The image is not NORMAL.
    #[error("the image `{0}` is {1}, not NORMAL")]
    ImageState(String, ImageState),
    /// A malformed instance id.
    #[error("malformed instance id `{0}`")]
    InstanceMalformed(String),
    /// No instance of the caller's has that id here.
    #[error("the instance `{0}` does not exist")]
    InstanceNotFound(String),
    /// More than 100 ids.
    #[error("at most {MAX_BATCH_IDS} instance ids are allowed")]
    TooManyIds,
    /// The store or the data plane failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<imaged_metastore::MetaStoreError> for InstanceError {
    fn from(e: imaged_metastore::MetaStoreError) -> Self {
        Self::App(e.into())
    }
}

/// What `RunInstances` asks for.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// `Placement.Zone`.
    pub zone: String,
    /// `ImageId`.
    pub image_id: String,
    /// `InstanceType`.
    pub instance_type: Option<String>,
    /// `InstanceCount`.
    pub count: Option<u64>,
    /// `InstanceName`.
    pub name: Option<String>,
    /// `HostName`.
    pub host_name: Option<String>,
    /// `SystemDisk.DiskSize`, GiB.
    pub system_disk_gib: Option<u64>,
    /// Tags for the instances.
    pub tags: Vec<Tag>,
    /// Validate only.
    pub dry_run: bool,
    /// `ClientToken`: the same token again returns the instances its first call launched.
    pub client_token: Option<String>,
    /// What the guests get at boot.
    pub guest: GuestInput,
}

/// What a launch or a reinstall gives the guest: `UserData` (base64) and
/// `LoginSettings.Password`.
#[derive(Debug, Clone, Default)]
pub struct GuestInput {
    /// `UserData`, base64 (checked by the API).
    pub user_data: Option<String>,
    /// The root password (checked by the API).
    pub password: Option<String>,
}

/// A content-keyed base on this host.
#[derive(Debug, Clone)]
pub struct Base {
    /// The digest of the manifest, hex.
    pub key: String,
    /// The raw file.
    pub path: PathBuf,
    /// The manifest of its bytes.
    pub manifest: Arc<Manifest>,
}

/// The parameters of an instance job (`launch` and `instance`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct InstanceJob {
    /// The operation.
    pub(crate) op: String,
    /// The instances it works on.
    pub(crate) instances: Vec<InstanceId>,
    /// The image (launch, reset).
    pub(crate) image: Option<ImageId>,
    /// `StopType` of a stop or reboot: `SOFT` (the default), `SOFT_FIRST` or `HARD`.
    #[serde(default)]
    pub(crate) stop_type: Option<String>,
}

impl InstanceJob {
    /// Whether the guest is asked to power off first (SOFT and SOFT_FIRST: the ACPI button,
    /// then off after the deadline).
    fn soft(&self) -> bool {
        !self.stop_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("HARD"))
    }
}

fn parse_ids(ids: &[String]) -> Result<Vec<InstanceId>, InstanceError> {
    if ids.len() > MAX_BATCH_IDS {
        return Err(InstanceError::TooManyIds);
    }
    ids.iter().map(|s| InstanceId::parse(s).map_err(|_| InstanceError::InstanceMalformed(s.clone()))).collect()
}

impl Service {
    pub(crate) fn bases_dir(&self) -> PathBuf {
        self.data().data_dir.join("bases")
    }

    /// The system disk of an instance (a qcow2 overlay), whether or not it exists yet.
    pub fn instance_disk_path(&self, id: &InstanceId) -> PathBuf {
        self.data().data_dir.join("instances").join(id.as_str()).join("system.qcow2")
    }

    /// The base of `image` on this host, materialised from its blocks (each verified) the
    /// first time: written under a temporary name, made read-only, then renamed into place.
    pub async fn base_of(&self, image: &ImageId) -> Result<Base, JobFailure> {
        let record = self
            .store()
            .get_manifest(image)
            .await
            .map_err(JobFailure::retry)?
            .ok_or_else(|| JobFailure::permanent(format!("image {image} has no bytes")))?;
        let key = Digest::of(&record.manifest).to_hex();
        if let Ok(base) = self.load_base(&key) {
            // Fresh again for GC's grace period, until the instances it is for record it.
            let touched = std::fs::File::open(&base.path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
            if let Err(e) = touched {
                tracing::warn!(base = %key, "touching a base: {e}");
            }
            return Ok(base);
        }
        let manifest = Manifest::decode(&record.manifest).map_err(|e| JobFailure::permanent(e.to_string()))?;
        let dir = self.bases_dir();
        std::fs::create_dir_all(&dir).map_err(JobFailure::retry)?;
        // A name of this materialisation's own: two jobs may make the same base at once (a
        // launch and a reinstall from one image); each writes its own file, the first rename
        // wins and the other's identical file is dropped.
        let nonce = crate::secrets::random_bytes::<6>().map(hex::encode).map_err(JobFailure::retry)?;
        let tmp = dir.join(format!(".{key}.{}.{nonce}.partial", self.worker_id()));
        let store = self.data().region_blocks(&record.region);
        let made = materialise(&store, &manifest, &tmp, &Progress::default()).await;
        if let Err(f) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(f);
        }
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(JobFailure::retry)?;
        let manifest_tmp = dir.join(format!(".{key}.{}.{nonce}.manifest.partial", self.worker_id()));
        std::fs::write(&manifest_tmp, &record.manifest).map_err(JobFailure::retry)?;
        std::fs::rename(&manifest_tmp, dir.join(format!("{key}.manifest"))).map_err(JobFailure::retry)?;
        let path = dir.join(format!("{key}.raw"));
        if path.is_file() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            std::fs::rename(&tmp, &path).map_err(JobFailure::retry)?;
        }
        self.load_base(&key)
    }

    /// A base already on this host, by key.
    pub(crate) fn load_base(&self, key: &str) -> Result<Base, JobFailure> {
        let path = self.bases_dir().join(format!("{key}.raw"));
        if !path.is_file() {
            return Err(JobFailure::retry(format!("base {key} is not on this host")));
        }
        let bytes = std::fs::read(self.bases_dir().join(format!("{key}.manifest"))).map_err(JobFailure::retry)?;
        let manifest = Manifest::decode(&bytes).map_err(|e| JobFailure::permanent(e.to_string()))?;
        Ok(Base { key: key.to_owned(), path, manifest: Arc::new(manifest) })
    }

    /// Makes `instance`'s system disk a fresh overlay on `base` (replacing any disk it had: the
    /// reinstall of `ResetInstance`), at least as large as the base.
    async fn make_system_disk(&self, instance: &mut Instance, base: &Base) -> Result<(), JobFailure> {
        let dest = self.instance_disk_path(&instance.id);
        let dir = dest.parent().map(PathBuf::from).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(JobFailure::retry)?;
        let size = (instance.system_disk_gib << 30).max(base.manifest.virtual_size);
        let backing = format!("../../bases/{}.raw", base.key);
        tokio::task::spawn_blocking(move || create_overlay(&backing, size, &dest))
            .await
            .map_err(JobFailure::retry)?
            .map_err(|e| JobFailure::retry(e.to_string()))?;
        instance.disk_base = Some(base.key.clone());
        Ok(())
    }

    /// An image `caller` may launch from in `region`: visible to it there (public, marketplace
    /// where offered, its own, or shared with it) and NORMAL.
    pub async fn launchable_image(&self, caller: AccountId, region: &Region, id: &str) -> Result<Image, InstanceError> {
        let parsed = ImageId::parse(id).map_err(|_| InstanceError::ImageMalformed(id.to_owned()))?;
        let (image, _) = self
            .seen_image(caller, region, &parsed)
            .await?
            .ok_or_else(|| InstanceError::ImageNotFound(id.to_owned()))?;
        if image.state != ImageState::Normal {
            return Err(InstanceError::ImageState(id.to_owned(), image.state));
        }
        Ok(image)
    }

    /// `RunInstances`: validates, records the PENDING instances and the job that makes their
    /// disks, in one transaction. Returns the new ids (none for a dry run).
    pub async fn run_instances(
        &self,
        caller: AccountId,
        region: &Region,
        req: RunRequest,
        request_id: &str,
    ) -> Result<Vec<InstanceId>, InstanceError> {
        if let Some(token) = &req.client_token {
            check_client_token(token)?;
            if !req.dry_run && self.store().instances_for_token(caller, token).await?.is_some() {
                return self.launched_with(caller, token).await;
            }
        }
        check_request(region, &req)?;
        let image = self.launchable_image(caller, region, &req.image_id).await?;
        let (instances, params) = self.new_instances(caller, region, &req, &image, request_id)?;
        if req.dry_run {
            return Ok(Vec::new());
        }
        let ids = params.instances.clone();
        let job = self.instance_job("launch", region, caller, &params, self.host_name())?;
        let token = req.client_token.as_deref();
        match self.store().insert_instances_with_job(&instances, &job, token).await? {
            Ok(_) => {
                self.wake_workers();
                Ok(ids)
            }
            // The same request again: its instances, not new ones.
            Err(Refused::DuplicateId) => self.launched_with(caller, token.unwrap_or_default()).await,
            Err(other) => Err(AppError::Conflict(format!("{other:?}")).into()),
        }
    }

    /// The PENDING instances `req` asks for, from `image` (which the caller may launch), and
    /// the parameters of the job that makes their disks; nothing is stored.
    pub(crate) fn new_instances(
        &self,
        caller: AccountId,
        region: &Region,
        req: &RunRequest,
        image: &Image,
        request_id: &str,
    ) -> Result<(Vec<Instance>, InstanceJob), InstanceError> {
        let names = check_request(region, req)?;
        let disk_gib = check_system_disk(req.system_disk_gib, image.size_gib)?;
        let created = now();
        let mut instances = Vec::with_capacity(names.len());
        for name in names {
            let id = InstanceId::from_random(crate::secrets::random_bytes().map_err(AppError::from)?);
            let guest = self.guest_of(&id, &req.guest)?;
            let mut instance = Instance {
                host_name: req.host_name.clone().unwrap_or_else(|| id.to_string()),
                id,
                owner: caller,
                region: region.region.clone(),
                zone: req.zone.clone(),
                name,
                instance_type: req.instance_type.clone().unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into()),
                image_id: image.id.clone(),
                os_name: image.os_name.clone(),
                state: InstanceState::Pending,
                latest_operation: None,
                latest_operation_state: None,
                latest_operation_request_id: None,
                latest_operation_error: None,
                created_at: created,
                system_disk_gib: disk_gib,
                tags: req.tags.clone(),
                disk_base: None,
                host: Some(self.host_name().to_owned()),
                market_mark: image.market_mark.clone(),
                windows: image.platform.eq_ignore_ascii_case("Windows"),
                guest,
            };
            instance.begin(InstanceOp::Run, request_id);
            instances.push(instance);
        }
        let ids: Vec<InstanceId> = instances.iter().map(|i| i.id.clone()).collect();
        let params = InstanceJob {
            op: InstanceOp::Run.as_str().into(),
            instances: ids,
            image: Some(image.id.clone()),
            ..Default::default()
        };
        Ok((instances, params))
    }

    /// The guest settings of instance `id` from `input`, the password sealed.
    pub(crate) fn guest_of(&self, id: &InstanceId, input: &GuestInput) -> Result<Guest, InstanceError> {
        let password_sealed = match &input.password {
            Some(pw) => Some(hex::encode(self.master_key().seal(id.as_str(), pw).map_err(AppError::from)?)),
            None => None,
        };
        Ok(Guest { user_data: input.user_data.clone(), password_sealed, note: None })
    }

    async fn launched_with(&self, caller: AccountId, token: &str) -> Result<Vec<InstanceId>, InstanceError> {
        Ok(self.store().instances_for_token(caller, token).await?.unwrap_or_default())
    }

    /// A job of `kind` for `params`, run only by the workers of `host`.
    pub(crate) fn instance_job(
        &self,
        kind: &str,
        region: &Region,
        caller: AccountId,
        params: &InstanceJob,
        host: &str,
    ) -> Result<JobRecord, AppError> {
        let params = serde_json::to_string(params).map_err(|e| AppError::Conflict(e.to_string()))?;
        Ok(JobRecord::queued(kind, &region.region, caller, None, params, now()).on_host(host))
    }

    /// The host that holds an instance's disk.
    pub(crate) fn host_of<'a>(&'a self, instance: &'a Instance) -> &'a str {
        instance.host.as_deref().unwrap_or_else(|| self.host_name())
    }

    /// `instances` grouped by the host holding their disks, each group with the job (of
    /// `kind`, for `params` narrowed to the group) that its host's workers run.
    pub(crate) fn jobs_by_host(
        &self,
        kind: &str,
        region: &Region,
        caller: AccountId,
        params: &InstanceJob,
        instances: Vec<Instance>,
    ) -> Result<Vec<(Vec<Instance>, JobRecord)>, AppError> {
        let mut groups: std::collections::BTreeMap<String, Vec<Instance>> = std::collections::BTreeMap::new();
        for instance in instances {
            groups.entry(self.host_of(&instance).to_owned()).or_default().push(instance);
        }
        groups
            .into_iter()
            .map(|(host, group)| {
                let ids: Vec<InstanceId> = group.iter().map(|i| i.id.clone()).collect();
                let narrowed = InstanceJob { instances: ids, ..params.clone() };
                let job = self.instance_job(kind, region, caller, &narrowed, &host)?;
                Ok((group, job))
            })
            .collect()
    }

    /// `DescribeInstances`: the caller's instances in `region` that match, one page of them.
    pub async fn describe_instances(
        &self,
        caller: AccountId,
        region: &Region,
        query: &InstanceQuery,
        page: Page,
    ) -> Result<(u64, Vec<Instance>), AppError> {
        let mut matched: Vec<Instance> = self
            .store()
            .list_instances(caller, &region.region)
            .await?
            .into_iter()
            .filter(|i| query.matches(i))
            .collect();
        matched.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok((matched.len() as u64, page.slice(&matched).to_vec()))
    }

    /// The caller's instance `id` in `region`.
    pub async fn own_instance(&self, caller: AccountId, region: &Region, id: &str) -> Result<Instance, InstanceError> {
        let parsed = InstanceId::parse(id).map_err(|_| InstanceError::InstanceMalformed(id.to_owned()))?;
        self.store()
            .get_instance(&parsed)
            .await?
            .filter(|i| i.owner == caller && i.region == region.region)
            .ok_or_else(|| InstanceError::InstanceNotFound(id.to_owned()))
    }

    /// `StartInstances`, `StopInstances`, `RebootInstances`, `TerminateInstances`: every named
    /// instance must allow `op`; then all begin it at once, or none does.
    pub async fn operate_instances(
        &self,
        caller: AccountId,
        region: &Region,
        ids: &[String],
        op: InstanceOp,
        stop_type: Option<&str>,
        request_id: &str,
    ) -> Result<(), InstanceError> {
        let parsed = parse_ids(ids)?;
        let mut instances = Vec::with_capacity(parsed.len());
        for id in &parsed {
            if instances.iter().any(|i: &Instance| &i.id == id) {
                continue;
            }
            let mut instance = self.own_instance(caller, region, id.as_str()).await?;
            check_operation(&instance, op)?;
            instance.begin(op, request_id);
            instances.push(instance);
        }
        let params = InstanceJob {
            op: op.as_str().into(),
            instances: parsed,
            image: None,
            stop_type: stop_type.map(str::to_owned),
        };
        self.begin(region, caller, &instances, &params).await
    }

    async fn begin(
        &self,
        region: &Region,
        caller: AccountId,
        instances: &[Instance],
        params: &InstanceJob,
    ) -> Result<(), InstanceError> {
        // One job per host: each host's workers operate the disks they hold.
        for (group, job) in self.jobs_by_host("instance", region, caller, params, instances.to_vec())? {
            match self.store().begin_operation(&group, &job).await? {
                Ok(_) => self.wake_workers(),
                Err(Refused::Busy) => return Err(InstanceRuleError::Busy.into()),
                Err(other) => return Err(AppError::Conflict(format!("{other:?}")).into()),
            }
        }
        Ok(())
    }

    /// `ResetInstance`: reinstalls the system disk from `image_id` (default: the instance's
    /// current image), which the caller must be able to launch from.
    pub async fn reset_instance(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        image_id: Option<&str>,
        guest: Option<GuestInput>,
        request_id: &str,
    ) -> Result<(), InstanceError> {
        let mut instance = self.own_instance(caller, region, id).await?;
        if let Some(input) = guest {
            instance.guest = self.guest_of(&instance.id, &input)?;
        }
        let current = instance.image_id.to_string();
        let image = self.launchable_image(caller, region, image_id.unwrap_or(&current)).await?;
        let (instance, params) = reinstall(instance, &image, request_id)?;
        self.begin(region, caller, std::slice::from_ref(&instance), &params).await
    }

    /// The job that makes launched instances' disks and starts them.
    pub(crate) async fn run_launch(&self, job: &JobRecord) -> Result<String, JobFailure> {
        let params = job_params(job)?;
        let image = params.image.clone().ok_or_else(|| JobFailure::permanent("launch job without an image"))?;
        let base = match self.base_of(&image).await {
            Ok(base) => Some(base),
            Err(f) if f.permanent => None,
            Err(f) => return Err(f),
        };
        let mut launched = 0;
        for id in &params.instances {
            let Some(mut instance) = self.store().get_instance(id).await.map_err(JobFailure::retry)? else { continue };
            if instance.state != InstanceState::Pending {
                continue; // finished before a crash
            }
            match &base {
                Some(base) => {
                    let dir = self.instance_dir(&instance.id);
                    // A re-run after a crash finds its guest running from the disk it made.
                    if !self.hypervisor().adopt(&instance.id, &dir).await {
                        self.make_system_disk(&mut instance, base).await?;
                    }
                    match self.boot_guest(&mut instance).await {
                        Ok(()) => {
                            instance.end(InstanceState::Running, None);
                            launched += 1;
                        }
                        Err(e) => instance.end(InstanceState::LaunchFailed, Some(e)),
                    }
                }
                None => instance.end(InstanceState::LaunchFailed, Some(format!("the image {image} has no bytes"))),
            }
            self.put_instance_metered(&instance, Some(&job.fence())).await.map_err(JobFailure::retry)?;
        }
        Ok(serde_json::json!({ "Launched": launched }).to_string())
    }

    /// The job that carries out start, stop, reboot, reset and terminate.
    pub(crate) async fn run_instance_op(&self, job: &JobRecord) -> Result<String, JobFailure> {
        let params = job_params(job)?;
        let op = InstanceOp::parse(&params.op).ok_or_else(|| JobFailure::permanent("unknown instance operation"))?;
        for id in &params.instances {
            let Some(mut instance) = self.store().get_instance(id).await.map_err(JobFailure::retry)? else { continue };
            if !instance.busy() || instance.latest_operation != Some(op) {
                continue; // finished before a crash
            }
            match op {
                InstanceOp::Stop => {
                    self.halt_guest(id, params.soft()).await.map_err(JobFailure::retry)?;
                }
                InstanceOp::Start => {
                    self.boot_guest(&mut instance).await.map_err(JobFailure::retry)?;
                }
                InstanceOp::Reboot => {
                    self.halt_guest(id, params.soft()).await.map_err(JobFailure::retry)?;
                    self.boot_guest(&mut instance).await.map_err(JobFailure::retry)?;
                }
                InstanceOp::Terminate => {
                    self.halt_guest(id, false).await.map_err(JobFailure::retry)?;
                    let dir = self.instance_disk_path(id).parent().map(PathBuf::from).unwrap_or_default();
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            return Err(JobFailure::retry(e));
                        }
                    }
                    self.store()
                        .delete_instance_metered(id, self.clock_now(), Some(&job.fence()))
                        .await
                        .map_err(JobFailure::retry)?;
                    continue;
                }
                InstanceOp::Reset => {
                    let image_id =
                        params.image.clone().ok_or_else(|| JobFailure::permanent("reset without an image"))?;
                    let image = self
                        .store()
                        .get_image(&image_id)
                        .await
                        .map_err(JobFailure::retry)?
                        .ok_or_else(|| JobFailure::permanent(format!("the image {image_id} was deleted")))?;
                    let base = self.base_of(&image_id).await?;
                    // The reinstall wipes the disk: the guest is switched off first.
                    self.halt_guest(id, false).await.map_err(JobFailure::retry)?;
                    self.make_system_disk(&mut instance, &base).await?;
                    instance.image_id = image_id;
                    instance.os_name = image.os_name;
                    instance.market_mark = image.market_mark;
                    instance.windows = image.platform.eq_ignore_ascii_case("Windows");
                    self.boot_guest(&mut instance).await.map_err(JobFailure::retry)?;
                }
                InstanceOp::Run | InstanceOp::CreateImage => {}
            }
            let prior = instance.state;
            instance.end(final_state(op, prior), None);
            self.put_instance_metered(&instance, Some(&job.fence())).await.map_err(JobFailure::retry)?;
        }
        Ok("{}".into())
    }

    /// Ends the operations of a job that was given up: launches fail, other operations leave
    /// the instance as it was (reset: with its old disk), marked FAILED with the reason.
    pub(crate) async fn fail_instances(&self, job: &JobRecord, message: &str) {
        let Ok(params) = job_params(job) else { return };
        for id in &params.instances {
            let Ok(Some(mut instance)) = self.store().get_instance(id).await else { continue };
            if !instance.busy() {
                continue;
            }
            let state = match instance.state {
                InstanceState::Pending => InstanceState::LaunchFailed,
                InstanceState::Starting => InstanceState::Stopped,
                InstanceState::Stopping | InstanceState::Rebooting | InstanceState::Terminating => {
                    InstanceState::Running
                }
                other => other,
            };
            instance.end(state, Some(message.to_owned()));
            if let Err(e) = self.put_instance_metered(&instance, Some(&job.fence())).await {
                tracing::warn!(instance = %id, "marking the instance's operation failed: {e}");
            }
        }
    }

    /// An instance's system disk for an operator (to attach to QEMU or libvirt): its path and
    /// format, once it exists.
    pub async fn instance_disk(&self, id: &str) -> Result<(PathBuf, &'static str), InstanceError> {
        let parsed = InstanceId::parse(id).map_err(|_| InstanceError::InstanceMalformed(id.to_owned()))?;
        let instance =
            self.store().get_instance(&parsed).await?.ok_or_else(|| InstanceError::InstanceNotFound(id.to_owned()))?;
        let path = self.instance_disk_path(&instance.id);
        if instance.disk_base.is_none() || !path.is_file() {
            return Err(InstanceError::Rule(InstanceRuleError::State(instance.state)));
        }
        Ok((path, "qcow2"))
    }
}

/// The zone, count and names of a launch; returns the names.
fn check_request(region: &Region, req: &RunRequest) -> Result<Vec<String>, InstanceError> {
    if !region.zones.iter().any(|z| z.zone == req.zone) {
        return Err(InstanceError::Zone(req.zone.clone()));
    }
    let count = check_instance_count(req.count)?;
    Ok(batch_names(req.name.as_deref(), count)?)
}

/// `instance` beginning the reinstall of its system disk from `image`, and the parameters of
/// the job that does it; nothing is stored.
pub(crate) fn reinstall(
    mut instance: Instance,
    image: &Image,
    request_id: &str,
) -> Result<(Instance, InstanceJob), InstanceError> {
    check_operation(&instance, InstanceOp::Reset)?;
    check_system_disk(Some(instance.system_disk_gib.max(image.size_gib)), image.size_gib)?;
    instance.begin(InstanceOp::Reset, request_id);
    let params = InstanceJob {
        op: InstanceOp::Reset.as_str().into(),
        instances: vec![instance.id.clone()],
        image: Some(image.id.clone()),
        ..Default::default()
    };
    Ok((instance, params))
}

/// `instances` beginning `op` (stop, terminate…) together, and the job's parameters.
pub(crate) fn operation(
    instances: Vec<Instance>,
    op: InstanceOp,
    request_id: &str,
) -> Result<(Vec<Instance>, InstanceJob), InstanceError> {
    let mut begun = Vec::with_capacity(instances.len());
    for mut instance in instances {
        check_operation(&instance, op)?;
        instance.begin(op, request_id);
        begun.push(instance);
    }
    let ids = begun.iter().map(|i| i.id.clone()).collect();
    Ok((begun, InstanceJob { op: op.as_str().into(), instances: ids, ..Default::default() }))
}

pub(crate) fn job_params(job: &JobRecord) -> Result<InstanceJob, JobFailure> {
    serde_json::from_str(&job.params).map_err(|e| JobFailure::permanent(format!("bad job parameters: {e}")))
}
