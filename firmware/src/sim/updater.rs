//! The simulated device's [`Updater`]: the engine over real HTTP and the simulated flash.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ota_core::engine::{Control, Engine, Installed, Offer, Progress, Source, UpdateError};
use ota_core::otadata::BootTarget;

use super::device::Device;
use super::http::RealHttp;
use crate::app::Updater;

/// Updates the running `target` of a shared device.
#[derive(Debug)]
pub struct SimUpdater {
    engine: Engine,
    device: Arc<Mutex<Device>>,
    running: BootTarget,
    http: Mutex<RealHttp>,
    reboots: AtomicUsize,
}

impl SimUpdater {
    pub fn new(
        engine: Engine,
        device: Arc<Mutex<Device>>,
        running: BootTarget,
    ) -> std::io::Result<SimUpdater> {
        Ok(SimUpdater {
            engine,
            device,
            running,
            http: Mutex::new(RealHttp::new()?),
            reboots: AtomicUsize::new(0),
        })
    }

    /// How often the app asked for a reboot; the simulator restarts the device on it.
    pub fn reboots(&self) -> usize {
        self.reboots.load(Ordering::SeqCst)
    }
}

impl Updater for SimUpdater {
    fn check(&self, preferred: Source) -> Result<Offer, UpdateError> {
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        self.engine.check(&mut *http, preferred)
    }

    fn install(
        &self,
        offer: &Offer,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<Installed, UpdateError> {
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        let mut device = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        let mut slots = device.slots(self.running);
        self.engine
            .install(&mut *http, &mut slots, offer, control, progress)
    }

    fn reboot(&self) {
        self.reboots.fetch_add(1, Ordering::SeqCst);
    }
}
