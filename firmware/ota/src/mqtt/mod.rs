//! The update's MQTT topics and payloads, the existing fleet's and Home Assistant's,
//! built and parsed in one place so the device, the simulator and the tests agree.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize, Serializer};

mod outbox;
pub use outbox::Outbox;

use crate::engine::{Source, Store, UpdateError};
use crate::{Manifest, Version};

/// Incoming payloads longer than this are refused before they are looked at.
pub const MAX_PAYLOAD: usize = 1024;
/// The longest device id, in bytes.
pub const MAX_DEVICE_ID: usize = 64;
/// The most characters of a reason (error status, attributes) that are published.
pub const MAX_REASON: usize = 200;
/// The most characters of a release summary Home Assistant takes.
pub const MAX_RELEASE_SUMMARY: usize = 255;
/// The most characters of untrusted input an error repeats.
const MAX_ECHO: usize = 80;

/// What Home Assistant's update entity publishes on `command` to install.
pub const PAYLOAD_INSTALL: &str = "install";
/// Retained on [`Topics::availability`] once connected.
pub const ONLINE: &str = "online";
/// Retained on [`Topics::availability`] by the client's last will.
pub const OFFLINE: &str = "offline";
/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";
/// The sources the Home Assistant select offers, shown by [`source_label`].
pub const SOURCE_OPTIONS: [Source; 2] = [Source::Github, Source::R2];

/// What a person reads for a source in Home Assistant; [`parse_source`] reads it too.
pub fn source_label(source: Source) -> &'static str {
    match source {
        Source::Github => "GitHub",
        Source::R2 => "Cloudflare R2",
    }
}
/// How long a device waits, before it reboots, for the broker to have every message it
/// sent (its last status, the retained state), so Home Assistant does not keep an
/// install "in progress" on a device that restarted.
pub const REBOOT_FLUSH: core::time::Duration = core::time::Duration::from_secs(5);
/// Named as `origin` in discovery configs, so Home Assistant shows who made them.
const ORIGIN: &str = "clockrel";

/// Every topic of one device's update feature.
///
/// | topic | direction | retained | payload |
/// |---|---|---|---|
/// | `home/<device>/command` | in | no | [`parse_command`] |
/// | `home/<device>/ota/source/set` | in | no | [`parse_source`] |
/// | `home/<device>/ota/source/status` | out | yes | [`SourceStatus`] |
/// | `home/<device>/ota/version` | out | yes | [`VersionInfo`] |
/// | `home/<device>/ota/progress` | out | no | [`Status`], also errors |
/// | `home/<device>/ota/state` | out | yes | [`UpdateState`] for Home Assistant |
/// | `home/<device>/ota/attributes` | out | yes | [`Attributes`] |
/// | `home/<device>/availability` | out | yes | [`ONLINE`] / [`OFFLINE`] |
/// | `homeassistant/update/<device>/firmware/config` | out | yes | [`update_discovery`] |
/// | `homeassistant/select/<device>/ota_source/config` | out | yes | [`select_discovery`] |
/// | `homeassistant/button/<device>/check_update/config` | out | yes | [`check_discovery`] |
/// | `homeassistant/button/<device>/retry_update/config` | out | yes | [`retry_discovery`] |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    device: String,
    command: String,
    source_set: String,
    source_status: String,
    version: String,
    progress: String,
    state: String,
    attributes: String,
    availability: String,
    update_config: String,
    select_config: String,
    check_config: String,
    retry_config: String,
}

/// Why a device id cannot name topics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("the device id is empty")]
    Empty,
    #[error("the device id is {len} bytes, more than the {MAX_DEVICE_ID} allowed")]
    TooLong { len: usize },
    #[error(
        "the device id has {found:?} at byte {at}: it names MQTT and Home Assistant discovery \
         topics, so only ASCII letters, digits, `_` and `-` are allowed"
    )]
    BadChar { found: char, at: usize },
}

