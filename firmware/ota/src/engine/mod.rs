//! The dual-source update engine: which source to ask, when to fail over, and what must
//! hold before the boot slot changes. It does no I/O of its own: it drives the
//! [`ports`], so the same logic runs on the chip, in the host simulator and in tests.

mod download;
pub mod health;
mod patching;
pub mod ports;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::manifest::{MAX_MANIFEST_LEN, Patch, PublicKey, Trusted};
use crate::policy::{self, Decision, Running};
use crate::{Manifest, Version};
use download::{Download, IntoSlot};
use patching::Patching;
pub use ports::{
    ContentRange, FIRST_ANSWER_KEY, FirstAnswerError, Http, HttpError, Response, RunningImage,
    SlotError, Slots, Store, Timeouts,
};

/// Bytes moved per read: the engine's whole download buffer.
pub const CHUNK: usize = 4096;
/// Where the preferred source is kept.
const SOURCE_KEY: &str = "ota_source";

/// One of the two places a release is served from: what a device fails over between,
/// and what the CLI publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Github,
    R2,
}

impl Source {
    pub fn other(self) -> Source {
        match self {
            Source::Github => Source::R2,
            Source::R2 => Source::Github,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Github => "github",
            Source::R2 => "r2",
        }
    }

    /// Reads `github`, `r2` or `cloudflare` (what the existing fleet's MQTT topic takes).
    pub fn parse(text: &str) -> Option<Source> {
        match text.trim().to_ascii_lowercase().as_str() {
            "github" => Some(Source::Github),
            "r2" | "cloudflare" => Some(Source::R2),
            _ => None,
        }
    }

    /// The persisted preference; GitHub when none is stored or it is unreadable.
    pub fn preferred(store: &dyn Store) -> Source {
        store
            .get(SOURCE_KEY)
            .and_then(|v| core::str::from_utf8(&v).ok().and_then(Source::parse))
            .unwrap_or(Source::Github)
    }

    pub fn set_preferred(self, store: &mut dyn Store) {
        store.set(SOURCE_KEY, self.name().as_bytes());
    }
}

/// Where each source serves a release: `base` + `version.json`, `base` + the image's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub github: String,
    pub r2: String,
}

impl Sources {
    pub fn base(&self, source: Source) -> &str {
        match source {
            Source::Github => &self.github,
            Source::R2 => &self.r2,
        }
    }
}

/// What the engine knows and trusts.
#[derive(Debug, Clone)]
pub struct Config {
    pub sources: Sources,
    pub trusted: Vec<PublicKey>,
    pub running: Running,
    pub timeouts: Timeouts,
}

/// Why one request to one source did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Connect(String),
    Timeout,
    Io(String),
    Status(u16),
    /// The answer was not a manifest, or not one signed by a trusted key.
    Invalid(String),
    /// A 206 whose Content-Range does not continue the download where it stopped.
    BadRange(String),
    /// The image resumed across sources did not verify: they serve different bytes.
    Mixed(String),
    /// The image this source served does not verify: it is not asked again for it.
    BadImage(String),
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Failure {
        match e {
            HttpError::Connect(why) => Failure::Connect(why),
            HttpError::Timeout => Failure::Timeout,
            HttpError::Io(why) => Failure::Io(why),
        }
    }
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::Connect(why) => write!(f, "cannot connect ({why})"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Io(why) => write!(f, "connection broke ({why})"),
            Failure::Status(status) => write!(f, "HTTP {status}"),
            Failure::Invalid(why) => write!(f, "invalid manifest: {why}"),
            Failure::BadRange(why) => f.write_str(why),
            Failure::Mixed(why) => write!(f, "the sources serve different bytes ({why})"),
            Failure::BadImage(why) => write!(f, "served an image that does not verify: {why}"),
        }
    }
}

/// One request and how it went, for the log and the status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub source: Source,
    pub what: &'static str,
    pub failure: Option<Failure>,
}

/// A trusted manifest and the verdict on it.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The source whose manifest was accepted: the image comes from there first.
    pub source: Source,
    pub manifest: Trusted,
    pub decision: Decision,
    pub attempts: Vec<Attempt>,
}

