//! The MQTT session between a client's event loop and the app: whether the broker has
//! accepted us (the health check after an update asks before the app exists), and the
//! app once it is attached, which then hears every (re)connection and message.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::app::App;

/// What a client's event loop reports, owned, so the loop can hand the client its event
/// back before anyone publishes (ESP-IDF's client waits for it, holding its lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected,
    Disconnected,
    Message { topic: String, payload: Vec<u8> },
}

#[derive(Default)]
struct State {
    connected: bool,
    app: Option<App>,
}

/// Shared by the client's event loop and the boot sequence.
#[derive(Default)]
pub struct Session {
    state: Mutex<State>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Session")
            .field("connected", &state.connected)
            .field("app", &state.app.is_some())
            .finish()
    }
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One event from the client, with `subscribe` to ask for the app's topics.
    pub fn handle(&self, event: Event, subscribe: &dyn Fn(&str)) {
        match event {
            Event::Connected => self.on_connected(subscribe),
            Event::Disconnected => self.on_disconnected(),
            Event::Message { topic, payload } => self.on_message(&topic, &payload),
        }
    }

    /// Whether the broker has accepted the session (and not lost it since).
    pub fn is_connected(&self) -> bool {
        self.lock().connected
    }

    /// The broker accepted the session: the app, if attached, subscribes (through
    /// `subscribe`) and publishes its retained state.
    pub fn on_connected(&self, subscribe: &dyn Fn(&str)) {
        let mut state = self.lock();
        state.connected = true;
        if let Some(app) = &state.app {
            greet(app, subscribe);
        }
    }

    /// The session was lost; the client reconnects on its own.
    pub fn on_disconnected(&self) {
        self.lock().connected = false;
    }

    /// A message from the broker; dropped while no app is attached (the device is still
    /// proving itself healthy, and subscribes only once the app is there).
    pub fn on_message(&self, topic: &str, payload: &[u8]) {
        if let Some(app) = &self.lock().app {
            app.on_message(topic, payload);
        }
    }

    /// Hands the session to the app; when already connected, it subscribes and publishes
    /// at once. Under the one lock, so a connection at the same moment greets it once.
    pub fn attach(&self, app: App, subscribe: &dyn Fn(&str)) {
        let mut state = self.lock();
        let connected = state.connected;
        let app = state.app.insert(app);
        if connected {
            greet(app, subscribe);
        }
    }

    /// Takes the app back, to wait for its work and drop it before a reboot.
    pub fn detach(&self) -> Option<App> {
        self.lock().app.take()
    }
}

fn greet(app: &App, subscribe: &dyn Fn(&str)) {
    for topic in app.subscriptions() {
        subscribe(topic);
    }
    app.on_connect();
}
