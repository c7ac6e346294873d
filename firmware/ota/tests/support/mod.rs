//! In-memory ports for deterministic engine tests: an HTTP peer whose every URL behaves
//! as told (refuse, time out, answer a status, serve bytes and maybe die mid-way), and
//! flash slots that record what was written.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;

use ota_core::engine::{
    ContentRange, Http, HttpError, Response, RunningImage, SlotError, Slots, Source, Sources,
    Store, Timeouts,
};
use ota_core::manifest::{FORMAT, SecretKey};
use ota_core::policy::Running;
use ota_core::{Chip, Manifest, Sha256, Version};

pub const IMAGE: &[u8] = include_bytes!("../data/wordclock-2.9.0.bin");
pub const GITHUB: &str = "https://raw.example/acme/wordclock/main/ota_files/";
pub const R2: &str = "https://pub.example/";

pub fn key() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

pub fn sources() -> Sources {
    Sources {
        github: GITHUB.to_owned(),
        r2: R2.to_owned(),
    }
}

pub fn running(version: &str, secure_version: u32) -> Running {
    Running {
        version: version.parse().unwrap(),
        secure_version,
        chip: Chip::Esp32S3,
        chip_revision: Some(ota_core::image::ChipRevision(2)),
    }
}

/// The engine of a device on `version`, trusting the fixture key, with default timeouts.
pub fn engine(version: &str, secure_version: u32) -> ota_core::engine::Engine {
    ota_core::engine::Engine::new(ota_core::engine::Config {
        sources: sources(),
        trusted: vec![key().public()],
        running: running(version, secure_version),
        timeouts: Timeouts::default(),
    })
}

/// The fixture image's manifest, signed: v2.9.0, secure_version 2, ESP32-S3.
pub fn manifest() -> Manifest {
    let mut m = unsigned_manifest();
    m.sign(&key());
    m
}

pub fn unsigned_manifest() -> Manifest {
    Manifest {
        format: Some(FORMAT),
        version: "2.9.0".parse::<Version>().unwrap(),
        build_date: None,
        sha256: Sha256::of(IMAGE),
        firmware_size: IMAGE.len() as u64,
        firmware_url: None,
        commit_hash: None,
        title: None,
        description: None,
        release_date: None,
        esp_idf_version: None,
        requires_restart: Some(true),
        chip: Some(Chip::Esp32S3),
        secure_version: Some(2),
        file: Some("wordclock-v2.9.0.bin".to_owned()),
        patches: Vec::new(),
        signature: None,
        extra: Default::default(),
    }
}

/// The fixture image with another embedded version (and correct checksum and hash): a
/// well-formed build of another release.
pub fn image_of_version(version: &str) -> Vec<u8> {
    let mut raw = testkit::image::RawImage::parse(IMAGE);
    let field = &mut raw.segments[0].data[16..48];
    field.fill(0);
    field[..version.len()].copy_from_slice(version.as_bytes());
    raw.build()
}

pub fn base(source: Source) -> &'static str {
    match source {
        Source::Github => GITHUB,
        Source::R2 => R2,
    }
}

/// How one URL answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Refuse,
    Timeout,
    Status(u16),
    /// Serves `body`; breaks the connection after `die_after` bytes of this answer;
    /// honours `Range` only when `ranges` is set.
    Serve {
        body: Vec<u8>,
        die_after: Option<usize>,
        ranges: bool,
    },
    /// Answers a Range with a 206 whose Content-Range starts `shift` bytes off.
    Misranged {
        body: Vec<u8>,
        shift: u64,
    },
    /// Takes `after` to answer as `then`: a request whose deadline is shorter times out.
    Slow {
        after: std::time::Duration,
        then: Box<Behaviour>,
    },
}

impl Behaviour {
    pub fn serve(body: &[u8]) -> Behaviour {
        Behaviour::Serve {
            body: body.to_vec(),
            die_after: None,
            ranges: true,
        }
    }
}

