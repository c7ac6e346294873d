//! A device's own settings (Wi-Fi, broker, id), read from its NVS where the factory wrote
//! them. They never go into the image: the image is published on GitHub and R2 for
//! everyone to download, so a password built into it would be a password published.

use ota_core::engine::Store;
use ota_core::mqtt::Topics;
use ota_core::secret::Secret;

/// The NVS keys, in the `wordclock` namespace.
pub const KEYS: [&str; 6] = [
    "wifi_ssid",
    "wifi_pass",
    "mqtt_url",
    "mqtt_user",
    "mqtt_pass",
    "device_id",
];

/// What the firmware needs to reach its network and broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub wifi_ssid: String,
    /// Empty for an open network.
    pub wifi_pass: Secret,
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub mqtt_url: String,
    pub mqtt_user: Option<String>,
    pub mqtt_pass: Option<Secret>,
    /// Names the MQTT topics (`home/<id>/...`) and the client.
    pub device_id: String,
}

/// Why the settings cannot be used; the firmware logs it and stays offline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    #[error("NVS has no `{0}`: write the device's settings with the factory's NVS image")]
    Missing(&'static str),
    #[error("NVS `{key}` is not UTF-8 text")]
    NotText { key: &'static str },
    #[error("NVS `wifi_ssid` is {len} bytes; Wi-Fi allows 1 to 32")]
    Ssid { len: usize },
    #[error("NVS `wifi_pass` is {len} bytes; WPA2 allows 8 to 63 (or none for an open network)")]
    WifiPass { len: usize },
    #[error("NVS `mqtt_url` is `{0}`: expected mqtt://host:port or mqtts://host:port")]
    MqttUrl(String),
    /// Not echoed: the text holds a password.
    #[error("NVS `mqtt_url` holds credentials: put them in `mqtt_user` and `mqtt_pass`")]
    CredentialsInUrl,
    #[error("NVS `device_id`: {0}")]
    DeviceId(String),
}

fn text(store: &dyn Store, key: &'static str) -> Result<Option<String>, ProvisionError> {
    match store.get(key) {
        None => Ok(None),
        Some(bytes) if bytes.is_empty() => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ProvisionError::NotText { key }),
    }
}

fn required(store: &dyn Store, key: &'static str) -> Result<String, ProvisionError> {
    text(store, key)?.ok_or(ProvisionError::Missing(key))
}

impl Provisioned {
    /// Reads and checks every setting; the first problem is the error.
    pub fn load(store: &dyn Store) -> Result<Provisioned, ProvisionError> {
        let wifi_ssid = required(store, "wifi_ssid")?;
        if !(1..=32).contains(&wifi_ssid.len()) {
            return Err(ProvisionError::Ssid {
                len: wifi_ssid.len(),
            });
        }
        let wifi_pass = text(store, "wifi_pass")?.unwrap_or_default();
        if !wifi_pass.is_empty() && !(8..=63).contains(&wifi_pass.len()) {
            return Err(ProvisionError::WifiPass {
                len: wifi_pass.len(),
            });
        }
        let mqtt_url = required(store, "mqtt_url")?;
        if mqtt_url.contains('@') {
            return Err(ProvisionError::CredentialsInUrl);
        }
        let host_port = mqtt_url
            .strip_prefix("mqtt://")
            .or_else(|| mqtt_url.strip_prefix("mqtts://"));
        let well_formed = host_port
            .and_then(|rest| rest.rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !well_formed {
            let shown: String = mqtt_url
                .chars()
                .filter(|c| !c.is_control())
                .take(80)
                .collect();
            return Err(ProvisionError::MqttUrl(shown));
        }
        let device_id = required(store, "device_id")?;
        Topics::new(&device_id).map_err(|e| ProvisionError::DeviceId(e.to_string()))?;
        Ok(Provisioned {
            wifi_ssid,
            wifi_pass: Secret::new(wifi_pass),
            mqtt_url,
            mqtt_user: text(store, "mqtt_user")?,
            mqtt_pass: text(store, "mqtt_pass")?.map(Secret::new),
            device_id,
        })
    }
}
