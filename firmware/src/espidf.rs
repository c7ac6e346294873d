//! ESP-IDF glue, compiled only for the chip: the engine's and the app's ports on
//! esp-idf-svc. It stays thin because nothing here can be compiled or tested on the host;
//! every decision it serves is made (and tested) in `ota-core` and `wordclock::app`.
//!
//! Not compiled in this repository's CI (no Xtensa toolchain): build it with the `esp`
//! toolchain and `--target xtensa-esp32s3-espidf`.
#![allow(unsafe_code)] // FFI to ESP-IDF's OTA API; every call's result is checked with esp!()

use std::sync::Mutex;

use esp_idf_svc::http::Method;
use esp_idf_svc::http::client::{Configuration as HttpConfiguration, EspHttpConnection};
use esp_idf_svc::mqtt::client::{EspMqttClient, QoS};
use esp_idf_svc::nvs::{EspNvs, NvsDefault};
use esp_idf_svc::ota::{EspOta, SlotState};
use esp_idf_svc::sys::{self, esp};
use ota_core::engine::health::BootSlot;
use ota_core::engine::{
    ContentRange, Http, HttpError, Response, SlotError, Slots, Store, Timeouts,
};
use wordclock::app::Publisher;

// The app descriptor takes its version and project name from Cargo.toml, so the version
// inside the image is the one `clockrel release` set and the manifest names.
esp_idf_svc::sys::esp_app_desc!();

pub fn main() {
    esp_idf_svc::sys::link_patches();
    esp_idf_svc::log::EspLogger::initialize_default();
    log::info!("wordclock {} starting", wordclock::VERSION);
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
        Ok(Box::new(ChipResponse(connection)))
    }
}

/// The connection, and when the whole request must be over.
struct ChipResponse(EspHttpConnection, std::time::Instant);

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
        if std::time::Instant::now() >= self.1 {
            return Err(HttpError::Timeout);
        }
        self.0.read(buf).map_err(|e| HttpError::Io(e.to_string()))
    }
}

/// The OTA slots through esp_ota_begin / write / end / set_boot_partition.
#[derive(Default)]
pub struct ChipSlots {
    open: Option<(sys::esp_ota_handle_t, *const sys::esp_partition_t)>,
    written: u64,
}

fn flash_error(e: sys::EspError) -> SlotError {
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
}

/// The running slot's probation, through esp-idf-svc's EspOta.
pub struct ChipBoot(pub EspOta);

impl BootSlot for ChipBoot {
    fn pending_verify(&self) -> bool {
        self.0
            .get_running_slot()
            .is_ok_and(|slot| slot.state == SlotState::Unverified)
    }

    fn mark_valid(&mut self) -> Result<(), SlotError> {
        self.0.mark_running_slot_valid().map_err(flash_error)
    }

    fn mark_invalid_and_reboot(&mut self) -> Result<(), SlotError> {
        // Returns only when the rollback is impossible.
        Err(flash_error(self.0.mark_running_slot_invalid_and_reboot()))
    }
}

/// NVS as the engine's key-value store.
pub struct ChipStore(pub EspNvs<NvsDefault>);

impl Store for ChipStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut buf = [0u8; 512];
        self.0
            .get_raw(key, &mut buf)
            .ok()
            .flatten()
            .map(<[u8]>::to_vec)
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        if let Err(e) = self.0.set_raw(key, value) {
            log::warn!("nvs: cannot store {key}: {e}");
        }
    }
}

/// The app's publisher over ESP-IDF's MQTT client, which queues while it reconnects.
pub struct ChipPublisher(pub Mutex<EspMqttClient<'static>>);

impl Publisher for ChipPublisher {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        let mut client = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = client.enqueue(topic, QoS::AtLeastOnce, retain, payload) {
            log::warn!("mqtt: cannot queue {topic}: {e}");
        }
    }
}
