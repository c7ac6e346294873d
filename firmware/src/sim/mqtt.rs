//! The simulated device's MQTT client: the app's [`Publisher`], and the loop that feeds
//! the session what the broker delivers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ota_core::mqtt::Outbox;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};

use crate::app::{Publisher, lock};
use crate::session::{self, Session};

/// Publishes through a rumqttc client, which queues while it reconnects; retained
/// state its queue cannot take yet waits in the [`Outbox`], and subscriptions in
/// `owed_subscriptions`.
#[derive(Clone)]
pub struct MqttPublisher {
    client: Client,
    outbox: Arc<Mutex<Outbox>>,
    /// Subscriptions asked for while the client's queue was full (after an outage long
    /// enough for progress to fill it): dropped, the device would hear no command until
    /// its next reconnection.
    owed_subscriptions: Arc<Mutex<Vec<String>>>,
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
            return;
        }
        // Progress never overtakes the retained state published before it; while some
        // waits, or the queue is full, progress is dropped rather than block the update.
        self.drain(&mut outbox);
        if outbox.owed() == 0
            && self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
                .is_ok()
        {
            outbox.queued();
        }
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
    /// Asks for `topic`'s messages; queued like a publish while the client reconnects,
    /// and owed until the queue takes it.
    pub fn subscribe(&self, topic: &str) {
        let mut owed = lock(&self.owed_subscriptions);
        if !owed.iter().any(|t| t == topic) {
            owed.push(topic.to_owned());
        }
        self.drain_subscriptions(&mut owed);
    }

    fn drain_subscriptions(&self, owed: &mut Vec<String>) {
        while let Some(topic) = owed.first() {
            if self.client.try_subscribe(topic, QoS::AtLeastOnce).is_err() {
                return;
            }
            owed.remove(0);
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    /// Hands the client what subscriptions and retained state it can take now.
    fn drain(&self, outbox: &mut Outbox) {
        self.drain_subscriptions(&mut lock(&self.owed_subscriptions));
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
        owed_subscriptions: Arc::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::MqttBroker;

    /// Drives `connection` until it yields a packet `wanted` takes, draining
    /// `publisher` after each event as [`run`] does, when given.
    fn until(
        connection: &mut Connection,
        publisher: Option<&MqttPublisher>,
        what: &str,
        mut wanted: impl FnMut(&Packet) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no {what} within 10 s");
            let received = connection.recv_timeout(Duration::from_millis(100));
            if let Some(publisher) = publisher {
                publisher.drain(&mut publisher.outbox());
            }
            if let Ok(Ok(Event::Incoming(packet))) = received
                && wanted(&packet)
            {
                return;
            }
        }
    }

    #[test]
    fn progress_never_overtakes_the_retained_state_before_it() {
        let broker = MqttBroker::start();
        let (watcher, mut watching) =
            Client::new(MqttOptions::new("ha", "127.0.0.1", broker.port()), 8);
        watcher
            .subscribe("home/clock1/ota/#", QoS::AtLeastOnce)
            .unwrap();
        until(&mut watching, None, "SUBACK", |p| {
            matches!(p, Packet::SubAck(_))
        });

        let (device, mut connection) = connect(
            "clock1",
            "127.0.0.1",
            broker.port(),
            "home/clock1/availability",
        );
        let progress = "home/clock1/ota/progress";
        for percent in 0..64 {
            device.publish(progress, &[percent], false);
        }
        // The queue is full: the state waits in the outbox.
        device.publish("home/clock1/ota/state", b"state", true);
        assert_eq!(device.outbox().owed(), 1);
        // The client sends what it queued, and nobody has drained the outbox since.
        let mut acks = 0;
        until(&mut connection, None, "64 PUBACKs", |p| {
            acks += usize::from(matches!(p, Packet::PubAck(_)));
            acks == 64
        });
        device.publish(progress, b"after", false);
        let mut acks = 0;
        until(&mut connection, Some(&device), "2 more PUBACKs", |p| {
            acks += usize::from(matches!(p, Packet::PubAck(_)));
            acks == 2
        });

        let mut seen = Vec::new();
        let at = |seen: &[Vec<u8>], payload: &[u8]| seen.iter().position(|p| p == payload);
        until(
            &mut watching,
            None,
            "the state and the last progress",
            |p| {
                if let Packet::Publish(m) = p {
                    seen.push(m.payload.to_vec());
                }
                at(&seen, b"state").is_some() && at(&seen, b"after").is_some()
            },
        );
        assert!(at(&seen, b"state") < at(&seen, b"after"), "{seen:?}");
    }

    #[test]
    fn a_subscription_asked_for_while_the_queue_is_full_is_made_once_it_has_room() {
        let broker = MqttBroker::start();
        let (device, mut connection) = connect(
            "clock1",
            "127.0.0.1",
            broker.port(),
            "home/clock1/availability",
        );
        // Nothing drives the client yet, as while the broker is away: progress fills its
        // queue, and the subscription a reconnection asks for finds no room.
        for percent in 0..100 {
            device.publish("home/clock1/ota/progress", &[percent], false);
        }
        device.subscribe("home/clock1/command");
        assert_eq!(lock(&device.owed_subscriptions).len(), 1);

        until(&mut connection, Some(&device), "SUBACK", |p| {
            matches!(p, Packet::SubAck(_))
        });
        assert!(lock(&device.owed_subscriptions).is_empty());
        let (home_assistant, mut its_connection) =
            Client::new(MqttOptions::new("ha", "127.0.0.1", broker.port()), 8);
        home_assistant
            .publish("home/clock1/command", QoS::AtLeastOnce, false, "install")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(
            its_connection.recv_timeout(Duration::from_millis(100)),
            Ok(Ok(Event::Incoming(Packet::PubAck(_))))
        ) {
            assert!(Instant::now() < deadline, "the broker took no command");
        }
        until(
            &mut connection,
            Some(&device),
            "command",
            |p| matches!(p, Packet::Publish(m) if m.topic == "home/clock1/command"),
        );
    }
}