impl Topics {
    /// The topics of device `device`: 1 to [`MAX_DEVICE_ID`] ASCII letters, digits, `_` or
    /// `-`, the characters Home Assistant accepts in a discovery topic's node id (so no
    /// `+`, `#`, `/` or NUL either).
    pub fn new(device: &str) -> Result<Topics, DeviceIdError> {
        if device.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if device.len() > MAX_DEVICE_ID {
            return Err(DeviceIdError::TooLong { len: device.len() });
        }
        if let Some((at, found)) = device
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(DeviceIdError::BadChar { found, at });
        }
        let base = format!("home/{device}");
        Ok(Topics {
            device: device.to_string(),
            command: format!("{base}/command"),
            source_set: format!("{base}/ota/source/set"),
            source_status: format!("{base}/ota/source/status"),
            version: format!("{base}/ota/version"),
            progress: format!("{base}/ota/progress"),
            state: format!("{base}/ota/state"),
            attributes: format!("{base}/ota/attributes"),
            availability: format!("{base}/availability"),
            update_config: format!("{DISCOVERY_PREFIX}/update/{device}/firmware/config"),
            select_config: format!("{DISCOVERY_PREFIX}/select/{device}/ota_source/config"),
            check_config: format!("{DISCOVERY_PREFIX}/button/{device}/check_update/config"),
            retry_config: format!("{DISCOVERY_PREFIX}/button/{device}/retry_update/config"),
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Check, install or cancel (shared with the clock's other commands).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The preferred source, as the select or a person sets it.
    pub fn source_set(&self) -> &str {
        &self.source_set
    }

    pub fn source_status(&self) -> &str {
        &self.source_status
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn progress(&self) -> &str {
        &self.progress
    }

    /// The state topic of the Home Assistant update entity.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Extra telemetry, shown as the update entity's attributes.
    pub fn attributes(&self) -> &str {
        &self.attributes
    }

    /// The fleet's availability topic, kept by the client's last will.
    pub fn availability(&self) -> &str {
        &self.availability
    }

    pub fn update_config(&self) -> &str {
        &self.update_config
    }

    pub fn select_config(&self) -> &str {
        &self.select_config
    }

    pub fn check_config(&self) -> &str {
        &self.check_config
    }

    pub fn retry_config(&self) -> &str {
        &self.retry_config
    }

    /// The topics the device subscribes to; [`Topics::parse`] reads what arrives on them.
    pub fn subscriptions(&self) -> [&str; 2] {
        [&self.command, &self.source_set]
    }

    /// Reads a message that arrived on `topic`; `None` when the topic is not one of the
    /// update's. A malformed payload is an error to publish with [`Status::error`].
    pub fn parse(&self, topic: &str, payload: &[u8]) -> Option<Result<Command, PayloadError>> {
        if topic == self.command {
            Some(parse_command(payload))
        } else if topic == self.source_set {
            Some(parse_source(payload).map(Command::SetSource))
        } else {
            None
        }
    }
}

/// What a message asks the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Fetch the manifest and report whether an update is available.
    Check,
    /// Check, and install if the manifest is newer and trusted.
    Install,
    /// Install even the release this device rolled back before, which `Install` refuses.
    Retry,
    /// Stop a running download; the running slot stays as it is.
    Cancel,
    /// Prefer this source from now on.
    SetSource(Source),
}

/// The words [`parse_command`] takes, ignoring ASCII case: ours first, then the existing
/// fleet's (`ota_check_update`, `ota_start_update`, `ota_cancel_update` and their
/// `check_ota_update` spellings), so old dashboards and scripts keep working.
const WORDS: [(&str, Command); 11] = [
    ("check", Command::Check),
    ("install", Command::Install),
    ("update", Command::Install),
    ("retry", Command::Retry),
    ("cancel", Command::Cancel),
    ("ota_check_update", Command::Check),
    ("check_ota_update", Command::Check),
    ("ota_start_update", Command::Install),
    ("start_ota_update", Command::Install),
    ("ota_cancel_update", Command::Cancel),
    ("cancel_ota_update", Command::Cancel),
];

/// Why an incoming payload was not understood. Its text is the reason of the error
/// status, and repeats at most a short, control-free excerpt of what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is {len} bytes, more than the {MAX_PAYLOAD} allowed")]
    TooLarge { len: usize },
    #[error("the payload is not UTF-8 text")]
    NotUtf8,
    /// Also what clearing a retained message looks like: a caller may ignore it.
    #[error("the payload is empty")]
    Empty,
    #[error("the payload is not a valid JSON command: {0}")]
    Json(String),
    #[error("unknown command `{0}`: expected check, install (or update), retry or cancel")]
    UnknownCommand(String),
    #[error("unknown source `{0}`: expected GitHub, Cloudflare R2, github, r2 or cloudflare")]
    UnknownSource(String),
}

/// `{"action": "install"}`; the fleet's JSON commands name the same field `command`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCommand {
    #[serde(alias = "command")]
    action: String,
}

/// `{"source": "cloudflare"}`, the fleet's form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSource {
    source: String,
}

