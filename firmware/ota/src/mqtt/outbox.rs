//! What the device still owes the broker: the latest payload of each retained topic
//! until the client has queued it, and the QoS 1 messages the broker has not yet
//! acknowledged. No I/O: the client glue offers, queues and reports acks, so a full
//! client queue can delay a state change but never lose it, and a reboot can wait
//! until the broker has everything.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// One device's outbox. Retained topics are state: only their latest payload matters,
/// so a newer one replaces an older one still waiting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outbox {
    /// Retained topic → the payload not yet taken by the client, in the order first owed.
    owed: BTreeMap<u64, (String, Vec<u8>)>,
    next: u64,
    /// Messages the client queued that the broker has not acknowledged.
    unacked: usize,
    /// Whether the broker has accepted the session (and not lost it since).
    connected: bool,
}

impl Outbox {
    /// A retained message to deliver; replaces a payload of the same topic still owed.
    pub fn retain(&mut self, topic: &str, payload: &[u8]) {
        let waiting = self
            .owed
            .iter()
            .find(|(_, (owed, _))| owed == topic)
            .map(|(&order, _)| order);
        match waiting {
            Some(order) => {
                if let Some(entry) = self.owed.get_mut(&order) {
                    entry.1 = payload.to_vec();
                }
            }
            None => {
                self.owed
                    .insert(self.next, (String::from(topic), payload.to_vec()));
                self.next += 1;
            }
        }
    }

    /// Offers the owed messages, oldest first, to `queue`, which says whether the client
    /// took each; the first it does not take, and all after it, stay owed.
    pub fn drain(&mut self, queue: &mut dyn FnMut(&str, &[u8]) -> bool) {
        while let Some(entry) = self.owed.first_entry() {
            let (topic, payload) = entry.get();
            if !queue(topic, payload) {
                return;
            }
            entry.remove();
            self.unacked += 1;
        }
    }

    /// The client queued a message that is not retained state (progress): counted, so
    /// a flush waits for its acknowledgement too.
    pub fn queued(&mut self) {
        self.unacked += 1;
    }

    /// The broker acknowledged one message.
    pub fn acked(&mut self) {
        self.unacked = self.unacked.saturating_sub(1);
    }

    /// The broker accepted the session.
    pub fn connected(&mut self) {
        self.connected = true;
    }

    /// The broker's connection was lost: what was queued and not acknowledged may be
    /// gone with it (a clean session forgets it), so nobody waits for those
    /// acknowledgements any longer; the retained state is published again on the next
    /// connection, and nothing is flushed until then.
    pub fn disconnected(&mut self) {
        self.unacked = 0;
        self.connected = false;
    }

    /// Whether the broker has everything: connected, nothing owed, nothing
    /// unacknowledged.
    pub fn is_flushed(&self) -> bool {
        self.connected && self.owed.is_empty() && self.unacked == 0
    }

    /// How many retained topics wait for the client.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }
}
