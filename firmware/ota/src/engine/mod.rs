//! The dual-source update engine: which source to ask, when to fail over, and what must
//! hold before the boot slot changes. It does no I/O of its own: it drives the
//! [`ports`], so the same logic runs on the chip, in the host simulator and in tests.

pub mod health;
pub mod ports;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::Manifest;
use crate::image::{ImageError, ImageReader};
use crate::manifest::{MAX_MANIFEST_LEN, PublicKey, Trusted};
use crate::policy::{self, Decision, Running};
pub use ports::{ContentRange, Http, HttpError, Response, SlotError, Slots, Store, Timeouts};

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
    pub version: crate::Version,
    /// Every source the image bytes came from, in order.
    pub sources: Vec<Source>,
    pub attempts: Vec<Attempt>,
}

/// Progress of a download, for the status topic.
pub trait Progress {
    fn bytes(&mut self, done: u64, total: u64);
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
    /// If the source dies mid-way the download goes on from the other source at the same
    /// offset (a 206 with a matching Content-Range), or starts over from 0. An image that
    /// fails any check is fetched again, whole, from the other source; the update fails
    /// only when both sources served bad bytes (with both reasons) or neither delivered.
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
        let mut download = Download::new(&self.config, offer);
        let result = download.run(http, slots, control, progress);
        match result {
            // A cancel that came with the last chunk still stops the switch.
            Ok(()) if control.cancel.load(Ordering::SeqCst) => {
                slots.abort();
                Err(UpdateError::Cancelled)
            }
            Ok(()) => {
                slots.set_boot().map_err(UpdateError::Flash)?;
                Ok(Installed {
                    version: offer.manifest.version.clone(),
                    sources: download.used,
                    attempts: download.attempts,
                })
            }
            Err(e) => {
                slots.abort();
                Err(e)
            }
        }
    }
}

/// One image download, across sources.
struct Download<'a> {
    config: &'a Config,
    manifest: &'a Trusted,
    size: u64,
    first: Source,
    reader: ImageReader,
    offset: u64,
    used: Vec<Source>,
    attempts: Vec<Attempt>,
}

/// How a single request's stream ended.
enum Stream {
    Complete,
    /// It broke at the current offset: another request may resume.
    Broken(Failure),
}