/// Reads a `command` payload: `check`, `install` or `update`, `retry`, `cancel`, or the existing
/// fleet's `ota_check_update`, `ota_start_update`, `ota_cancel_update` (also spelled
/// `check_ota_update` ...), in any ASCII case with surrounding whitespace ignored; or the
/// same word as `{"action": word}` (the fleet's `{"command": word}` too).
/// [`PAYLOAD_INSTALL`] and Home Assistant's default `INSTALL` both read as install.
pub fn parse_command(payload: &[u8]) -> Result<Command, PayloadError> {
    let text = text(payload)?;
    let action;
    let word = if text.starts_with('{') {
        action = json::<JsonCommand>(text)?.action;
        action.trim()
    } else {
        text
    };
    WORDS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(word))
        .map(|&(_, command)| command)
        .ok_or_else(|| PayloadError::UnknownCommand(echo(word)))
}

/// Reads an `ota/source/set` payload: a [`source_label`] as the select sends it, or
/// `github`, `r2` or `cloudflare` (any ASCII case, surrounding whitespace ignored), or
/// `{"source": name}`.
pub fn parse_source(payload: &[u8]) -> Result<Source, PayloadError> {
    let text = text(payload)?;
    let source;
    let name = if text.starts_with('{') {
        source = json::<JsonSource>(text)?.source;
        source.trim()
    } else {
        text
    };
    SOURCE_OPTIONS
        .into_iter()
        .find(|&source| source_label(source).eq_ignore_ascii_case(name))
        .or_else(|| Source::parse(name))
        .ok_or_else(|| PayloadError::UnknownSource(echo(name)))
}

/// The payload as trimmed, non-empty text of bounded size.
fn text(payload: &[u8]) -> Result<&str, PayloadError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadError::TooLarge { len: payload.len() });
    }
    let text = core::str::from_utf8(payload)
        .map_err(|_| PayloadError::NotUtf8)?
        .trim();
    if text.is_empty() {
        return Err(PayloadError::Empty);
    }
    Ok(text)
}

fn json<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, PayloadError> {
    serde_json::from_str(text).map_err(|e| PayloadError::Json(echo(&e.to_string())))
}

/// A short excerpt of untrusted text, safe to log and publish.
fn echo(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ECHO)
        .collect()
}

/// `text` cut to `max` characters, the last of them `…` when anything was cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Whole percent of `done` out of `total`, rounded down, so 100 means complete; 0 while
/// the total is unknown (0). No overflow for any pair.
pub fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    let whole = u128::from(done.min(total)) * 100 / u128::from(total);
    u8::try_from(whole).unwrap_or(100)
}

/// Progress is reported at each whole step of this many percent: a download of any size
/// sends at most 21 progress messages (and as many states), which a slow link and the
/// MQTT client's queue carry, where one per percent filled the queue and lost the
/// messages that matter (rebooting, errors, the final state).
pub const PROGRESS_STEP: u8 = 5;

/// Which download progress to report: the first, each new [`PROGRESS_STEP`], the end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProgressGate {
    last: Option<u8>,
}