/// Why an update did not happen. The running slot is untouched in every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Neither source gave a trusted manifest.
    NoManifest {
        attempts: Vec<Attempt>,
    },
    /// The manifest is trusted but must not be installed.
    Refused(policy::Refusal),
    /// Nothing to do: the manifest names the running version.
    Current,
    /// Neither source delivered the whole image.
    Download {
        attempts: Vec<Attempt>,
    },
    /// The image arrived but is not the one the manifest promised.
    Verify(String),
    Flash(SlotError),
    Cancelled,
    /// Another update is running.
    Busy,
}

impl core::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let attempts = |f: &mut core::fmt::Formatter<'_>, attempts: &[Attempt]| {
            attempts.iter().try_for_each(|a| match &a.failure {
                Some(failure) => write!(f, "; {} {}: {failure}", a.source.name(), a.what),
                None => write!(f, "; {} {}: ok", a.source.name(), a.what),
            })
        };
        match self {
            UpdateError::NoManifest { attempts: list } => {
                f.write_str("no source gave a trusted manifest")?;
                attempts(f, list)
            }
            UpdateError::Refused(why) => write!(f, "refused: {why}"),
            UpdateError::Current => f.write_str("already running the released version"),
            UpdateError::Download { attempts: list } => {
                f.write_str("no source delivered the whole image")?;
                attempts(f, list)
            }
            UpdateError::Verify(why) => write!(f, "the image is not the one promised: {why}"),
            UpdateError::Flash(e) => write!(f, "flash: {}", e.0),
            UpdateError::Cancelled => f.write_str("cancelled"),
            UpdateError::Busy => f.write_str("an update is already running"),
        }
    }
}

/// A finished update: the new image is in the inactive slot, which boots next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: Version,
    /// Every source the image (or patch) bytes came from, in order.
    pub sources: Vec<Source>,
    pub attempts: Vec<Attempt>,
    pub delivery: Delivery,
}

/// How the new image reached the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The whole image: the manifest lists no patches.
    Image,
    /// A patch from the running release, `bytes` long.
    Patch { from: Version, bytes: u64 },
    /// The whole image, because no listed patch could be used, for `why`.
    FellBack { why: String },
}

impl core::fmt::Display for Delivery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Delivery::Image => f.write_str("the whole image"),
            Delivery::Patch { from, bytes } => write!(f, "a {bytes}-byte patch from {from}"),
            Delivery::FellBack { why } => write!(f, "the whole image ({why})"),
        }
    }
}

/// Progress of a download, for the status topic.
pub trait Progress {
    /// `done` of `total` bytes of what is downloading now (the patch, then the image if
    /// the patch could not be used).
    fn bytes(&mut self, done: u64, total: u64);
    /// The manifest's patches could not be used, for `why`: the whole image follows.
    fn falling_back(&mut self, why: &str) {
        let _ = why;
    }
}

impl<F: FnMut(u64, u64)> Progress for F {
    fn bytes(&mut self, done: u64, total: u64) {
        self(done, total)
    }
}

/// Lets one update run at a time, and lets an explicit command (and nothing else) cancel it.
#[derive(Debug, Default)]
pub struct Control {
    running: AtomicBool,
    cancel: AtomicBool,
}

