//! The simulated device's MQTT client: the app's [`Publisher`], and the loop that feeds
//! the session what the broker delivers.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ota_core::mqtt::Outbox;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};

use crate::app::Publisher;
use crate::session::{self, Session};

/// Publishes through a rumqttc client, which queues while it reconnects; retained
/// state its queue cannot take yet waits in the [`Outbox`].
#[derive(Clone)]
pub struct MqttPublisher {
    client: Client,
    outbox: Arc<Mutex<Outbox>>,
}

impl std::fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MqttPublisher")
    }
}

impl Publisher for MqttPublisher {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        let mut outbox = self.outbox();
        if retain {
            outbox.retain(topic, payload);
            self.drain(&mut outbox);
        } else if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .is_ok()
        {
            outbox.queued();
        }
        // Else the queue is full: progress is dropped rather than block the update.
    }

    fn flush(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            let mut outbox = self.outbox();
            self.drain(&mut outbox);
            if outbox.is_flushed() {
                return true;
            }
            drop(outbox);
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl MqttPublisher {
    /// Asks for `topic`'s messages; queued like a publish while the client reconnects.
    pub fn subscribe(&self, topic: &str) {
        let _ = self.client.try_subscribe(topic, QoS::AtLeastOnce);
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the client what retained state it can take now.
    fn drain(&self, outbox: &mut Outbox) {
        outbox.drain(&mut |topic, payload| {
            self.client
                .try_publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
                .is_ok()
        });
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
    let publisher = MqttPublisher {
        client,
        outbox: Arc::default(),
    };
    (publisher, connection)
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
        let received = connection.recv_timeout(Duration::from_millis(100));
        // The queue may have room now for retained state that waits.
        publisher.drain(&mut publisher.outbox());
        let event = match received {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                publisher.outbox().acked();
                continue;
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                publisher.outbox().connected();
                session::Event::Connected
            }
            Ok(Ok(Event::Incoming(Packet::Publish(message)))) => session::Event::Message {
                topic: message.topic,
                payload: message.payload.to_vec(),
            },
            Ok(Err(_)) => {
                publisher.outbox().disconnected();
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