impl ProgressGate {
    /// Whether `done` of `total` bytes starts a step not reported yet.
    pub fn report(&mut self, done: u64, total: u64) -> bool {
        let step = percent(done, total) / PROGRESS_STEP;
        let new = self.last != Some(step);
        self.last = Some(step);
        new
    }
}

/// Where an update is, as `ota/progress` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Idle,
    Checking,
    /// The trusted manifest names the running version.
    UpToDate,
    /// A newer trusted release is on offer, not yet installing.
    Available,
    Downloading,
    Verifying,
    /// The new image is set to boot; the device restarts into it.
    Rebooting,
    Cancelled,
    Error,
}

/// The `ota/progress` payload: `{"state", "progress", "bytes"}`, plus `reason` on error
/// and `note` when the download changed course (a patch not used).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub state: State,
    /// Whole percent, 0 to 100.
    pub progress: u8,
    pub bytes: u64,
    /// Why, when `state` is [`State::Error`]; cut to [`MAX_REASON`] characters.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_reason"
    )]
    pub reason: Option<String>,
    /// What changed while downloading, e.g. why the whole image follows a patch; cut to
    /// [`MAX_REASON`] characters.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_reason"
    )]
    pub note: Option<String>,
}

impl Status {
    /// `done` of `total` bytes in `state`.
    pub fn new(state: State, done: u64, total: u64) -> Status {
        Status {
            state,
            progress: percent(done, total),
            bytes: done,
            reason: None,
            note: None,
        }
    }

    pub fn with_note(self, note: &str) -> Status {
        Status {
            note: Some(note.to_string()),
            ..self
        }
    }

    /// The error status: state `error` and why, e.g. a [`PayloadError`].
    pub fn error(reason: &dyn fmt::Display) -> Status {
        Status {
            reason: Some(reason.to_string()),
            ..Status::new(State::Error, 0, 0)
        }
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// How an update that did not happen is reported: already current and cancelled are
/// states of their own, everything else is an error with the engine's reason. (`Busy`
/// means another update is running: its progress, not this, is what to publish.)
impl From<&UpdateError> for Status {
    fn from(error: &UpdateError) -> Status {
        match error {
            UpdateError::Current => Status::new(State::UpToDate, 0, 0),
            UpdateError::Cancelled => Status::new(State::Cancelled, 0, 0),
            other => Status::error(other),
        }
    }
}

/// The retained `ota/source/status` payload: `{"source": "github"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// The preferred source.
    #[serde(serialize_with = "source_name")]
    pub source: Source,
}

impl SourceStatus {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// The retained `ota/version` payload: the running firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub version: Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_date: Option<String>,
}

impl VersionInfo {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// The retained attributes payload; fields that are `None` or empty are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attributes {
    /// Every source the last image came from, in order (two after a mid-way switch).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "source_names")]
    pub source_used: Vec<Source>,
    /// Why the last update did not happen; cut to [`MAX_REASON`] characters.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_reason"
    )]
    pub last_error: Option<String>,
    /// How the last image arrived: a patch from which release, or whole and why; cut to
    /// [`MAX_REASON`] characters.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_reason"
    )]
    pub delivery: Option<String>,
    /// Why the last new image was rolled back; cut to [`MAX_REASON`] characters.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_reason"
    )]
    pub rollback_reason: Option<String>,
    /// The release this device rolled back and refuses until `retry`: while it is set,
    /// the discovered retry button is available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<Version>,
}

impl Attributes {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// Where the last offer is kept in the device's store, so that after a reboot (or
/// Home Assistant's restart) the retained state shows it again.
pub const OFFER_KEY: &str = "ota_offer";
/// The most bytes the kept offer takes: its title and summary are cut to
/// [`MAX_RELEASE_SUMMARY`] characters, so it always fits (an NVS blob).
const MAX_KEPT_OFFER: usize = 4096;

/// The Home Assistant update entity's state (`MQTT_JSON_UPDATE_SCHEMA`). Unknown text
/// is left out rather than `null`, which the schema refuses; `update_percentage` is
/// `null` outside an install, which clears Home Assistant's progress bar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateState {
    pub installed_version: Version,
    /// Unknown until a check; Home Assistant keeps what it had while it is left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Cut to [`MAX_RELEASE_SUMMARY`] characters.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "short_summary"
    )]
    pub release_summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_url: Option<String>,
    pub in_progress: bool,
    pub update_percentage: Option<u8>,
}

