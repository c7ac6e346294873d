//! The simulated device's MQTT client: the app's [`Publisher`], and the loop that feeds
//! the session what the broker delivers.

use std::time::Duration;

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};

use crate::app::Publisher;
use crate::session::{self, Session};

/// Publishes through a rumqttc client, which queues while it reconnects.
#[derive(Clone)]
pub struct MqttPublisher(Client);

impl std::fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MqttPublisher")
    }
}

impl Publisher for MqttPublisher {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        // A full queue drops the message rather than blocking the update.
        let _ = self
            .0
            .try_publish(topic, QoS::AtLeastOnce, retain, payload.to_vec());
    }
}

impl MqttPublisher {
    /// Asks for `topic`'s messages; queued like a publish while the client reconnects.
    pub fn subscribe(&self, topic: &str) {
        let _ = self.0.try_subscribe(topic, QoS::AtLeastOnce);
    }
}

/// A client for `device` at `host:port`, with the fleet's last will (`offline`).
pub fn connect(
    device: &str,
    host: &str,
    port: u16,
    availability: &str,
) -> (MqttPublisher, Connection) {
    let mut options = MqttOptions::new(device, host, port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_last_will(rumqttc::LastWill::new(
        availability,
        ota_core::mqtt::OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    let (client, connection) = Client::new(options, 64);
    (MqttPublisher(client), connection)
}

/// Runs the connection: every (re)connection and message goes to the session, which
/// hands them to the app once it is attached. Returns soon after `stop` says so.
pub fn run(
    session: &Session,
    publisher: &MqttPublisher,
    mut connection: Connection,
    stop: &dyn Fn() -> bool,
) {
    let subscribe = |topic: &str| publisher.subscribe(topic);
    while !stop() {
        let event = match connection.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => session::Event::Connected,
            Ok(Ok(Event::Incoming(Packet::Publish(message)))) => session::Event::Message {
                topic: message.topic,
                payload: message.payload.to_vec(),
            },
            Ok(Err(_)) => {
                session.handle(session::Event::Disconnected, &subscribe);
                // The client reconnects by itself on the next call; don't spin meanwhile.
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Ok(Ok(_)) | Err(_) => continue,
        };
        session.handle(event, &subscribe);
    }
}
