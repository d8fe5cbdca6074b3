//! Instances: machines launched from an image in a zone, their states and asynchronous
//! operations (`LatestOperation`, `LatestOperationState`), and the rules for launching,
//! operating on and capturing them.
//!
//! Every mutating instance action is asynchronous, as in the reference: it moves the instance
//! into a transitional state with its operation `OPERATING`, and the work ends it in the final
//! state with `SUCCESS` or `FAILED`. An instance with an operation in progress takes no other.

use crate::ids::{AccountId, ImageId, InstanceId};
use crate::image::Tag;
use crate::query::{Filter, QueryError, MAX_FILTERS, MAX_FILTER_VALUES};
use crate::time::Timestamp;

/// Instances one `RunInstances` call may create (the bound; Tencent allows 500).
pub const MAX_INSTANCE_COUNT: u32 = 100;
/// Instance ids one batch action may name.
pub const MAX_BATCH_IDS: usize = 100;
/// Longest instance name, in characters (`InvalidInstanceName.TooLong` says 60).
pub const MAX_INSTANCE_NAME_CHARS: usize = 60;
/// The name of an instance launched without one ("Unnamed").
pub const DEFAULT_INSTANCE_NAME: &str = "未命名";
/// Default system disk size, GiB.
pub const DEFAULT_SYSTEM_DISK_GIB: u64 = 50;
/// Largest system disk, GiB.
pub const MAX_SYSTEM_DISK_GIB: u64 = 2048;
/// Longest `ClientToken`, in ASCII characters.
pub const MAX_CLIENT_TOKEN_CHARS: usize = 64;
/// Instance type used when none is given.
pub const DEFAULT_INSTANCE_TYPE: &str = "S5.MEDIUM2";

wire_enum! {
    /// `InstanceState`.
    InstanceState {
        /// Being created: its disk is being made.
        Pending = "PENDING",
        /// Creation failed; `LatestOperationErrorMsg` says why.
        LaunchFailed = "LAUNCH_FAILED",
        /// Running.
        Running = "RUNNING",
        /// Stopped.
        Stopped = "STOPPED",
        /// Starting.
        Starting = "STARTING",
        /// Stopping.
        Stopping = "STOPPING",
        /// Rebooting.
        Rebooting = "REBOOTING",
        /// Isolated, waiting to be destroyed (prepaid instances; not used by pay-as-you-go).
        Shutdown = "SHUTDOWN",
        /// Being destroyed.
        Terminating = "TERMINATING",
    }
}

wire_enum! {
    /// `LatestOperationState`.
    OperationState {
        /// In progress.
        Operating = "OPERATING",
        /// Done.
        Success = "SUCCESS",
        /// Failed; `LatestOperationErrorMsg` says why.
        Failed = "FAILED",
    }
}

wire_enum! {
    /// The asynchronous operations an instance records as `LatestOperation`.
    InstanceOp {
        /// Launch.
        Run = "RunInstances",
        /// Start a stopped instance.
        Start = "StartInstances",
        /// Stop a running instance.
        Stop = "StopInstances",
        /// Reboot a running instance.
        Reboot = "RebootInstances",
        /// Reinstall the system disk from an image.
        Reset = "ResetInstance",
        /// Destroy.
        Terminate = "TerminateInstances",
        /// Capture a custom image (with `ForcePoweroff`, the instance is stopped first).
        CreateImage = "CreateImage",
    }
}

