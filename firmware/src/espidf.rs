//! ESP-IDF glue, compiled only for the chip: maps the device's ports onto esp-idf-svc.
//! It stays thin because nothing here can be compiled or tested on the host.

// The app descriptor takes its version and project name from Cargo.toml, so that the
// version inside the image is the one `clockrel release` set and the manifest names.
esp_idf_svc::sys::esp_app_desc!();

pub fn main() {
    esp_idf_svc::sys::link_patches();
    esp_idf_svc::log::EspLogger::initialize_default();
    log::info!("wordclock {} starting", wordclock::VERSION);
}
