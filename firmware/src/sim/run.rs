//! The simulated device as a program: a flash file that survives restarts, the boot, the
//! health checks, and the MQTT app until it asks for a reboot, which is a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ota_core::Version;
use ota_core::engine::health::{self, BootSlot as _, Clock, HealthCheck, Outcome, Poll};
use ota_core::engine::{Config, Engine, Sources, Timeouts};
use ota_core::manifest::PublicKey;
use ota_core::mqtt::{Device as HaDevice, Topics};
use ota_core::policy::Running;

use super::device::Device;
use super::flash::Flash;
use super::layout::Layout;
use super::store::FileStore;
use super::updater::SimUpdater;
use crate::app::App;

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
    /// Fault switch: this version fails its health check after the update.
    pub fail_health: Option<Version>,
    /// Fault switch: the power goes after this many more flash bytes.
    pub power_cut_after: Option<u64>,
    /// Stop after this many boots (tests); run on otherwise.
    pub boots: Option<usize>,
}

/// How a run of the simulator ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The requested number of boots happened.
    Boots(usize),
    /// The power-cut switch fired; the flash file holds what was written until then.
    PowerCut,
}

/// One health check standing for the firmware's self-test; fails for the switched version.
struct SelfTest {
    fails: bool,
}

impl HealthCheck for SelfTest {
    fn name(&self) -> &str {
        "self-test"
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn poll(&mut self) -> Poll {
        Poll::Ready(if self.fails {
            Err("the fault switch failed it".to_owned())
        } else {
            Ok(())
        })
    }
}

struct SystemClock(Instant);

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Saves the flash whole or not at all (a temporary file renamed over the old one), so
/// the simulator can be stopped anywhere, like the power going.
fn save(path: &Path, flash: &Flash) -> Result<(), String> {
    let temporary = path.with_extension("saving");
    std::fs::write(&temporary, flash.as_bytes())
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
        {
            let mut slots = device.slots(booted.target);
            if slots.pending_verify() {
                let mut self_test = SelfTest {
                    fails: settings.fail_health.as_ref() == Some(&booted.version),
                };
                let outcome = health::after_boot(
                    &booted.version,
                    &mut slots,
                    &mut [&mut self_test],
                    &SystemClock(Instant::now()),
                    &mut store,
                )
                .map_err(|e| e.0)?;
                if let Some(Outcome::RolledBack { reason, .. }) = outcome {
                    eprintln!("rolled back: {reason}");
                    save(&settings.flash, &device.flash)?;
                    continue;
                }
            }
        }
        if device.flash.power_is_cut() {
            return power_cut(settings, &device);
        }
        save(&settings.flash, &device.flash)?;

        let shared = Arc::new(Mutex::new(device));
        let engine = Engine::new(Config {
            sources: settings.sources.clone(),
            trusted: settings.trusted.clone(),
            running: Running {
                version: booted.version.clone(),
                secure_version: booted.secure_version,
                chip: booted.chip,
            },
            timeouts: settings.timeouts,
        });
        let updater = Arc::new(
            SimUpdater::new(engine, Arc::clone(&shared), booted.target)
                .map_err(|e| e.to_string())?,
        );
        let (publisher, connection) = super::mqtt::connect(
            &settings.device_id,
            &settings.broker.0,
            settings.broker.1,
            topics.availability(),
        );
        let ha = HaDevice {
            name: "Word clock".into(),
            model: "ESP32-S3 (simulated)".into(),
            manufacturer: None,
            sw_version: booted.version.clone(),
        };
        let app = App::new(
            topics.clone(),
            ha,
            Arc::new(publisher.clone()),
            updater.clone(),
            Box::new(store),
        );
        let restart = AtomicBool::new(false);
        super::mqtt::run(&app, &publisher, connection, &|| {
            let lost_power = shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flash
                .power_is_cut();
            let wanted = updater.reboots() > 0 || lost_power;
            restart.store(wanted, Ordering::SeqCst);
            wanted
        });
        app.wait_idle();
        drop(app);
        drop(updater);
        device = Arc::try_unwrap(shared)
            .map_err(|_| "the device is still in use after the app stopped".to_owned())?
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if device.flash.power_is_cut() {
            return power_cut(settings, &device);
        }
        save(&settings.flash, &device.flash)?;
        if !restart.load(Ordering::SeqCst) {
            return Err("the MQTT connection ended".to_owned());
        }
    }
}

fn power_cut(settings: &Settings, device: &Device) -> Result<Ended, String> {
    save(&settings.flash, &device.flash)?;
    eprintln!("power cut: the flash holds what was written until then");
    Ok(Ended::PowerCut)
}