/// A machine launched from an image, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// The id.
    pub id: InstanceId,
    /// The owning account.
    pub owner: AccountId,
    /// Region.
    pub region: String,
    /// Zone within the region.
    pub zone: String,
    /// Display name.
    pub name: String,
    /// Instance type, e.g. `S5.MEDIUM2`.
    pub instance_type: String,
    /// The image the system disk was made from (last reset included).
    pub image_id: ImageId,
    /// OS name of that image.
    pub os_name: String,
    /// State.
    pub state: InstanceState,
    /// The latest asynchronous operation.
    pub latest_operation: Option<InstanceOp>,
    /// Its state.
    pub latest_operation_state: Option<OperationState>,
    /// The request that started it.
    pub latest_operation_request_id: Option<String>,
    /// Why it failed.
    pub latest_operation_error: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// System disk size, GiB (at least the image's size).
    pub system_disk_gib: u64,
    /// Host name.
    pub host_name: String,
    /// Tags.
    pub tags: Vec<Tag>,
    /// The content key of the base the system disk's overlay sits on, once the disk exists.
    pub disk_base: Option<String>,
    /// The host whose data directory holds its disk (its jobs run only there); `None` for
    /// instances made before hosts were recorded (the single host of such a deployment).
    #[serde(default)]
    pub host: Option<String>,
    /// The marketplace listing its image's bytes carry (launches and reinstalls set it): the
    /// listing's fee is metered while it runs, even after the image is deleted.
    #[serde(default)]
    pub market_mark: Option<crate::market::ListingId>,
    /// Whether it runs Windows (a licence is metered outside mainland China).
    #[serde(default)]
    pub windows: bool,
    /// What its guest is given at boot, and how it last ended on its own.
    #[serde(default)]
    pub guest: Guest,
}

/// What an instance's guest is given at boot (its NoCloud seed) and what it last did unasked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Guest {
    /// `UserData`, base64 as given.
    #[serde(default)]
    pub user_data: Option<String>,
    /// The login password, sealed by the service (hex); never stored in clear.
    #[serde(default)]
    pub password_sealed: Option<String>,
    /// How the guest's process last ended when nobody asked it to (powered itself off,
    /// crashed, not running after a restart of the host's server).
    #[serde(default)]
    pub note: Option<String>,
}

impl Instance {
    /// Whether an operation is in progress.
    pub fn busy(&self) -> bool {
        self.latest_operation_state == Some(OperationState::Operating)
    }

    /// Records the start of `op` (requested by `request_id`), moving to its transitional state.
    pub fn begin(&mut self, op: InstanceOp, request_id: &str) {
        if let Some(next) = transitional_state(op) {
            self.state = next;
        }
        self.latest_operation = Some(op);
        self.latest_operation_state = Some(OperationState::Operating);
        self.latest_operation_request_id = Some(request_id.to_owned());
        self.latest_operation_error = None;
    }

    /// Records the end of the current operation: success moves to `state`; failure keeps
    /// `state` too (the caller decides what the instance is left as) and records why.
    pub fn end(&mut self, state: InstanceState, error: Option<String>) {
        self.state = state;
        self.latest_operation_state =
            Some(if error.is_some() { OperationState::Failed } else { OperationState::Success });
        self.latest_operation_error = error;
    }
}

/// Why an operation on an instance is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceRuleError {
    /// The instance's state does not allow the operation.
    #[error("the instance is {0} and cannot do that")]
    State(InstanceState),
    /// Another operation is in progress.
    #[error("another operation is in progress on the instance")]
    Busy,
    /// `InstanceCount` out of range.
    #[error("InstanceCount must be between 1 and {MAX_INSTANCE_COUNT}")]
    Count,
    /// The name is too long (after expanding its pattern).
    #[error("the instance name is longer than {MAX_INSTANCE_NAME_CHARS} characters")]
    NameTooLong,
    /// A malformed `{R:x}` / `{R:x,F:y}` pattern.
    #[error("malformed name pattern in `{0}`")]
    NamePattern(String),
    /// A `ClientToken` over 64 ASCII characters (or not ASCII).
    #[error("ClientToken must be at most {MAX_CLIENT_TOKEN_CHARS} ASCII characters")]
    ClientToken,
    /// A system disk smaller than the image or over the limit.
    #[error("the system disk must be between {min} and {MAX_SYSTEM_DISK_GIB} GiB")]
    DiskSize {
        /// Smallest allowed size (the image's).
        min: u64,
    },
}

