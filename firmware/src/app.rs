//! The update feature as MQTT and Home Assistant drive it: commands in, retained status
//! out, checks on a schedule of its own, and one update at a time on its own thread,
//! which nothing but an explicit cancel stops (not a status query, a reconnect or a
//! second trigger).

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use ota_core::Version;
use ota_core::engine::health::{self, Outcome};
use ota_core::engine::{Control, Installed, Offer, Progress, Source, Store, UpdateError};
use ota_core::mqtt::{
    self, Attributes, Command, Device, SourceStatus, State, Status, Topics, UpdateState,
    VersionInfo,
};
use ota_core::policy::{self, Decision, Refusal, Rejected};
use ota_core::schedule::Schedule;

/// Sends MQTT messages; the client behind it queues and reconnects on its own. A
/// retained message is state: it may be delayed (the latest of a topic wins) but never
/// lost; others (progress) may be dropped when the client's queue is full.
pub trait Publisher: Send + Sync {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool);
    /// Waits, at most `within`, until the broker has acknowledged everything published;
    /// whether it has.
    fn flush(&self, within: Duration) -> bool;
}

/// The engine over the device's own ports (HTTP, slots), and the reboot.
pub trait Updater: Send + Sync {
    fn check(&self, preferred: Source) -> Result<Offer, UpdateError>;
    fn install(
        &self,
        offer: &Offer,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<Installed, UpdateError>;
    fn reboot(&self);
}

/// Where the one update job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Fetching the manifest, or reporting how the job ended without a reboot; `then`
    /// is a command asked for meanwhile, which the job goes on to (see
    /// [`Phase::queued`]).
    Checking {
        then: Option<Command>,
        cancelled: bool,
    },
    /// Downloading; `cancelled` once a cancel came, which the job hands the engine at
    /// its next chunk (the engine forgets a cancel that came before it started).
    Installing {
        cancelled: bool,
    },
    /// The new image is set to boot: nothing more starts.
    Rebooting,
}

impl Phase {
    /// The command a job in its check, or at its end, goes on to: the one asked for
    /// meanwhile, of which a cancel leaves only a check standing.
    fn queued(&self) -> Option<Command> {
        match *self {
            Phase::Checking {
                then,
                cancelled: true,
            } => then.filter(|c| *c == Command::Check),
            Phase::Checking { then, .. } => then,
            _ => None,
        }
    }

    /// Whether a cancel came while the job checked (or ended).
    fn cancelled(&self) -> bool {
        matches!(
            self,
            Phase::Checking {
                cancelled: true,
                ..
            }
        )
    }

    /// Where a job is that no install runs in: commands queue behind it.
    fn checking() -> Phase {
        Phase::Checking {
            then: None,
            cancelled: false,
        }
    }
}

/// What the schedule waits for: the first connection (the network is up then), and the
/// app's stop.
#[derive(Debug, Default)]
struct Timer {
    connected: bool,
    stopped: bool,
}

/// What the app remembers between messages.
struct Shared {
    publisher: Arc<dyn Publisher>,
    updater: Arc<dyn Updater>,
    store: Mutex<Box<dyn Store + Send>>,
    topics: Topics,
    device: Device,
    running: Version,
    attributes: Mutex<Attributes>,
    state: Mutex<UpdateState>,
    control: Control,
    phase: Mutex<Phase>,
    /// Every job thread started and not yet joined.
    workers: Mutex<Vec<JoinHandle<()>>>,
    timer: (Mutex<Timer>, Condvar),
}

/// The device's update feature.
pub struct App {
    shared: Arc<Shared>,
    schedule: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("device", &self.shared.topics.device())
            .field("phase", &*lock(&self.shared.phase))
            .finish_non_exhaustive()
    }
}

/// The value behind `mutex`, also after a thread panicked holding it: the device goes
/// on rather than stop over one panic.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh random number, for the schedule's jitter: std's hasher keys come from the
/// platform's random source (the chip's RNG on ESP-IDF).
fn random() -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish() as u32
}

