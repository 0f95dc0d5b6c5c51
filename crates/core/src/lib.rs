//! Kairos's shared vocabulary: clock, limits, configuration types, id helpers and time
//! conversions. This crate is a leaf: it does no IO and depends on no other Kairos crate.

pub mod api;
pub mod clock;
pub mod config;
pub mod filter;
pub mod ids;
pub mod names;
pub mod time;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Limits, ServerOptions};
