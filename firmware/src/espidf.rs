//! ESP-IDF glue, compiled only for the chip: the boot sequence and the engine's, the
//! app's and the health checks' ports on esp-idf-svc. It stays thin because nothing here
//! can be compiled or tested on the host; every decision it serves is made (and tested)
//! in `ota-core` and in this crate's `app`, `health`, `session` and `provision`.
//!
//! Not compiled in this repository's CI (no Xtensa toolchain): see the README's "The
//! firmware on the chip" for the build command.
#![allow(unsafe_code)] // FFI to ESP-IDF's OTA API; every call's result is checked

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use esp_idf_svc::eventloop::EspSystemEventLoop;
use esp_idf_svc::hal::modem::Modem;
use esp_idf_svc::hal::peripherals::Peripherals;
#[allow(deprecated)] // the legacy RMT driver: a WS2812 frame is one blocking call
use esp_idf_svc::hal::rmt::{
    PinState, Pulse, TxRmtDriver, VariableLengthSignal, config::TransmitConfig,
};
use esp_idf_svc::http::Method;
use esp_idf_svc::http::client::{Configuration as HttpConfiguration, EspHttpConnection};
use esp_idf_svc::mqtt::client::{
    Details, EspMqttClient, EspMqttConnection, EventPayload, LwtConfiguration,
    MqttClientConfiguration, QoS,
};
use esp_idf_svc::nvs::{EspDefaultNvsPartition, EspNvs, NvsDefault};
use esp_idf_svc::ota::EspOta;
use esp_idf_svc::sntp::EspSntp;
use esp_idf_svc::sys::{self, EspError, esp};
use esp_idf_svc::wifi::{AuthMethod, ClientConfiguration, Configuration, EspWifi};
use ota_core::engine::health::{self, BootSlot};
use ota_core::engine::{
    Config, ContentRange, Control, Engine, Http, HttpError, Installed, Offer, Progress, Response,
    RunningImage, SlotError, Slots, Source, Sources, Store, Timeouts, UpdateError,
};
use ota_core::image::ChipRevision;
use ota_core::manifest::PublicKey;
use ota_core::mqtt::{self, Topics};
use ota_core::policy::Running;
use ota_core::schedule::{DEFAULT_INTERVAL, Schedule};
use ota_core::{Chip, Version};
use wordclock::app::{App, Publisher, Updater};
use wordclock::health::{Check, LedCheck, Leds, MonotonicClock, Rtc, RtcCheck, Until};
use wordclock::provision::Provisioned;
use wordclock::session::{Event, Session};
use wordclock::ws2812::{self, Rgb};

// The app descriptor takes its version and project name from Cargo.toml, so the version
// inside the image is the one `clockrel release` set and the manifest names. (The macro
// writes secure_version 0; a fleet that burns anti-rollback eFuses defines its own.)
esp_idf_svc::sys::esp_app_desc!(true);

/// Where the two sources serve version.json and the images: fleet-wide, not secret, so
/// they are built in (`clockrel release` sets them from clockrel.toml).
const GITHUB_BASE: &str = env!(
    "CLOCKREL_GITHUB_BASE",
    "the chip build needs CLOCKREL_GITHUB_BASE: the GitHub raw URL of ota_files/, ending in /"
);
const R2_BASE: &str = env!(
    "CLOCKREL_R2_BASE",
    "the chip build needs CLOCKREL_R2_BASE: the R2 public URL of the images, ending in /"
);

/// The word clock's board: the LED strip's length (10 x 11 letters and 4 minute dots).
/// Its data line is GPIO 16, taken in `main`.
const LED_COUNT: usize = 114;

/// How long each health check may take after an update. Joining Wi-Fi and hearing from
/// SNTP are the slow ones.
const NETWORK_DEADLINE: Duration = Duration::from_secs(60);
const MQTT_DEADLINE: Duration = Duration::from_secs(30);
const RTC_DEADLINE: Duration = Duration::from_secs(60);
const LED_DEADLINE: Duration = Duration::from_secs(5);