/// What the update entity shows for a release this device rolled back.
fn rolled_back_summary(rejected: &Rejected) -> String {
    format!(
        "{} was rolled back on this device: {}. Press \u{201c}Retry rolled-back update\u{201d} to install it anyway.",
        rejected.version.tag(),
        rejected.reason
    )
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
        let state = UpdateState::kept(running.clone(), &*store);
        let attributes = Attributes {
            rolled_back: health::rejected(&*store).map(|r| r.version),
            ..Attributes::default()
        };
        App {
            shared: Arc::new(Shared {
                publisher,
                updater,
                store: Mutex::new(store),
                topics,
                device,
                running,
                attributes: Mutex::new(attributes),
                state: Mutex::new(state),
                control: Control::default(),
                phase: Mutex::new(Phase::Idle),
                workers: Mutex::new(Vec::new()),
                timer: (Mutex::new(Timer::default()), Condvar::new()),
            }),
            schedule: Mutex::new(None),
        }
    }

    /// After every (re)connection: the retained topics, Home Assistant discovery, the
    /// last known offer, and the outcome of the last update, reported once.
    pub fn on_connect(&self) {
        let s = &self.shared;
        let topics = &s.topics;
        let publish =
            |topic: &str, payload: String| s.publisher.publish(topic, payload.as_bytes(), true);
        for (topic, config) in [
            (
                topics.update_config(),
                mqtt::update_discovery(topics, &s.device),
            ),
            (
                topics.select_config(),
                mqtt::select_discovery(topics, &s.device),
            ),
            (
                topics.check_config(),
                mqtt::check_discovery(topics, &s.device),
            ),
            (
                topics.retry_config(),
                mqtt::retry_discovery(topics, &s.device),
            ),
        ] {
            publish(topic, config);
        }
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
        s.update_state(|state| {
            if state.in_progress {
                state
            } else {
                s.unless_rolled_back(state)
            }
        });
        if outcome.is_some() {
            health::clear_outcome(&mut **lock(&s.store));
        }
        let (timer, wake) = &s.timer;
        lock(timer).connected = true;
        wake.notify_all();
    }

    /// One incoming message. Topics that are not the update's are ignored.
    pub fn on_message(&self, topic: &str, payload: &[u8]) {
        let s = &self.shared;
        match s.topics.parse(topic, payload) {
            None => {}
            Some(Err(error)) => s.publish_status(&Status::error(&error)),
            Some(Ok(Command::Cancel)) => s.cancel(),
            Some(Ok(Command::SetSource(source))) => {
                source.set_preferred(&mut **lock(&s.store));
                let status = SourceStatus { source }.to_json();
                s.publisher
                    .publish(s.topics.source_status(), status.as_bytes(), true);
            }
            Some(Ok(command @ (Command::Check | Command::Install | Command::Retry))) => {
                Shared::trigger(s, command);
            }
        }
    }

    /// Checks on its own from now on: soon after the first connection to the broker
    /// (the network is up by then), then every interval of `schedule`, each delay
    /// jittered. A job already running when a check is due is left alone. Called again,
    /// it keeps the first schedule.
    pub fn check_periodically(&self, schedule: Schedule) {
        let mut slot = lock(&self.schedule);
        if slot.is_some() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        *slot = Some(std::thread::spawn(move || {
            if !shared.wait_for_connection() {
                return;
            }
            let mut delay = schedule.first_delay(random());
            while shared.sleep(delay) {
                Shared::scheduled_check(&shared);
                delay = schedule.next_delay(random());
            }
        }));
    }

    /// The topics to subscribe to.
    pub fn subscriptions(&self) -> [&str; 2] {
        self.shared.topics.subscriptions()
    }

    /// Waits for the running check or update to end, and for any it went on to.
    pub fn wait_idle(&self) {
        loop {
            let Some(handle) = lock(&self.shared.workers).pop() else {
                return;
            };
            let _ = handle.join();
        }
    }
}

/// The app stops with its schedule, and with no update job left running.
impl Drop for App {
    fn drop(&mut self) {
        let (timer, wake) = &self.shared.timer;
        lock(timer).stopped = true;
        wake.notify_all();
        if let Some(handle) = lock(&self.schedule).take() {
            let _ = handle.join();
        }
        self.wait_idle();
    }
}

impl Shared {
    /// Starts `command` as the update job, unless one runs: a check then goes on to an
    /// install asked for meanwhile; an install running refuses another.
    fn trigger(shared: &Arc<Shared>, command: Command) {
        {
            let mut phase = lock(&shared.phase);
            match &mut *phase {
                Phase::Idle => *phase = Phase::checking(),
                Phase::Checking { then, cancelled } => {
                    match command {
                        // A check adds nothing to an install asked for, but outlives a
                        // cancel, and one pressed as a check ends gets its own answer.
                        Command::Check => {
                            then.get_or_insert(Command::Check);
                        }
                        _ if *then == Some(Command::Retry) => {}
                        _ => {
                            *then = Some(command);
                            *cancelled = false;
                        }
                    }
                    return;
                }
                Phase::Installing { .. } | Phase::Rebooting => {
                    drop(phase);
                    return shared.note_error("an update is already running");
                }
            }
        }
        Shared::spawn(shared, command);
    }

    /// The schedule's check: only when nothing runs, and silent otherwise.
    fn scheduled_check(shared: &Arc<Shared>) {
        {
            let mut phase = lock(&shared.phase);
            if *phase != Phase::Idle {
                return;
            }
            *phase = Phase::checking();
        }
        Shared::spawn(shared, Command::Check);
    }

