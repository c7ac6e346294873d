//! The simulated device as a program: a flash file that survives restarts, the boot, the
//! health checks, and the MQTT app until it asks for a reboot, which is a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ota_core::engine::Store as _;
use ota_core::engine::health::{self, BootSlot as _, Outcome};
use ota_core::engine::{Config, Engine, Sources, Timeouts};
use ota_core::manifest::PublicKey;
use ota_core::mqtt::Topics;
use ota_core::policy::Running;
use ota_core::schedule::{DEFAULT_INTERVAL, INTERVAL_KEY, Schedule};

use super::board::{Fault, SimLeds, SimRtc};
use super::device::{Booted, Device};
use super::flash::Flash;
use super::layout::Layout;
use super::store::FileStore;
use super::updater::SimUpdater;
use crate::app::App;
use crate::health::{Check, LedCheck, MonotonicClock, RtcCheck, Until};
use crate::identity;
use crate::session::Session;

/// How the simulated device is set up, and its fault switches.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The flash contents, kept across runs.
    pub flash: PathBuf,
    pub partitions: PathBuf,
    pub flash_size: usize,
    /// The image for the factory partition when the flash file does not exist yet.
    pub factory_image: Option<PathBuf>,
    pub device_id: String,
    pub broker: (String, u16),
    pub sources: Sources,
    pub trusted: Vec<PublicKey>,
    pub timeouts: Timeouts,
    /// How long each health check may take after an update.
    pub health_deadline: Duration,
    /// Fault switch: this version breaks this part of the clock, so it fails its check.
    pub fault: Option<Fault>,
    /// Fault switch: the power goes after this many more flash bytes.
    pub power_cut_after: Option<u64>,
    /// Stop after this many boots (tests); run on otherwise.
    pub boots: Option<usize>,
    /// Seconds between the device's own update checks, set in its NVS as provisioning
    /// would ([`ota_core::schedule::INTERVAL_KEY`]); `None` leaves the NVS as it is.
    pub check_every: Option<u64>,
}

/// How a run of the simulator ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The requested number of boots happened.
    Boots(usize),
    /// The power-cut switch fired; the flash file holds what was written until then.
    PowerCut,
}

/// Saves the flash whole or not at all (a temporary file renamed over the old one), so
/// the simulator can be stopped anywhere, like the power going.
fn save(path: &Path, flash: &Flash) -> Result<(), String> {
    let temporary = path.with_extension("saving");
    std::fs::write(&temporary, flash.to_bytes())
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("cannot save {}: {e}", path.display()))
}

/// Runs the device: boot after boot, as its own firmware would.
pub fn run(settings: &Settings) -> Result<Ended, String> {
    let csv = std::fs::read_to_string(&settings.partitions)
        .map_err(|e| format!("cannot read {}: {e}", settings.partitions.display()))?;
    let layout = Layout::from_csv(&csv, settings.flash_size)?;
    let mut device = match std::fs::read(&settings.flash) {
        Ok(bytes) if bytes.len() == settings.flash_size => Device {
            flash: Flash::from_bytes(bytes),
            layout,
        },
        Ok(_) => {
            return Err(format!(
                "{} is not a {}-byte flash",
                settings.flash.display(),
                settings.flash_size
            ));
        }
        Err(_) => {
            let path = settings
                .factory_image
                .as_ref()
                .ok_or("no flash file yet: give --factory-image")?;
            let image =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Device::provision(layout, Some(&image), None)?
        }
    };
    if let Some(bytes) = settings.power_cut_after {
        device.flash.cut_power_after(bytes);
    }
    let store_path = settings.flash.with_extension("nvs.json");
    if let Some(seconds) = settings.check_every {
        FileStore::open(store_path.clone()).set(INTERVAL_KEY, seconds.to_string().as_bytes());
    }
    let topics = Topics::new(&settings.device_id).map_err(|e| e.to_string())?;
    let mut boots = 0;
    loop {
        if settings.boots.is_some_and(|max| boots >= max) {
            save(&settings.flash, &device.flash)?;
            return Ok(Ended::Boots(boots));
        }
        boots += 1;
        let booted = match device.boot() {
            Ok(booted) => booted,
            Err(_) if device.flash.power_is_cut() => return power_cut(settings, &device),
            Err(e) => return Err(e.to_string()),
        };
        eprintln!("boot {boots}: {:?} runs {}", booted.target, booted.version);
        let mut store = FileStore::open(store_path.clone());
        let shared = Arc::new(Mutex::new(device));
        let updater = Arc::new(
            SimUpdater::new(
                engine(settings, &booted),
                Arc::clone(&shared),
                booted.target,
            )
            .map_err(|e| e.to_string())?,
        );
        let breaks = |check| Fault::breaks(settings.fault.as_ref(), &booted.version, check);
        // A build that broke MQTT: its settings name a port where no broker listens.
        let port = match breaks(Check::Mqtt) {
            true => unused_port()?,
            false => settings.broker.1,
        };
        let (publisher, connection) = super::mqtt::connect(
            &settings.device_id,
            &settings.broker.0,
            port,
            topics.availability(),
        );
        let session = Session::default();
        let give_up = AtomicBool::new(false);
        // The client runs from boot on: the health check waits for its session.
        let verdict = std::thread::scope(|scope| {
            let client = scope.spawn(|| {
                super::mqtt::run(&session, &publisher, connection, &|| {
                    // try_lock: the health checks hold the device while they run.
                    let lost_power = shared
                        .try_lock()
                        .is_ok_and(|device| device.flash.power_is_cut());
                    give_up.load(Ordering::SeqCst) || updater.reboots() > 0 || lost_power
                });
            });
            // Should anything below panic, the client must still stop, or the scope hangs.
            let _stop = StopOnPanic(&give_up);
            let mut verdict =
                prove_health(settings, &booted, &shared, &session, &mut store, breaks);
            if let Ok(Health::Kept) = verdict {
                // Saved now, as the chip's otadata is written now: a stop while the app
                // runs must not put a confirmed image back on probation.
                verdict = save_unless_cut(settings, &shared).map(|()| Health::Kept);
            }
            if let Ok(Health::Kept) = verdict {
                let (schedule, unusable) = Schedule::read(&store);
                if let Some(why) = unusable {
                    eprintln!(
                        "boot {boots}: {why}; checking every {} s",
                        DEFAULT_INTERVAL.as_secs()
                    );
                }
                let device = identity::device(
                    booted.version.clone(),
                    "ESP32-S3 (simulated)".into(),
                    Some(identity::simulated_mac(&settings.device_id)),
                    &settings.sources.github,
                );
                let app = App::new(
                    topics.clone(),
                    device,
                    Arc::new(publisher.clone()),
                    updater.clone(),
                    Box::new(store),
                );
                if let Some(schedule) = schedule {
                    app.check_periodically(schedule);
                }
                session.attach(app, &|topic| publisher.subscribe(topic));
            } else {
                give_up.store(true, Ordering::SeqCst);
            }
            let _ = client.join();
            verdict
        });
        // The app asked for a reboot (or the health checks for a rollback): its work ends.
        if let Some(app) = session.detach() {
            app.wait_idle();
        }
        drop(updater);
        device = Arc::try_unwrap(shared)
            .map_err(|_| "the device is still in use after the app stopped".to_owned())?
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if device.flash.power_is_cut() {
            return power_cut(settings, &device);
        }
        save(&settings.flash, &device.flash)?;
        verdict?;
    }
}

