//! Only the chip build (`--features chip`) has work here: ESP-IDF's linker arguments,
//! which esp-idf-sys leaves to the binary's build script.
fn main() {
    #[cfg(feature = "chip")]
    embuild::espidf::sysenv::output();
}