/// An HTTP peer for every URL the engine may ask; unknown URLs answer 404.
#[derive(Debug, Default)]
pub struct FakeHttp {
    pub routes: HashMap<String, Behaviour>,
    /// Every request: URL and Range start.
    pub log: Vec<(String, Option<u64>)>,
    /// Every request's whole-request deadline, in the same order.
    pub deadlines: Vec<std::time::Duration>,
}

impl FakeHttp {
    /// Both sources serve the manifest and the image.
    pub fn healthy(manifest: &Manifest) -> FakeHttp {
        let mut http = FakeHttp::default();
        for source in [Source::Github, Source::R2] {
            http.route(
                source,
                "version.json",
                Behaviour::serve(&manifest.to_json()),
            );
            http.route(source, "wordclock-v2.9.0.bin", Behaviour::serve(IMAGE));
        }
        http
    }

    pub fn route(&mut self, source: Source, file: &str, behaviour: Behaviour) {
        self.routes
            .insert(format!("{}{file}", base(source)), behaviour);
    }

    /// Consumes a one-shot behaviour: after a `Serve` that dies, the same URL serves whole.
    fn take(&mut self, url: &str) -> Behaviour {
        let behaviour = self
            .routes
            .get(url)
            .cloned()
            .unwrap_or(Behaviour::Status(404));
        if let Behaviour::Serve {
            body,
            die_after: Some(_),
            ranges,
        } = &behaviour
        {
            self.routes.insert(
                url.to_owned(),
                Behaviour::Serve {
                    body: body.clone(),
                    die_after: None,
                    ranges: *ranges,
                },
            );
        }
        behaviour
    }
}

impl Http for FakeHttp {
    fn get(
        &mut self,
        url: &str,
        from: Option<u64>,
        timeouts: Timeouts,
    ) -> Result<Box<dyn Response + '_>, HttpError> {
        self.log.push((url.to_owned(), from));
        self.deadlines.push(timeouts.request);
        let behaviour = match self.take(url) {
            Behaviour::Slow { after, .. } if timeouts.request < after => Behaviour::Timeout,
            Behaviour::Slow { then, .. } => *then,
            other => other,
        };
        match behaviour {
            Behaviour::Refuse => Err(HttpError::Connect("connection refused".to_owned())),
            Behaviour::Timeout => Err(HttpError::Timeout),
            Behaviour::Status(status) => {
                Ok(Box::new(FakeResponse::new(status, Vec::new(), None, None)))
            }
            Behaviour::Serve {
                body,
                die_after,
                ranges,
            } => {
                let total = body.len() as u64;
                match from {
                    Some(start) if ranges && start < total => {
                        let range = ContentRange {
                            start,
                            end: total - 1,
                            total: Some(total),
                        };
                        Ok(Box::new(FakeResponse::new(
                            206,
                            body[start as usize..].to_vec(),
                            die_after,
                            Some(range),
                        )))
                    }
                    _ => Ok(Box::new(FakeResponse::new(200, body, die_after, None))),
                }
            }
            Behaviour::Misranged { body, shift } => {
                let start = from.unwrap_or(0) + shift;
                let total = body.len() as u64;
                let range = ContentRange {
                    start,
                    end: total - 1,
                    total: Some(total),
                };
                Ok(Box::new(FakeResponse::new(
                    206,
                    body[start as usize..].to_vec(),
                    None,
                    Some(range),
                )))
            }
            // One slow answer is enough to model: a slow one answers as a timeout or not.
            Behaviour::Slow { .. } => Err(HttpError::Timeout),
        }
    }
}

struct FakeResponse {
    status: u16,
    body: Vec<u8>,
    sent: usize,
    die_after: Option<usize>,
    range: Option<ContentRange>,
}

impl FakeResponse {
    fn new(
        status: u16,
        body: Vec<u8>,
        die_after: Option<usize>,
        range: Option<ContentRange>,
    ) -> FakeResponse {
        FakeResponse {
            status,
            body,
            sent: 0,
            die_after,
            range,
        }
    }
}

impl Response for FakeResponse {
    fn status(&self) -> u16 {
        self.status
    }

