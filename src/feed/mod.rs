//! The live side: one poller per server reads what changed and fans serialized messages out.
//!
//! - `poller`: the task that owns the window and reads the change journal each poll;
//! - `window`: the in-memory 1m candles and their roll-ups to wider intervals;
//! - `hub`: the broadcast channel per (symbol, interval), its numbered updates and snapshots;
//! - `wire`: the WebSocket protocol's messages;
//! - `demo`: the synthetic feed of the default start.

pub mod demo;
pub mod hub;
pub mod poller;
pub mod window;
pub mod wire;

pub use hub::{Subscription, Update};
pub use poller::{Faults, Feed, FeedSettings, Task};
pub use wire::{Format, Frame, Resume, ServerMsg, Want};