impl<'a> Download<'a> {
    fn new(config: &'a Config, offer: &'a Offer) -> Download<'a> {
        let manifest = &offer.manifest;
        Download {
            config,
            manifest,
            size: manifest.firmware_size,
            first: offer.source,
            reader: Download::fresh_reader(config, manifest),
            offset: 0,
            used: Vec::new(),
            attempts: Vec::new(),
        }
    }

    fn fresh_reader(config: &Config, manifest: &Manifest) -> ImageReader {
        let reader = ImageReader::new()
            .expect_chip(config.running.chip)
            .expect_len(manifest.firmware_size);
        match config.running.chip_revision {
            Some(revision) => reader.expect_chip_revision(revision),
            None => reader,
        }
    }

    fn run(
        &mut self,
        http: &mut dyn Http,
        slots: &mut dyn Slots,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<(), UpdateError> {
        slots.begin(self.size).map_err(UpdateError::Flash)?;
        // Bounded: a source gets two tries whose connection fails, and none more once
        // bytes it served did not verify.
        let mut broken = [0u8; 2];
        let mut bad: [Option<String>; 2] = [None, None];
        let index = |source: Source| source as usize;
        let mut started_over = false;
        let mut source = self.first;
        loop {
            let refused = match self.fetch(http, slots, source, control, progress) {
                Ok(Stream::Broken(failure)) => {
                    self.attempts.push(Attempt {
                        source,
                        what: "image",
                        failure: Some(failure),
                    });
                    broken[index(source)] += 1;
                    None
                }
                Ok(Stream::Complete) => match self.verify() {
                    Ok(()) => return Ok(()),
                    Err(why) => Some(why),
                },
                Err(UpdateError::Verify(why)) => Some(why),
                Err(other) => return Err(other),
            };
            if let Some(why) = refused {
                let failure = if self.used.len() > 1 && !started_over {
                    // Resumed across sources that do not serve the same bytes (a CDN
                    // still on another build): neither is to blame yet; start over once.
                    started_over = true;
                    Failure::Mixed(why)
                } else {
                    bad[index(source)] = Some(why.clone());
                    Failure::BadImage(why)
                };
                self.attempts.push(Attempt {
                    source,
                    what: "image",
                    failure: Some(failure),
                });
                self.restart(slots)?;
            }
            let usable = |s: Source| bad[index(s)].is_none() && broken[index(s)] < 2;
            source = match (usable(source.other()), usable(source)) {
                (true, _) => source.other(),
                (false, true) => source,
                (false, false) => break,
            };
        }
        if let [Some(github), Some(r2)] = &bad {
            return Err(UpdateError::Verify(format!(
                "{}: {github}; {}: {r2}",
                Source::Github.name(),
                Source::R2.name()
            )));
        }
        Err(UpdateError::Download {
            attempts: core::mem::take(&mut self.attempts),
        })
    }

    /// One request to `source`, from the current offset.
    fn fetch(
        &mut self,
        http: &mut dyn Http,
        slots: &mut dyn Slots,
        source: Source,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<Stream, UpdateError> {
        let url = format!(
            "{}{}",
            self.config.sources.base(source),
            self.manifest.file()
        );
        let from = (self.offset > 0).then_some(self.offset);
        let mut response = match http.get(&url, from, self.config.timeouts) {
            Ok(response) => response,
            Err(e) => return Ok(Stream::Broken(e.into())),
        };
        match (response.status(), from) {
            (200, _) => {
                if self.offset > 0 {
                    // The source ignored the Range: start over, as it sends from byte 0.
                    self.restart(slots)?;
                }
            }
            (206, Some(offset)) => {
                let range = response.content_range();
                let matches = range
                    .is_some_and(|r| r.start == offset && r.total.is_none_or(|t| t == self.size));
                if !matches {
                    return Ok(Stream::Broken(Failure::BadRange(format!(
                        "Content-Range {range:?} does not continue at {offset}"
                    ))));
                }
            }
            (status, _) => return Ok(Stream::Broken(Failure::Status(status))),
        }
        if !self.used.contains(&source) {
            self.used.push(source);
        }
        let mut buf = [0u8; CHUNK];
        loop {
            if control.cancel.load(Ordering::SeqCst) {
                return Err(UpdateError::Cancelled);
            }
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                // A connection that breaks after the last byte delivered everything.
                Err(_) if self.offset == self.size => break,
                Err(e) => return Ok(Stream::Broken(e.into())),
            };
            let chunk = &buf[..n];
            self.reader.feed(chunk).map_err(|e| self.image_error(e))?;
            self.check_descriptor()?;
            slots
                .write(self.offset, chunk)
                .map_err(UpdateError::Flash)?;
            self.offset += n as u64;
            progress.bytes(self.offset, self.size);
        }
        if self.offset == self.size {
            Ok(Stream::Complete)
        } else {
            Ok(Stream::Broken(Failure::Io(format!(
                "the body ended at {} of {} bytes",
                self.offset, self.size
            ))))
        }
    }

    /// Starts the image over from byte 0: no byte written so far counts, nor who sent it.
    fn restart(&mut self, slots: &mut dyn Slots) -> Result<(), UpdateError> {
        slots.abort();
        slots.begin(self.size).map_err(UpdateError::Flash)?;
        self.reader = Download::fresh_reader(self.config, self.manifest);
        self.offset = 0;
        self.used.clear();
        Ok(())
    }

    /// Refuses a wrong version as soon as the app descriptor has arrived.
    fn check_descriptor(&self) -> Result<(), UpdateError> {
        match self.reader.descriptor() {
            Some(descriptor) => self
                .manifest
                .check_descriptor(descriptor)
                .map_err(|e| UpdateError::Verify(e.to_string())),
            None => Ok(()),
        }
    }

    fn image_error(&self, e: ImageError) -> UpdateError {
        UpdateError::Verify(e.to_string())
    }

    /// Everything the boot slot may change on: size, SHA-256 of the file, chip, version.
    /// `Err` says why the image is not the promised one.
    fn verify(&mut self) -> Result<(), String> {
        let reader = core::mem::take(&mut self.reader);
        let info = reader.finish().map_err(|e| e.to_string())?;
        self.manifest
            .check_image(&info)
            .map_err(|e| alloc::string::ToString::to_string(&e))
    }
}