    /// Runs the job on its own thread, kept to be joined.
    fn spawn(shared: &Arc<Shared>, command: Command) {
        let job = Arc::clone(shared);
        let mut workers = lock(&shared.workers);
        workers.retain(|w| !w.is_finished());
        workers.push(std::thread::spawn(move || {
            let mut command = command;
            loop {
                job.run(command);
                // A command asked for after this job had decided goes on now, in this
                // job: the phase never passes through Idle, where a cancel would be lost
                // and another job could start beside it.
                let mut phase = lock(&job.phase);
                match phase.queued() {
                    Some(next) => {
                        *phase = Phase::checking();
                        command = next;
                    }
                    None => {
                        if *phase != Phase::Rebooting {
                            *phase = Phase::Idle;
                        }
                        return;
                    }
                }
            }
        }));
    }

    /// A cancel: forgets an install asked for during a check, and stops a download.
    fn cancel(&self) {
        let mut phase = lock(&self.phase);
        match &mut *phase {
            Phase::Checking { then, cancelled } => {
                *then = None;
                *cancelled = true;
            }
            Phase::Installing { cancelled } => {
                *cancelled = true;
                self.control.cancel();
            }
            Phase::Idle | Phase::Rebooting => {}
        }
    }

    /// Waits until the broker has accepted the session once, or the app stops; whether
    /// it did not stop.
    fn wait_for_connection(&self) -> bool {
        let (timer, wake) = &self.timer;
        let timer = wake
            .wait_while(lock(timer), |t| !t.connected && !t.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        !timer.stopped
    }

    /// Sleeps `delay`, or until the app stops; whether it did not stop.
    fn sleep(&self, delay: Duration) -> bool {
        let (timer, wake) = &self.timer;
        let (timer, _) = wake
            .wait_timeout_while(lock(timer), delay, |t| !t.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        !timer.stopped
    }

    fn publish_status(&self, status: &Status) {
        self.publisher
            .publish(self.topics.progress(), status.to_json().as_bytes(), false);
    }

    /// Changes the state and publishes it, under its lock: two changes at once (a
    /// reconnect's and the job's) are published in the order they are kept.
    fn update_state(&self, change: impl FnOnce(UpdateState) -> UpdateState) {
        let mut state = lock(&self.state);
        let changed = change(state.clone());
        self.publisher
            .publish(self.topics.state(), changed.to_json().as_bytes(), true);
        *state = changed;
    }

    fn publish_state(&self, state: UpdateState) {
        self.update_state(|_| state);
    }

    /// Shows `state` and keeps its offer for the next boot.
    fn show_offer(&self, state: UpdateState) {
        state.keep(&mut **lock(&self.store));
        self.publish_state(state);
    }

    /// `state`, or, when it offers the release this device rolled back, that release
    /// shown as rolled back: no install button that would be refused again.
    fn unless_rolled_back(&self, state: UpdateState) -> UpdateState {
        let rejected = health::rejected(&**lock(&self.store));
        match rejected {
            Some(rejected)
                if state
                    .latest_version
                    .as_ref()
                    .is_some_and(|offered| offered.precedence(&rejected.version).is_eq()) =>
            {
                state.not_installable(rolled_back_summary(&rejected))
            }
            _ => state,
        }
    }

    fn publish_attributes(&self, attributes: &Attributes) {
        self.publisher.publish(
            self.topics.attributes(),
            attributes.to_json().as_bytes(),
            true,
        );
    }

    fn note_error(&self, error: &str) {
        let mut attributes = lock(&self.attributes);
        attributes.last_error = Some(error.to_owned());
        self.publish_attributes(&attributes);
    }

    /// An update that did not happen: the reason kept as the last error (unless it was no
    /// update at all), then its status. In that order, whoever the status wakes finds the
    /// retained attributes already naming the reason.
    fn report(&self, error: &UpdateError) {
        if !matches!(error, UpdateError::Current | UpdateError::Cancelled) {
            self.note_error(&error.to_string());
        }
        self.publish_status(&Status::from(error));
    }

    /// The command the job goes on with after its check: an install or retry asked for
    /// while it checked wins over the check it started as; after a cancel, only a check
    /// asked for since, else `None`.
    fn after_check(&self, started: Command) -> Option<Command> {
        let mut phase = lock(&self.phase);
        let queued = phase.queued();
        let cancelled = phase.cancelled();
        *phase = Phase::checking();
        if cancelled {
            return queued;
        }
        match (queued, started) {
            (Some(Command::Retry), _) => Some(Command::Retry),
            (Some(then), Command::Check) => Some(then),
            _ => Some(started),
        }
    }

    /// Moves the job from its check to its install, unless a cancel came after the check
    /// had decided: that cancel is the install's, and must not be lost with the phase. (A
    /// check asked for since has its answer in the offer the job just showed.)
    fn start_install(&self) -> bool {
        let mut phase = lock(&self.phase);
        if phase.cancelled() {
            return false;
        }
        *phase = Phase::Installing { cancelled: false };
        true
    }

    /// Whether a cancel came for the running download.
    fn install_cancelled(&self) -> bool {
        matches!(*lock(&self.phase), Phase::Installing { cancelled: true })
    }

    /// Check, then (unless the command is a check) download, verify and reboot.
    fn run(&self, started: Command) {
        self.publish_status(&Status::new(State::Checking, 0, 0));
        let preferred = Source::preferred(&**lock(&self.store));
        let checked = self.updater.check(preferred);
        let Some(command) = self.after_check(started) else {
            self.update_state(UpdateState::idle);
            return self.report(&UpdateError::Cancelled);
        };
        let mut offer = match checked {
            Ok(offer) => offer,
            Err(error) => {
                self.update_state(UpdateState::idle);
                return self.report(&error);
            }
        };
        if command != Command::Retry {
            let rejected = health::rejected(&**lock(&self.store));
            offer.decision =
                policy::after_rollback(offer.decision, &offer.manifest.version, rejected.as_ref());
        }
        let releases = self.device.releases_url.as_deref();
        let offered = UpdateState::new(self.running.clone()).offering(&offer.manifest, releases);
        match &offer.decision {
            Decision::Current => {
                self.show_offer(offered);
                return self.report(&UpdateError::Current);
            }
            Decision::Refuse(why) => {
                let summary = match why {
                    Refusal::RolledBack { version, reason } => rolled_back_summary(&Rejected {
                        version: version.clone(),
                        reason: reason.clone(),
                    }),
                    other => format!("{} is not installed: {other}", offer.manifest.version.tag()),
                };
                self.show_offer(offered.not_installable(summary));
                return self.report(&UpdateError::Refused(why.clone()));
            }
            Decision::Update if command == Command::Check => {
                self.show_offer(offered);
                return self.publish_status(&Status::new(
                    State::Available,
                    0,
                    offer.manifest.firmware_size,
                ));
            }
            Decision::Update => self.show_offer(offered.clone()),
        }
        if !self.start_install() {
            self.publish_state(offered.idle());
            return self.report(&UpdateError::Cancelled);
        }
        let mut progress = Reporting {
            app: self,
            offered: &offered,
            gate: mqtt::ProgressGate::default(),
        };
        match self.updater.install(&offer, &self.control, &mut progress) {
            Ok(installed) => {
                *lock(&self.phase) = Phase::Rebooting;
                {
                    // Published under its lock, as every change is: an "already running"
                    // noted meanwhile is not overwritten by an older copy.
                    let mut attributes = lock(&self.attributes);
                    attributes.source_used = installed.sources;
                    attributes.delivery = Some(installed.delivery.to_string());
                    self.publish_attributes(&attributes);
                }
                let size = offer.manifest.firmware_size;
                self.publish_status(&Status::new(State::Rebooting, size, size));
                self.publisher.flush(mqtt::REBOOT_FLUSH);
                self.updater.reboot();
            }
            // From here a command queues for after the job, as during a check, rather than
            // find an update running: an install pressed as soon as the failure shows is
            // not refused.
            Err(UpdateError::Cancelled) => {
                *lock(&self.phase) = Phase::checking();
                self.publish_state(offered.idle());
                self.report(&UpdateError::Cancelled);
            }
            Err(error) => {
                *lock(&self.phase) = Phase::checking();
                self.publish_state(offered.failed(&error));
                self.report(&error);
            }
        }
    }
}

/// The engine's progress, reported while an install runs: the status and update topics
/// at whole percents, and a note when a patch gives way to the whole image.
struct Reporting<'a> {
    app: &'a Shared,
    offered: &'a UpdateState,
    gate: mqtt::ProgressGate,
}

impl Progress for Reporting<'_> {
    fn bytes(&mut self, done: u64, total: u64) {
        // The engine is running now: a cancel that came as it started reaches it.
        if self.app.install_cancelled() {
            self.app.control.cancel();
        }
        // The retained state first, as for every status: whoever the status wakes finds
        // the state it reports.
        if self.gate.report(done, total) {
            self.app
                .publish_state(self.offered.clone().installing(done, total));
            self.app
                .publish_status(&Status::new(State::Downloading, done, total));
        }
    }

    fn falling_back(&mut self, why: &str) {
        self.gate = mqtt::ProgressGate::default();
        let note = format!("{why}; downloading the whole image");
        self.app
            .publish_status(&Status::new(State::Downloading, 0, 0).with_note(&note));
    }
}