/// The transitional state an operation moves the instance to (`None`: it keeps its state).
pub fn transitional_state(op: InstanceOp) -> Option<InstanceState> {
    match op {
        InstanceOp::Run => Some(InstanceState::Pending),
        InstanceOp::Start => Some(InstanceState::Starting),
        InstanceOp::Stop => Some(InstanceState::Stopping),
        InstanceOp::Reboot => Some(InstanceState::Rebooting),
        InstanceOp::Terminate => Some(InstanceState::Terminating),
        InstanceOp::Reset | InstanceOp::CreateImage => None,
    }
}

/// The state a successful operation leaves the instance in, from the state it started in.
pub fn final_state(op: InstanceOp, started_in: InstanceState) -> InstanceState {
    match op {
        InstanceOp::Run | InstanceOp::Start | InstanceOp::Reboot | InstanceOp::Reset => InstanceState::Running,
        InstanceOp::Stop => InstanceState::Stopped,
        InstanceOp::Terminate => InstanceState::Terminating,
        InstanceOp::CreateImage => started_in,
    }
}

/// Whether `op` may start on `instance` now.
///
/// Start only from STOPPED; stop and reboot only from RUNNING; reset and capture from RUNNING
/// or STOPPED; terminate from RUNNING, STOPPED or LAUNCH_FAILED. Never while busy.
pub fn check_operation(instance: &Instance, op: InstanceOp) -> Result<(), InstanceRuleError> {
    use InstanceState::*;
    if instance.busy() {
        return Err(InstanceRuleError::Busy);
    }
    let allowed = match op {
        InstanceOp::Run => false,
        InstanceOp::Start => instance.state == Stopped,
        InstanceOp::Stop | InstanceOp::Reboot => instance.state == Running,
        InstanceOp::Reset | InstanceOp::CreateImage => matches!(instance.state, Running | Stopped),
        InstanceOp::Terminate => matches!(instance.state, Running | Stopped | LaunchFailed),
    };
    if allowed {
        Ok(())
    } else {
        Err(InstanceRuleError::State(instance.state))
    }
}

/// Checks `InstanceCount` (default 1).
pub fn check_instance_count(count: Option<u64>) -> Result<u32, InstanceRuleError> {
    match count.unwrap_or(1) {
        n @ 1..=100 => Ok(u32::try_from(n).unwrap_or(1)),
        _ => Err(InstanceRuleError::Count),
    }
}