pub fn main() {
    sys::link_patches();
    esp_idf_svc::log::EspLogger::initialize_default();
    log::info!("wordclock {} starting", wordclock::VERSION);
    if let Err(e) = run() {
        log::error!("cannot start: {e}");
        // An image on probation that cannot even start goes back to the previous one:
        // the bootloader aborts it at this reset. A confirmed one waits here, saying why,
        // rather than looping.
        if running_pending_verify() {
            std::thread::sleep(Duration::from_secs(5));
            esp_idf_svc::hal::reset::restart();
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[allow(deprecated)] // the legacy RMT driver, as imported above
fn run() -> Result<(), EspError> {
    let peripherals = Peripherals::take()?;
    let sysloop = EspSystemEventLoop::take()?;
    let partition = EspDefaultNvsPartition::take()?;
    let mut store = ChipStore(EspNvs::new(partition.clone(), "wordclock", true)?);
    let settings = Provisioned::load(&store)
        .inspect_err(|e| log::error!("not provisioned: {e}"))
        .ok();
    let mut wifi = settings.as_ref().and_then(|settings| {
        join(peripherals.modem, &sysloop, partition, settings)
            .inspect_err(|e| log::error!("wifi: {e}"))
            .ok()
    });
    // Sets the system time (the clock's RTC) once the network is up; without it the RTC
    // check fails, which is the truth. Without Wi-Fi the network stack was never
    // started, and SNTP must not start on it.
    let _sntp = wifi.as_ref().and_then(|_| {
        EspSntp::new_default()
            .inspect_err(|e| log::error!("sntp: {e}"))
            .ok()
    });
    let session = Arc::new(Session::default());
    let topics = settings
        .as_ref()
        .and_then(|s| Topics::new(&s.device_id).ok());
    let publisher = match (&settings, &topics) {
        (Some(settings), Some(topics)) => connect(settings, topics, &session)
            .inspect_err(|e| log::error!("mqtt: {e}"))
            .ok(),
        _ => None,
    };
    let config = TransmitConfig::new().clock_divider(1);
    let leds = ChipLeds(
        TxRmtDriver::new(peripherals.rmt.channel0, peripherals.pins.gpio16, &config)
            .map_err(|e| e.to_string()),
    );
    let version: Version = wordclock::VERSION
        .parse()
        .map_err(|_| EspError::from_infallible::<{ sys::ESP_ERR_INVALID_ARG }>())?;
    let mut last_try = Instant::now();
    {
        let mut boot = ChipBoot(EspOta::new()?);
        let mut network = Until::new(
            Check::Network,
            NETWORK_DEADLINE,
            "not joined to the network",
            || stay_joined(wifi.as_mut(), &mut last_try),
        );
        let mut broker = Until::new(
            Check::Mqtt,
            MQTT_DEADLINE,
            "no session with the broker",
            || session.is_connected(),
        );
        let mut rtc = RtcCheck::new(SystemRtc, RTC_DEADLINE);
        let mut lit = LedCheck::new(leds, LED_DEADLINE);
        // On a rollback this does not return: the chip restarts into the previous image.
        // When it cannot (no previous image), the device stays reachable for a fix.
        if let Err(e) = health::after_boot(
            &version,
            &mut boot,
            &mut [&mut network, &mut broker, &mut rtc, &mut lit],
            &MonotonicClock::start(),
            &mut store,
        ) {
            log::error!("health: {}", e.0);
        }
    }

    if let (Some(settings), Some(topics), Some(publisher)) = (settings, topics, publisher) {
        let running = Running {
            version: version.clone(),
            secure_version: 0,
            chip: Chip::Esp32S3,
            chip_revision: Some(chip_revision()),
        };
        let (timeouts, unusable) = Timeouts::configured(&store);
        if let Some(why) = unusable {
            log::warn!(
                "{why}; the preferred source has {:?}",
                timeouts.first_answer
            );
        }
        let (schedule, unusable) = Schedule::read(&store);
        if let Some(why) = unusable {
            log::warn!("{why}; checking every {} s", DEFAULT_INTERVAL.as_secs());
        }
        let device = wordclock::identity::device(
            version,
            format!("ESP32-S3 rev {}", chip_revision()),
            wifi_mac(),
            GITHUB_BASE,
        );
        let app = App::new(
            topics,
            device,
            publisher.clone(),
            Arc::new(ChipUpdater {
                engine: Engine::new(Config {
                    sources: Sources {
                        github: GITHUB_BASE.into(),
                        r2: R2_BASE.into(),
                    },
                    trusted: trusted_keys(),
                    running,
                    timeouts,
                }),
            }),
            Box::new(store),
        );
        if let Some(schedule) = schedule {
            app.check_periodically(schedule);
        }
        log::info!("serving {} over MQTT", settings.device_id);
        session.attach(app, &|topic| publisher.subscribe(topic));
    }
    loop {
        std::thread::sleep(Duration::from_secs(10));
        stay_joined(wifi.as_mut(), &mut last_try);
    }
}

/// The station MAC the chip's eFuses hold, which Home Assistant lists the device by.
fn wifi_mac() -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: esp_read_mac writes 6 bytes (the station MAC's length) into `mac`.
    esp!(unsafe { sys::esp_read_mac(mac.as_mut_ptr(), sys::esp_mac_type_t_ESP_MAC_WIFI_STA) })
        .ok()
        .map(|()| mac)
}

/// ESP-IDF's `esp_chip_info_t` (esp_hw_support/include/esp_chip_info.h), declared here:
/// esp-idf-sys generates no binding for it, since none of the headers it binds includes
/// that one.
#[repr(C)]
#[derive(Default)]
struct EspChipInfo {
    model: u32,
    features: u32,
    revision: u16,
    cores: u8,
}

unsafe extern "C" {
    fn esp_chip_info(out_info: *mut EspChipInfo);
}

/// The chip's revision as `major * 100 + minor`, the encoding of the image header's
/// revision fields (`esp_chip_info_t::revision`).
fn chip_revision() -> ChipRevision {
    let mut info = EspChipInfo::default();
    // SAFETY: esp_chip_info only fills the struct it is given, laid out as above.
    unsafe { esp_chip_info(&mut info) };
    ChipRevision(info.revision)
}

fn trusted_keys() -> Vec<PublicKey> {
    PublicKey::parse_list(wordclock::TRUSTED_KEYS).unwrap_or_else(|(line, e)| {
        // A test parses the same file on the host: this is unreachable in a real build.
        log::error!("trusted-keys.txt, line {line}: {e}: no update will be trusted");
        Vec::new()
    })
}

/// Starts joining the provisioned network; the network check waits for the address.
fn join(
    modem: Modem<'static>,
    sysloop: &EspSystemEventLoop,
    partition: EspDefaultNvsPartition,
    settings: &Provisioned,
) -> Result<EspWifi<'static>, EspError> {
    let invalid = |_| EspError::from_infallible::<{ sys::ESP_ERR_INVALID_ARG }>();
    let mut wifi = EspWifi::new(modem, sysloop.clone(), Some(partition))?;
    let password = settings.wifi_pass.expose();
    wifi.set_configuration(&Configuration::Client(ClientConfiguration {
        ssid: settings.wifi_ssid.as_str().try_into().map_err(invalid)?,
        password: password.try_into().map_err(invalid)?,
        auth_method: if password.is_empty() {
            AuthMethod::None
        } else {
            AuthMethod::WPA2Personal
        },
        ..Default::default()
    }))?;
    wifi.start()?;
    // An access point out of reach now is retried by stay_joined, not given up.
    if let Err(e) = wifi.connect() {
        log::warn!("wifi: {e}");
    }
    Ok(wifi)
}

/// Whether the station is up; when it is not connected, asks again every 10 s (ESP-IDF
/// does not reconnect by itself).
fn stay_joined(wifi: Option<&mut EspWifi<'static>>, last_try: &mut Instant) -> bool {
    let Some(wifi) = wifi else { return false };
    if wifi.is_up().unwrap_or(false) {
        return true;
    }
    if !wifi.is_connected().unwrap_or(false) && last_try.elapsed() >= Duration::from_secs(10) {
        *last_try = Instant::now();
        let _ = wifi.connect();
    }
    false
}

/// The broker client, with the fleet's last will; its events feed the session.
fn connect(
    settings: &Provisioned,
    topics: &Topics,
    session: &Arc<Session>,
) -> Result<Arc<ChipPublisher>, EspError> {
    let configuration = MqttClientConfiguration {
        client_id: Some(settings.device_id.as_str()),
        username: settings.mqtt_user.as_deref(),
        password: settings.mqtt_pass.as_ref().map(|p| p.expose()),
        keep_alive_interval: Some(Duration::from_secs(15)),
        lwt: Some(LwtConfiguration {
            topic: topics.availability(),
            payload: mqtt::OFFLINE.as_bytes(),
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        crt_bundle_attach: Some(sys::esp_crt_bundle_attach),
        ..Default::default()
    };
    let (client, connection) = EspMqttClient::new(&settings.mqtt_url, &configuration)?;
    let publisher = Arc::new(ChipPublisher(Mutex::new(client)));
    let (events, received) = mpsc::channel();
    spawn("mqtt-events", move || forward(connection, &events))?;
    let (session, subscriber) = (Arc::clone(session), Arc::clone(&publisher));
    spawn("mqtt-session", move || {
        for event in received {
            session.handle(event, &|topic| subscriber.subscribe(topic));
        }
    })?;
    Ok(publisher)
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), EspError> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(8 * 1024)
        .spawn(work)
        .map(drop)
        .map_err(|_| EspError::from_infallible::<{ sys::ESP_ERR_NO_MEM }>())
}

/// Copies each event and hands the client its event back at once: ESP-IDF's client task
/// waits for it holding the lock that subscribe and enqueue take, so acting on an event
/// before the next `next()` would deadlock.
fn forward(mut connection: EspMqttConnection, events: &mpsc::Sender<Event>) {
    while let Ok(event) = connection.next() {
        let owned = match event.payload() {
            EventPayload::Connected(_) => Event::Connected,
            EventPayload::Disconnected => Event::Disconnected,
            EventPayload::Received {
                topic: Some(topic),
                data,
                details: Details::Complete,
                ..
            } => Event::Message {
                topic: topic.to_owned(),
                payload: data.to_vec(),
            },
            // Commands are a few bytes: a chunked message is not one of ours.
            _ => continue,
        };
        if events.send(owned).is_err() {
            return;
        }
    }
}

/// HTTPS with the bundled root certificates; `Range` for resumed downloads.
pub struct ChipHttp;

impl Http for ChipHttp {
    fn get(
        &mut self,
        url: &str,
        from: Option<u64>,
        timeouts: Timeouts,
    ) -> Result<Box<dyn Response + '_>, HttpError> {
        let configuration = HttpConfiguration {
            // ESP-IDF has one timeout for every network wait: the longer of ours.
            timeout: Some(timeouts.connect.max(timeouts.read)),
            crt_bundle_attach: Some(sys::esp_crt_bundle_attach),
            ..Default::default()
        };
        let mut connection = EspHttpConnection::new(&configuration)
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        let range = from.map(|from| format!("bytes={from}-"));
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("Range", r.as_str())).collect();
        connection
            .initiate_request(Method::Get, url, &headers)
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        connection
            .initiate_response()
            .map_err(|e| HttpError::Io(e.to_string()))?;
        Ok(Box::new(ChipResponse(
            connection,
            Instant::now() + timeouts.request,
        )))
    }
}

/// The connection, and when the whole request must be over.
struct ChipResponse(EspHttpConnection, Instant);

impl Response for ChipResponse {
    fn status(&self) -> u16 {
        self.0.status()
    }

    fn content_length(&self) -> Option<u64> {
        self.0.header("Content-Length")?.parse().ok()
    }

    fn content_range(&self) -> Option<ContentRange> {
        ContentRange::parse(self.0.header("Content-Range")?)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        if Instant::now() >= self.1 {
            return Err(HttpError::Timeout);
        }
        // esp_http_client_read reports a read timeout as -ESP_ERR_HTTP_EAGAIN, which
        // EspHttpConnection passes on as it is.
        self.0.read(buf).map_err(|e| {
            if e.code().abs() == sys::ESP_ERR_HTTP_EAGAIN {
                HttpError::Timeout
            } else {
                HttpError::Io(e.to_string())
            }
        })
    }
}

/// The OTA slots through esp_ota_begin / write / end / set_boot_partition.
#[derive(Default)]
pub struct ChipSlots {
    open: Option<(sys::esp_ota_handle_t, *const sys::esp_partition_t)>,
    written: u64,
}

fn flash_error(e: EspError) -> SlotError {
    SlotError(e.to_string())
}

impl Slots for ChipSlots {
    fn begin(&mut self, size: u64) -> Result<(), SlotError> {
        self.abort();
        let partition = unsafe { sys::esp_ota_get_next_update_partition(std::ptr::null()) };
        if partition.is_null() {
            return Err(SlotError("no OTA slot to update".to_owned()));
        }
        let mut handle: sys::esp_ota_handle_t = Default::default();
        // Refuses while the running image is on probation, as the simulator does.
        esp!(unsafe { sys::esp_ota_begin(partition, size as usize, &mut handle) })
            .map_err(flash_error)?;
        self.open = Some((handle, partition));
        self.written = 0;
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SlotError> {
        let (handle, _) = self
            .open
            .ok_or_else(|| SlotError("write before begin".to_owned()))?;
        if offset != self.written {
            return Err(SlotError(format!(
                "write at {offset}, the slot holds {}",
                self.written
            )));
        }
        esp!(unsafe { sys::esp_ota_write(handle, data.as_ptr().cast(), data.len()) })
            .map_err(flash_error)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn abort(&mut self) {
        if let Some((handle, _)) = self.open.take() {
            unsafe { sys::esp_ota_abort(handle) };
        }
    }

    fn set_boot(&mut self) -> Result<(), SlotError> {
        let (handle, partition) = self
            .open
            .take()
            .ok_or_else(|| SlotError("set_boot before begin".to_owned()))?;
        // esp_ota_end verifies the image; set_boot_partition writes otadata (state NEW).
        esp!(unsafe { sys::esp_ota_end(handle) }).map_err(flash_error)?;
        esp!(unsafe { sys::esp_ota_set_boot_partition(partition) }).map_err(flash_error)
    }

    fn running_image(&mut self) -> Result<RunningImage, SlotError> {
        let partition = running_partition()?;
        let mut digest = [0u8; 32];
        // For an app partition: the image's appended digest, as a patch header names it.
        esp!(unsafe { sys::esp_partition_get_sha256(partition, digest.as_mut_ptr()) })
            .map_err(flash_error)?;
        let position = sys::esp_partition_pos_t {
            offset: unsafe { (*partition).address },
            size: unsafe { (*partition).size },
        };
        let mut metadata: sys::esp_image_metadata_t = Default::default();
        esp!(unsafe { sys::esp_image_get_metadata(&position, &mut metadata) })
            .map_err(flash_error)?;
        Ok(RunningImage {
            digest: ota_core::Sha256(digest),
            len: u64::from(metadata.image_len),
        })
    }

    fn read_running(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SlotError> {
        let partition = running_partition()?;
        esp!(unsafe {
            sys::esp_partition_read(
                partition,
                offset as usize,
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })
        .map_err(flash_error)
    }
}

fn running_partition() -> Result<*const sys::esp_partition_t, SlotError> {
    let partition = unsafe { sys::esp_ota_get_running_partition() };
    if partition.is_null() {
        return Err(SlotError("no running partition".to_owned()));
    }
    Ok(partition)
}

/// The engine over the chip's HTTP and slots; a reboot is a restart (the app has
/// flushed its messages first).
struct ChipUpdater {
    engine: Engine,
}

impl Updater for ChipUpdater {
    fn check(&self, preferred: Source) -> Result<Offer, UpdateError> {
        self.engine.check(&mut ChipHttp, preferred)
    }

    fn install(
        &self,
        offer: &Offer,
        control: &Control,
        progress: &mut dyn Progress,
    ) -> Result<Installed, UpdateError> {
        self.engine.install(
            &mut ChipHttp,
            &mut ChipSlots::default(),
            offer,
            control,
            progress,
        )
    }

    fn reboot(&self) {
        esp_idf_svc::hal::reset::restart();
    }
}

/// Whether the running image is on probation, read from otadata directly (EspOta's
/// get_running_slot also parses the app descriptor and fails on versions over 24
/// characters). The factory image and a slot otadata never named have no state
/// (ESP_ERR_NOT_SUPPORTED, ESP_ERR_NOT_FOUND): the bootloader boots them whatever the
/// checks say, so there is no probation to end. When the state cannot be read otherwise,
/// assume probation: the checks then run, where skipping them would let the bootloader
/// drop a good image at the next reset.
fn running_pending_verify() -> bool {
    let mut state: sys::esp_ota_img_states_t = Default::default();
    // SAFETY: the running partition is ESP-IDF's own static record; `state` is written.
    let read = unsafe {
        sys::esp_ota_get_state_partition(sys::esp_ota_get_running_partition(), &mut state)
    };
    match read {
        sys::ESP_OK => state == sys::esp_ota_img_states_t_ESP_OTA_IMG_PENDING_VERIFY,
        sys::ESP_ERR_NOT_SUPPORTED | sys::ESP_ERR_NOT_FOUND => false,
        _ => true,
    }
}

/// The running slot's probation, through esp-idf-svc's EspOta.
pub struct ChipBoot(pub EspOta);

impl BootSlot for ChipBoot {
    fn pending_verify(&self) -> bool {
        running_pending_verify()
    }

    fn mark_valid(&mut self) -> Result<(), SlotError> {
        self.0.mark_running_slot_valid().map_err(flash_error)
    }

    fn mark_invalid_and_reboot(&mut self) -> Result<(), SlotError> {
        // Returns only when the rollback is impossible.
        Err(flash_error(self.0.mark_running_slot_invalid_and_reboot()))
    }
}

/// System time, which SNTP sets and the RTC timer keeps.
struct SystemRtc;

impl Rtc for SystemRtc {
    fn read(&mut self) -> Result<u64, String> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|e| e.to_string())
    }
}

/// The WS2812 strip on the RMT peripheral, or why its driver did not start.
struct ChipLeds(Result<TxRmtDriver<'static>, String>);

#[allow(deprecated)] // the legacy RMT driver, as imported above
impl Leds for ChipLeds {
    fn self_test(&mut self) -> Result<(), String> {
        let tx = self.0.as_mut().map_err(|e| format!("no RMT driver: {e}"))?;
        let text = |e: EspError| e.to_string();
        let ticks = tx.counter_clock().map_err(text)?;
        let pulse = |state, nanos| {
            Pulse::new_with_duration(ticks, state, &Duration::from_nanos(nanos)).map_err(text)
        };
        // The WS2812 datasheet's bit times.
        let zero = [pulse(PinState::High, 350)?, pulse(PinState::Low, 800)?];
        let one = [pulse(PinState::High, 700)?, pulse(PinState::Low, 600)?];
        let dark = [Rgb::default(); LED_COUNT];
        let mut signal = VariableLengthSignal::with_capacity(LED_COUNT * 48);
        for bit in ws2812::bits(&dark) {
            signal.push(if bit { &one } else { &zero }).map_err(text)?;
        }
        tx.start_blocking(&signal).map_err(text)
    }
}

/// NVS as the engine's key-value store.
pub struct ChipStore(pub EspNvs<NvsDefault>);

impl Store for ChipStore {
    /// Our own values are blobs; the factory's settings may be NVS strings.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Ok(Some(len)) = self.0.blob_len(key) {
            let mut buf = vec![0u8; len];
            return self
                .0
                .get_blob(key, &mut buf)
                .ok()
                .flatten()
                .map(<[u8]>::to_vec);
        }
        let len = self.0.str_len(key).ok().flatten()?;
        let mut buf = vec![0u8; len];
        let text = self.0.get_str(key, &mut buf).ok().flatten()?;
        Some(text.as_bytes().to_vec())
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        // set_blob commits before it returns.
        if let Err(e) = self.0.set_blob(key, value) {
            log::warn!("nvs: cannot store {key}: {e}");
        }
    }
}

/// The app's publisher over ESP-IDF's MQTT client, which queues while it reconnects.
pub struct ChipPublisher(pub Mutex<EspMqttClient<'static>>);

impl ChipPublisher {
    fn client(&self) -> std::sync::MutexGuard<'_, EspMqttClient<'static>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribe(&self, topic: &str) {
        if let Err(e) = self.client().subscribe(topic, QoS::AtLeastOnce) {
            log::warn!("mqtt: cannot subscribe to {topic}: {e}");
        }
    }
}

impl Publisher for ChipPublisher {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        if let Err(e) = self
            .client()
            .enqueue(topic, QoS::AtLeastOnce, retain, payload)
        {
            log::warn!("mqtt: cannot queue {topic}: {e}");
        }
    }

    fn flush(&self, within: Duration) -> bool {
        // enqueue only fills ESP-IDF's outbox, which holds each QoS 1 message until the
        // broker acknowledges it.
        let until = Instant::now() + within;
        while self.client().get_outbox_size() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}
