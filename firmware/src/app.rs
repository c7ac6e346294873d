//! The update feature as MQTT and Home Assistant drive it: commands in, retained status
//! out, and one update at a time on its own thread, which nothing but an explicit cancel
//! stops (not a status query, a reconnect or a second trigger).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use ota_core::Version;
use ota_core::engine::health::{self, Outcome};
use ota_core::engine::{Control, Installed, Offer, Source, Store, UpdateError};
use ota_core::mqtt::{
    self, Attributes, Command, Device, SourceStatus, State, Status, Topics, UpdateState,
    VersionInfo,
};
use ota_core::policy::{self, Decision};

/// Sends MQTT messages; the client behind it queues and reconnects on its own. A
/// retained message is state: it may be delayed (the latest of a topic wins) but never
/// lost; others (progress) may be dropped when the client's queue is full.
pub trait Publisher: Send + Sync {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool);
    /// Waits, at most `within`, until the broker has acknowledged everything published;
    /// whether it has.
    fn flush(&self, within: std::time::Duration) -> bool;
}

/// The engine over the device's own ports (HTTP, slots), and the reboot.
pub trait Updater: Send + Sync {
    fn check(&self, preferred: Source) -> Result<Offer, UpdateError>;
    fn install(
        &self,
        offer: &Offer,
        control: &Control,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Installed, UpdateError>;
    fn reboot(&self);
}

/// What the app remembers between messages.
struct Shared {
    publisher: Arc<dyn Publisher>,
    updater: Arc<dyn Updater>,
    store: Mutex<Box<dyn Store + Send>>,
    topics: Topics,
    running: Version,
    attributes: Mutex<Attributes>,
    state: Mutex<UpdateState>,
    control: Control,
    /// A check or an update is under way (the engine's own flag covers only installs).
    busy: AtomicBool,
}

/// The device's update feature.
pub struct App {
    shared: Arc<Shared>,
    device: Device,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("device", &self.shared.topics.device())
            .field("busy", &self.shared.busy.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl App {
    pub fn new(
        topics: Topics,
        device: Device,
        publisher: Arc<dyn Publisher>,
        updater: Arc<dyn Updater>,
        store: Box<dyn Store + Send>,
    ) -> App {
        let running = device.sw_version.clone();
        App {
            shared: Arc::new(Shared {
                publisher,
                updater,
                store: Mutex::new(store),
                topics,
                state: Mutex::new(UpdateState::new(running.clone())),
                running,
                attributes: Mutex::new(Attributes::default()),
                control: Control::default(),
                busy: AtomicBool::new(false),
            }),
            device,
            worker: Mutex::new(None),
        }
    }

    /// After every (re)connection: the retained topics, Home Assistant discovery, and the
    /// outcome of the last update, reported once.
    pub fn on_connect(&self) {
        let s = &self.shared;
        let topics = &s.topics;
        let publish =
            |topic: &str, payload: String| s.publisher.publish(topic, payload.as_bytes(), true);
        publish(
            topics.update_config(),
            mqtt::update_discovery(topics, &self.device),
        );
        publish(
            topics.select_config(),
            mqtt::select_discovery(topics, &self.device),
        );
        publish(topics.availability(), mqtt::ONLINE.to_owned());
        let version = VersionInfo {
            version: s.running.clone(),
            build_date: None,
        };
        publish(topics.version(), version.to_json());
        let source = Source::preferred(&**lock(&s.store));
        publish(topics.source_status(), SourceStatus { source }.to_json());
        let outcome = health::pending_outcome(&**lock(&s.store));
        if let Some(Outcome::RolledBack { version, reason }) = &outcome {
            lock(&s.attributes).rollback_reason = Some(format!("{version} rolled back: {reason}"));
        }
        publish(topics.attributes(), lock(&s.attributes).to_json());
        publish(topics.state(), lock(&s.state).to_json());
        if outcome.is_some() {
            health::clear_outcome(&mut **lock(&s.store));
        }
    }

    /// One incoming message. Topics that are not the update's are ignored.
    pub fn on_message(&self, topic: &str, payload: &[u8]) {
        let s = &self.shared;
        match s.topics.parse(topic, payload) {
            None => {}
            Some(Err(error)) => s.publish_status(&Status::error(&error)),
            Some(Ok(Command::Cancel)) => s.control.cancel(),
            Some(Ok(Command::SetSource(source))) => {
                source.set_preferred(&mut **lock(&s.store));
                let status = SourceStatus { source }.to_json();
                s.publisher
                    .publish(s.topics.source_status(), status.as_bytes(), true);
            }
            Some(Ok(command @ (Command::Check | Command::Install | Command::Retry))) => {
                // A second trigger while one runs changes nothing: the running one goes on.
                if s.busy.swap(true, Ordering::SeqCst) {
                    s.note_error("an update is already running");
                    return;
                }
                let shared = Arc::clone(s);
                let handle = std::thread::spawn(move || {
                    shared.run(command);
                    shared.busy.store(false, Ordering::SeqCst);
                });
                *lock(&self.worker) = Some(handle);
            }
        }
    }

    /// The topics to subscribe to.
    pub fn subscriptions(&self) -> [&str; 2] {
        self.shared.topics.subscriptions()
    }

    /// Waits for the running check or update to end.
    pub fn wait_idle(&self) {
        if let Some(handle) = lock(&self.worker).take() {
            let _ = handle.join();
        }
    }
}

impl Shared {
    fn publish_status(&self, status: &Status) {
        self.publisher
            .publish(self.topics.progress(), status.to_json().as_bytes(), false);
    }

    fn publish_state(&self, state: UpdateState) {
        self.publisher
            .publish(self.topics.state(), state.to_json().as_bytes(), true);
        *lock(&self.state) = state;
    }

    fn note_error(&self, error: &str) {
        let mut attributes = lock(&self.attributes);
        attributes.last_error = Some(error.to_owned());
        self.publisher.publish(
            self.topics.attributes(),
            attributes.to_json().as_bytes(),
            true,
        );
    }

    fn fail(&self, error: &UpdateError) {
        self.publish_status(&Status::from(error));
        if !matches!(error, UpdateError::Current | UpdateError::Cancelled) {
            self.note_error(&error.to_string());
        }
        let idle = UpdateState {
            in_progress: false,
            update_percentage: None,
            ..lock(&self.state).clone()
        };
        self.publish_state(idle);
    }

    /// Check, then (unless `command` is a check) download, verify and reboot.
    fn run(&self, command: Command) {
        self.publish_status(&Status::new(State::Checking, 0, 0));
        let preferred = Source::preferred(&**lock(&self.store));
        let mut offer = match self.updater.check(preferred) {
            Ok(offer) => offer,
            Err(error) => return self.fail(&error),
        };
        if command != Command::Retry {
            let rejected = health::rejected(&**lock(&self.store));
            offer.decision =
                policy::after_rollback(offer.decision, &offer.manifest.version, rejected.as_ref());
        }
        let install = command != Command::Check;
        self.publish_state(UpdateState::new(self.running.clone()).offering(&offer.manifest));
        match &offer.decision {
            Decision::Current => return self.fail(&UpdateError::Current),
            Decision::Refuse(why) => return self.fail(&UpdateError::Refused(why.clone())),
            Decision::Update if !install => {
                return self.publish_status(&Status::new(
                    State::Available,
                    0,
                    offer.manifest.firmware_size,
                ));
            }
            Decision::Update => {}
        }
        let base = lock(&self.state).clone();
        let mut gate = mqtt::ProgressGate::default();
        let mut progress = |done: u64, total: u64| {
            if gate.report(done, total) {
                self.publish_status(&Status::new(State::Downloading, done, total));
                self.publish_state(base.clone().installing(done, total));
            }
        };
        match self.updater.install(&offer, &self.control, &mut progress) {
            Ok(installed) => {
                lock(&self.attributes).source_used = installed.sources;
                self.publisher.publish(
                    self.topics.attributes(),
                    lock(&self.attributes).to_json().as_bytes(),
                    true,
                );
                self.publish_status(&Status::new(
                    State::Rebooting,
                    offer.manifest.firmware_size,
                    offer.manifest.firmware_size,
                ));
                self.publisher.flush(mqtt::REBOOT_FLUSH);
                self.updater.reboot();
            }
            Err(error) => self.fail(&error),
        }
    }
}