    fn content_length(&self) -> Option<u64> {
        Some(self.body.len() as u64)
    }

    fn content_range(&self) -> Option<ContentRange> {
        self.range
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        let limit = self.die_after.unwrap_or(usize::MAX);
        if self.sent >= limit {
            return Err(HttpError::Io("connection reset".to_owned()));
        }
        // Odd chunk sizes exercise the image reader's boundaries.
        let n = buf
            .len()
            .min(1000)
            .min(self.body.len() - self.sent)
            .min(limit - self.sent);
        buf[..n].copy_from_slice(&self.body[self.sent..self.sent + n]);
        self.sent += n;
        Ok(n)
    }
}

/// Flash slots that keep what was written to the inactive slot.
#[derive(Debug, Default)]
pub struct FakeSlots {
    pub inactive: Vec<u8>,
    pub began: usize,
    pub aborted: usize,
    pub boot_set: bool,
    /// SHA-256 of what the slot held when `set_boot` was called.
    pub booted_image: Option<Sha256>,
    /// The most bytes the inactive slot ever held.
    pub high_water: usize,
    /// The running slot's image: only ever read.
    pub running: Vec<u8>,
    /// Reads of the running slot.
    pub running_reads: usize,
}

impl FakeSlots {
    /// Slots whose running slot holds `image`.
    pub fn running(image: &[u8]) -> FakeSlots {
        FakeSlots {
            running: image.to_vec(),
            ..FakeSlots::default()
        }
    }
}

impl Slots for FakeSlots {
    fn begin(&mut self, _size: u64) -> Result<(), SlotError> {
        self.began += 1;
        self.inactive.clear();
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SlotError> {
        if offset != self.inactive.len() as u64 {
            return Err(SlotError(format!(
                "write at {offset}, slot holds {}",
                self.inactive.len()
            )));
        }
        self.inactive.extend_from_slice(data);
        self.high_water = self.high_water.max(self.inactive.len());
        Ok(())
    }

    fn abort(&mut self) {
        self.aborted += 1;
    }

    fn set_boot(&mut self) -> Result<(), SlotError> {
        self.boot_set = true;
        self.booted_image = Some(Sha256::of(&self.inactive));
        Ok(())
    }

    fn running_image(&mut self) -> Result<RunningImage, SlotError> {
        let info = ota_core::image::parse(&self.running, None)
            .map_err(|e| SlotError(format!("the running slot: {e}")))?;
        RunningImage::of(&info)
    }

    fn read_running(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SlotError> {
        self.running_reads += 1;
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|at| self.running.get(at..at.checked_add(buf.len())?))
            .ok_or_else(|| SlotError(format!("read at {offset} outside the running image")))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// The `esp_delta_ota` patch from `old` to `new`, as `detools create_patch` makes it.
pub fn esp_patch(old: &[u8], new: &[u8]) -> Vec<u8> {
    let base = ota_core::image::parse(old, None)
        .unwrap()
        .appended_sha256
        .unwrap();
    let mut patch = ota_core::delta::Header { base }.to_bytes().to_vec();
    patch.extend(testkit::detools::create_patch(old, new));
    patch
}

/// The fixture release's manifest listing `patch` from the image `old` (of `from`), signed.
pub fn manifest_with_patch(from: &str, old: &[u8], patch: &[u8]) -> Manifest {
    let mut m = unsigned_manifest();
    m.patches = vec![ota_core::manifest::Patch {
        from: from.parse().unwrap(),
        base_digest: ota_core::image::parse(old, None)
            .unwrap()
            .appended_sha256
            .unwrap(),
        file: patch_name(from),
        size: patch.len() as u64,
        sha256: Sha256::of(patch),
    }];
    m.sign(&key());
    m
}

pub fn patch_name(from: &str) -> String {
    format!("wordclock-v{from}-to-v2.9.0.patch")
}

#[derive(Debug, Default)]
pub struct FakeStore(pub HashMap<String, Vec<u8>>);

impl Store for FakeStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        self.0.insert(key.to_owned(), value.to_vec());
    }
}
