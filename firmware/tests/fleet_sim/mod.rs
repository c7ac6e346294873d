//! A fleet of simulated devices in one process, updating together from the two local
//! sources while the primary fails part-way: what `cargo xtask fleet` runs and reports,
//! and what `tests/fleet.rs` checks at a smaller count.

use std::fmt;
use std::time::{Duration, Instant};

use ota_core::engine::{Sources, Timeouts};
use testkit::FileServer;
use wordclock::sim::http::RealHttp;

use wordclock::sim::device::Device;

use crate::common::{Release, bumped_image_of, image_of, layout, live};

/// The released image's code and data: large enough that the primary's failure lands
/// in the middle of downloads.
pub const PAYLOAD: u32 = 256 * 1024;

/// How the release reaches the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The manifest lists no patch: every device downloads the image.
    Image,
    /// The manifest lists the patch from 1.0.0, which every device runs.
    Patch,
}

/// What one source served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub requests: usize,
    /// Of those, requests that continued a download at an offset (`Range`).
    pub resumed: usize,
    pub bytes: u64,
}

impl Served {
    fn of(server: &FileServer) -> Served {
        let requests = server.requests();
        Served {
            requests: requests.len(),
            resumed: requests
                .iter()
                .filter(|(_, from)| from.is_some_and(|f| f > 0))
                .count(),
            bytes: server.bytes_served(),
        }
    }
}

/// How the fleet ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub devices: usize,
    pub update: Update,
    /// Booting the new release, committed.
    pub on_new: usize,
    /// Booting the old one, valid.
    pub on_old: usize,
    /// Booting nothing: must be zero.
    pub unbootable: usize,
    /// The devices whose update failed, and why (they stay on the old release).
    pub failures: Vec<String>,
    pub github: Served,
    pub r2: Served,
    /// From the start until the last device committed the new release.
    pub last_commit: Duration,
    /// The flash the devices hold, together (sparse: only sectors in use).
    pub flash_resident: usize,
    /// The process's peak resident memory, when the platform says (Linux).
    pub peak_rss: Option<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        writeln!(
            f,
            "fleet of {} simulated devices, 1.0.0 -> 2.0.0 by {}, GitHub failing part-way",
            self.devices,
            match self.update {
                Update::Image => "the whole image",
                Update::Patch => "delta patch",
            }
        )?;
        writeln!(f, "  on 2.0.0 (committed)   {}", self.on_new)?;
        writeln!(f, "  on 1.0.0 (valid)       {}", self.on_old)?;
        writeln!(f, "  unbootable             {}", self.unbootable)?;
        for (name, served) in [("GitHub", self.github), ("R2", self.r2)] {
            writeln!(
                f,
                "  {name:<7} {:>5} requests ({} resumed at an offset), {}",
                served.requests,
                served.resumed,
                clockrel::units::Bytes(served.bytes)
            )?;
        }
        writeln!(
            f,
            "  last commit after      {:.1} s",
            self.last_commit.as_secs_f64()
        )?;
        writeln!(
            f,
            "  flash held, all devices {:.1} MiB",
            mib(self.flash_resident as u64)
        )?;
        match self.peak_rss {
            Some(rss) => writeln!(f, "  peak RSS               {:.0} MiB", mib(rss))?,
            None => writeln!(f, "  peak RSS               not known on this platform")?,
        }
        for failure in self.failures.iter().take(5) {
            writeln!(f, "  failed: {failure}")?;
        }
        Ok(())
    }
}

/// The process's peak resident set, from /proc (Linux): `VmHWM`.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `devices` devices on 1.0.0 update to 2.0.0 (a version bump) at once over links of
/// about 1.6 MB/s, GitHub preferred, while GitHub fails after serving about half of what
/// the fleet needs (the downloads under way break there; every later request gets 503):
/// each device goes on from R2, at the offset it had, then reboots, passes its health
/// checks and commits. The release comes as `update` says.
pub fn run(devices: usize, update: Update) -> Report {
    let factory = image_of("1.0.0", PAYLOAD);
    let new = bumped_image_of("2.0.0", PAYLOAD);
    let release = match update {
        Update::Image => Release::of(new),
        Update::Patch => Release::patched_from(&factory, new),
    };
    let manifest = release.manifest.to_json();
    let files = release.files();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let github = FileServer::start(&files);
    let r2 = FileServer::start(&files);
    // Links of about 1.6 MB/s a device: the downloads overlap, as a fleet's do.
    for server in [&github, &r2] {
        server.trickle(16 * 1024, Duration::from_millis(10));
    }
    let download = release.patch.as_ref().unwrap_or(&release.image);
    let need = (manifest.len() + download.len()) as u64;
    // Half the fleet's bytes and half a device's: never the end of one download, so
    // however the downloads overlap, one is under way when GitHub fails.
    github.fail_after(devices as u64 * need / 2 + need / 2);
    let sources = Sources {
        github: github.base(),
        r2: r2.base(),
    };
    let started = Instant::now();
    let outcomes: Vec<(Result<Duration, String>, Option<String>, usize)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..devices)
                .map(|_| {
                    let (release, sources, factory) = (&release, &sources, &factory);
                    scope.spawn(move || {
                        let mut device = Device::provision(layout(), Some(factory), None)
                            .unwrap_or_else(|e| panic!("provisioning: {e}"));
                        let updated =
                            RealHttp::new()
                                .map_err(|e| e.to_string())
                                .and_then(|mut http| {
                                    // The update, then the reboot: 2.0.0 on probation
                                    // passes its checks and commits.
                                    for _ in 0..2 {
                                        // One host answers the whole fleet at once: its
                                        // manifests can take longer than the device's
                                        // first-answer deadline, which would send the
                                        // fleet to R2 before GitHub fails part-way. (More
                                        // than a device may set: 5 s at most.)
                                        let timeouts = Timeouts {
                                            first_answer: Duration::from_secs(10),
                                            ..Timeouts::default()
                                        };
                                        live(&mut device, release, &mut http, sources, timeouts)?;
                                    }
                                    Ok(started.elapsed())
                                });
                        let runs = device.boot().ok().map(|booted| booted.version.to_string());
                        (updated, runs, device.flash.resident())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or((Err("the device thread panicked".into()), None, 0))
                })
                .collect()
        });
    let runs = |version: &str| {
        outcomes
            .iter()
            .filter(|(_, v, _)| v.as_deref() == Some(version))
            .count()
    };
    Report {
        devices,
        update,
        on_new: runs("2.0.0"),
        on_old: runs("1.0.0"),
        unbootable: outcomes.iter().filter(|(_, v, _)| v.is_none()).count(),
        failures: outcomes
            .iter()
            .filter_map(|(u, _, _)| u.clone().err())
            .collect(),
        github: Served::of(&github),
        r2: Served::of(&r2),
        last_commit: outcomes
            .iter()
            .filter_map(|(u, _, _)| u.as_ref().ok().copied())
            .max()
            .unwrap_or_default(),
        flash_resident: outcomes.iter().map(|(_, _, r)| r).sum(),
        peak_rss: peak_rss(),
    }
}
