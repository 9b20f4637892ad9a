//! The live side: one poller per server reads what changed and fans serialized messages out.
//!
//! - `poller`: the task that owns the channels' bars and reads the change journal each poll;
//! - `poll`: one poll's database work (changes, changed bars read again, channels loaded);
//! - `bars`: the newest bars one channel holds;
//! - `snapshot`: snapshots built off the poller, within limits per client and server-wide;
//! - `hub`: the broadcast channel per (symbol, interval), its numbered updates and snapshots;
//! - `wire`: the WebSocket protocol's messages;
//! - `health`: whether the last poll succeeded (`/readyz`, the `candlewick_ready` gauge);
//! - `demo`: the synthetic feed of the default start.

pub mod bars;
pub mod demo;
pub mod health;
pub mod hub;
pub mod poll;
pub mod poller;
pub mod snapshot;
pub mod wire;

pub use hub::{Subscription, Update};
pub use poller::{Faults, Feed, FeedSettings, Task};
pub use wire::{Format, Frame, Resume, ServerMsg, Want};
