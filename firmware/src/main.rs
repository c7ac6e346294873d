//! The word clock's firmware: ESP-IDF on the chip, the simulated device on the host.

#[cfg(target_os = "espidf")]
mod espidf;

use wordclock::VERSION;

#[cfg(target_os = "espidf")]
fn main() {
    espidf::main();
}

#[cfg(not(target_os = "espidf"))]
fn main() {
    println!("wordclock {VERSION} (host build: the simulated device comes with the OTA engine)");
}