/// The offer part of [`UpdateState`], as [`OFFER_KEY`] keeps it.
#[derive(Serialize, Deserialize)]
struct KeptOffer {
    latest_version: Version,
    title: Option<String>,
    release_summary: Option<String>,
    release_url: Option<String>,
}

impl UpdateState {
    /// Running `installed`, nothing known about releases, nothing installing.
    pub fn new(installed: Version) -> UpdateState {
        UpdateState {
            installed_version: installed,
            latest_version: None,
            title: None,
            release_summary: None,
            release_url: None,
            in_progress: false,
            update_percentage: None,
        }
    }

    /// Running `installed`, showing the offer `store` kept ([`UpdateState::keep`]); an
    /// unreadable record is as none.
    pub fn kept(installed: Version, store: &dyn Store) -> UpdateState {
        let kept = store
            .get(OFFER_KEY)
            .filter(|bytes| bytes.len() <= MAX_KEPT_OFFER)
            .and_then(|bytes| serde_json::from_slice::<KeptOffer>(&bytes).ok());
        let state = UpdateState::new(installed);
        match kept {
            Some(offer) => UpdateState {
                latest_version: Some(offer.latest_version),
                title: offer.title,
                release_summary: offer.release_summary,
                release_url: offer.release_url,
                ..state
            },
            None => state,
        }
    }

    /// Keeps the offer this state shows in `store`, for [`UpdateState::kept`].
    pub fn keep(&self, store: &mut dyn Store) {
        if let Some(latest) = &self.latest_version {
            let short =
                |text: &Option<String>| text.as_deref().map(|text| cut(text, MAX_RELEASE_SUMMARY));
            let offer = KeptOffer {
                latest_version: latest.clone(),
                title: short(&self.title),
                release_summary: short(&self.release_summary),
                release_url: self
                    .release_url
                    .clone()
                    .filter(|url| url.len() <= MAX_PAYLOAD),
            };
            let bytes = to_json(&offer);
            if bytes.len() <= MAX_KEPT_OFFER {
                store.set(OFFER_KEY, bytes.as_bytes());
            }
        }
    }

    /// What `manifest` offers: its version, title and description, and its release
    /// page under `releases` (a GitHub repository's `/releases`) when known.
    pub fn offering(self, manifest: &Manifest, releases: Option<&str>) -> UpdateState {
        UpdateState {
            latest_version: Some(manifest.version.clone()),
            title: manifest.title.clone(),
            release_summary: manifest.description.clone(),
            release_url: releases.map(|page| format!("{page}/tag/{}", manifest.version.tag())),
            ..self
        }
    }

    /// The offered release will not be installed, and why: shown as the summary, with
    /// the installed version as the latest so Home Assistant offers no install that
    /// would be refused again.
    pub fn not_installable(self, why: String) -> UpdateState {
        UpdateState {
            latest_version: Some(self.installed_version.clone()),
            release_summary: Some(why),
            ..self
        }
    }

    /// The install of the offered release failed: the offer stays (it may be tried
    /// again), the summary says why.
    pub fn failed(self, why: &dyn fmt::Display) -> UpdateState {
        let version = self
            .latest_version
            .as_ref()
            .map_or_else(|| "the update".to_string(), Version::tag);
        UpdateState {
            release_summary: Some(format!("The install of {version} failed: {why}")),
            in_progress: false,
            update_percentage: None,
            ..self
        }
    }

    /// Installing, `done` of `total` bytes.
    pub fn installing(self, done: u64, total: u64) -> UpdateState {
        UpdateState {
            in_progress: true,
            update_percentage: Some(percent(done, total)),
            ..self
        }
    }