/// Largest `UserData`, as base64 text (Tencent: 16 KB once encoded).
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// Whether `UserData` is base64 text (standard alphabet, padded) of at most
/// [`MAX_USER_DATA_BYTES`].
pub fn user_data_is_valid(data: &str) -> bool {
    let body = data.trim_end_matches('=');
    data.len() <= MAX_USER_DATA_BYTES
        && data.len().is_multiple_of(4)
        && data.len() - body.len() <= 2
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// CPU cores and memory (GiB) of an instance type such as `S5.MEDIUM4` (2 cores, 4 GiB).
pub fn shape(instance_type: &str) -> (u32, u32) {
    let size = instance_type.rsplit('.').next().unwrap_or("").to_ascii_uppercase();
    let digits: String =
        size.chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
    let word = &size[..size.len() - digits.len()];
    let cpu = match word {
        "SMALL" => 1,
        "MEDIUM" => 2,
        "LARGE" => 4,
        w => w
            .strip_suffix("XLARGE")
            .and_then(|n| if n.is_empty() { Some(1) } else { n.parse::<u32>().ok() })
            .map_or(2, |n| n * 4),
    };
    (cpu, digits.parse().unwrap_or(cpu * 2))
}

/// Checks a `LoginSettings.Password`, as Tencent does: Linux 8–30 characters of at least two
/// classes (lower case, upper case, digits, the symbols ``()`~!@#$%^&*-+=_|{}[]:;'<>,.?/``),
/// Windows 12–30 of at least three.
pub fn password_is_valid(password: &str, windows: bool) -> bool {
    const SYMBOLS: &str = "()`~!@#$%^&*-+=_|{}[]:;'<>,.?/";
    let (min, classes) = if windows { (12, 3) } else { (8, 2) };
    let len = password.chars().count();
    let allowed = password.chars().all(|c| c.is_ascii_alphanumeric() || SYMBOLS.contains(c));
    let found = [
        password.chars().any(|c| c.is_ascii_lowercase()),
        password.chars().any(|c| c.is_ascii_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| SYMBOLS.contains(c)),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    allowed && (min..=30).contains(&len) && found >= classes
}

/// Checks a `ClientToken`: 1 to 64 printable ASCII characters.
pub fn check_client_token(token: &str) -> Result<(), InstanceRuleError> {
    let ok = !token.is_empty() && token.len() <= MAX_CLIENT_TOKEN_CHARS && token.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(InstanceRuleError::ClientToken)
    }
}

/// Checks a system disk size against the image's size.
pub fn check_system_disk(size_gib: Option<u64>, image_gib: u64) -> Result<u64, InstanceRuleError> {
    let min = image_gib.max(1);
    let size = size_gib.unwrap_or(DEFAULT_SYSTEM_DISK_GIB.max(min));
    if size < min || size > MAX_SYSTEM_DISK_GIB {
        return Err(InstanceRuleError::DiskSize { min });
    }
    Ok(size)
}

/// The names of a batch of `count` instances from `InstanceName`.
///
/// `{R:x}` becomes a sequence number starting at x, `{R:x,F:y}` the same zero-padded to y
/// digits; without a pattern, a batch of more than one gets the suffixes 1..=count. No name
/// gives "未命名" (Unnamed).
pub fn batch_names(name: Option<&str>, count: u32) -> Result<Vec<String>, InstanceRuleError> {
    let name = name.filter(|n| !n.is_empty()).unwrap_or(DEFAULT_INSTANCE_NAME);
    let names: Vec<String> = match name.find("{R:") {
        Some(start) => {
            let end = name[start..].find('}').map(|e| start + e).ok_or_else(|| bad_pattern(name))?;
            let spec = &name[start + 3..end];
            let (first, width) = match spec.split_once(",F:") {
                Some((first, width)) => (first, width.parse::<usize>().map_err(|_| bad_pattern(name))?),
                None => (spec, 0),
            };
            let first: u64 = first.parse().map_err(|_| bad_pattern(name))?;
            (0..u64::from(count))
                .map(|i| format!("{}{:0width$}{}", &name[..start], first + i, &name[end + 1..]))
                .collect()
        }
        None if count > 1 => (1..=count).map(|i| format!("{name}{i}")).collect(),
        None => vec![name.to_owned()],
    };
    if names.iter().any(|n| n.chars().count() > MAX_INSTANCE_NAME_CHARS) {
        return Err(InstanceRuleError::NameTooLong);
    }
    Ok(names)
}

fn bad_pattern(name: &str) -> InstanceRuleError {
    InstanceRuleError::NamePattern(name.to_owned())
}

/// The `DescribeInstances` filter names of the reference. Those about networks, hosts and
/// dedicated clusters, which this service does not model, match no instance.
pub const INSTANCE_FILTERS: &[&str] = &[
    "zone",
    "project-id",
    "host-id",
    "dedicated-cluster-id",
    "vpc-id",
    "subnet-id",
    "instance-id",
    "uuid",
    "security-group-id",
    "instance-name",
    "instance-charge-type",
    "instance-state",
    "private-ip-address",
    "public-ip-address",
    "ipv6-address",
    "tag-key",
    "tag-value",
    "creation-start-time",
    "creation-end-time",
];

/// `DescribeInstances` as a pure query: `InstanceIds` xor `Filters`.
#[derive(Debug, Clone)]
pub struct InstanceQuery {
    ids: Option<Vec<InstanceId>>,
    filters: Vec<Filter>,
}

impl InstanceQuery {
    /// Validates ids (at most 100, well-formed) or filters (known names, at most 10 of at most 5
    /// values).
    pub fn new(ids: Option<&[String]>, filters: Option<&[Filter]>) -> Result<Self, QueryError> {
        if ids.is_some() && filters.is_some() {
            return Err(QueryError::IdsAndFilters);
        }
        let parse = |s: &String| InstanceId::parse(s).map_err(|_| QueryError::MalformedInstanceId(s.clone()));
        let ids = match ids {
            Some(ids) if ids.len() > MAX_BATCH_IDS => return Err(QueryError::TooManyIds),
            Some(ids) => Some(ids.iter().map(parse).collect::<Result<Vec<_>, _>>()?),
            None => None,
        };
        let filters = filters.unwrap_or_default().to_vec();
        if filters.len() > MAX_FILTERS {
            return Err(QueryError::TooManyFilters);
        }
        for f in &filters {
            if !INSTANCE_FILTERS.contains(&f.name.as_str()) && !f.name.starts_with("tag:") {
                return Err(QueryError::UnknownFilter(f.name.clone()));
            }
            if f.values.is_empty() {
                return Err(QueryError::NoValues(f.name.clone()));
            }
            if f.values.len() > MAX_FILTER_VALUES {
                return Err(QueryError::TooManyValues(f.name.clone()));
            }
            if f.name == "instance-id" {
                f.values.iter().try_for_each(|v| parse(v).map(|_| ()))?;
            }
        }
        Ok(Self { ids, filters })
    }

    /// Whether `instance` matches: its id is listed, or every filter matches one of its values.
    pub fn matches(&self, instance: &Instance) -> bool {
        if let Some(ids) = &self.ids {
            return ids.contains(&instance.id);
        }
        self.filters.iter().all(|f| f.values.iter().any(|v| filter_matches(instance, &f.name, v)))
    }
}

fn filter_matches(i: &Instance, name: &str, value: &str) -> bool {
    match name {
        "zone" => i.zone == value,
        "instance-id" => i.id.as_str() == value,
        "instance-name" => i.name.contains(value),
        "instance-state" => i.state.as_str() == value,
        "project-id" => value == "0",
        "instance-charge-type" => value == "POSTPAID_BY_HOUR",
        "tag-key" => i.tags.iter().any(|t| t.key == value),
        "tag-value" => i.tags.iter().any(|t| t.value == value),
        "creation-start-time" => Timestamp::parse_iso8601(value).is_some_and(|t| i.created_at >= t),
        "creation-end-time" => Timestamp::parse_iso8601(value).is_some_and(|t| i.created_at <= t),
        tag if tag.starts_with("tag:") => i.tags.iter().any(|t| t.key == tag[4..] && t.value == value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::shape;

    #[test]
    fn instance_types_give_cores_and_memory() {
        assert_eq!(shape("S5.MEDIUM4"), (2, 4));
        assert_eq!(shape("S5.SMALL1"), (1, 1));
        assert_eq!(shape("S5.LARGE8"), (4, 8));
        assert_eq!(shape("S5.2XLARGE16"), (8, 16));
        assert_eq!(shape("weird"), (2, 4));
    }

    #[test]
    fn passwords_follow_tencents_length_and_class_rules() {
        assert!(password_is_valid("abcd1234", false));
        assert!(!password_is_valid("abcdefgh", false), "one class");
        assert!(!password_is_valid("abc123", false), "too short");
        assert!(!password_is_valid(&"a1".repeat(16), false), "too long");
        assert!(!password_is_valid("abcd 1234", false), "a space is not allowed");
        assert!(!password_is_valid("abcd1234efgh", true), "Windows needs three classes");
        assert!(password_is_valid("Abcd1234efgh", true));
    }

    #[test]
    fn user_data_is_base64_of_at_most_16_kb() {
        assert!(user_data_is_valid("IyEvYmluL3NoCmVjaG8gaGkK"));
        assert!(user_data_is_valid("YQ=="));
        assert!(user_data_is_valid(""));
        assert!(!user_data_is_valid("not base64!"));
        assert!(!user_data_is_valid("YQ="), "unpadded");
        assert!(!user_data_is_valid("Y==="), "too much padding");
        assert!(user_data_is_valid(&"A".repeat(MAX_USER_DATA_BYTES)));
        assert!(!user_data_is_valid(&"A".repeat(MAX_USER_DATA_BYTES + 4)));
    }

    use super::*;

    fn instance(state: InstanceState) -> Instance {
        Instance {
            id: InstanceId::from_random([1; 8]),
            owner: AccountId(100_000_000_001),
            region: "ap-guangzhou".into(),
            zone: "ap-guangzhou-3".into(),
            name: "web".into(),
            instance_type: DEFAULT_INSTANCE_TYPE.into(),
            image_id: ImageId::from_random([2; 8]),
            os_name: "TencentOS Server 3.1".into(),
            state,
            latest_operation: None,
            latest_operation_state: None,
            latest_operation_request_id: None,
            latest_operation_error: None,
            created_at: Timestamp(0),
            system_disk_gib: 50,
            host_name: "web".into(),
            tags: Vec::new(),
            disk_base: None,
            host: None,
            market_mark: None,
            windows: false,
            guest: Guest::default(),
        }
    }

    #[test]
    fn each_operation_starts_only_from_the_states_the_reference_allows() {
        use InstanceState::*;
        let allowed = |op| InstanceState::ALL.iter().filter(|s| check_operation(&instance(**s), op).is_ok()).count();
        assert!(check_operation(&instance(Stopped), InstanceOp::Start).is_ok());
        assert_eq!(check_operation(&instance(Running), InstanceOp::Start), Err(InstanceRuleError::State(Running)));
        assert!(check_operation(&instance(Running), InstanceOp::Stop).is_ok());
        assert!(check_operation(&instance(Stopped), InstanceOp::Reboot).is_err());
        assert!(check_operation(&instance(Stopped), InstanceOp::Reset).is_ok());
        assert!(check_operation(&instance(Pending), InstanceOp::CreateImage).is_err());
        assert!(check_operation(&instance(LaunchFailed), InstanceOp::Terminate).is_ok());
        assert_eq!(allowed(InstanceOp::Start), 1);
        assert_eq!(allowed(InstanceOp::Reset), 2);
        assert_eq!(allowed(InstanceOp::Terminate), 3);
        assert_eq!(allowed(InstanceOp::Run), 0);
    }

    #[test]
    fn a_busy_instance_takes_no_other_operation() {
        let mut i = instance(InstanceState::Running);
        i.begin(InstanceOp::Reset, "req-1");
        assert!(i.busy());
        assert_eq!(i.state, InstanceState::Running, "a reset keeps the state while it runs");
        assert_eq!(check_operation(&i, InstanceOp::Stop), Err(InstanceRuleError::Busy));
        i.end(InstanceState::Running, None);
        assert_eq!(i.latest_operation_state, Some(OperationState::Success));
        assert!(check_operation(&i, InstanceOp::Stop).is_ok());
    }

    #[test]
    fn operations_move_through_their_transitional_state_to_the_final_one() {
        let mut i = instance(InstanceState::Running);
        i.begin(InstanceOp::Stop, "req-2");
        assert_eq!(i.state, InstanceState::Stopping);
        i.end(final_state(InstanceOp::Stop, InstanceState::Running), None);
        assert_eq!(i.state, InstanceState::Stopped);
        assert_eq!(final_state(InstanceOp::CreateImage, InstanceState::Stopped), InstanceState::Stopped);
        assert_eq!(final_state(InstanceOp::Reboot, InstanceState::Running), InstanceState::Running);
        i.begin(InstanceOp::Start, "req-3");
        i.end(InstanceState::Stopped, Some("no host".into()));
        assert_eq!(i.latest_operation_state, Some(OperationState::Failed));
        assert_eq!(i.latest_operation_error.as_deref(), Some("no host"));
    }

    #[test]
    fn batch_names_follow_the_patterns_and_suffix_plain_names() {
        assert_eq!(batch_names(None, 1).expect("names"), ["未命名"]);
        assert_eq!(batch_names(Some("web"), 3).expect("names"), ["web1", "web2", "web3"]);
        assert_eq!(batch_names(Some("web"), 1).expect("names"), ["web"]);
        assert_eq!(batch_names(Some("node-{R:7}"), 2).expect("names"), ["node-7", "node-8"]);
        assert_eq!(batch_names(Some("n{R:9,F:3}-x"), 2).expect("names"), ["n009-x", "n010-x"]);
        assert!(matches!(batch_names(Some("n{R:x}"), 2), Err(InstanceRuleError::NamePattern(_))));
        assert!(matches!(batch_names(Some("n{R:1"), 2), Err(InstanceRuleError::NamePattern(_))));
        assert_eq!(batch_names(Some(&"a".repeat(61)), 1), Err(InstanceRuleError::NameTooLong));
    }

    #[test]
    fn instance_queries_take_ids_or_known_filters() {
        let mut web = instance(InstanceState::Running);
        web.tags.push(Tag { key: "env".into(), value: "prod".into() });
        let f = |name: &str, values: &[&str]| Filter {
            name: name.into(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        let q = |filters: &[Filter]| InstanceQuery::new(None, Some(filters)).expect("valid");
        assert!(q(&[f("instance-state", &["STOPPED", "RUNNING"]), f("zone", &["ap-guangzhou-3"])]).matches(&web));
        assert!(!q(&[f("instance-state", &["STOPPED"])]).matches(&web));
        assert!(q(&[f("tag:env", &["prod"])]).matches(&web));
        assert!(q(&[f("instance-name", &["we"])]).matches(&web));
        assert!(!q(&[f("vpc-id", &["vpc-1"])]).matches(&web), "unmodelled filters match nothing");
        assert!(q(&[]).matches(&web));
        let ids = [web.id.to_string()];
        assert!(InstanceQuery::new(Some(&ids), None).expect("ids").matches(&web));
        assert_eq!(
            InstanceQuery::new(None, Some(&[f("colour", &["red"])])).err(),
            Some(QueryError::UnknownFilter("colour".into()))
        );
        assert_eq!(
            InstanceQuery::new(Some(&["ins-1".to_owned()]), None).err(),
            Some(QueryError::MalformedInstanceId("ins-1".into()))
        );
        assert_eq!(InstanceQuery::new(Some(&ids), Some(&[])).err(), Some(QueryError::IdsAndFilters));
    }

    #[test]
    fn counts_and_disk_sizes_are_bounded() {
        assert_eq!(check_instance_count(None), Ok(1));
        assert_eq!(check_instance_count(Some(100)), Ok(100));
        assert_eq!(check_instance_count(Some(0)), Err(InstanceRuleError::Count));
        assert_eq!(check_instance_count(Some(101)), Err(InstanceRuleError::Count));
        assert_eq!(check_client_token("run-2026-12-01"), Ok(()));
        assert_eq!(check_client_token(&"t".repeat(65)), Err(InstanceRuleError::ClientToken));
        assert_eq!(check_client_token("with space"), Err(InstanceRuleError::ClientToken));
        assert_eq!(check_system_disk(None, 4), Ok(50));
        assert_eq!(check_system_disk(None, 80), Ok(80));
        assert_eq!(check_system_disk(Some(20), 40), Err(InstanceRuleError::DiskSize { min: 40 }));
        assert_eq!(check_system_disk(Some(4096), 1), Err(InstanceRuleError::DiskSize { min: 1 }));
    }
}
