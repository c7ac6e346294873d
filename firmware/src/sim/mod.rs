//! The firmware on the host: the same update engine over a simulated chip, so that what
//! cannot be tested on real hardware here (power cuts, rollbacks) is tested on this.

pub mod board;
pub mod device;
pub mod flash;
pub mod http;
pub mod layout;
pub mod mqtt;
pub mod run;
pub mod store;
pub mod updater;