impl Control {
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Whether a cancel was asked for the running update.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// Holds [`Control`] busy until dropped.
struct Busy<'c>(&'c Control);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// The engine for one device.
#[derive(Debug)]
pub struct Engine {
    pub config: Config,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine { config }
    }

    /// Fetches the manifest from `preferred`, else from the other source, and decides.
    /// The device's own history is its caller's: a release rolled back on this device is
    /// held back with [`policy::after_rollback`] (as `wordclock::app` does).
    /// A source fails over on connect error, timeout, a status other than 200, or a
    /// manifest that does not parse or verify. A trusted manifest that offers no update
    /// is not the last word either: the other source is asked too (a kilobyte), since a
    /// stale cache or a frozen mirror would otherwise hide a release from the whole
    /// fleet. Of two trusted manifests the one that offers an update wins, else the
    /// newer; a tie goes to the preferred source.
    ///
    /// The preferred source has [`Timeouts::first_answer`] to deliver; when that cut it
    /// off and the other source offers no update, it is asked once more with the full
    /// timeouts.
    pub fn check(&self, http: &mut dyn Http, preferred: Source) -> Result<Offer, UpdateError> {
        let timeouts = self.config.timeouts;
        let mut attempts = Vec::new();
        let mut best: Option<(Source, Trusted, Decision)> = None;
        let mut asks = alloc::vec![
            (preferred, timeouts.within(timeouts.first_answer)),
            (preferred.other(), timeouts),
        ];
        let mut at = 0;
        while let Some(&(source, timeouts)) = asks.get(at) {
            at += 1;
            match self.fetch_manifest(http, source, timeouts) {
                Ok(manifest) => {
                    attempts.push(Attempt {
                        source,
                        what: "manifest",
                        failure: None,
                    });
                    let decision =
                        policy::decide(&self.config.running, &manifest, &self.config.trusted);
                    let update = decision == Decision::Update;
                    let better = best.as_ref().is_none_or(|(_, kept, kept_decision)| {
                        match (update, *kept_decision == Decision::Update) {
                            (true, false) => true,
                            (false, true) => false,
                            // A tie goes to the preferred source, even asked again last.
                            _ => match manifest.version.precedence(&kept.version) {
                                core::cmp::Ordering::Equal => source == preferred,
                                order => order.is_gt(),
                            },
                        }
                    });
                    if better {
                        best = Some((source, manifest, decision));
                    }
                    if update {
                        break;
                    }
                }
                Err(failure) => {
                    // Cut off by the short deadline: a timeout, or, as a chip's HTTP client
                    // reports a handshake or an answer that did not come in time, a
                    // connection that failed. Asked again only if the deadline was
                    // shorter than the full timeouts.
                    let transport = matches!(
                        failure,
                        Failure::Timeout | Failure::Connect(_) | Failure::Io(_)
                    );
                    let cut_short = at == 1 && transport && timeouts != self.config.timeouts;
                    attempts.push(Attempt {
                        source,
                        what: "manifest",
                        failure: Some(failure),
                    });
                    if cut_short {
                        asks.push((source, self.config.timeouts));
                    }
                }
            }
        }
        match best {
            Some((source, manifest, decision)) => Ok(Offer {
                source,
                manifest,
                decision,
                attempts,
            }),
            None => Err(UpdateError::NoManifest { attempts }),
        }
    }

    fn fetch_manifest(
        &self,
        http: &mut dyn Http,
        source: Source,
        timeouts: Timeouts,
    ) -> Result<Trusted, Failure> {
        let url = format!("{}version.json", self.config.sources.base(source));
        let mut response = http.get(&url, None, timeouts)?;
        if response.status() != 200 {
            return Err(Failure::Status(response.status()));
        }
        let mut body = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = response.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if body.len() + n > MAX_MANIFEST_LEN {
                return Err(Failure::Invalid(format!(
                    "larger than {MAX_MANIFEST_LEN} bytes"
                )));
            }
            body.extend_from_slice(&buf[..n]);
        }
        Manifest::from_json(&body)
            .map_err(|e| Failure::Invalid(e.to_string()))?
            .trust(&self.config.trusted)
            .map_err(|e| Failure::Invalid(e.to_string()))
    }

    /// Checks, and when the verdict is to update, installs. See [`Engine::install`].
    pub fn update(
        &self,
        http: &mut dyn Http,
        slots: &mut dyn Slots,
        preferred: Source,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<Installed, UpdateError> {
        let offer = self.check(http, preferred)?;
        self.install(http, slots, &offer, control, progress)
    }

    /// Streams the offered image into the inactive slot and sets it to boot only if its
    /// size, SHA-256, chip and embedded version are what the trusted manifest says.
    /// When the manifest lists a patch from the running image, the patch is downloaded
    /// instead and applied as it arrives; the image it makes passes the same checks, and
    /// any failure on that path (no patch from this image, a patch that does not verify
    /// or apply, a result that is not the promised image) falls back to the whole image,
    /// told to `progress`. Either file fails over and resumes as [`download`] says.
    pub fn install(
        &self,
        http: &mut dyn Http,
        slots: &mut dyn Slots,
        offer: &Offer,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<Installed, UpdateError> {
        match &offer.decision {
            Decision::Update => {}
            Decision::Current => return Err(UpdateError::Current),
            Decision::Refuse(why) => return Err(UpdateError::Refused(why.clone())),
        }
        if control.running.swap(true, Ordering::SeqCst) {
            return Err(UpdateError::Busy);
        }
        let _busy = Busy(control);
        control.cancel.store(false, Ordering::SeqCst);
        let manifest = &offer.manifest;
        let mut attempts = Vec::new();
        let delivery = match self.patch_for(slots, manifest) {
            PatchFor::None => Delivery::Image,
            PatchFor::Unusable(why) => {
                progress.falling_back(&why);
                Delivery::FellBack { why }
            }
            PatchFor::Some(spec, base) => {
                let out = IntoSlot::new(&self.config, manifest);
                let sink = Patching::new(spec, base, out);
                let mut download = Download::new(
                    &self.config,
                    "patch",
                    &spec.file,
                    spec.size,
                    offer.source,
                    sink,
                );
                let result = download.run(http, slots, control, progress);
                attempts.append(&mut download.attempts);
                match result {
                    Ok(()) => {
                        let delivery = Delivery::Patch {
                            from: spec.from.clone(),
                            bytes: spec.size,
                        };
                        return self.switch(
                            slots,
                            manifest,
                            control,
                            download.used,
                            attempts,
                            delivery,
                        );
                    }
                    // Neither is the patch's fault: the image would meet them too.
                    Err(e @ (UpdateError::Cancelled | UpdateError::Flash(_))) => {
                        slots.abort();
                        return Err(e);
                    }
                    Err(e) => {
                        let why = format!("the patch from {} was not used: {e}", spec.from);
                        progress.falling_back(&why);
                        Delivery::FellBack { why }
                    }
                }
            }
        };
        let out = IntoSlot::new(&self.config, manifest);
        let (file, size) = (manifest.file(), manifest.firmware_size);
        let mut download = Download::new(&self.config, "image", file, size, offer.source, out);
        let result = download.run(http, slots, control, progress);
        attempts.append(&mut download.attempts);
        match result {
            Ok(()) => self.switch(slots, manifest, control, download.used, attempts, delivery),
            Err(UpdateError::Download { .. }) => {
                slots.abort();
                Err(UpdateError::Download { attempts })
            }
            Err(e) => {
                slots.abort();
                Err(e)
            }
        }
    }

    /// The patch to download instead of the image: the one the manifest lists from the
    /// running image, if it lists any.
    fn patch_for<'m>(&self, slots: &mut dyn Slots, manifest: &'m Trusted) -> PatchFor<'m> {
        if manifest.patches.is_empty() {
            return PatchFor::None;
        }
        let running = match slots.running_image() {
            Ok(running) => running,
            Err(e) => {
                return PatchFor::Unusable(format!(
                    "the running image could not be read as a patch's base: {}",
                    e.0
                ));
            }
        };
        match manifest.patch_from(&running.digest) {
            Some(spec) => PatchFor::Some(spec, running),
            None => PatchFor::Unusable(format!(
                "the release lists no patch from the running image (digest {})",
                running.digest
            )),
        }
    }

    /// The slot holds the verified image: it boots next, unless a cancel came with the
    /// last chunk.
    fn switch(
        &self,
        slots: &mut dyn Slots,
        manifest: &Trusted,
        control: &Control,
        sources: Vec<Source>,
        attempts: Vec<Attempt>,
        delivery: Delivery,
    ) -> Result<Installed, UpdateError> {
        if control.cancel.load(Ordering::SeqCst) {
            slots.abort();
            return Err(UpdateError::Cancelled);
        }
        slots.set_boot().map_err(UpdateError::Flash)?;
        Ok(Installed {
            version: manifest.version.clone(),
            sources,
            attempts,
            delivery,
        })
    }
}

/// Whether a patch can stand in for the image.
enum PatchFor<'m> {
    /// The manifest lists none.
    None,
    /// It lists some, none usable, for this reason.
    Unusable(String),
    Some(&'m Patch, RunningImage),
}
