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
    #[error(
        "NVS `wifi_pass` is {len} bytes; WPA2 takes 8 to 63, or 64 hex digits (none for an open network)"
    )]
    WifiPass { len: usize },
    /// The URL is not repeated: whatever malformed it may hold a password.
    #[error("NVS `mqtt_url` is not mqtt://host:port or mqtts://host:port ({0})")]
    MqttUrl(&'static str),
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
        let raw_key = wifi_pass.len() == 64 && wifi_pass.bytes().all(|b| b.is_ascii_hexdigit());
        if !wifi_pass.is_empty() && !(8..=63).contains(&wifi_pass.len()) && !raw_key {
            return Err(ProvisionError::WifiPass {
                len: wifi_pass.len(),
            });
        }
        let mqtt_url = required(store, "mqtt_url")?;
        check_mqtt_url(&mqtt_url).map_err(ProvisionError::MqttUrl)?;
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

/// `mqtt://host:port` or `mqtts://host:port`, the host a name, an IPv4 address or a
/// bracketed IPv6 one; nothing else (no credentials, path or query).
fn check_mqtt_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("mqtts://"))
        .ok_or("the scheme is neither mqtt nor mqtts")?;
    let (host, port) = rest.rsplit_once(':').ok_or("no port")?;
    if !matches!(port.parse::<u16>(), Ok(1..)) {
        return Err("the port is not a number from 1 to 65535");
    }
    let name_or_v4 = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let v6 = |h: &str| {
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|inner| {
                !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
            })
    };
    if name_or_v4(host) || v6(host) {
        Ok(())
    } else {
        Err("the host is not a name or an address (credentials go in mqtt_user and mqtt_pass)")
    }
}
