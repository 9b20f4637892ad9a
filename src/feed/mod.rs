//! The live side: one poller per server reads what changed and fans serialized messages out.

pub mod candles;
pub mod demo;
pub mod hub;
pub mod poller;

pub use hub::{ServerMsg, Subscription};
pub use poller::{Poller, Subscribe};
