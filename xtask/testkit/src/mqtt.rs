//! An MQTT broker for the device's tests: Debian's mosquitto on a free port of 127.0.0.1,
//! stopped when dropped.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running mosquitto that accepts anonymous clients.
#[derive(Debug)]
pub struct MqttBroker {
    child: Child,
    port: u16,
    _config: tempfile::NamedTempFile,
}

impl MqttBroker {
    /// Starts mosquitto (it must be installed: `apt-get install mosquitto`) and returns
    /// once it accepts connections.
    pub fn start() -> MqttBroker {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("127.0.0.1 has a free port");
        let mut config =
            tempfile::NamedTempFile::new().expect("a temporary file for the broker's config");
        writeln!(
            config,
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false"
        )
        .expect("the broker's config is written");
        let child = spawn(&config, port);
        MqttBroker {
            child,
            port,
            _config: config,
        }
    }

    /// Stops the broker, as a restart or a crash does (every session dropped, retained
    /// messages gone: no persistence), and starts it again on the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self._config, self.port);
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Starts mosquitto with `config` and returns once it accepts connections on `port`.
fn spawn(config: &tempfile::NamedTempFile, port: u16) -> Child {
    // Debian installs it outside a normal user's PATH.
    let binary = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    };
    let child = Command::new(binary)
        .arg("-c")
        .arg(config.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto runs (apt-get install mosquitto)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Drop for MqttBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