/// Tells the MQTT client loop to stop when dropped during a panic.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Saves the flash unless the power went (then the end of the run saves what is there).
fn save_unless_cut(settings: &Settings, device: &Mutex<Device>) -> Result<(), String> {
    let device = device.lock().unwrap_or_else(PoisonError::into_inner);
    if device.flash.power_is_cut() {
        return Ok(());
    }
    save(&settings.flash, &device.flash)
}

/// What the health checks made of the booted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Healthy, or not on probation: the app runs.
    Kept,
    /// Marked invalid: the next boot starts the previous image.
    RolledBack,
}

/// On probation after an update: the clock's checks, each with the deadline, against
/// the host's network (and the fault switch), the real broker session, the host's clock
/// as RTC and a simulated LED driver.
fn prove_health(
    settings: &Settings,
    booted: &Booted,
    device: &Mutex<Device>,
    session: &Session,
    store: &mut FileStore,
    breaks: impl Fn(Check) -> bool,
) -> Result<Health, String> {
    let mut device = device.lock().unwrap_or_else(PoisonError::into_inner);
    let mut slots = device.slots(booted.target);
    if !slots.pending_verify() {
        return Ok(Health::Kept);
    }
    let deadline = settings.health_deadline;
    let network_up = !breaks(Check::Network);
    let mut network = Until::new(
        Check::Network,
        deadline,
        "not joined to the network",
        || network_up,
    );
    let mut mqtt = Until::new(Check::Mqtt, deadline, "no session with the broker", || {
        session.is_connected()
    });
    let mut rtc = RtcCheck::new(SimRtc::new(breaks(Check::Rtc)), deadline);
    let mut leds = LedCheck::new(
        SimLeds {
            broken: breaks(Check::Leds),
        },
        deadline,
    );
    let outcome = health::after_boot(
        &booted.version,
        &mut slots,
        &mut [&mut network, &mut mqtt, &mut rtc, &mut leds],
        &MonotonicClock::start(),
        store,
    )
    .map_err(|e| e.0)?;
    Ok(match outcome {
        Some(Outcome::RolledBack { reason, .. }) => {
            eprintln!("rolled back: {reason}");
            Health::RolledBack
        }
        Some(Outcome::Confirmed { .. }) | None => Health::Kept,
    })
}

fn engine(settings: &Settings, booted: &Booted) -> Engine {
    Engine::new(Config {
        sources: settings.sources.clone(),
        trusted: settings.trusted.clone(),
        running: Running {
            version: booted.version.clone(),
            secure_version: booted.secure_version,
            chip: booted.chip,
            chip_revision: Some(crate::sim::device::CHIP_REVISION),
        },
        timeouts: settings.timeouts,
    })
}

/// A loopback port nobody listens on (bound, then let go).
fn unused_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn power_cut(settings: &Settings, device: &Device) -> Result<Ended, String> {
    save(&settings.flash, &device.flash)?;
    eprintln!("power cut: the flash holds what was written until then");
    Ok(Ended::PowerCut)
}