    /// Nothing installing.
    pub fn idle(self) -> UpdateState {
        UpdateState {
            in_progress: false,
            update_percentage: None,
            ..self
        }
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// The device as Home Assistant lists it; its identifier is the device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub model: String,
    pub manufacturer: Option<String>,
    /// The running firmware.
    pub sw_version: Version,
    /// The board and chip, e.g. `ESP32-S3 rev v0.2`.
    pub hw_version: Option<String>,
    /// Where a person reads about and configures the firmware (its repository's page).
    pub configuration_url: Option<String>,
    /// The Wi-Fi MAC: Home Assistant merges this device with others that know it.
    pub mac: Option<[u8; 6]>,
    /// The firmware's releases page (a GitHub repository's `/releases`), which the
    /// update entity's `release_url` points into. Not part of the device block.
    pub releases_url: Option<String>,
}

/// The GitHub repository page of a source base on raw.githubusercontent.com
/// (`https://raw.githubusercontent.com/OWNER/REPO/BRANCH/...`): the device's
/// configuration URL, and with `/releases` its release notes.
pub fn github_repository(raw_base: &str) -> Option<String> {
    let path = raw_base.strip_prefix("https://raw.githubusercontent.com/")?;
    let mut parts = path.split('/');
    let (owner, repo) = (parts.next()?, parts.next()?);
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    (plain(owner) && plain(repo)).then(|| format!("https://github.com/{owner}/{repo}"))
}

#[derive(Serialize)]
struct DeviceBlock<'a> {
    identifiers: [&'a str; 1],
    name: &'a str,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    manufacturer: Option<&'a str>,
    sw_version: &'a Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    hw_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    connections: Vec<[String; 2]>,
}

impl<'a> DeviceBlock<'a> {
    fn new(topics: &'a Topics, device: &'a Device) -> DeviceBlock<'a> {
        DeviceBlock {
            identifiers: [topics.device()],
            name: &device.name,
            model: &device.model,
            manufacturer: device.manufacturer.as_deref(),
            sw_version: &device.sw_version,
            hw_version: device.hw_version.as_deref(),
            configuration_url: device.configuration_url.as_deref(),
            connections: device
                .mac
                .iter()
                .map(|mac| {
                    let text: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                    ["mac".to_string(), text.join(":")]
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct Origin {
    name: &'static str,
}

/// Discovery config of Home Assistant's MQTT `update` platform.
#[derive(Serialize)]
struct UpdateConfig<'a> {
    name: &'static str,
    unique_id: String,
    device_class: &'static str,
    state_topic: &'a str,
    command_topic: &'a str,
    payload_install: &'static str,
    json_attributes_topic: &'a str,
    availability_topic: &'a str,
    qos: u8,
    device: DeviceBlock<'a>,
    origin: Origin,
}

/// Discovery config of Home Assistant's MQTT `select` platform.
#[derive(Serialize)]
struct SelectConfig<'a> {
    name: &'static str,
    unique_id: String,
    entity_category: &'static str,
    icon: &'static str,
    options: [&'static str; 2],
    state_topic: &'a str,
    value_template: String,
    command_topic: &'a str,
    availability_topic: &'a str,
    qos: u8,
    device: DeviceBlock<'a>,
    origin: Origin,
}

/// One topic a discovered entity is available by, and how to read it.
#[derive(Serialize)]
struct Availability<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_template: Option<&'static str>,
}

/// Discovery config of Home Assistant's MQTT `button` platform.
#[derive(Serialize)]
struct ButtonConfig<'a> {
    name: &'static str,
    unique_id: String,
    icon: &'static str,
    command_topic: &'a str,
    payload_press: &'static str,
    availability: Vec<Availability<'a>>,
    availability_mode: &'static str,
    qos: u8,
    device: DeviceBlock<'a>,
    origin: Origin,
}

/// The retained config for [`Topics::update_config`]: Home Assistant's native firmware
/// update entity, reading [`UpdateState`] and [`Attributes`] and installing by sending
/// [`PAYLOAD_INSTALL`] to `command`.
pub fn update_discovery(topics: &Topics, device: &Device) -> String {
    to_json(&UpdateConfig {
        name: "Firmware",
        unique_id: format!("{}_firmware", topics.device()),
        device_class: "firmware",
        state_topic: topics.state(),
        command_topic: topics.command(),
        payload_install: PAYLOAD_INSTALL,
        json_attributes_topic: topics.attributes(),
        availability_topic: topics.availability(),
        qos: 1,
        device: DeviceBlock::new(topics, device),
        origin: Origin { name: ORIGIN },
    })
}

/// The retained config for [`Topics::select_config`]: the preferred source as a select
/// of [`SOURCE_OPTIONS`] by their labels, set through `ota/source/set`, shown from
/// `ota/source/status`.
pub fn select_discovery(topics: &Topics, device: &Device) -> String {
    let labels: Vec<String> = SOURCE_OPTIONS
        .iter()
        .map(|&s| format!("'{}': '{}'", s.name(), source_label(s)))
        .collect();
    to_json(&SelectConfig {
        name: "OTA source",
        unique_id: format!("{}_ota_source", topics.device()),
        entity_category: "config",
        icon: "mdi:cloud-sync",
        options: SOURCE_OPTIONS.map(source_label),
        state_topic: topics.source_status(),
        value_template: format!("{{{{ {{{}}}[value_json.source] }}}}", labels.join(", ")),
        command_topic: topics.source_set(),
        availability_topic: topics.availability(),
        qos: 1,
        device: DeviceBlock::new(topics, device),
        origin: Origin { name: ORIGIN },
    })
}

/// The retained config for [`Topics::check_config`]: a button that sends `check`, so a
/// person need not wait for the device's own periodic check.
pub fn check_discovery(topics: &Topics, device: &Device) -> String {
    to_json(&ButtonConfig {
        name: "Check for update",
        unique_id: format!("{}_check_update", topics.device()),
        icon: "mdi:update",
        command_topic: topics.command(),
        payload_press: "check",
        availability: alloc::vec![Availability {
            topic: topics.availability(),
            value_template: None,
        }],
        availability_mode: "all",
        qos: 1,
        device: DeviceBlock::new(topics, device),
        origin: Origin { name: ORIGIN },
    })
}

/// The retained config for [`Topics::retry_config`]: a button that sends `retry`,
/// available only while [`Attributes::rolled_back`] names a release, the one way to
/// install a release this device rolled back.
pub fn retry_discovery(topics: &Topics, device: &Device) -> String {
    to_json(&ButtonConfig {
        name: "Retry rolled-back update",
        unique_id: format!("{}_retry_update", topics.device()),
        icon: "mdi:backup-restore",
        command_topic: topics.command(),
        payload_press: "retry",
        availability: alloc::vec![
            Availability {
                topic: topics.availability(),
                value_template: None,
            },
            Availability {
                topic: topics.attributes(),
                value_template: Some(
                    "{{ 'online' if value_json.rolled_back is defined else 'offline' }}",
                ),
            },
        ],
        availability_mode: "all",
        qos: 1,
        device: DeviceBlock::new(topics, device),
        origin: Origin { name: ORIGIN },
    })
}

/// Compact JSON, fields in declaration order. Cannot fail: every payload is made of
/// strings, integers, booleans and objects with string keys.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn source_name<S: Serializer>(source: &Source, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(source.name())
}

fn source_names<S: Serializer>(sources: &[Source], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(sources.iter().map(|s| s.name()))
}

fn short_reason<S: Serializer>(text: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    cut_option(text, MAX_REASON, serializer)
}

fn short_summary<S: Serializer>(text: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    cut_option(text, MAX_RELEASE_SUMMARY, serializer)
}

fn cut_option<S: Serializer>(
    text: &Option<String>,
    max: usize,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => serializer.serialize_str(&cut(text, max)),
        None => serializer.serialize_none(),
    }
}
