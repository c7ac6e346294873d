//! An MQTT broker for the device's tests: Debian's mosquitto on a free port of 127.0.0.1,
//! stopped when dropped.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

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
        // The free port is let go for mosquitto to take; another test may take it first,
        // and then mosquitto exits and the next free port is tried.
        for _ in 0..5 {
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
            if let Some(child) = spawn(&config, port) {
                return MqttBroker {
                    child,
                    port,
                    _config: config,
                };
            }
        }
        panic!("mosquitto could not listen on any of 5 free ports")
    }

    /// Stops the broker, as a restart or a crash does (every session dropped, retained
    /// messages gone: no persistence), and starts it again on the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self._config, self.port)
            .unwrap_or_else(|| panic!("mosquitto could not listen on {} again", self.port));
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Starts mosquitto with `config` and returns it once it listens on `port`; `None` when
/// it exited instead (the port was taken: what answers there is not it).
fn spawn(config: &tempfile::NamedTempFile, port: u16) -> Option<Child> {
    // Debian installs it outside a normal user's PATH.
    let binary = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    };
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(config.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto runs (apt-get install mosquitto)");
    let log = child.stderr.take().expect("mosquitto's stderr is piped");
    let (running, heard) = mpsc::channel();
    // mosquitto logs "mosquitto version ... running" once it has bound its listener,
    // and "Error: Address already in use" before it exits when it cannot. The rest of
    // its log is read and dropped, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if line.ends_with(" running") {
                let _ = running.send(());
            }
        }
    });
    match heard.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => Some(child),
        Err(RecvTimeoutError::Disconnected) => {
            let _ = child.wait();
            None
        }
        Err(RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto did not start listening on {port} within 10 s")
        }
    }
}

impl Drop for MqttBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_taken_before_mosquitto_binds_it_is_not_mistaken_for_the_broker() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
        let port = taken.local_addr().expect("its address").port();
        let mut config = tempfile::NamedTempFile::new().expect("a config file");
        writeln!(config, "listener {port} 127.0.0.1\nallow_anonymous true").expect("written");
        assert!(spawn(&config, port).is_none());
        drop(taken);
        let mut broker = spawn(&config, port).expect("mosquitto on the port let go");
        let _ = broker.kill();
        let _ = broker.wait();
    }
}
