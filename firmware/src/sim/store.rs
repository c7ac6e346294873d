//! The simulated NVS: a key-value store kept in a JSON file beside the flash file, so the
//! source preference and an update's outcome survive restarts as they do on the chip.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ota_core::engine::Store;

/// Values are kept as hex strings: JSON has no bytes.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    values: BTreeMap<String, String>,
}

impl FileStore {
    /// Opens the store at `path`; a missing or unreadable file is an empty store.
    pub fn open(path: PathBuf) -> FileStore {
        let values = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        FileStore { path, values }
    }
}

impl Store for FileStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let hex = self.values.get(key)?;
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect()
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        let hex = value.iter().map(|b| format!("{b:02x}")).collect();
        self.values.insert(key.to_owned(), hex);
        // Like NVS, a write is durable when it returns; a failed write is lost, as there.
        if let Ok(json) = serde_json::to_vec_pretty(&self.values) {
            let _ = std::fs::write(&self.path, json);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("wordclock-store-{}", std::process::id()));
        let mut store = FileStore::open(dir.clone());
        store.set("ota_source", b"r2");
        store.set("blob", &[0, 255, 16]);
        let again = FileStore::open(dir.clone());
        assert_eq!(again.get("ota_source").as_deref(), Some(&b"r2"[..]));
        assert_eq!(again.get("blob").as_deref(), Some(&[0u8, 255, 16][..]));
        assert_eq!(again.get("missing"), None);
        let _ = std::fs::remove_file(dir);
    }
}
