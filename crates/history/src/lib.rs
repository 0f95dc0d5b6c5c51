//! Kairos history: the workflow state machine ([`state`], pure) and the engine that runs it
//! against a store ([`engine`]): per-run locking and caching, one transaction per transition,
//! transfer tasks handed to matching after commit, and the durable timer queue.

// Temporal keeps deprecated fields on the wire; we fill them for older clients.
#![allow(deprecated)]

pub mod cron;
pub mod engine;
mod error;
pub mod namespace;
pub mod state;
pub mod token;

pub use engine::{ActivityTarget, Engine, EngineOptions};
pub use error::{Error, Result};
pub use namespace::{Namespace, Namespaces};
pub use state::Signal;
